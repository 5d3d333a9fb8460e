"""BlobStore adapter and settings against a real Azurite; the ingestion steps over it."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from imagerag import config, ingestion, manifest
from imagerag.adapters.blob import AzureBlobStore
from imagerag.config import Settings
from imagerag.ports import BlobChangedError, BlobNotFoundError, InvalidBlobNameError


@pytest.fixture
def store(blob_service: BlobServiceClient) -> AzureBlobStore:
    return AzureBlobStore(service=blob_service)


# --------------------------------------------------------------------------- adapter


def test_round_trip(store: AzureBlobStore, unique_container: str) -> None:
    etag = store.write(unique_container, "a/b.json", b'{"x": 1}', content_type="application/json")
    assert store.read(unique_container, "a/b.json") == b'{"x": 1}'
    props = store.properties(unique_container, "a/b.json")
    assert props is not None
    assert (props.size, props.etag, props.content_type) == (8, etag, "application/json")


def test_write_overwrites(store: AzureBlobStore, unique_container: str) -> None:
    first = store.write(unique_container, "x.bin", b"one", content_type="application/octet-stream")
    second = store.write(unique_container, "x.bin", b"two!", content_type="text/plain")
    assert first != second
    assert store.read(unique_container, "x.bin") == b"two!"
    props = store.properties(unique_container, "x.bin")
    assert props is not None and (props.size, props.content_type) == (4, "text/plain")


def test_read_with_current_etag(store: AzureBlobStore, unique_container: str) -> None:
    etag = store.write(unique_container, "m.json", b"[]", content_type="application/json")
    assert store.read(unique_container, "m.json", etag=etag) == b"[]"


def test_read_with_stale_etag_raises(store: AzureBlobStore, unique_container: str) -> None:
    old = store.write(unique_container, "m.json", b"[]", content_type="application/json")
    store.write(unique_container, "m.json", b"[1]", content_type="application/json")
    with pytest.raises(BlobChangedError, match="no longer has ETag") as info:
        store.read(unique_container, "m.json", etag=old)
    assert info.value.etag == old


def test_missing_blob(store: AzureBlobStore, unique_container: str) -> None:
    assert store.properties(unique_container, "nope.png") is None
    with pytest.raises(BlobNotFoundError, match="nope.png"):
        store.read(unique_container, "nope.png")


def test_missing_container(store: AzureBlobStore) -> None:
    name = f"missing{uuid.uuid4().hex[:8]}"
    assert store.properties(name, "a.png") is None
    with pytest.raises(BlobNotFoundError):
        store.read(name, "a.png")


def test_ensure_container_is_idempotent(
    store: AzureBlobStore, blob_service: BlobServiceClient
) -> None:
    name = f"w{uuid.uuid4().hex[:12]}"
    store.ensure_container(name)
    store.ensure_container(name)
    assert blob_service.get_container_client(name).exists()


def test_invalid_container_name_is_a_domain_error(store: AzureBlobStore) -> None:
    with pytest.raises(InvalidBlobNameError, match="Bad_Name: InvalidResourceName"):
        store.ensure_container("Bad_Name")


def test_unusual_blob_names(store: AzureBlobStore, unique_container: str) -> None:
    for path in ["dir/sub dir/é ü.png", "a#b?c.png", "x%20y.png"]:
        store.write(unique_container, path, b"x", content_type="image/png")
        props = store.properties(unique_container, path)
        assert props is not None and props.size == 1, path


# --------------------------------------------------------------------------- settings


def test_settings_defaults_with_a_connection_string() -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountKey=k"})
    assert (s.images_container, s.work_container, s.partition_size) == (
        "images",
        "imagerag-work",
        100,
    )
    assert s.storage_blob_service_uri is None
    assert "AccountKey" not in repr(s)


def test_development_storage_reaches_local_azurite() -> None:
    s = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert s.storage_connection_string == "UseDevelopmentStorage=true"
    client = BlobServiceClient.from_connection_string(s.storage_connection_string)
    assert client.url == "http://127.0.0.1:10000/devstoreaccount1/"


def test_identity_based_connection() -> None:
    s = Settings.from_env(
        {
            "AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
            "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
            "IMAGES_CONTAINER": "photos",
            "WORK_CONTAINER": "photos-work",
            "INGEST_PARTITION_SIZE": "50",
        }
    )
    assert s.storage_connection_string is None
    assert s.storage_blob_service_uri == "https://acct.blob.core.windows.net"
    assert s.storage_client_id == "00000000-0000-0000-0000-000000000001"
    assert (s.images_container, s.work_container, s.partition_size) == ("photos", "photos-work", 50)


def test_account_name_is_enough_for_identity() -> None:
    s = Settings.from_env({"AzureWebJobsStorage__accountName": "acct"})
    assert s.storage_blob_service_uri == "https://acct.blob.core.windows.net"


def test_missing_storage_names_the_settings() -> None:
    with pytest.raises(ValueError) as info:
        Settings.from_env({"AzureWebJobsStorage": "  "})
    message = str(info.value)
    assert "AzureWebJobsStorage" in message
    assert "AzureWebJobsStorage__blobServiceUri" in message


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"INGEST_PARTITION_SIZE": "0"}, "INGEST_PARTITION_SIZE"),
        ({"INGEST_PARTITION_SIZE": "ten"}, "INGEST_PARTITION_SIZE"),
        ({"INGEST_PARTITION_SIZE": "5000"}, "INGEST_PARTITION_SIZE"),
        ({"IMAGES_CONTAINER": "Images"}, "IMAGES_CONTAINER"),
        ({"WORK_CONTAINER": "a"}, "WORK_CONTAINER"),
        ({"WORK_CONTAINER": "images"}, "must differ"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **env})


def test_blob_store_factory_is_cached_and_reaches_azurite(azurite, unique_container: str) -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": azurite.connection_string})
    store = config.blob_store(settings)
    assert config.blob_store(settings) is store
    store.write(unique_container, "hello.txt", b"hi", content_type="text/plain")
    assert store.read(unique_container, "hello.txt") == b"hi"


# --------------------------------------------------------------------------- ingestion steps


def _upload_metadata(store: AzureBlobStore, container: str, items: list[object]) -> str:
    data = json.dumps(items).encode()
    store.write(container, "metadata.json", data, content_type="application/json")
    return hashlib.sha256(data).hexdigest()


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

    plan = ingestion.plan_ingestion(
        store,
        container=unique_container,
        blob_path="metadata.json",
        sha256=sha,
        instance_id=instance_id,
        work_container=work_container,
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
    plan = ingestion.plan_ingestion(
        store,
        container=unique_container,
        blob_path="metadata.json",
        sha256=sha,
        instance_id="ingest-" + "0" * 32,
        work_container="unused-work",
        partition_size=100,
    )
    assert plan["error"]["code"] == "MetadataChanged"
    assert plan["error"]["message"] == "metadata changed while ingesting"
    assert "partitions" not in plan


def test_plan_rejects_an_invalid_file(store: AzureBlobStore, unique_container: str) -> None:
    data = b'{"image_blob_path": "a.png"}'
    store.write(unique_container, "metadata.json", data, content_type="application/json")
    plan = ingestion.plan_ingestion(
        store,
        container=unique_container,
        blob_path="metadata.json",
        sha256=hashlib.sha256(data).hexdigest(),
        instance_id="ingest-" + "0" * 32,
        work_container="unused-work",
        partition_size=100,
    )
    assert plan["error"]["code"] == "InvalidManifest"
    assert plan["error"]["rule"] == "shape"
    assert "JSON array" in plan["error"]["message"]


def test_plan_reports_a_deleted_file(store: AzureBlobStore, unique_container: str) -> None:
    plan = ingestion.plan_ingestion(
        store,
        container=unique_container,
        blob_path="metadata.json",
        sha256="0" * 64,
        instance_id="ingest-" + "0" * 32,
        work_container="unused-work",
        partition_size=100,
    )
    assert plan["error"]["code"] == "MetadataNotFound"


def test_empty_file_plans_no_partitions(store: AzureBlobStore, unique_container: str) -> None:
    sha = _upload_metadata(store, unique_container, [])
    work_container = f"w{uuid.uuid4().hex[:12]}"
    plan = ingestion.plan_ingestion(
        store,
        container=unique_container,
        blob_path="metadata.json",
        sha256=sha,
        instance_id="ingest-" + "1" * 32,
        work_container=work_container,
        partition_size=100,
    )
    assert (plan["entries"], plan["partitions"]) == (0, 0)
    report = ingestion.write_report(
        store, work=plan["work"], metadata=plan["metadata"], sha256=sha, partitions=0
    )
    assert report["entries"] == 0
