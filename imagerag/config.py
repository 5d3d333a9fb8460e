"""Settings from the environment, and the ONE place that builds adapters.

Nothing here runs at import time: functions call ``Settings.from_env()`` and the factories
below when they first need a client, so importing function_app never touches the network.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imagerag.ports import BlobStore

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

STORAGE_SETTING = "AzureWebJobsStorage"
STORAGE_BLOB_URI_SETTING = "AzureWebJobsStorage__blobServiceUri"
STORAGE_ACCOUNT_NAME_SETTING = "AzureWebJobsStorage__accountName"
STORAGE_CLIENT_ID_SETTING = "AzureWebJobsStorage__clientId"
STORAGE_CREDENTIAL_SETTING = "AzureWebJobsStorage__credential"

DEFAULT_IMAGES_CONTAINER = "images"
DEFAULT_WORK_CONTAINER = "imagerag-work"
DEFAULT_PARTITION_SIZE = 100

# Understood by azure-storage-blob itself: Azurite on 127.0.0.1:10000 (devstoreaccount1).
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"

# Azure container naming rules: 3-63 chars, lowercase letters, digits, single dashes inside.
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")
_MAX_PARTITION_SIZE = 1000


@dataclass(frozen=True, kw_only=True)
class Settings:
    images_container: str = DEFAULT_IMAGES_CONTAINER
    work_container: str = DEFAULT_WORK_CONTAINER
    partition_size: int = DEFAULT_PARTITION_SIZE
    # Either a connection string (may hold an account key: kept out of repr) ...
    storage_connection_string: str | None = field(default=None, repr=False)
    # ... or an identity-based connection.
    storage_blob_service_uri: str | None = None
    storage_client_id: str | None = None
    storage_credential: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        images_container = get("IMAGES_CONTAINER") or DEFAULT_IMAGES_CONTAINER
        work_container = get("WORK_CONTAINER") or DEFAULT_WORK_CONTAINER
        for name, value in (
            ("IMAGES_CONTAINER", images_container),
            ("WORK_CONTAINER", work_container),
        ):
            if not _CONTAINER_NAME.match(value):
                raise ValueError(
                    f"{name}={value!r} is not a valid container name "
                    "(3-63 lowercase letters, digits and single dashes)"
                )
        if images_container == work_container:
            raise ValueError("IMAGES_CONTAINER and WORK_CONTAINER must differ")

        partition_size = _positive_int(
            get("INGEST_PARTITION_SIZE"), "INGEST_PARTITION_SIZE", DEFAULT_PARTITION_SIZE
        )

        connection_string = get(STORAGE_SETTING)
        blob_uri = get(STORAGE_BLOB_URI_SETTING)
        if connection_string is None and blob_uri is None:
            account = get(STORAGE_ACCOUNT_NAME_SETTING)
            if account is not None:
                blob_uri = f"https://{account}.blob.core.windows.net"
        if connection_string is None and blob_uri is None:
            raise ValueError(
                f"no blob storage configured: set {STORAGE_SETTING} (a connection string, or "
                f"{DEVELOPMENT_STORAGE} for Azurite) or {STORAGE_BLOB_URI_SETTING} "
                f"(identity-based, optionally with {STORAGE_CLIENT_ID_SETTING})"
            )
        return cls(
            images_container=images_container,
            work_container=work_container,
            partition_size=partition_size,
            storage_connection_string=connection_string,
            storage_blob_service_uri=None if connection_string else blob_uri,
            storage_client_id=get(STORAGE_CLIENT_ID_SETTING),
            storage_credential=get(STORAGE_CREDENTIAL_SETTING),
        )


def _positive_int(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be an integer") from None
    if not 1 <= value <= _MAX_PARTITION_SIZE:
        raise ValueError(f"{name}={value} must be between 1 and {_MAX_PARTITION_SIZE}")
    return value


@functools.lru_cache(maxsize=8)
def blob_store(settings: Settings) -> BlobStore:
    """The process-wide BlobStore for these settings (clients are thread-safe and pool
    connections, so one per process, built on first use)."""
    from azure.storage.blob import BlobServiceClient

    from imagerag.adapters.blob import AzureBlobStore

    if settings.storage_connection_string is not None:
        service = BlobServiceClient.from_connection_string(settings.storage_connection_string)
    else:
        assert settings.storage_blob_service_uri is not None  # from_env guarantees one of both
        service = BlobServiceClient(
            account_url=settings.storage_blob_service_uri,
            credential=_storage_credential(settings),
        )
    return AzureBlobStore(service=service)


def _storage_credential(settings: Settings) -> TokenCredential:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    # Same meaning as the Functions host gives these settings: "managedidentity" pins the
    # managed identity (user-assigned when a client id is given); otherwise the default chain,
    # so a developer's `az login` works too.
    if (settings.storage_credential or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    return DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
