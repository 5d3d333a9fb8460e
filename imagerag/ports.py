"""Small Protocols the domain code depends on; adapters implement them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class BlobStoreError(Exception):
    """Base class of the errors a BlobStore reports in domain terms."""


class BlobNotFoundError(BlobStoreError):
    """The container or blob does not exist."""

    def __init__(self, container: str, path: str) -> None:
        super().__init__(f"blob not found: {container}/{path}")
        self.container = container
        self.path = path


class BlobChangedError(BlobStoreError):
    """The blob no longer has the ETag the caller expected (it was overwritten)."""

    def __init__(self, container: str, path: str, etag: str) -> None:
        super().__init__(f"blob changed: {container}/{path} no longer has ETag {etag}")
        self.container = container
        self.path = path
        self.etag = etag


class InvalidBlobNameError(BlobStoreError, ValueError):
    """The service rejected the container or blob name itself (a caller error, not transient)."""


@dataclass(frozen=True, slots=True)
class BlobProperties:
    size: int
    etag: str
    content_type: str | None


class BlobStore(Protocol):
    """Blob access as the domain needs it.

    Errors that are not listed (network, throttling, authorization) propagate unchanged so
    that Durable retry policies and the host see them.
    """

    def read(self, container: str, path: str, *, etag: str | None = None) -> bytes:
        """Whole content; BlobNotFoundError if missing, BlobChangedError if etag is stale."""
        ...

    def write(self, container: str, path: str, data: bytes, *, content_type: str) -> str:
        """Create or overwrite; returns the new ETag."""
        ...

    def properties(self, container: str, path: str) -> BlobProperties | None:
        """Size, ETag and content type, or None when the blob (or its container) is missing."""
        ...

    def ensure_container(self, container: str) -> None:
        """Create the container if it does not exist yet."""
        ...
