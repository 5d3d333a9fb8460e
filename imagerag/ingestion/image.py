"""The step run once per entry: fetch the image, check it, vectorize it, upsert one document."""

from __future__ import annotations

import hashlib
import posixpath
import threading
import time

from imagerag import images
from imagerag.ingestion.contract import (
    STATUS_FAILED,
    STATUS_INDEXED,
    STATUS_SKIPPED,
    STATUS_UNCHANGED,
    STATUS_UPDATED,
    EntryResult,
    Target,
    WorkRef,
    ref_text,
)
from imagerag.ingestion.work import read_partition
from imagerag.naming import document_id
from imagerag.ports import (
    BlobChangedError,
    BlobNotFoundError,
    BlobStore,
    DocumentState,
    ImageIndex,
    IndexDocument,
    InvalidBlobNameError,
    MetadataPatch,
    ModelInfo,
    Vectorizer,
    VectorizerInputError,
    VectorizerUnavailableError,
)

MISSING_BLOB = "missing_blob"
SUPERSEDED = "superseded"
VECTORIZER_REFUSED = "vectorizer_refused"
SERVICE_UNAVAILABLE = "service_unavailable"


def ingest_image(
    store: BlobStore,
    vectorizer: Vectorizer,
    index: ImageIndex,
    *,
    work: WorkRef,
    partition: int,
    slot: int,
    target: Target,
) -> EntryResult:
    """Validate, vectorize and upsert the image of one entry.

    Problems with the entry or the image come back as results (``skipped``); a service that
    stays unavailable after the adapter's retries gives ``failed``. Anything else raises so
    that the activity's retry policy applies.
    """
    entry = read_partition(store, work=work, partition=partition)[slot]
    container, path = entry["container"], entry["image_blob_path"]
    result: EntryResult = {
        "index": entry["index"],
        "image_blob_path": path,
        "id": document_id(container, path) if path is not None else None,
        "status": STATUS_SKIPPED,
    }
    problem = entry.get("problem")
    if problem is not None:
        return _skipped(result, problem["code"], problem["message"])
    assert path is not None and entry["description"] is not None
    try:
        data = _read_image(store, container, path)
        images.inspect_image(data, path)
    except images.ImageRejected as exc:
        return _skipped(result, exc.code, exc.message)
    except (BlobNotFoundError, InvalidBlobNameError):
        return _skipped(result, MISSING_BLOB, f"no blob {path!r} in container {container!r}")

    doc_id = document_id(container, path)
    content_hash = hashlib.sha256(data).hexdigest()
    description, source = entry["description"], ref_text(target["source"])
    state = index.get_states([doc_id]).get(doc_id)
    if state is not None and _same_image(state, content_hash, vectorizer.model):
        if (state.description, state.source) == (description, source):
            result["status"] = STATUS_UNCHANGED
        elif not _still_current(store, target):
            return _superseded(result)
        else:
            index.merge_metadata([MetadataPatch(doc_id, description, source)])
            result["status"] = STATUS_UPDATED
        return result

    try:
        vector = vectorizer.vectorize_image(data)
    except VectorizerInputError as exc:
        return _skipped(result, VECTORIZER_REFUSED, str(exc))
    except VectorizerUnavailableError as exc:
        result["status"] = STATUS_FAILED
        result["code"] = SERVICE_UNAVAILABLE
        result["reason"] = f"{exc}; drop the metadata file again to retry"
        return result
    if not _still_current(store, target):
        return _superseded(result)
    model = vectorizer.model
    document = IndexDocument(
        id=doc_id,
        description=description,
        image_vector=vector,
        filepath=path,
        url=store.url(container, path),
        title=posixpath.basename(path),
        source=source,
        model_name=model.name,
        model_version=model.version,
        content_hash=content_hash,
    )
    index.upsert([document])
    result["status"] = STATUS_INDEXED
    return result


def _read_image(store: BlobStore, container: str, path: str) -> bytes:
    images.check_extension(path)
    props = store.properties(container, path)
    if props is None:
        raise BlobNotFoundError(container, path)
    images.check_size(props.size)  # before downloading: a 2 GB blob is never read
    try:
        return store.read(container, path, etag=props.etag)
    except BlobChangedError:
        # Replaced between the two calls: the new content is read (and checked) whole.
        return store.read(container, path)


def _still_current(store: BlobStore, target: Target) -> bool:
    """Whether the metadata file still has the version being ingested. A newer version stops
    the older ingestion, but its activities already running must not write after the newer
    one synced. A positive answer is reused for CURRENT_CHECK_S per file and process."""
    container, path = target["source"]["container"], target["source"]["path"]
    key = (id(store), container, path)
    with _current_lock:
        checked = _current_etags.get(key)
    if checked is not None and checked[0] == target["etag"]:
        if time.monotonic() - checked[1] <= CURRENT_CHECK_S:
            return True
    # Not known to be current (or known too long ago): ask the service.
    props = store.properties(container, path)
    etag = props.etag if props is not None else ""
    with _current_lock:
        _current_etags[key] = (etag, time.monotonic())
    return etag == target["etag"]


CURRENT_CHECK_S = 0.5
_current_etags: dict[tuple[int, str, str], tuple[str, float]] = {}
_current_lock = threading.Lock()


def _superseded(result: EntryResult) -> EntryResult:
    message = "the metadata file changed while this entry was processed; the newer version wins"
    return _skipped(result, SUPERSEDED, message)


def _same_image(state: DocumentState, content_hash: str, model: ModelInfo) -> bool:
    return (state.content_hash, state.model_name, state.model_version) == (
        content_hash,
        model.name,
        model.version,
    )


def _skipped(result: EntryResult, code: str, reason: str) -> EntryResult:
    result["status"] = STATUS_SKIPPED
    result["code"] = code
    result["reason"] = reason
    return result
