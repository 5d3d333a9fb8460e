"""The ingestion steps (what the activities run) over a real Azurite."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from imagerag import ingestion, manifest
from imagerag.adapters.blob import AzureBlobStore


@pytest.fixture
def store(blob_service: BlobServiceClient) -> AzureBlobStore:
    return AzureBlobStore(service=blob_service)


def _upload_metadata(store: AzureBlobStore, container: str, items: list[object]) -> str:
    data = json.dumps(items).encode()
    store.write(container, "metadata.json", data, content_type="application/json")
    return hashlib.sha256(data).hexdigest()


def _plan(
    store: AzureBlobStore,
    container: str,
    sha256: str,
    *,
    work_container: str = "unused-work",
    instance_id: str = "ingest-" + "0" * 32,
    partition_size: int = 100,
) -> ingestion.Plan:
    """Plan the ingestion of ``<container>/metadata.json``."""
    return ingestion.plan_ingestion(
        store,
        container=container,
        blob_path="metadata.json",
        sha256=sha256,
        instance_id=instance_id,
        work_container=work_container,
        partition_size=partition_size,
    )


def test_ingestion_steps_end_to_end(store: AzureBlobStore, unique_container: str) -> None:
    work_container = f"w{uuid.uuid4().hex[:12]}"
    store.write(unique_container, "a.png", b"A" * 10, content_type="image/png")
    store.write(unique_container, "dir/b.png", b"B" * 20, content_type="image/png")
    sha = _upload_metadata(
        store,
        unique_container,
        [
            {"image_blob_path": "a.png", "description": "a"},
            {"image_blob_path": "dir/b.png", "description": "b"},
            {"image_blob_path": "gone.png", "description": "missing"},
            {"image_blob_path": 7, "description": "bad"},
            {"image_blob_path": "a.png", "description": "a again"},
        ],
    )
    instance_id = manifest.ingestion_instance_id(unique_container, "metadata.json", sha)

    plan = _plan(
        store,
        unique_container,
        sha,
        work_container=work_container,
        instance_id=instance_id,
        partition_size=2,
    )
    assert plan == {
        "metadata": f"{unique_container}/metadata.json",
        "entries": 5,
        "partitions": 3,
        "problems": 2,
        "work": {"container": work_container, "prefix": instance_id},
    }
    work = plan["work"]

    counts = []
    for i in range(plan["partitions"]):
        entries = ingestion.read_partition(store, work=work, partition=i)
        assert all(e["container"] == unique_container for e in entries)
        results = [ingestion.record_entry(store, e) for e in entries]
        counts.append(
            ingestion.write_partition_report(store, work=work, partition=i, results=results)
        )
    assert [c["entries"] for c in counts] == [2, 2, 1]

    report_ref = ingestion.write_report(
        store, work=work, metadata=plan["metadata"], sha256=sha, partitions=plan["partitions"]
    )
    assert report_ref == {
        "container": work_container,
        "path": f"{instance_id}/report.json",
        "entries": 5,
        "recorded": 2,
        "missing": 1,
        "invalid": 2,
    }
    report = json.loads(store.read(work_container, f"{instance_id}/report.json"))
    assert report["metadata"] == f"{unique_container}/metadata.json"
    assert report["entries"] == 5
    rows = [(r["index"], r["image_blob_path"], r["status"], r["size"]) for r in report["results"]]
    assert rows == [
        (0, "a.png", "invalid", None),  # superseded by index 4
        (1, "dir/b.png", "recorded", 20),
        (2, "gone.png", "missing", None),
        (3, None, "invalid", None),
        (4, "a.png", "recorded", 10),
    ]
    by_index = {r["index"]: r for r in report["results"]}
    assert by_index[4]["id"] == manifest.document_id(unique_container, "a.png")
    assert "last entry wins" in by_index[0]["reason"]
    assert "must be a string" in by_index[3]["reason"]
    assert by_index[3]["id"] is None


def test_plan_rejects_a_changed_file(store: AzureBlobStore, unique_container: str) -> None:
    sha = _upload_metadata(store, unique_container, [])
    _upload_metadata(store, unique_container, [{"image_blob_path": "a", "description": ""}])
    plan = _plan(store, unique_container, sha)
    assert plan["error"]["code"] == "MetadataChanged"
    assert plan["error"]["message"] == "metadata changed while ingesting"
    assert "partitions" not in plan


def test_plan_rejects_an_invalid_file(store: AzureBlobStore, unique_container: str) -> None:
    data = b'{"image_blob_path": "a.png"}'
    store.write(unique_container, "metadata.json", data, content_type="application/json")
    plan = _plan(store, unique_container, hashlib.sha256(data).hexdigest())
    assert plan["error"]["code"] == "InvalidManifest"
    assert plan["error"]["rule"] == "shape"
    assert "JSON array" in plan["error"]["message"]


def test_plan_reports_a_deleted_file(store: AzureBlobStore, unique_container: str) -> None:
    plan = _plan(store, unique_container, "0" * 64)
    assert plan["error"]["code"] == "MetadataNotFound"


def test_empty_file_plans_no_partitions(store: AzureBlobStore, unique_container: str) -> None:
    sha = _upload_metadata(store, unique_container, [])
    work_container = f"w{uuid.uuid4().hex[:12]}"
    plan = _plan(
        store,
        unique_container,
        sha,
        work_container=work_container,
        instance_id="ingest-" + "1" * 32,
    )
    assert (plan["entries"], plan["partitions"]) == (0, 0)
    report = ingestion.write_report(
        store, work=plan["work"], metadata=plan["metadata"], sha256=sha, partitions=0
    )
    assert report["entries"] == 0
