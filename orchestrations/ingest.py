"""Ingestion orchestrators: a container's runs, one after the other; each run brings the index
to what the metadata files present list, one activity per image.

Pure and replay-safe: only yields of Durable tasks, no I/O, clock, random or env reads.
History stays bounded: the sync orchestration holds a few tasks per run and starts afresh
(continue_as_new) every RUNS_PER_HISTORY runs; a run holds one sub-orchestration per
partition; a partition holds at most INGEST_PARTITION_SIZE activities. Every payload is a type
of imagerag.ingestion.contract.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from imagerag.ingestion.contract import (
    BEGIN_RUN,
    DELETE_STALE,
    END_RUN,
    ENSURE_INDEX,
    FAIL_RUN,
    INGEST_IMAGE,
    PLAN_RUN,
    WRITE_PARTITION_REPORT,
    WRITE_REPORT,
    Counts,
    EndRun,
    EntryResult,
    IndexReady,
    IndexRefused,
    PartitionRequest,
    Plan,
    PlanRejected,
    Problem,
    ReportResult,
    RunRef,
    RunRequest,
    RunResult,
    StaleResult,
    SyncRef,
    SyncRequest,
    Target,
    WorkRef,
    partition_counts,
)
from imagerag.naming import partition_instance_id

SYNC_ORCHESTRATOR = "sync_container"
INGEST_ORCHESTRATOR = "ingest_run"
INGEST_PARTITION = "ingest_partition"
RUNS_PER_HISTORY = 20

# For the activities of a partition (each idempotent). Fixed interval only in SDK 1.x;
# throttling backoff lives in the adapters' HTTP clients.
PARTITION_RETRY = df.RetryOptions(
    first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3
)

bp = df.Blueprint()


@bp.function_name(SYNC_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def sync_container(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """Run the container's runs until no request is left (see sync_state.py); returns how
    many runs this history ran. A run that fails is closed as failed here, so its record (what
    the status routes read) says so without asking the Durable instance store."""
    request: SyncRequest = context.get_input()
    ref: SyncRef = {"container": request["container"], "epoch": request["epoch"]}
    for done in range(1, RUNS_PER_HISTORY + 1):
        run: RunRef = yield BEGIN_RUN.call(context, ref)
        try:
            yield context.call_sub_orchestrator(
                INGEST_ORCHESTRATOR,
                {"container": request["container"], "index": request["index"], "run": run},
                instance_id=run["id"],
            )
        except Exception:  # the run failed unexpectedly: its record says so, the next go on
            yield FAIL_RUN.call(context, {"container": request["container"], "run": run["id"]})
        ended: EndRun = yield END_RUN.call(context, ref)
        if not ended["again"]:
            return done
    context.continue_as_new(request)  # more requests: a fresh history for the next runs
    return RUNS_PER_HISTORY


@bp.function_name(INGEST_ORCHESTRATOR)
@bp.orchestration_trigger(context_name="context")
def ingest_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, RunResult]:
    """Plan from every metadata file present, ensure the index, process the images partition
    by partition, delete what no file lists, write the report."""
    request: RunRequest = context.get_input()
    container, index, run = request["container"], request["index"], request["run"]
    target: Target = {"container": container, "index": index, "changes": run["changes"]}

    plan: Plan | PlanRejected = yield PLAN_RUN.call(
        context, {"container": container, "index": index, "run": run}
    )
    if "error" in plan:
        return (yield from _refused(context, request, plan["work"], plan["error"]))
    work = plan["work"]
    ensured: IndexReady | IndexRefused = yield ENSURE_INDEX.call(context, {"index": index})
    if "error" in ensured:
        return (yield from _refused(context, request, work, ensured["error"]))

    sizes = partition_counts(plan["items"], plan["partition_size"])
    partitions = [
        context.call_sub_orchestrator(
            INGEST_PARTITION,
            {"work": work, "partition": i, "entries": size, "target": target},
            instance_id=partition_instance_id(run["id"], i),
        )
        for i, size in enumerate(sizes)
    ]
    # One task_all (re-yielding hundreds of finished tasks one by one hits RecursionError in
    # SDK 1.7). Progress goes to the run's record as partitions report, not through here.
    if partitions:
        yield context.task_all(partitions)
    stale: StaleResult = yield DELETE_STALE.call(context, {"work": work, "target": target})
    report: ReportResult = yield WRITE_REPORT.call(
        context,
        {
            "work": work,
            "container": container,
            "index": index,
            "run": run,
            "partitions": len(sizes),
            "deleted": stale["deleted"],
            "superseded": stale["superseded"],
        },
    )
    return _result(request, report)


@bp.function_name(INGEST_PARTITION)
@bp.orchestration_trigger(context_name="context")
def ingest_partition(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Counts]:
    """One activity per work item of the partition; per-image results go to a report blob,
    the parent sees counts only."""
    request: PartitionRequest = context.get_input()
    work, partition = request["work"], request["partition"]
    tasks = [
        INGEST_IMAGE.call(
            context,
            {"work": work, "partition": partition, "slot": slot, "target": request["target"]},
            retry=PARTITION_RETRY,
        )
        for slot in range(request["entries"])
    ]
    results: list[EntryResult] = (yield context.task_all(tasks)) if tasks else []
    counts: Counts = yield WRITE_PARTITION_REPORT.call(
        context, {"work": work, "partition": partition, "results": results}, retry=PARTITION_RETRY
    )
    return counts


def _refused(
    context: df.DurableOrchestrationContext, request: RunRequest, work: WorkRef, error: Problem
) -> Generator[Any, Any, RunResult]:
    """A run that ingests nothing (an index of another model, a container the app does not
    ingest) still ends with a report saying why."""
    report: ReportResult = yield WRITE_REPORT.call(
        context,
        {
            "work": work,
            "container": request["container"],
            "index": request["index"],
            "run": request["run"],
            "partitions": 0,
            "deleted": 0,
            "superseded": False,
            "error": error,
        },
    )
    result = _result(request, report)
    result["error"] = error
    return result


def _result(request: RunRequest, report: ReportResult) -> RunResult:
    counts = report["counts"]
    result: RunResult = {
        "run": request["run"]["id"],
        "container": request["container"],
        "index": request["index"],
        "phase": report["phase"],
        "entries": counts["entries"],
        "indexed": counts["indexed"],
        "updated": counts["updated"],
        "unchanged": counts["unchanged"],
        "skipped": counts["skipped"],
        "failed": counts["failed"],
        "deleted": report["deleted"],
        "report": report["report"],
    }
    return result
