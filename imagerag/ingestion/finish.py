"""Last steps of an ingestion: per-partition reports, the deletion sync, the merged report."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from imagerag.ingestion.contract import (
    BlobRef,
    Counts,
    EntryResult,
    Problem,
    ReportResult,
    SyncResult,
    WorkRef,
    blob_ref,
    ref_text,
)
from imagerag.ingestion.work import partition_report_path, read_partition, report_ref, write_json
from imagerag.naming import document_id
from imagerag.ports import BlobNotFoundError, BlobStore, ImageIndex

logger = logging.getLogger(__name__)


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
        counts[r["status"]] += 1
    return counts


def write_partition_report(
    store: BlobStore, *, work: WorkRef, partition: int, results: list[EntryResult]
) -> Counts:
    ordered = sorted(results, key=lambda r: r["index"])
    ref = blob_ref(work["container"], partition_report_path(work["prefix"], partition))
    write_json(store, ref, {"partition": partition, "results": ordered})
    return count_results(ordered)


def sync_deletions(
    store: BlobStore,
    index: ImageIndex,
    *,
    work: WorkRef,
    partitions: int,
    metadata: BlobRef,
    sha256: str,
) -> SyncResult:
    """Delete the documents this metadata file added earlier but no longer lists, then compact.

    Entries listed but failing this time keep their documents: bad input never removes what
    was indexed. If the file changed meanwhile, the newer ingestion owns the sync.
    """
    source = ref_text(metadata)
    try:
        current = hashlib.sha256(store.read(metadata["container"], metadata["path"])).hexdigest()
    except BlobNotFoundError:
        current = None
    if current != sha256:
        logger.info("%s changed during ingestion; leaving deletions to the newer one", source)
        return {"deleted": 0, "superseded": True}
    listed = {
        document_id(e["container"], e["image_blob_path"])
        for i in range(partitions)
        for e in read_partition(store, work=work, partition=i)
        if "problem" not in e and e["image_blob_path"] is not None
    }
    stale = sorted(index.ids_from_source(source) - listed)
    if stale:
        index.delete(stale)
    index.optimize()
    logger.info("%s: deleted %d documents no longer listed", source, len(stale))
    return {"deleted": len(stale), "superseded": False}


def write_report(
    store: BlobStore,
    *,
    work: WorkRef,
    metadata: BlobRef,
    sha256: str,
    partitions: int,
    index: str,
    deleted: int,
    error: Problem | None = None,
) -> ReportResult:
    """Merge the partition reports into ``<prefix>/report.json``; return where it is and the
    counts recomputed from what was merged. ``error``: why nothing was ingested."""
    results: list[EntryResult] = []
    for i in range(partitions):
        part = json.loads(store.read(work["container"], partition_report_path(work["prefix"], i)))
        results.extend(part["results"])
    results.sort(key=lambda r: r["index"])
    counts = count_results(results)
    report: dict[str, Any] = {
        "metadata": ref_text(metadata),
        "sha256": sha256,
        "instance_id": work["prefix"],
        "index": index,
        **counts,
        "deleted": deleted,
        **({"error": error} if error is not None else {}),
        "results": results,
    }
    ref = report_ref(work)
    write_json(store, ref, report)
    return {"report": ref, "counts": counts, "deleted": deleted}
