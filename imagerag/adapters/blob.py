"""BlobStore on azure-storage-blob (Azure Storage in production, Azurite locally)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote

import defusedxml.ElementTree as DefusedET
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.storage.blob import (
    BlobPrefix,
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    UserDelegationKey,
    generate_blob_sas,
)
from azure.storage.blob import BlobProperties as SdkBlobProperties

from imagerag.cited_images import HEAD_BYTES, type_from_head
from imagerag.ports import (
    BlobChangedError,
    BlobInfo,
    BlobNotFoundError,
    BlobPage,
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

    def read_bounded(self, container: str, path: str, max_bytes: int) -> tuple[bytes, int]:
        blob = self._service.get_blob_client(container, path)
        try:
            # A ranged GET (one request up to the SDK's single-request size, 32 MiB); its
            # Content-Range carries the blob's whole size.
            downloader = blob.download_blob(offset=0, length=max_bytes)
            data = downloader.readall()
        except ResourceNotFoundError as exc:
            raise BlobNotFoundError(container, path) from exc
        except HttpResponseError as exc:
            if exc.status_code == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
                return b"", 0  # a range from offset 0 is unsatisfiable only for an empty blob
            _raise_if_bad_request(exc, container, path)
            raise
        content_range = str(downloader.properties.content_range)  # "bytes 0-N/SIZE"
        return data, int(content_range.rpartition("/")[2])

    def write(
        self,
        container: str,
        path: str,
        data: bytes,
        *,
        content_type: str,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> str:
        blob = self._service.get_blob_client(container, path)
        conditions: dict[str, Any] = {}
        if if_match is not None:
            conditions = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        elif create_only:
            conditions = {"match_condition": MatchConditions.IfMissing}
        try:
            result = blob.upload_blob(
                data,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
                metadata=metadata,
                **conditions,
            )
        except (ResourceModifiedError, ResourceExistsError) as exc:
            raise BlobChangedError(container, path, if_match or "*") from exc
        except ResourceNotFoundError as exc:
            if if_match is not None:  # it was deleted meanwhile: not the version expected
                raise BlobChangedError(container, path, if_match) from exc
            raise BlobNotFoundError(container, path) from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise BlobChangedError(container, path, if_match or "*") from exc
            _raise_if_bad_request(exc, container, path)
            raise
        return str(result["etag"])

    def read_versioned(self, container: str, path: str) -> tuple[bytes, str] | None:
        blob = self._service.get_blob_client(container, path)
        try:
            downloader = blob.download_blob()
            return downloader.readall(), str(downloader.properties.etag)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, path)
            raise

    def delete(self, container: str, path: str) -> None:
        try:
            self._service.get_blob_client(container, path).delete_blob()
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, path)
            raise

    def list_blobs(
        self, container: str, *, prefix: str = "", top_level: bool = False
    ) -> list[BlobInfo]:
        client = self._service.get_container_client(container)
        try:
            items: Iterable[SdkBlobProperties | BlobPrefix]
            if top_level:
                # walk_blobs with a delimiter lists folders as prefixes: only top-level blobs.
                items = client.walk_blobs(name_starts_with=prefix or None, include=["metadata"])
            else:
                items = client.list_blobs(name_starts_with=prefix or None, include=["metadata"])
            return [_info(item) for item in items if not isinstance(item, BlobPrefix)]
        except ResourceNotFoundError:
            return []
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, prefix)
            raise

    def list_page(
        self, container: str, *, prefix: str = "", size: int, continuation: str | None = None
    ) -> BlobPage:
        """One List Blobs request, sent through the container client's own pipeline
        (credential, retries, API version) and parsed here: the SDK's generated XML
        deserializer took about half of the ingestion list route's time (bench/ingest_status.py)."""
        client = self._service.get_container_client(container)
        params = {"restype": "container", "comp": "list", "include": "metadata"}
        params["maxresults"] = str(size)
        # Quoted here: azure-core adds query parameters to the URL (and to a SAS token's
        # query) as given.
        if prefix:
            params["prefix"] = quote(prefix, safe="")
        if continuation:
            params["marker"] = quote(continuation, safe="")
        request = HttpRequest(
            "GET", client.url, params=params, headers={"x-ms-version": client.api_version}
        )
        # The generated client's raw-request method: the SDK's own pipeline, without its model
        # deserialization; streamed, so that azure-core does not parse the body either
        # (tests/test_blob_store.py checks the page against the SDK's listing).
        response = client._client._send_request(request, stream=True)
        if response.status_code == 404:
            return BlobPage(blobs=[], continuation=None)
        if response.status_code != 200:
            response.read()
            error = HttpResponseError(response=response)
            _raise_if_bad_request(error, container, prefix)
            raise error
        return _listing(response.read())

    def url(self, container: str, path: str) -> str:
        # Without the query: a SAS connection string puts its token there, and documents
        # store this URL.
        return _without_query(str(self._service.get_blob_client(container, path).url))

    def ensure_container(self, container: str) -> None:
        try:
            self._service.create_container(container)
            logger.info("created container %s", container)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, "")
            raise

    def container_exists(self, container: str) -> bool:
        try:
            return bool(self._service.get_container_client(container).exists())
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, "")
            raise

    def delete_container(self, container: str) -> None:
        try:
            self._service.delete_container(container)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            _raise_if_bad_request(exc, container, "")
            raise

    def locate(self, url: str) -> tuple[str, str] | None:
        account = _without_query(str(self._service.url)).rstrip("/") + "/"
        if not url.startswith(account):
            return None
        container, _, path = url[len(account) :].split("?", 1)[0].partition("/")
        if not container or not path:
            return None
        return container, unquote(path)

    def read_url(self, container: str, path: str, *, expires_in_s: int) -> str | None:
        # Only an identity-based client can get a user-delegation key; a key in a connection
        # string could sign too, but then the app serves the blob and no key-signed URL leaves.
        if not _is_token_credential(self._service.credential):
            return None
        now = datetime.now(UTC)
        start, expiry = now - timedelta(minutes=5), now + timedelta(seconds=expires_in_s)
        key = self._delegation_key(start, expiry)
        sas = generate_blob_sas(
            account_name=str(self._service.account_name),
            container_name=container,
            blob_name=path,
            user_delegation_key=key,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=expiry,
            content_type=self._served_type(container, path),
        )
        return f"{self.url(container, path)}?{sas}"

    def _served_type(self, container: str, path: str) -> str | None:
        """The Content-Type the signed URL makes storage answer (SAS ``rsct``) when the blob
        was stored without an image type: a blob uploaded without one is served as
        application/octet-stream, and browsers download it instead of showing it. Found from
        its first bytes; None keeps the stored type."""
        try:
            blob = self._service.get_blob_client(container, path)
            stored = blob.get_blob_properties().content_settings.content_type
            if stored and stored.startswith("image/"):
                return None
            return type_from_head(blob.download_blob(offset=0, length=HEAD_BYTES).readall())
        except Exception:  # a link with the stored type is still a working link
            logger.warning("type of %s/%s not found; its stored one is kept", container, path)
            return None

    def _delegation_key(self, start: datetime, expiry: datetime) -> UserDelegationKey:
        # One key serves every URL until shortly before it expires (a round-trip each saved).
        account = str(self._service.url)
        with _DELEGATION_KEYS_LOCK:
            cached = _DELEGATION_KEYS.get(account)
            if cached is not None and cached[0] >= expiry:
                return cached[1]
            key_expiry = max(expiry, datetime.now(UTC) + timedelta(hours=1))
            key = self._service.get_user_delegation_key(start, key_expiry)
            _DELEGATION_KEYS[account] = (key_expiry, key)
            return key


