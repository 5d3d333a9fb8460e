"""First steps of an ingestion: read and validate the metadata file, cut it into partitions,
make sure the index exists for the vectorizer's model."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from typing import Any

from imagerag import manifest
from imagerag.ingestion.contract import (
    BlobRef,
    EntryRef,
    IndexReady,
    IndexRefused,
    Plan,
    PlanRejected,
    Problem,
    WorkRef,
    ref_text,
)
from imagerag.ingestion.work import report_ref, write_json, write_partition
from imagerag.naming import index_name_for
from imagerag.ports import (
    BlobChangedError,
    BlobNotFoundError,
    BlobStore,
    ImageIndex,
    IndexModelMismatchError,
    ModelInfo,
)

logger = logging.getLogger(__name__)


def plan_ingestion(
    store: BlobStore,
    *,
    metadata: BlobRef,
    sha256: str,
    instance_id: str,
    work_container: str,
    partition_size: int,
    containers: Collection[str],
) -> Plan | PlanRejected:
    """Read and validate the metadata file, write its partitions, return the plan.

    Rejections (bad file, file gone or changed, a container the app does not ingest) are
    returned as ``{"error": ...}``: they are user errors to report, not failures to retry.
    """
    work: WorkRef = {"container": work_container, "prefix": instance_id}
    container, blob_path = metadata["container"], metadata["path"]
    if container not in containers:
        # The Durable management API can start an orchestration with any input: only the
        # containers the app is configured for are ever read.
        error: Problem = {
            "code": "ContainerNotAllowed",
            "message": f"container {container!r} is not one this app ingests",
        }
        return _reject(store, work, metadata, sha256, error)
    try:
        props = store.properties(container, blob_path)
        if props is None:
            raise BlobNotFoundError(container, blob_path)
        # Read at that ETag, so the ETag the image activities check is the one of these bytes.
        etag = props.etag
        data: bytes | None = store.read(container, blob_path, etag=etag)
    except BlobNotFoundError:
        error = {"code": "MetadataNotFound", "message": "metadata file no longer exists"}
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

    store.ensure_container(work_container)
    chunks = manifest.chunk(_entry_refs(container, parsed), partition_size)
    for i, part in enumerate(chunks):
        write_partition(store, work, i, part)
    logger.info(
        "planned %s: %d entries (%d with problems) in %d partitions",
        ref_text(metadata),
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


def _reject(
    store: BlobStore, work: WorkRef, metadata: BlobRef, sha256: str, error: Problem
) -> PlanRejected:
    """A file rejected whole still gets its report, saying why."""
    store.ensure_container(work["container"])
    report = report_ref(work)
    body: dict[str, Any] = {"metadata": ref_text(metadata), "sha256": sha256}
    body |= {"instance_id": work["prefix"], "error": dict(error), "entries": 0, "results": []}
    write_json(store, report, body)
    logger.info("rejected %s: %s", ref_text(metadata), error["message"])
    return {"metadata": metadata, "error": error, "report": report}


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


def ensure_index(index: ImageIndex, model: ModelInfo) -> IndexReady | IndexRefused:
    """Create the image index if missing. A model mismatch is the user's to resolve: returned
    as ``{"error"}``, not raised, so the ingestion is reported rather than retried."""
    try:
        index.ensure(model)
    except IndexModelMismatchError as exc:
        return {"error": {"code": "IndexModelMismatch", "message": str(exc)}}
    return {"index": index.name, "model": {"name": model.name, "version": model.version}}
