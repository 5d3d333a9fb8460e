"""The step run once per work item: fetch the image, check it, vectorize it, upsert one
document (or delete it when the image is gone)."""

from __future__ import annotations

import hashlib
import posixpath
import threading
import time

from imagerag import cpu_share, images
from imagerag.ingestion import sync_state
from imagerag.ingestion.contract import (
    STATUS_FAILED,
    STATUS_INDEXED,
    STATUS_SKIPPED,
    STATUS_UNCHANGED,
    STATUS_UPDATED,
    EntryResult,
    Target,
    WorkRef,
)
from imagerag.ingestion.work import read_partition
from imagerag.ports import (
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
    """Bring one image's document in line with what the metadata files list.

    Problems with the entry or the image come back as results (``skipped``); a service that
    stays unavailable after the adapter's retries gives ``failed``. Anything else raises so
    that the activity's retry policy applies. An image that is gone takes its document with
    it; one that turned unreadable keeps its last good document.
    """
    item = read_partition(store, work=work, partition=partition)[slot]
    path, doc_id = item["path"], item["id"]
    result: EntryResult = {"path": path, "id": doc_id, "status": STATUS_SKIPPED}
    problem = item.get("problem")
    if problem is not None:
        return _skipped(result, problem["code"], problem["message"])
    assert path is not None and doc_id is not None and item["description"] is not None
    if _superseded(store, work, target):
        return _skipped(result, SUPERSEDED, SUPERSEDED_REASON)
    container = target["container"]
    try:
        data = _read_image(store, container, path)
        with cpu_share.process_share().bulk():  # a full decode: chat requests go first
            images.inspect_image(data, path)
    except images.ImageRejected as exc:
        return _skipped(result, exc.code, exc.message)
    except (BlobNotFoundError, InvalidBlobNameError):
        if index.get_states([doc_id]):
            index.delete([doc_id])
            result["removed"] = True
        return _skipped(result, MISSING_BLOB, f"no blob {path!r} in container {container!r}")

    content_hash = hashlib.sha256(data).hexdigest()
    description, source = item["description"], str(item["source"])
    state = index.get_states([doc_id]).get(doc_id)
    if state is not None and _same_image(state, content_hash, vectorizer.model):
        if (state.description, state.source) == (description, source):
            result["status"] = STATUS_UNCHANGED
        else:
            index.merge_metadata([MetadataPatch(doc_id, description, source)])
            result["status"] = STATUS_UPDATED
        return result

    try:
        embedding = vectorizer.embed_image(data)
    except VectorizerInputError as exc:
        return _skipped(result, VECTORIZER_REFUSED, str(exc))
    except VectorizerUnavailableError as exc:
        result["status"] = STATUS_FAILED
        result["code"] = SERVICE_UNAVAILABLE
        result["reason"] = f"{exc}; the next run (or dropping a metadata file again) retries it"
        return result
    model = vectorizer.model
    document = IndexDocument(
        id=doc_id,
        description=description,
        image_vector=embedding.vector,
        filepath=path,
        url=store.url(container, path),
        title=posixpath.basename(path),
        source=source,
        model_name=model.name,
        model_version=model.version,
        content_hash=content_hash,
        thumbnail=embedding.thumbnail,
    )
    index.upsert([document])
    result["status"] = STATUS_INDEXED
    return result


def _read_image(store: BlobStore, container: str, path: str) -> bytes:
    images.check_extension(path)
    # One request: a blob over the limit is refused having read no more than the limit.
    data, size = store.read_bounded(container, path, images.MAX_BYTES)
    images.check_size(size)
    return data


def _superseded(store: BlobStore, work: WorkRef, target: Target) -> bool:
    """Whether the metadata files changed after this run began: its remaining work would be
    redone by the next run, so it stops early. (Only an economy: runs of one container never
    overlap, so a late write cannot undo a later run's.) An answer is reused for
    CURRENT_CHECK_S per process, so this is one read per half second, not one per image."""
    key = (id(store), work["container"], target["container"])
    with _state_lock:
        cached = _states.get(key)
    if cached is None or time.monotonic() - cached[1] > CURRENT_CHECK_S:
        state = sync_state.read_state(store, work["container"], target["container"])
        cached = (int(state["changes"]), time.monotonic())
        with _state_lock:
            _states[key] = cached
    return cached[0] > target["changes"]


CURRENT_CHECK_S = 0.5
SUPERSEDED_REASON = "the metadata files changed during this run; the next run takes this entry"
_states: dict[tuple[int, str, str], tuple[int, float]] = {}
_state_lock = threading.Lock()


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
