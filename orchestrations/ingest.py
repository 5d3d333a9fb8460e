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
    PLAN_INGESTION,
    READ_PARTITION,
    RECORD_ENTRY,
    WRITE_PARTITION_REPORT,
    WRITE_REPORT,
)

INGEST_ORCHESTRATOR = "ingest_metadata"
INGEST_PARTITION = "ingest_partition"

# Fixed interval only in SDK 1.x; throttling backoff belongs in the adapters' HTTP clients.
RECORD_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)

COUNT_KEYS = ("recorded", "missing", "invalid")

bp = df.Blueprint()

Orchestration = Generator[Any, Any, dict[str, Any]]


def partition_instance_id(parent_instance_id: str, partition: int) -> str:
    # Deterministic, so a replay or a restarted parent addresses the same children.
    return f"{parent_instance_id}-p{partition:04d}"


@bp.function_name(INGEST_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def ingest_metadata(context: df.DurableOrchestrationContext) -> Orchestration:
    """Input {container, blob_path, sha256}. Output {metadata, entries, recorded, missing,
    invalid, report} or, for a rejected file, {metadata, error}."""
    request: dict[str, Any] = context.get_input()
    metadata = f"{request['container']}/{request['blob_path']}"

    plan = yield context.call_activity(
        PLAN_INGESTION,
        {
            "container": request["container"],
            "blob_path": request["blob_path"],
            "sha256": request["sha256"],
            "instance_id": context.instance_id,
        },
    )
    if "error" in plan:
        # A bad file is the user's to fix: report it as the result, do not fail the instance.
        context.set_custom_status({"phase": "rejected", "error": plan["error"]})
        return {"metadata": metadata, "error": plan["error"]}

    entries: int = plan["entries"]
    partition_count: int = plan["partitions"]
    context.set_custom_status(
        {"phase": "ingesting", "entries": entries, "partitions": partition_count}
    )

    children = [
        context.call_sub_orchestrator(
            INGEST_PARTITION,
            {"work": plan["work"], "partition": i},
            instance_id=partition_instance_id(context.instance_id, i),
        )
        for i in range(partition_count)
    ]
    # One task_all, results taken from the returned list (re-yielding thousands of finished
    # tasks one by one hits RecursionError in SDK 1.7).
    partition_counts: list[dict[str, int]] = (yield context.task_all(children)) if children else []
    totals = {key: sum(c[key] for c in partition_counts) for key in COUNT_KEYS}

    report = yield context.call_activity(
        WRITE_REPORT,
        {
            "work": plan["work"],
            "metadata": metadata,
            "sha256": request["sha256"],
            "partitions": partition_count,
        },
    )
    result = {
        "metadata": metadata,
        "entries": entries,
        **totals,
        "report": f"{report['container']}/{report['path']}",
    }
    context.set_custom_status({"phase": "completed", "entries": entries, **totals})
    return result


@bp.function_name(INGEST_PARTITION)
@bp.orchestration_trigger(context_name="context")
def ingest_partition(context: df.DurableOrchestrationContext) -> Orchestration:
    """Input {work: {container, prefix}, partition}. Output {entries, recorded, missing,
    invalid}; per-image results go to a report blob, the parent sees counts only."""
    ref: dict[str, Any] = context.get_input()
    entries: list[dict[str, Any]] = yield context.call_activity(READ_PARTITION, ref)
    tasks = [context.call_activity_with_retry(RECORD_ENTRY, RECORD_RETRY, e) for e in entries]
    results: list[dict[str, Any]] = (yield context.task_all(tasks)) if tasks else []
    counts: dict[str, Any] = yield context.call_activity(
        WRITE_PARTITION_REPORT,
        {"work": ref["work"], "partition": ref["partition"], "results": results},
    )
    return counts
