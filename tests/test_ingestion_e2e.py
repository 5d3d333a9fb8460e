"""A user drops metadata.json + images into Blob storage and follows the ingestion over HTTP.

Runs the real function_app.py under devhost against Azurite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from PIL import Image
from sample_images import encode, picture_bytes
from storage_gate import StorageGate

from imagerag import config, naming
from imagerag.adapters.local_vectorizer import LocalVectorizer

REPO = Path(__file__).resolve().parent.parent
# Azurite's published development account (the key opens only the local emulator).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@pytest.fixture
def app(devhost, blob_service, unique_container, tmp_path):
    work = f"{unique_container}-work"
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": unique_container,
            "WORK_CONTAINER": work,
            "LOCAL_DATA_DIR": str(tmp_path / "data"),
            # Small partitions: several sub-orchestrations even for these short files.
            "INGEST_PARTITION_SIZE": "3",
        },
        state_dir=tmp_path / "state",
    )
    return host, blob_service.get_container_client(unique_container), work


@pytest.fixture
def index_of(tmp_path):
    """The ingested container's local index, opened from this process (as chat would)."""

    def open_index(container: str):
        settings = config.Settings(local_data_dir=tmp_path / "data")
        return config.image_index(settings, naming.index_name_for(container))

    return open_index


@pytest.fixture(scope="module")
def vectorizer():
    return LocalVectorizer()


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


def metadata(*paths: str, descriptions: dict[str, str] | None = None) -> bytes:
    described = descriptions or {}
    return json.dumps(
        [{"image_blob_path": p, "description": described.get(p, f"a photo of {p}")} for p in paths]
    ).encode()


def read_report(blob_service, output: dict) -> dict:
    ref = output["report"]
    blob = blob_service.get_blob_client(ref["container"], ref["path"])
    return json.loads(blob.download_blob().readall())


def latest_finished(host, count: int) -> dict:
    return finished_ingestions(host, count)[0] if finished_ingestions(host, count) else None


