"""The session Azurite answers the Blob API the app uses, through the well-known account."""

from __future__ import annotations

from azure.storage.blob import BlobServiceClient


def test_blob_round_trip(blob_service: BlobServiceClient, unique_container: str) -> None:
    container = blob_service.get_container_client(unique_container)
    container.upload_blob("metadata.json", b'[{"image_blob_path": "a.png", "description": "a"}]')

    assert [b.name for b in container.list_blobs()] == ["metadata.json"]
    data = container.download_blob("metadata.json").readall()
    assert data == b'[{"image_blob_path": "a.png", "description": "a"}]'


def test_connection_string_targets_the_session_emulator(azurite, blob_service) -> None:
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"
    assert f"BlobEndpoint={azurite.blob_endpoint};" in azurite.connection_string
    assert blob_service.url.rstrip("/") == azurite.blob_endpoint
    assert blob_service.get_account_information()["account_kind"]
