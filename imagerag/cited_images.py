"""What the image route may serve: one image that an index cites, through a link this app signed.

Every rule is checked before storage is touched: a data source's container, a blob path that obeys
the manifest's path rules (no '..', '.', backslashes, control characters: HTTP clients would
normalise them into another blob), a valid unexpired signature, and a document of the
container's index that references exactly this image. The type is found from the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagerag import images, manifest
from imagerag.image_links import ImageLinks
from imagerag.naming import document_id
from imagerag.ports import (
    BlobNotFoundError,
    BlobStore,
    ImageIndex,
    ImageIndexError,
    InvalidBlobNameError,
)

# The types the app indexes, by their first bytes (enough to name a type for a browser).
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
HEAD_BYTES = 8


def type_from_head(head: bytes) -> str | None:
    """The image type the first bytes name (JPEG, PNG, GIF, BMP, TIFF), or None."""
    return next((mime for magic, mime in _MAGIC if head.startswith(magic)), None)


@dataclass(frozen=True, slots=True)
class CitedImage:
    data: bytes
    mime_type: str


def read_cited_image(
    *,
    container: str,
    path: str,
    expires: str,
    signature: str,
    links: ImageLinks,
    index_of: Callable[[str], str | None],
    store: BlobStore,
    index: Callable[[str], ImageIndex],
) -> CitedImage | None:
    """The image, or None when any rule refuses it (the caller answers 404 either way, so a
    probe learns nothing about what exists). ``index_of``: the index of a data source's
    container, None for containers of no data source."""
    index_name = index_of(container)
    if index_name is None or manifest.blob_path_problem(path) is not None:
        return None
    if not links.verify(container, path, expires, signature):
        return None
    doc_id = document_id(container, path)
    try:
        if doc_id not in index(index_name).get_states([doc_id]):
            return None
        data, size = store.read_bounded(container, path, images.MAX_BYTES)
        if not 0 < size < images.MAX_BYTES:
            return None
    except (ImageIndexError, BlobNotFoundError, InvalidBlobNameError):
        return None
    mime_type = images.mime_type(data)
    return None if mime_type is None else CitedImage(data, mime_type)