def test_good_images_are_searchable_and_bad_ones_reported(
    app, blob_service, index_of, vectorizer, wait_for
):
    host, container, work = app
    good = {"cats/tabby.jpg": 1, "dogs/corgi.png": 2, "birds/owl.gif": 3, "scans/page.tiff": 4}
    formats = {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF", ".tiff": "TIFF"}
    for path, seed in good.items():
        container.upload_blob(path, picture_bytes(seed, formats[Path(path).suffix]))
    corrupt = picture_bytes(5, "JPEG")
    container.upload_blob("bad/corrupt.jpg", corrupt[: len(corrupt) // 2])
    container.upload_blob("bad/notes.jpg", b"meeting notes, not a picture\n")
    container.upload_blob("bad/tiny.png", encode(Image.new("RGB", (9, 9)), "PNG"))
    listed = [*good, "bad/corrupt.jpg", "bad/notes.jpg", "bad/gone.jpg", "bad/tiny.png"]
    listed += ["../other/secret.jpg", "cats/tabby.jpg"]  # traversal, duplicate
    container.upload_blob("metadata.json", metadata(*listed))

    [first] = wait_for(lambda: finished_ingestions(host, 1), timeout=180)
    assert first["runtimeStatus"] == "Completed", first
    status = ingestion(host, first["instanceId"])
    output = status["output"]
    assert output["index"] == f"{container.container_name}-v"
    assert (output["entries"], output["indexed"], output["skipped"]) == (10, 4, 6)
    custom = status["customStatus"]
    assert (custom["phase"], custom["total"], custom["done"], custom["failed"]) == (
        "completed",
        10,
        10,
        6,
    )
    assert custom["partitions"] == 4  # 10 entries in partitions of 3

    report = read_report(blob_service, output)
    served = requests.get(
        f"{host.base_url}/api/ingestions/{first['instanceId']}/report", timeout=10
    )
    assert served.status_code == 200
    assert served.json() == report
    assert report["metadata"] == f"{container.container_name}/metadata.json"
    rows = [
        (r["index"], r["image_blob_path"], r["status"], r.get("code")) for r in report["results"]
    ]
    assert rows == [
        (0, "cats/tabby.jpg", "skipped", "duplicate"),
        (1, "dogs/corgi.png", "indexed", None),
        (2, "birds/owl.gif", "indexed", None),
        (3, "scans/page.tiff", "indexed", None),
        (4, "bad/corrupt.jpg", "skipped", "corrupt"),
        (5, "bad/notes.jpg", "skipped", "unsupported_type"),
        (6, "bad/gone.jpg", "skipped", "missing_blob"),
        (7, "bad/tiny.png", "skipped", "too_small"),
        (8, "../other/secret.jpg", "skipped", "invalid_path"),
        (9, "cats/tabby.jpg", "indexed", None),
    ]
    assert all(r["reason"] for r in report["results"] if r["status"] == "skipped")

    # Each good image finds itself first, searched by its own picture.
    index = index_of(container.container_name)
    for path, seed in good.items():
        query = vectorizer.vectorize_image(picture_bytes(seed, formats[Path(path).suffix]))
        [top, *_] = index.vector_search(query, top=3)
        assert top.filepath == path
        assert top.content == f"a photo of {path}"
        assert top.url.endswith(f"/{container.container_name}/{path}")
    assert index.ids_from_source(f"{container.container_name}/metadata.json") == {
        r["id"] for r in report["results"] if r["status"] == "indexed"
    }


def test_redrop_deletes_removed_entries_and_updates_descriptions(
    app, blob_service, index_of, wait_for
):
    host, container, _ = app
    paths = ["a.jpg", "b.png", "c.bmp"]
    for seed, path in enumerate(paths):
        container.upload_blob(
            path, picture_bytes(seed, {"jpg": "JPEG", "png": "PNG", "bmp": "BMP"}[path[-3:]])
        )
    container.upload_blob("metadata.json", metadata(*paths))
    [first] = wait_for(lambda: finished_ingestions(host, 1), timeout=180)
    assert ingestion(host, first["instanceId"])["output"]["indexed"] == 3
    index = index_of(container.container_name)
    source = f"{container.container_name}/metadata.json"
    ids = index.ids_from_source(source)
    assert len(ids) == 3
    before = index.get_states(sorted(ids))

    # c.bmp removed, b.png described anew: one deletion, one metadata update, no vectorizing.
    container.upload_blob(
        "metadata.json",
        metadata("a.jpg", "b.png", descriptions={"b.png": "a new caption"}),
        overwrite=True,
    )
    second = wait_for(lambda: latest_finished(host, 2), timeout=180)
    output = ingestion(host, second["instanceId"])["output"]
    assert (output["unchanged"], output["updated"], output["indexed"], output["deleted"]) == (
        1,
        1,
        0,
        1,
    )
    report = read_report(blob_service, output)
    assert [r["status"] for r in report["results"]] == ["unchanged", "updated"]
    after = index.get_states(sorted(ids))
    assert len(after) == 2
    b_id = report["results"][1]["id"]
    assert after[b_id].description == "a new caption"
    assert after[b_id].content_hash == before[b_id].content_hash
    [hit, *_] = index.text_search("new caption", top=1)
    assert hit.id == b_id

    # The same file dropped again: nothing new, and never a duplicate document.
    container.upload_blob(
        "metadata.json",
        metadata("a.jpg", "b.png", descriptions={"b.png": "a new caption"}),
        overwrite=True,
    )
    wait_for(lambda: "already ingested or in progress" in host.log_text(), timeout=30)
    assert len(index.ids_from_source(source)) == 2


def test_oversize_file_is_rejected_whole_with_a_report(app, blob_service, wait_for):
    host, container, _ = app
    container.upload_blob("metadata-big.json", metadata(*[f"img{i}.jpg" for i in range(10_001)]))
    [item] = wait_for(lambda: finished_ingestions(host, 1), timeout=120)
    status = ingestion(host, item["instanceId"])
    assert status["customStatus"]["phase"] == "rejected"
    output = status["output"]
    assert output["error"]["rule"] == "too_many_entries"
    report = read_report(blob_service, output)
    assert report["error"]["rule"] == "too_many_entries"
    assert "10,001" in report["error"]["message"]
    assert report["results"] == []


def test_same_bytes_start_nothing_and_changed_content_starts_again(app, wait_for):
    host, container, _ = app
    container.upload_blob("cats/tabby.jpg", picture_bytes(1))
    container.upload_blob("metadata.json", metadata("cats/tabby.jpg", "gone.jpg"))
    [first] = wait_for(lambda: finished_ingestions(host, 1), timeout=180)
    assert first["runtimeStatus"] == "Completed"

    # The same bytes again: a new ETag, a new trigger, but no new ingestion.
    container.upload_blob("metadata.json", metadata("cats/tabby.jpg", "gone.jpg"), overwrite=True)
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
    container.upload_blob("metadata.json", metadata("cats/tabby.jpg", "gone.jpg"), overwrite=True)

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
    for path, status in (("not-an-id/report", 400), (f"ingest-{'0' * 16}-{'1' * 16}/report", 404)):
        response = requests.get(f"{host.base_url}/api/ingestions/{path}", timeout=10)
        assert response.status_code == status
        assert response.json()["error"]["code"] in ("InvalidInstanceId", "NotFound")


@pytest.fixture
def gated_app(devhost, azurite, blob_service, unique_container, tmp_path):
    """Like ``app``, but devhost reaches Azurite through a gate that can hold requests."""
    gate = StorageGate(azurite.port)
    host = devhost(
        REPO,
        env={
            "AzureWebJobsStorage": gate.connection_string(AZURITE_ACCOUNT, AZURITE_KEY),
            "IMAGES_CONTAINER": unique_container,
            "WORK_CONTAINER": f"{unique_container}-work",
            "LOCAL_DATA_DIR": str(tmp_path / "data"),
            "INGEST_PARTITION_SIZE": "3",
        },
        state_dir=tmp_path / "state",
    )
    try:
        yield host, blob_service.get_container_client(unique_container), gate
    finally:
        gate.close()


def test_a_newer_version_stops_the_running_one(gated_app, index_of, wait_for):
    host, container, gate = gated_app
    paths = [f"set/{i:03d}.jpg" for i in range(90)]
    for seed, path in enumerate(paths):
        container.upload_blob(path, picture_bytes(seed, size=(64, 48)))
    # Every image read of the first version waits at the gate (but those the second version
    # lists), so that version is certainly still running when the second one arrives.
    kept = {f"/{container.container_name}/{p}" for p in paths[:2]}
    gate.hold(
        lambda method, path: (
            method == "GET"
            and "/set/" in path
            and not any(path.split("?")[0].endswith(k) for k in kept)
        )
    )
    container.upload_blob("metadata.json", metadata(*paths))
    wait_for(lambda: gate.waiting > 0, timeout=60, message="the first version reads images")
    [older] = ingestions(host)
    assert older["runtimeStatus"] == "Running"

    container.upload_blob("metadata.json", metadata(*paths[:2]), overwrite=True)
    wait_for(
        lambda: ingestion(host, older["instanceId"])["runtimeStatus"] == "Terminated",
        timeout=60,
        message="the first version is stopped",
    )
    gate.release()  # its reads that were waiting now finish, and must write nothing

    [newer, stopped] = wait_for(lambda: finished_ingestions(host, 2), timeout=180)
    assert stopped["instanceId"] == older["instanceId"]
    assert stopped["runtimeStatus"] == "Terminated"
    assert newer["runtimeStatus"] == "Completed"
    assert "stopped" in host.log_text() and "superseded" in host.log_text()
    # The index holds exactly what the newest file lists.
    index = index_of(container.container_name)
    source = f"{container.container_name}/metadata.json"
    assert index.ids_from_source(source) == {
        naming.document_id(container.container_name, p) for p in paths[:2]
    }
