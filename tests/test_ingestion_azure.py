"""Ingestion with the Azure adapters: devhost runs function_app.py against Azurite, the Azure AI
Vision stand-in and the Azure AI Search stand-in, which check every request's contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from fakes.search_service import FakeSearchService
from fakes.vision_service import FakeVisionService
from sample_images import picture_bytes

REPO = Path(__file__).resolve().parent.parent
VISION_KEY = "vision-test-key"
SEARCH_KEY = "search-test-key"


@pytest.fixture
def services():
    with (
        FakeVisionService(key=VISION_KEY) as vision,
        FakeSearchService(api_key=SEARCH_KEY) as search,
    ):
        yield vision, search


@pytest.fixture
def app(devhost, blob_service, unique_container, services, tmp_path):
    vision, search = services
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": unique_container,
            "WORK_CONTAINER": f"{unique_container}-work",
            "AZURE_VISION_ENDPOINT": vision.endpoint,
            "AZURE_VISION_KEY": VISION_KEY,
            "AZURE_SEARCH_ENDPOINT": search.endpoint,
            "AZURE_SEARCH_KEY": SEARCH_KEY,
            # The Search stand-in serves TLS with its own throwaway certificate.
            "REQUESTS_CA_BUNDLE": search.ca_file,
            "LOCAL_DATA_DIR": str(tmp_path / "unused"),
        },
        state_dir=tmp_path / "state",
    )
    return host, blob_service.get_container_client(unique_container)


def finished(host, count: int) -> list[dict] | None:
    found = requests.get(f"{host.base_url}/api/ingestions", timeout=10).json()["value"]
    done = [i for i in found if i["runtimeStatus"] not in ("Pending", "Running")]
    return found if len(found) == count == len(done) else None


def output_of(host, instance_id: str) -> dict:
    return requests.get(f"{host.base_url}/api/ingestions/{instance_id}", timeout=10).json()[
        "output"
    ]


def test_ingestion_through_azure_vision_and_search(app, services, unique_container, wait_for):
    host, container = app
    vision, search = services
    paths = ["a.jpg", "b.jpg", "c.jpg"]
    for seed, path in enumerate(paths):
        container.upload_blob(path, picture_bytes(seed))
    container.upload_blob("notes.jpg", b"not a picture")
    vision.fail_next(429, 2, retry_after="1")  # throttled first: retried after Retry-After
    items = [{"image_blob_path": p, "description": f"picture {p}"} for p in [*paths, "notes.jpg"]]
    container.upload_blob("metadata.json", json.dumps(items).encode())

    [first] = wait_for(lambda: finished(host, 1), timeout=180)
    assert first["runtimeStatus"] == "Completed", first
    output = output_of(host, first["instanceId"])
    assert (output["indexed"], output["skipped"], output["failed"]) == (3, 1, 0)
    assert vision.violations == [] and search.violations == []
    assert vision.count(429) == 2
    assert vision.count(200) == 3  # the text file never reached the service

    index = search.indexes[f"{unique_container}-v"]
    fields = index.fields
    assert fields["id"]["key"] is True
    assert fields["image_vector"]["dimensions"] == 1024
    assert "2023-04-15" in fields["image_vector"]["vectorSearchProfile"]
    # Attributes declared, not left to the service's defaults (true for every string field).
    assert {n for n, f in fields.items() if f["searchable"]} == {
        "description",
        "title",
        "image_vector",
    }
    assert not any(f["facetable"] for f in fields.values())
    [algorithm] = index.definition["vectorSearch"]["algorithms"]
    assert algorithm["kind"] == "hnsw"
    assert algorithm["hnswParameters"]["metric"] == "cosine"
    documents = index.documents
    assert sorted(d["filepath"] for d in documents.values()) == paths
    assert {d["model_version"] for d in documents.values()} == {"2023-04-15"}
    assert {d["source"] for d in documents.values()} == {f"{unique_container}/metadata.json"}

    # Re-dropped with c removed and b re-described: no image goes to Vision again.
    calls = vision.count(200)
    items = [{"image_blob_path": "a.jpg", "description": "picture a.jpg"}]
    items.append({"image_blob_path": "b.jpg", "description": "b, described anew"})
    container.upload_blob("metadata.json", json.dumps(items).encode(), overwrite=True)
    second = wait_for(lambda: finished(host, 2), timeout=180)[0]
    output = output_of(host, second["instanceId"])
    assert (output["unchanged"], output["updated"], output["deleted"]) == (1, 1, 1)
    assert vision.count(200) == calls
    assert sorted(d["filepath"] for d in documents.values()) == ["a.jpg", "b.jpg"]
    assert {d["description"] for d in documents.values()} == {"picture a.jpg", "b, described anew"}
    assert search.violations == []
