"""Last steps of a run: per-partition reports, deleting what no file lists, the run's report."""

from __future__ import annotations

import json
import logging
from typing import Any

from imagerag.ingestion import runs, sync_state
from imagerag.ingestion.contract import (
    STATUSES,
    Counts,
    EntryResult,
    Problem,
    ReportResult,
    RunRef,
    StaleResult,
    Target,
    WorkItem,
    WorkRef,
    blob_ref,
)
from imagerag.ingestion.work import (
    partition_report_path,
    plan_ref,
    read_json,
    read_partition,
    report_ref,
    stale_ref,
    write_json,
)
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
    ref = blob_ref(work["container"], partition_report_path(work["prefix"], partition))
    write_json(store, ref, {"partition": partition, "results": results})
    counts = count_results(results)
    # Exact counts of the partition, in place of the live ones (runs.py).
    runs.record_partition(store, work["container"], work["prefix"], partition, counts)
    return counts


def delete_stale(
    store: BlobStore, index: ImageIndex, *, work: WorkRef, target: Target
) -> StaleResult:
    """Delete the documents no present metadata file lists, then compact. A superseded run
    leaves this to the next one (which reads the files again)."""
    state = sync_state.read_state(store, work["container"], target["container"])
    if sync_state.superseded(state, target["changes"]):
        logger.info("run %s superseded: deletions left to the next run", work["prefix"])
        return {"deleted": 0, "superseded": True}
    stale: list[str] = read_json(store, stale_ref(work))
    if stale:
        index.delete(stale)
    index.optimize()
    logger.info("run %s: deleted %d documents no metadata file lists", work["prefix"], len(stale))
    return {"deleted": len(stale), "superseded": False}


def write_report(
    store: BlobStore,
    *,
    work: WorkRef,
    container: str,
    index: str,
    run: RunRef,
    partitions: int,
    deleted: int,
    superseded: bool,
    error: Problem | None = None,
) -> ReportResult:
    """Merge the partition reports into ``<run>/report.json``: one row per entry of every
    metadata file read (so each file's rows add up to its length), the documents deleted,
    the notices; then close the run's record."""
    items: list[WorkItem] = []
    results: list[EntryResult] = []
    for i in range(partitions):
        items += read_partition(store, work=work, partition=i)
        part = read_json(
            store, blob_ref(work["container"], partition_report_path(work["prefix"], i))
        )
        results += part["results"]
    plan = _plan_or_empty(store, work)
    removed = sum(1 for r in results if r.get("removed"))
    rows = _rows(plan.get("files", []), items, results)
    counts = count_results(rows)
    phase = runs.REJECTED if error else (runs.SUPERSEDED if superseded else runs.COMPLETED)
    report: dict[str, Any] = {
        "run": run["id"],
        "container": container,
        "index": index,
        "phase": phase,
        **counts,
        "deleted": deleted + removed,
        "files": [{k: v for k, v in f.items() if k != "rows"} for f in plan.get("files", [])],
        "notices": plan.get("notices", []),
        **({"error": error} if error is not None else {}),
        "results": rows,
    }
    ref = report_ref(work)
    write_json(store, ref, report)
    closing: dict[str, Any] = {
        "phase": phase,
        "container": container,
        "index": index,
        "done": len(results),
        "byStatus": {status: counts[status] for status in STATUSES},
        "deleted": deleted + removed,
        "report": ref,
    }
    if error is not None:
        closing["error"] = error
    runs.update_record(store, work["container"], run["id"], _drop_progress, **closing)
    return {"report": ref, "phase": phase, "counts": counts, "deleted": deleted + removed}


def _drop_progress(record: dict[str, Any]) -> None:
    # The closing counts are exact: the per-partition ones go, and the record stays small.
    record.pop(runs.PARTITIONS, None)
    record.pop(runs.LIVE, None)


def _plan_or_empty(store: BlobStore, work: WorkRef) -> dict[str, Any]:
    try:
        plan: dict[str, Any] = read_json(store, plan_ref(work))
    except (BlobNotFoundError, json.JSONDecodeError):
        return {}  # a run refused before planning
    return plan


def _rows(
    files: list[dict[str, Any]], items: list[WorkItem], results: list[EntryResult]
) -> list[Any]:
    """Each file's entries, in file order, with the result of the work item each points at."""
    rows: list[Any] = []
    for file in files:
        for entry_index, slot in file.get("rows", []):
            item, result = items[slot], results[slot]
            row = {"metadata": file["metadata"], "index": entry_index, **result}
            row["image_blob_path"] = row.pop("path")
            if item.get("problem") is None and item["source"] != file["metadata"]:
                row["description_from"] = item["source"]
            rows.append(row)
    return rows
