"""Ingestion orchestrators: one metadata file -> partitions -> one activity per image.

Pure and replay-safe: only yields of Durable tasks, no I/O, clock, random or env reads.
History stays bounded for any file size: the parent holds one sub-orchestration per
partition, each partition holds at most INGEST_PARTITION_SIZE activities. Every payload is a
type of imagerag.ingestion.contract.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypedDict

import azure.durable_functions as df

from imagerag.ingestion.contract import (
    ENSURE_INDEX,
    INGEST_IMAGE,
    PLAN_INGESTION,
    STATUSES,
    SYNC_DELETIONS,
    WRITE_PARTITION_REPORT,
    WRITE_REPORT,
    BlobRef,
    Counts,
    EntryResult,
    IndexReady,
    IndexRefused,
    IngestRejected,
    IngestRequest,
    IngestResult,
    PartitionRequest,
    Plan,
    PlanRejected,
    Problem,
    ReportResult,
    SyncResult,
    Target,
    partition_counts,
)
from imagerag.naming import partition_instance_id

INGEST_ORCHESTRATOR = "ingest_metadata"
INGEST_PARTITION = "ingest_partition"

# Fixed interval only in SDK 1.x; throttling backoff lives in the adapters' HTTP clients.
IMAGE_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)

bp = df.Blueprint()


class Progress(TypedDict):
    """The custom status while partitions run: what a person watching the ingestion sees."""

    phase: str
    total: int
    done: int
    failed: int
    partitions: int
    partitionsDone: int
    byStatus: dict[str, int]


@bp.function_name(INGEST_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def ingest_metadata(
    context: df.DurableOrchestrationContext,
) -> Generator[Any, Any, IngestResult | IngestRejected]:
    """Plan the file, ensure the index, run the partitions, sync deletions, write the report."""
    request: IngestRequest = context.get_input()
    metadata, sha256 = request["metadata"], request["sha256"]

    plan: Plan | PlanRejected = yield PLAN_INGESTION.call(
        context, {"metadata": metadata, "sha256": sha256, "instance_id": context.instance_id}
    )
    if "error" in plan:
        return _rejected(context, metadata, plan["error"], plan["report"])

    index, work = plan["index"], plan["work"]
    ensured: IndexReady | IndexRefused = yield ENSURE_INDEX.call(context, {"index": index})
    if "error" in ensured:
        refused: ReportResult = yield WRITE_REPORT.call(
            context,
            {
                "work": work,
                "metadata": metadata,
                "sha256": sha256,
                "partitions": 0,
                "index": index,
                "deleted": 0,
                "error": ensured["error"],
            },
        )
        return _rejected(context, metadata, ensured["error"], refused["report"])

    sizes = partition_counts(plan["entries"], plan["partition_size"])
    target: Target = {"index": index, "source": metadata, "etag": plan["metadata_etag"]}
    pending = [
        _partition(context, {"work": work, "partition": i, "entries": size, "target": target})
        for i, size in enumerate(sizes)
    ]
    totals: dict[str, int] = dict.fromkeys(STATUSES, 0)
    _progress(context, plan["entries"], totals, 0, len(sizes))
    # task_any in a loop, not one task_all: progress is published as each partition finishes.
    # The parent holds one task per partition (<= 100), so the replays stay cheap.
    while pending:
        finished = yield context.task_any(pending)
        pending.remove(finished)
        counts: Counts = finished.result
        for status in STATUSES:
            totals[status] += counts[status]
        _progress(context, plan["entries"], totals, len(sizes) - len(pending), len(sizes))

    sync: SyncResult = yield SYNC_DELETIONS.call(
        context,
        {
            "work": work,
            "partitions": len(sizes),
            "metadata": metadata,
            "sha256": sha256,
            "index": index,
        },
    )
    report: ReportResult = yield WRITE_REPORT.call(
        context,
        {
            "work": work,
            "metadata": metadata,
            "sha256": sha256,
            "partitions": len(sizes),
            "index": index,
            "deleted": sync["deleted"],
        },
    )
    final = report["counts"]
    context.set_custom_status(
        {
            "phase": "completed",
            "total": plan["entries"],
            "done": plan["entries"],
            "failed": final["skipped"] + final["failed"],
            "deleted": sync["deleted"],
            "partitions": len(sizes),
            "byStatus": {status: final[status] for status in STATUSES},
        }
    )
    return {
        "metadata": metadata,
        "index": index,
        "entries": plan["entries"],
        "indexed": final["indexed"],
        "updated": final["updated"],
        "unchanged": final["unchanged"],
        "skipped": final["skipped"],
        "failed": final["failed"],
        "deleted": sync["deleted"],
        "report": report["report"],
    }


def _partition(context: df.DurableOrchestrationContext, request: PartitionRequest) -> Any:
    return context.call_sub_orchestrator(
        INGEST_PARTITION,
        request,
        instance_id=partition_instance_id(context.instance_id, request["partition"]),
    )


@bp.function_name(INGEST_PARTITION)
@bp.orchestration_trigger(context_name="context")
def ingest_partition(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Counts]:
    """One activity per entry of the partition; per-image results go to a report blob, the
    parent sees counts only."""
    request: PartitionRequest = context.get_input()
    work, partition = request["work"], request["partition"]
    tasks = [
        INGEST_IMAGE.call(
            context,
            {"work": work, "partition": partition, "slot": slot, "target": request["target"]},
            retry=IMAGE_RETRY,
        )
        for slot in range(request["entries"])
    ]
    # One task_all, results taken from the returned list (re-yielding thousands of finished
    # tasks one by one hits RecursionError in SDK 1.7).
    results: list[EntryResult] = (yield context.task_all(tasks)) if tasks else []
    counts: Counts = yield WRITE_PARTITION_REPORT.call(
        context, {"work": work, "partition": partition, "results": results}
    )
    return counts


def _progress(
    context: df.DurableOrchestrationContext,
    total: int,
    totals: dict[str, int],
    partitions_done: int,
    partitions: int,
) -> None:
    progress: Progress = {
        "phase": "ingesting",
        "total": total,
        "done": sum(totals.values()),
        "failed": totals["skipped"] + totals["failed"],
        "partitions": partitions,
        "partitionsDone": partitions_done,
        "byStatus": totals,
    }
    context.set_custom_status(progress)


def _rejected(
    context: df.DurableOrchestrationContext, metadata: BlobRef, error: Problem, report: BlobRef
) -> IngestRejected:
    # A bad file is the user's to fix: report it as the result, do not fail the instance.
    context.set_custom_status({"phase": "rejected", "error": error, "report": report})
    return {"metadata": metadata, "error": error, "report": report}
