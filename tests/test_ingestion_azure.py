"""Ingestion with the Azure adapters: devhost runs function_app.py against Azurite, the Azure AI
Vision stand-in and the Azure AI Search stand-in, which check every request's contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.search_service import FakeSearchService
from fakes.vision_service import FakeVisionService
from ingestion_driver import Driver
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
    return Driver(
        host, blob_service, unique_container, f"{unique_container}-work", tmp_path / "unused"
    )


def test_ingestion_through_azure_vision_and_search(app: Driver, services, unique_container):
    vision, search = services
    paths = ["a.jpg", "b.jpg", "c.jpg"]
    for seed, path in enumerate(paths):
        app.put_image(path, picture_bytes(seed))
    app.put_image("notes.jpg", b"not a picture")
    vision.fail_next(429, 2, retry_after="1")  # throttled first: retried after Retry-After
    items = [{"image_blob_path": p, "description": f"picture {p}"} for p in [*paths, "notes.jpg"]]
    app.put_metadata("metadata.json", json.dumps(items).encode())
    app.wait_idle()
    output = app.latest()
    assert output["phase"] == "completed", output
    counts = output["byStatus"]
    assert (counts["indexed"], counts["skipped"], counts["failed"]) == (3, 1, 0)
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
    app.put_metadata("metadata.json", json.dumps(items).encode())
    app.wait_idle()
    output = app.latest()
    counts = output["byStatus"]
    assert (counts["unchanged"], counts["updated"], output["deleted"]) == (1, 1, 1)
    assert vision.count(200) == calls
    assert sorted(d["filepath"] for d in documents.values()) == ["a.jpg", "b.jpg"]
    assert {d["description"] for d in documents.values()} == {"picture a.jpg", "b, described anew"}
    assert search.violations == []
