"""The BlobStore adapter against a real Azurite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from imagerag.adapters.blob import AzureBlobStore
from imagerag.ports import BlobChangedError, BlobNotFoundError, InvalidBlobNameError


@pytest.fixture
def store(blob_service: BlobServiceClient) -> AzureBlobStore:
    return AzureBlobStore(service=blob_service)


# --------------------------------------------------------------------------- adapter


def test_round_trip(
    store: AzureBlobStore, blob_service: BlobServiceClient, unique_container: str
) -> None:
    etag = store.write(unique_container, "a/b.json", b'{"x": 1}', content_type="application/json")
    assert store.read(unique_container, "a/b.json") == b'{"x": 1}'
    assert store.read_versioned(unique_container, "a/b.json") == (b'{"x": 1}', etag)
    props = blob_service.get_blob_client(unique_container, "a/b.json").get_blob_properties()
    assert (props.size, props.content_settings.content_type) == (8, "application/json")


def test_write_overwrites(
    store: AzureBlobStore, blob_service: BlobServiceClient, unique_container: str
) -> None:
    first = store.write(unique_container, "x.bin", b"one", content_type="application/octet-stream")
    second = store.write(unique_container, "x.bin", b"two!", content_type="text/plain")
    assert first != second
    assert store.read(unique_container, "x.bin") == b"two!"
    props = blob_service.get_blob_client(unique_container, "x.bin").get_blob_properties()
    assert (props.size, props.content_settings.content_type) == (4, "text/plain")


def test_a_bounded_read_reads_at_most_its_bound_and_tells_the_size(
    store: AzureBlobStore, unique_container: str
) -> None:
    data = bytes(range(256)) * 4
    store.write(unique_container, "b.bin", data, content_type="application/octet-stream")
    assert store.read_bounded(unique_container, "b.bin", 10) == (data[:10], 1024)
    assert store.read_bounded(unique_container, "b.bin", 1024) == (data, 1024)
    assert store.read_bounded(unique_container, "b.bin", 5000) == (data, 1024)
    store.write(unique_container, "empty.bin", b"", content_type="application/octet-stream")
    assert store.read_bounded(unique_container, "empty.bin", 10) == (b"", 0)


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
    with pytest.raises(BlobNotFoundError, match="nope.png"):
        store.read(unique_container, "nope.png")
    with pytest.raises(BlobNotFoundError, match="nope.png"):
        store.read_bounded(unique_container, "nope.png", 10)


def test_missing_container(store: AzureBlobStore) -> None:
    name = f"missing{uuid.uuid4().hex[:8]}"
    with pytest.raises(BlobNotFoundError):
        store.read(name, "a.png")
    with pytest.raises(BlobNotFoundError):
        store.read_bounded(name, "a.png", 10)


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
        assert store.read_bounded(unique_container, path, 10) == (b"x", 1), path


def test_a_listing_page_matches_the_sdk_listing(
    store: AzureBlobStore, blob_service: BlobServiceClient, unique_container: str
) -> None:
    names = ["dir/sub dir/é ü.png", "a#b?c.png", "x%20y.png", "r&d <1>.json", "z\u00a0.png"]
    for n, name in enumerate(names):
        metadata = {"summary": f'{{"n": {n}, "text": "<&>\\"é"}}'} if n % 2 == 0 else None
        store.write(unique_container, name, b"x" * n, content_type="image/png", metadata=metadata)
    container = blob_service.get_container_client(unique_container)
    expected = [
        (b.name, b.size, b.etag, dict(b.metadata or {}))
        for b in container.list_blobs(include=["metadata"])
    ]
    listed, continuation = [], None
    while True:
        page = store.list_page(unique_container, size=2, continuation=continuation)
        assert len(page.blobs) <= 2
        listed += [(b.name, b.size, b.etag, b.metadata) for b in page.blobs]
        continuation = page.continuation
        if continuation is None:
            break
    assert listed == expected and len(listed) == len(names)
    only = store.list_page(unique_container, prefix="dir/", size=10)
    assert [b.name for b in only.blobs] == ["dir/sub dir/é ü.png"] and only.continuation is None


def test_a_listing_of_a_missing_container_is_empty_and_a_bad_name_is_refused(
    store: AzureBlobStore,
) -> None:
    page = store.list_page(f"missing{uuid.uuid4().hex[:8]}", size=5)
    assert (page.blobs, page.continuation) == ([], None)
    with pytest.raises(InvalidBlobNameError, match="Bad_Name"):
        store.list_page("Bad_Name", size=5)


def test_a_listing_page_through_a_sas_connection_string(
    blob_service: BlobServiceClient, store: AzureBlobStore, unique_container: str
) -> None:
    for name in ("a b.json", "c.json", "d.json"):
        store.write(unique_container, name, b"{}", content_type="application/json")
    key = blob_service.credential  # Azurite's well-known account key
    token = generate_account_sas(
        key.account_name,
        key.account_key,
        ResourceTypes(container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    with_sas = AzureBlobStore(
        service=BlobServiceClient.from_connection_string(
            f"BlobEndpoint={blob_service.url.rstrip('/')};SharedAccessSignature={token}"
        )
    )
    first = with_sas.list_page(unique_container, size=2)
    assert [b.name for b in first.blobs] == ["a b.json", "c.json"]
    rest = with_sas.list_page(unique_container, size=2, continuation=first.continuation)
    assert [b.name for b in rest.blobs] == ["d.json"] and rest.continuation is None
