"""The I/O steps of ingesting one metadata file, one function per activity.

Activities call these with the adapters from imagerag.config; everything that crosses the
Durable history is a small JSON-able dict (references, counts), never bytes or vectors.

Work blobs, all under ``<work container>/<instance id>/``:
    partitions/<i:04d>.json   the entries of partition i (input of its sub-orchestration)
    reports/<i:04d>.json      per-image results of partition i
    report.json               the merged report of the whole file
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import threading
import time
from typing import Any, NotRequired, TypedDict

from imagerag import images, manifest
from imagerag.config import index_name_for
from imagerag.ports import (
    BlobChangedError,
    BlobNotFoundError,
    BlobStore,
    DocumentState,
    ImageIndex,
    IndexDocument,
    IndexModelMismatchError,
    InvalidBlobNameError,
    MetadataPatch,
    ModelInfo,
    Vectorizer,
    VectorizerInputError,
    VectorizerUnavailableError,
)

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
# What happened to one entry of the file (the report's ``status``):
STATUS_INDEXED = "indexed"  # vectorized and upserted (new or changed image)
STATUS_UPDATED = "updated"  # same image, new description or source: merged, not re-vectorized
STATUS_UNCHANGED = "unchanged"  # already indexed exactly so: nothing written
STATUS_SKIPPED = "skipped"  # the entry or its image breaks a rule; ``code``/``reason`` say which
STATUS_FAILED = "failed"  # a service stayed unavailable; dropping the file again retries it
STATUSES = (STATUS_INDEXED, STATUS_UPDATED, STATUS_UNCHANGED, STATUS_SKIPPED, STATUS_FAILED)

MISSING_BLOB = "missing_blob"
SUPERSEDED = "superseded"
VECTORIZER_REFUSED = "vectorizer_refused"
SERVICE_UNAVAILABLE = "service_unavailable"


class WorkRef(TypedDict):
    container: str  # work container
    prefix: str  # "<instance id>"


class PlanError(TypedDict):
    code: str  # InvalidManifest | MetadataNotFound | MetadataChanged
    message: str
    rule: NotRequired[str]


class Plan(TypedDict, total=False):
    metadata: str  # "container/blob path"
    index: str  # the image index: "<container>-v"
    metadata_etag: str  # ETag of the metadata file version being ingested
    entries: int
    partitions: int
    partition_size: int
    problems: int
    work: WorkRef
    error: PlanError  # present only when the file is rejected
    report: str  # "container/path" of the rejection report (rejected files only)


class EntryRef(TypedDict):
    container: str  # images container
    index: int
    image_blob_path: str | None
    description: str | None
    problem: NotRequired[dict[str, str]]  # {"code", "message"} from manifest validation


class Target(TypedDict):
    index: str  # image index name
    source: str  # "container/metadata path": stored on each document for the deletion sync
    etag: str  # the metadata file's ETag when planned: writes stop once it changes


class EntryResult(TypedDict):
    index: int
    image_blob_path: str | None
    id: str | None
    status: str  # one of STATUSES
    code: NotRequired[str]  # why skipped or failed: a manifest, image or service rule code
    reason: NotRequired[str]


class Counts(TypedDict):
    entries: int
    indexed: int
    updated: int
    unchanged: int
    skipped: int
    failed: int


def partition_path(prefix: str, partition: int) -> str:
    return f"{prefix}/partitions/{partition:04d}.json"


def partition_report_path(prefix: str, partition: int) -> str:
    return f"{prefix}/reports/{partition:04d}.json"


def report_path(prefix: str) -> str:
    return f"{prefix}/report.json"


def plan_ingestion(
    store: BlobStore,
    *,
    container: str,
    blob_path: str,
    sha256: str,
    instance_id: str,
    work_container: str,
    partition_size: int,
) -> Plan:
    """Read and validate the metadata file, write its partitions, return the plan.

    Rejections (bad file, file gone or changed) are returned as ``{"error": ...}``: they are
    user errors to report, not failures to retry.
    """
    metadata = f"{container}/{blob_path}"
    work: WorkRef = {"container": work_container, "prefix": instance_id}
    try:
        props = store.properties(container, blob_path)
        if props is None:
            raise BlobNotFoundError(container, blob_path)
        # Read at that ETag, so the ETag the image activities check is the one of these bytes.
        etag = props.etag
        data = store.read(container, blob_path, etag=etag)
    except BlobNotFoundError:
        error: PlanError = {"code": "MetadataNotFound", "message": "metadata file no longer exists"}
        return _reject(store, work, metadata, sha256, error)
    except BlobChangedError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != sha256:
        # A newer upload has its own trigger and instance; this one must not ingest it.
        error = {"code": "MetadataChanged", "message": "metadata changed while ingesting"}
        return _reject(store, work, metadata, sha256, error)
    try:
        parsed = manifest.parse_manifest(data, blob_path=blob_path)
    except manifest.ManifestError as exc:
        error = {"code": "InvalidManifest", "rule": exc.rule, "message": exc.message}
        return _reject(store, work, metadata, sha256, error)

    items = _entry_refs(container, parsed)
    store.ensure_container(work_container)
    chunks = manifest.chunk(items, partition_size)
    for i, part in enumerate(chunks):
        store.write(
            work_container,
            partition_path(instance_id, i),
            _dumps(list(part)),
            content_type=JSON_CONTENT_TYPE,
        )
    logger.info(
        "planned %s: %d entries (%d with problems) in %d partitions",
        metadata,
        parsed.count,
        len(parsed.problems),
        len(chunks),
    )
    return {
        "metadata": metadata,
        "index": index_name_for(container),
        "metadata_etag": etag,
        "entries": parsed.count,
        "partitions": len(chunks),
        "partition_size": partition_size,
        "problems": len(parsed.problems),
        "work": work,
    }


def _reject(store: BlobStore, work: WorkRef, metadata: str, sha256: str, error: PlanError) -> Plan:
    """A file rejected whole still gets its report, saying why."""
    store.ensure_container(work["container"])
    path = report_path(work["prefix"])
    report: dict[str, Any] = {"metadata": metadata, "sha256": sha256}
    report |= {"instance_id": work["prefix"], "error": dict(error), "entries": 0, "results": []}
    store.write(work["container"], path, _dumps(report), content_type=JSON_CONTENT_TYPE)
    logger.info("rejected %s: %s", metadata, error["message"])
    return {"metadata": metadata, "error": error, "report": f"{work['container']}/{path}"}


def _entry_refs(container: str, parsed: manifest.Manifest) -> list[EntryRef]:
    # Every array element gets a row, valid or not, so counts add up to the file's length
    # and the report answers "what happened to line N" for each of them.
    refs: list[EntryRef] = [
        {
            "container": container,
            "index": e.index,
            "image_blob_path": e.image_blob_path,
            "description": e.description,
        }
        for e in parsed.entries
    ]
    for p in parsed.problems:
        refs.append(
            {
                "container": container,
                "index": p.index,
                "image_blob_path": p.image_blob_path,
                "description": None,
                "problem": {"code": p.code, "message": p.message},
            }
        )
    refs.sort(key=lambda r: r["index"])
    return refs


def read_partition(store: BlobStore, *, work: WorkRef, partition: int) -> list[EntryRef]:
    path = partition_path(work["prefix"], partition)
    key = (id(store), work["container"], path)
    with _partition_cache_lock:
        cached = _partition_cache.get(key)
    if cached is None:
        cached = tuple(json.loads(store.read(work["container"], path)))
        with _partition_cache_lock:
            if len(_partition_cache) >= _PARTITION_CACHE_SIZE:
                _partition_cache.pop(next(iter(_partition_cache)))
            _partition_cache[key] = cached
    return list(cached)


# Partition blobs never change once written (same instance id = same file content), and every
# image activity of a partition reads its own entry from the same blob: keep the recent ones.
_PARTITION_CACHE_SIZE = 64
_partition_cache: dict[tuple[int, str, str], tuple[EntryRef, ...]] = {}
_partition_cache_lock = threading.Lock()


def partition_counts(entries: int, partition_size: int) -> list[int]:
    """Entries per partition, as plan_ingestion cut them (pure: orchestrators call it)."""
    return [end - start for start, end in manifest.partitions(entries, partition_size)]


def ensure_index(index: ImageIndex, model: ModelInfo) -> dict[str, Any]:
    """Create the image index if missing. A model mismatch is the user's to resolve: returned
    as ``{"error"}``, not raised, so the ingestion is reported rather than retried."""
    try:
        index.ensure(model)
    except IndexModelMismatchError as exc:
        return {"error": {"code": "IndexModelMismatch", "message": str(exc)}}
    return {"index": index.name, "model": {"name": model.name, "version": model.version}}


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
        "id": manifest.document_id(container, path) if path is not None else None,
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

    document_id = manifest.document_id(container, path)
    content_hash = hashlib.sha256(data).hexdigest()
    description, source = entry["description"], target["source"]
    state = index.get_states([document_id]).get(document_id)
    if state is not None and _same_image(state, content_hash, vectorizer.model):
        if (state.description, state.source) == (description, source):
            result["status"] = STATUS_UNCHANGED
        elif not _still_current(store, target):
            return _superseded(result)
        else:
            index.merge_metadata([MetadataPatch(document_id, description, source)])
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
        id=document_id,
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
    container, _, path = target["source"].partition("/")
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


def sync_deletions(
    store: BlobStore,
    index: ImageIndex,
    *,
    work: WorkRef,
    partitions: int,
    metadata: str,
    sha256: str,
) -> dict[str, Any]:
    """Delete the documents this metadata file added earlier but no longer lists, then compact.

    Entries listed but failing this time keep their documents: bad input never removes what
    was indexed. If the file changed meanwhile, the newer ingestion owns the sync.
    """
    container, _, blob_path = metadata.partition("/")
    try:
        current = hashlib.sha256(store.read(container, blob_path)).hexdigest()
    except BlobNotFoundError:
        current = None
    if current != sha256:
        logger.info("%s changed during ingestion; leaving deletions to the newer one", metadata)
        return {"deleted": 0, "superseded": True}
    listed = {
        manifest.document_id(e["container"], e["image_blob_path"])
        for i in range(partitions)
        for e in read_partition(store, work=work, partition=i)
        if "problem" not in e and e["image_blob_path"] is not None
    }
    stale = sorted(index.ids_from_source(metadata) - listed)
    if stale:
        index.delete(stale)
    index.optimize()
    logger.info("%s: deleted %d documents no longer listed", metadata, len(stale))
    return {"deleted": len(stale), "superseded": False}


def count_results(results: list[EntryResult]) -> Counts:
    counts: Counts = {
        "entries": len(results),
        "indexed": 0,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "failed": 0,
    }
    for r in results:
        counts[r["status"]] += 1  # type: ignore[literal-required]
    return counts


def write_partition_report(
    store: BlobStore, *, work: WorkRef, partition: int, results: list[EntryResult]
) -> Counts:
    ordered = sorted(results, key=lambda r: r["index"])
    store.write(
        work["container"],
        partition_report_path(work["prefix"], partition),
        _dumps({"partition": partition, "results": ordered}),
        content_type=JSON_CONTENT_TYPE,
    )
    return count_results(ordered)


def write_report(
    store: BlobStore,
    *,
    work: WorkRef,
    metadata: str,
    sha256: str,
    partitions: int,
    index: str,
    deleted: int,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Merge the partition reports into ``<prefix>/report.json``; return where it is and the
    counts recomputed from what was merged. ``error``: why nothing was ingested."""
    results: list[EntryResult] = []
    for i in range(partitions):
        part = json.loads(store.read(work["container"], partition_report_path(work["prefix"], i)))
        results.extend(part["results"])
    results.sort(key=lambda r: r["index"])
    counts = count_results(results)
    path = report_path(work["prefix"])
    report = {
        "metadata": metadata,
        "sha256": sha256,
        "instance_id": work["prefix"],
        "index": index,
        **counts,
        "deleted": deleted,
        **({"error": error} if error is not None else {}),
        "results": results,
    }
    store.write(work["container"], path, _dumps(report), content_type=JSON_CONTENT_TYPE)
    return {"container": work["container"], "path": path, **counts, "deleted": deleted}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
