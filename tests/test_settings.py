"""Settings from the environment, and the adapter factory."""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient

from imagerag import config
from imagerag.config import Settings


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
        ({"LOCAL_INDEX_GRAPH_FROM_ROWS": "0"}, "LOCAL_INDEX_GRAPH_FROM_ROWS"),
        ({"LOCAL_INDEX_GRAPH_FROM_ROWS": "20k"}, "LOCAL_INDEX_GRAPH_FROM_ROWS"),
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
