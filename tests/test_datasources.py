"""Data sources over HTTP, as the playground (or any client) uses them: the three kinds
registered and chatted with, a blob source in a second container kept in step, refusals."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
import requests
from chat_seed import path_of, seed_chat_index
from ingestion_driver import Driver, metadata, wait
from sample_images import altered_copy, picture_bytes

from imagerag import config
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.ports import ModelInfo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(devhost, blob_service, unique_container, tmp_path):
    second = f"s{uuid.uuid4().hex[:10]}"
    uploads = f"u{uuid.uuid4().hex[:10]}"
    blob_service.create_container(second)
    data = tmp_path / "data"
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": unique_container,
            "WORK_CONTAINER": f"{unique_container}-work",
            "LOCAL_DATA_DIR": str(data),
            "INGEST_PARTITION_SIZE": "3",
            "DEVHOST_EVENT_GRID_CONTAINERS": f"{unique_container},{second},{uploads}",
        },
        state_dir=tmp_path / "state",
    )
    host.work = f"{unique_container}-work"
    return host, second, uploads, data


def api(host, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{host.base_url}/api/{path}", timeout=60, **kwargs)


def chat(host, index: str, content) -> dict:
    body = {
        "messages": [{"role": "user", "content": content}],
        "data_sources": [{"type": "azure_search", "parameters": {"index_name": index}}],
    }
    response = api(host, "POST", "chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["context"]


def image_content(data: bytes) -> list[dict]:
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    return [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]


def ready(host, name: str) -> dict | None:
    source = api(host, "GET", f"datasources/{name}").json()
    return source if source["state"] == "ready" and source["last_ingestion"] else None


def test_a_blob_source_in_another_container_follows_its_metadata_files(app, blob_service) -> None:
    host, second, _, data = app
    container = blob_service.get_container_client(second)
    for i in range(3):
        container.upload_blob(f"p/{i}.jpg", picture_bytes(i))
    container.upload_blob("metadata.json", metadata("p/0.jpg", "p/1.jpg"))

    created = api(
        host, "POST", "datasources", json={"name": "second", "kind": "blob"} | {"container": second}
    )
    assert created.status_code == 201, created.text
    assert created.json()["index"] == "second-v"
    assert created.json()["ingestion"].startswith("ingest-")
    source = wait(lambda: ready(host, "second"), 120, "the first ingestion")
    assert source["last_ingestion"]["byStatus"]["indexed"] == 2

    driver = Driver(host, blob_service, second, host.work, data)
    driver.requests = driver.state()["requested"]
    context = chat(host, "second-v", image_content(altered_copy(picture_bytes(1))))
    assert context["citations"][0]["filepath"] == "p/1.jpg"

    # Added, changed and deleted metadata files there are followed.
    driver.put_metadata("metadata-more.json", metadata("p/2.jpg"))
    driver.wait_idle()
    assert _indexed(driver) == {"p/0.jpg", "p/1.jpg", "p/2.jpg"}
    driver.put_metadata("metadata.json", metadata("p/0.jpg"))
    driver.wait_idle()
    assert _indexed(driver) == {"p/0.jpg", "p/2.jpg"}
    driver.delete_metadata("metadata-more.json")
    driver.wait_idle()
    assert _indexed(driver) == {"p/0.jpg"}

    listed = api(host, "GET", "datasources").json()["value"]
    assert [s["name"] for s in listed][1:] == ["second"]
    assert listed[0]["builtin"] is True


def _indexed(driver: Driver) -> set[str]:
    """The paths (of the driver's container) that the source's index holds."""
    ids = {s.id for s in driver.index_named("second-v").all_states()}
    return {p for p in ("p/0.jpg", "p/1.jpg", "p/2.jpg") if driver.doc_id(p) in ids}


def test_an_upload_stores_only_the_good_files_and_says_why(app, blob_service) -> None:
    host, _, uploads, _ = app
    created = api(
        host, "POST", "datasources", json={"name": "pets", "kind": "upload", "container": uploads}
    )
    assert created.status_code == 201, created.text
    described = [
        {"image_blob_path": "cat.jpg", "description": "a sleepy cat"},
        {"image_blob_path": "notes.jpg", "description": "not a picture"},
    ]
    response = api(
        host,
        "POST",
        "datasources/pets/files",
        files=[
            ("file", ("cat.jpg", picture_bytes(3), "image/jpeg")),
            ("file", ("notes.jpg", b"meeting notes", "image/jpeg")),
            ("metadata", ("metadata.json", json.dumps(described), "application/json")),
        ],
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == ["cat.jpg"]
    assert answer["refused"] == [
        {
            "file": "notes.jpg",
            "code": "unsupported_type",
            "reason": answer["refused"][0]["reason"],
        }
    ]
    assert "text file" in answer["refused"][0]["reason"]
    stored = [b.name for b in blob_service.get_container_client(uploads).list_blobs()]
    assert "cat.jpg" in stored and "notes.jpg" not in stored
    wait(lambda: ready(host, "pets"), 120, "the upload's ingestion")
    run = api(host, "GET", f"ingestions/{answer['ingestion']}").json()
    assert (run["phase"], run["byStatus"]["indexed"]) == ("completed", 1)
    context = chat(host, "pets-v", image_content(altered_copy(picture_bytes(3))))
    assert context["citations"][0]["content"] == "a sleepy cat"

    # Removed with its index and what was uploaded: chat then finds no such index.
    removed = api(host, "DELETE", "datasources/pets?delete_index=true")
    assert removed.json() == {
        "name": "pets",
        "deleted": True,
        "index_deleted": True,
        "blobs_deleted": removed.json()["blobs_deleted"],
    }
    assert api(host, "GET", "datasources/pets").status_code == 404
    gone = api(
        host,
        "POST",
        "chat/completions",
        json={
            "messages": [{"role": "user", "content": "cat"}],
            "data_sources": [{"type": "azure_search", "parameters": {"index_name": "pets-v"}}],
        },
    )
    assert gone.status_code == 404


def test_an_existing_index_is_checked_and_its_mapping_used_in_chat(app, azurite, tmp_path) -> None:
    host, _, _, data = app
    seeded = seed_chat_index(azurite.connection_string, data)
    body = {"name": "made-elsewhere", "kind": "search_index", "index_name": seeded.index}
    created = api(host, "POST", "datasources", json=body)
    assert created.status_code == 201, created.text
    context = chat(host, seeded.index, image_content(altered_copy(seeded.originals[2])))
    assert context["citations"][0]["filepath"] == path_of(2)

    # A vector field of other dimensions is refused, naming the field and both sizes.
    small = LocalImageIndex(directory=data / "index", name="small-v")
    small.ensure(ModelInfo("other-model", "1", 16, False))
    refused = api(
        host,
        "POST",
        "datasources",
        json={"name": "small", "kind": "search_index", "index_name": "small-v"},
    )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "fields_mapping.image_vector_fields"
    assert "'image_vector'" in error["message"] and "16" in error["message"]
    dims = config.vectorizer(config.Settings(local_data_dir=data)).model.dimensions
    assert str(dims) in error["message"]
    missing = api(
        host,
        "POST",
        "datasources",
        json={"name": "nope", "kind": "search_index", "index_name": "nope-v"},
    )
    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "index_name")


def test_names_are_unique_and_checked(app) -> None:
    host, second, _, _ = app
    body = {"name": "twice", "kind": "blob", "container": second}
    assert api(host, "POST", "datasources", json=body).status_code == 201
    again = api(host, "POST", "datasources", json=body | {"container": second})
    assert again.status_code == 409
    for bad, field in (
        ({"name": "Bad Name", "kind": "blob", "container": second}, "name"),
        ({"name": "ok-name", "kind": "ftp"}, "kind"),
        ({"name": "ok-name", "kind": "blob", "container": "no-such-container"}, "container"),
        ({"name": "ok-name", "kind": "blob", "container": "X"}, "container"),
    ):
        response = api(host, "POST", "datasources", json=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["param"] == field
