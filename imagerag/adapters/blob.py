"""BlobStore on azure-storage-blob (Azure Storage in production, Azurite locally)."""

from __future__ import annotations

import logging

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings

from imagerag.ports import (
    BlobChangedError,
    BlobNotFoundError,
    BlobProperties,
    InvalidBlobNameError,
)

logger = logging.getLogger(__name__)


class AzureBlobStore:
    """imagerag.ports.BlobStore over one BlobServiceClient (thread-safe, shared per process)."""

    def __init__(self, *, service: BlobServiceClient) -> None:
        self._service = service

    def read(self, container: str, path: str, *, etag: str | None = None) -> bytes:
        blob = self._service.get_blob_client(container, path)
        try:
            if etag is None:
                downloader = blob.download_blob()
            else:
                # The condition is sent with every ranged GET, so a blob overwritten
                # half-way through a large download fails instead of mixing versions.
                downloader = blob.download_blob(
                    etag=etag, match_condition=MatchConditions.IfNotModified
                )
            return downloader.readall()
        except ResourceNotFoundError as exc:
            raise BlobNotFoundError(container, path) from exc
        except ResourceModifiedError as exc:
            raise BlobChangedError(container, path, etag or "") from exc
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, path)
            raise

    def write(self, container: str, path: str, data: bytes, *, content_type: str) -> str:
        blob = self._service.get_blob_client(container, path)
        try:
            result = blob.upload_blob(
                data,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
            )
        except ResourceNotFoundError as exc:
            raise BlobNotFoundError(container, path) from exc
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, path)
            raise
        return str(result["etag"])

    def properties(self, container: str, path: str) -> BlobProperties | None:
        blob = self._service.get_blob_client(container, path)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, path)
            raise
        return BlobProperties(
            size=int(props.size),
            etag=str(props.etag),
            content_type=props.content_settings.content_type,
        )

    def url(self, container: str, path: str) -> str:
        return str(self._service.get_blob_client(container, path).url)

    def ensure_container(self, container: str) -> None:
        try:
            self._service.create_container(container)
            logger.info("created container %s", container)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, "")
            raise


def _raise_if_bad_request(exc: HttpResponseError, container: str, path: str) -> None:
    # 400 means the request itself is wrong (bad name, too long): retrying cannot help, so
    # it becomes a domain error; anything else (5xx, 429, 403) stays as the SDK raised it.
    if exc.status_code == 400:
        # The storage SDK adds error_code (e.g. InvalidResourceName); azure-core does not.
        code = getattr(exc, "error_code", None) or exc.reason
        name = f"{container}/{path}" if path else container
        raise InvalidBlobNameError(
            f"storage rejected the name {name}: {getattr(code, 'value', code)}"
        ) from exc