# Per account URL: (expiry, key). Module-level so BlobStore instances share it.
_DELEGATION_KEYS: dict[str, tuple[datetime, UserDelegationKey]] = {}
_DELEGATION_KEYS_LOCK = threading.Lock()


def _listing(xml: bytes) -> BlobPage:
    """A List Blobs response body (EnumerationResults) as a BlobPage."""
    root = DefusedET.fromstring(xml)
    blobs = []
    for blob in root.iterfind("Blobs/Blob"):
        name = blob.find("Name")
        text = "" if name is None or name.text is None else name.text
        if name is not None and name.get("Encoded") == "true":
            text = unquote(text)  # names with characters XML cannot carry come percent-encoded
        metadata = {item.tag: item.text or "" for item in blob.iterfind("Metadata/*")}
        blobs.append(
            BlobInfo(
                name=text,
                size=int(blob.findtext("Properties/Content-Length") or 0),
                etag=blob.findtext("Properties/Etag") or "",
                metadata=metadata,
            )
        )
    return BlobPage(blobs=blobs, continuation=root.findtext("NextMarker") or None)


def _info(item: SdkBlobProperties) -> BlobInfo:
    return BlobInfo(
        name=str(item.name),
        size=int(item.size),
        etag=str(item.etag),
        metadata=dict(item.metadata or {}),
    )


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _is_token_credential(credential: object) -> bool:
    return callable(getattr(credential, "get_token", None))


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
