"""A user drops metadata.json + images into Blob storage and follows the ingestion over HTTP.

Runs the real function_app.py under devhost against Azurite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(devhost, blob_service, unique_container, tmp_path):
    work = f"{unique_container}-work"
    host = devhost(
        REPO,
        env={"IMAGES_CONTAINER": unique_container, "WORK_CONTAINER": work},
        state_dir=tmp_path / "state",
    )
    return host, blob_service.get_container_client(unique_container), work


def ingestions(host) -> list[dict]:
    response = requests.get(f"{host.base_url}/api/ingestions", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()["value"]


def finished_ingestions(host, count: int) -> list[dict] | None:
    found = ingestions(host)
    done = [i for i in found if i["runtimeStatus"] not in ("Pending", "Running")]
    return found if len(found) == count and len(done) == count else None


def ingestion(host, instance_id: str) -> dict:
    response = requests.get(f"{host.base_url}/api/ingestions/{instance_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def metadata(*paths: str) -> bytes:
    return json.dumps(
        [{"image_blob_path": p, "description": f"a photo of {p}"} for p in paths]
    ).encode()


def test_dropped_metadata_is_ingested_and_visible_over_http(app, blob_service, wait_for):
    host, container, work = app
    container.upload_blob("cats/tabby.jpg", b"\xff\xd8\xff fake jpeg bytes")
    container.upload_blob("dogs/corgi.png", b"\x89PNG fake png bytes")
    container.upload_blob("metadata.json", metadata("cats/tabby.jpg", "dogs/corgi.png", "gone.jpg"))

    [first] = wait_for(lambda: finished_ingestions(host, 1), timeout=120)
    assert first["runtimeStatus"] == "Completed"
    assert first["metadata"] == f"{container.container_name}/metadata.json"
    status = ingestion(host, first["instanceId"])
    output = status["output"]
    assert (output["entries"], output["recorded"], output["missing"]) == (3, 2, 1)
    assert status["customStatus"]["phase"] == "completed"

    report_container, _, report_path = output["report"].partition("/")
    assert report_container == work
    report = json.loads(
        blob_service.get_blob_client(report_container, report_path).download_blob().readall()
    )
    by_path = {r["image_blob_path"]: r["status"] for r in report["results"]}
    assert by_path == {
        "cats/tabby.jpg": "recorded",
        "dogs/corgi.png": "recorded",
        "gone.jpg": "missing",
    }

    # The same bytes again: a new ETag, a new trigger, but no new ingestion.
    container.upload_blob(
        "metadata.json", metadata("cats/tabby.jpg", "dogs/corgi.png", "gone.jpg"), overwrite=True
    )
    wait_for(lambda: host.log_text().count("already ingested or in progress") == 1, timeout=30)
    assert [i["instanceId"] for i in ingestions(host)] == [first["instanceId"]]

    # A changed file is a new ingestion.
    container.upload_blob("metadata.json", metadata("cats/tabby.jpg"), overwrite=True)
    both = wait_for(lambda: finished_ingestions(host, 2), timeout=120)
    newest = both[0]
    assert newest["instanceId"] != first["instanceId"]
    assert ingestion(host, newest["instanceId"])["output"]["entries"] == 1

    # Back to the first content: it is the latest version again, so it is ingested again.
    time.sleep(0.01)
    container.upload_blob(
        "metadata.json", metadata("cats/tabby.jpg", "dogs/corgi.png", "gone.jpg"), overwrite=True
    )

    def first_content_ingested_again():
        found = finished_ingestions(host, 2)
        return found if found and found[0]["instanceId"] == first["instanceId"] else None

    again = wait_for(first_content_ingested_again, timeout=120)
    assert again[0]["createdTime"] > first["createdTime"]


def test_bad_metadata_is_reported_not_crashed(app, wait_for):
    host, container, _ = app
    container.upload_blob("metadata-broken.json", b"{ this is not json")
    container.upload_blob("metadata-object.json", b'{"image_blob_path": "x.jpg"}')
    container.upload_blob("not-metadata.json", metadata("x.jpg"))  # not a metadata file

    found = wait_for(lambda: finished_ingestions(host, 2), timeout=120)
    for item in found:
        status = ingestion(host, item["instanceId"])
        assert status["runtimeStatus"] == "Completed"
        assert status["customStatus"]["phase"] == "rejected"
        assert status["output"]["error"]["code"] == "InvalidManifest"
        assert status["output"]["error"]["message"]


def test_status_route_validates_the_instance_id(app):
    host, _, _ = app
    bad = requests.get(f"{host.base_url}/api/ingestions/not-an-id", timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "instanceId"

    unknown = requests.get(
        f"{host.base_url}/api/ingestions/ingest-{'0' * 16}-{'1' * 16}", timeout=10
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "NotFound"
