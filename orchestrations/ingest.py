"""Ingestion orchestrators: one metadata file -> partitions -> one activity per image.

Pure and replay-safe: only yields of Durable tasks, no I/O, clock, random or env reads.
History stays bounded for any file size: the parent holds one sub-orchestration per
partition, each partition holds at most INGEST_PARTITION_SIZE activities.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from activities.ingest import (
    ENSURE_INDEX,
    INGEST_IMAGE,
    PLAN_INGESTION,
    SYNC_DELETIONS,
    WRITE_PARTITION_REPORT,
    WRITE_REPORT,
)
from imagerag.ingestion import STATUSES, partition_counts

INGEST_ORCHESTRATOR = "ingest_metadata"
INGEST_PARTITION = "ingest_partition"

# Fixed interval only in SDK 1.x; throttling backoff lives in the adapters' HTTP clients.
IMAGE_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)

bp = df.Blueprint()

Orchestration = Generator[Any, Any, dict[str, Any]]


def partition_instance_id(parent_instance_id: str, partition: int) -> str:
    # Deterministic, so a replay or a restarted parent addresses the same children.
    return f"{parent_instance_id}-p{partition:04d}"


@bp.function_name(INGEST_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def ingest_metadata(context: df.DurableOrchestrationContext) -> Orchestration:
    """Input {container, blob_path, sha256}. Output {metadata, index, entries, indexed, updated,
    unchanged, skipped, failed, deleted, report} or, for a rejected file, {metadata, error,
    report}."""
    request: dict[str, Any] = context.get_input()
    metadata = f"{request['container']}/{request['blob_path']}"
    sha256 = request["sha256"]

    plan = yield context.call_activity(
        PLAN_INGESTION,
        {
            "container": request["container"],
            "blob_path": request["blob_path"],
            "sha256": sha256,
            "instance_id": context.instance_id,
        },
    )
    if "error" in plan:
        return _rejected(context, metadata, plan["error"], plan["report"])

    index = plan["index"]
    work = plan["work"]
    ensured = yield context.call_activity(ENSURE_INDEX, {"index": index})
    if "error" in ensured:
        report = yield context.call_activity(
            WRITE_REPORT,
            {"work": work, "metadata": metadata, "sha256": sha256, "partitions": 0}
            | {"index": index, "deleted": 0, "error": ensured["error"]},
        )
        return _rejected(context, metadata, ensured["error"], _where(report))

    sizes = partition_counts(plan["entries"], plan["partition_size"])
    target = {"index": index, "source": metadata, "etag": plan["metadata_etag"]}
    pending = [
        context.call_sub_orchestrator(
            INGEST_PARTITION,
            {"work": work, "partition": i, "entries": size, "target": target},
            instance_id=partition_instance_id(context.instance_id, i),
        )
        for i, size in enumerate(sizes)
    ]
    totals = dict.fromkeys(STATUSES, 0)
    _progress(context, plan["entries"], totals, 0, len(sizes))
    # task_any in a loop, not one task_all: progress is published as each partition finishes.
    # The parent holds one task per partition (<= 100), so the replays stay cheap.
    while pending:
        finished = yield context.task_any(pending)
        pending.remove(finished)
        for status in STATUSES:
            totals[status] += finished.result[status]
        _progress(context, plan["entries"], totals, len(sizes) - len(pending), len(sizes))

    sync = yield context.call_activity(
        SYNC_DELETIONS,
        {"work": work, "partitions": len(sizes), "metadata": metadata, "sha256": sha256}
        | {"index": index},
    )
    report = yield context.call_activity(
        WRITE_REPORT,
        {"work": work, "metadata": metadata, "sha256": sha256, "partitions": len(sizes)}
        | {"index": index, "deleted": sync["deleted"]},
    )
    result = {
        "metadata": metadata,
        "index": index,
        "entries": plan["entries"],
        **{status: report[status] for status in STATUSES},
        "deleted": sync["deleted"],
        "report": _where(report),
    }
    context.set_custom_status(
        {"phase": "completed", "total": plan["entries"], "done": plan["entries"]}
        | {"failed": report["skipped"] + report["failed"], "deleted": sync["deleted"]}
        | {"partitions": len(sizes)}
        | {"byStatus": {status: report[status] for status in STATUSES}}
    )
    return result


@bp.function_name(INGEST_PARTITION)
@bp.orchestration_trigger(context_name="context")
def ingest_partition(context: df.DurableOrchestrationContext) -> Orchestration:
    """Input {work, partition, entries, target}. Output the partition's counts by status;
    per-image results go to a report blob, the parent sees counts only."""
    ref: dict[str, Any] = context.get_input()
    tasks = [
        context.call_activity_with_retry(
            INGEST_IMAGE,
            IMAGE_RETRY,
            {"work": ref["work"], "partition": ref["partition"], "slot": slot}
            | {"target": ref["target"]},
        )
        for slot in range(ref["entries"])
    ]
    # One task_all, results taken from the returned list (re-yielding thousands of finished
    # tasks one by one hits RecursionError in SDK 1.7).
    results: list[dict[str, Any]] = (yield context.task_all(tasks)) if tasks else []
    counts: dict[str, Any] = yield context.call_activity(
        WRITE_PARTITION_REPORT,
        {"work": ref["work"], "partition": ref["partition"], "results": results},
    )
    return counts


def _progress(
    context: df.DurableOrchestrationContext,
    total: int,
    totals: dict[str, int],
    partitions_done: int,
    partitions: int,
) -> None:
    context.set_custom_status(
        {
            "phase": "ingesting",
            "total": total,
            "done": sum(totals.values()),
            "failed": totals["skipped"] + totals["failed"],
            "partitions": partitions,
            "partitionsDone": partitions_done,
            "byStatus": totals,
        }
    )


def _rejected(
    context: df.DurableOrchestrationContext, metadata: str, error: dict[str, Any], report: str
) -> dict[str, Any]:
    # A bad file is the user's to fix: report it as the result, do not fail the instance.
    context.set_custom_status({"phase": "rejected", "error": error, "report": report})
    return {"metadata": metadata, "error": error, "report": report}


def _where(report: dict[str, Any]) -> str:
    return f"{report['container']}/{report['path']}"
