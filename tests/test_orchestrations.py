"""The ingestion orchestrators driven in-process with a scripted Durable context (no host, no
storage): which activities they schedule, with what, and what they report."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from app_functions import app_functions
from durable_script import Call, Script

from imagerag import naming
from imagerag.ingestion import contract
from orchestrations.ingest import (
    INGEST_ORCHESTRATOR,
    INGEST_PARTITION,
    PARTITION_RETRY,
    RUNS_PER_HISTORY,
    SYNC_ORCHESTRATOR,
    ingest_partition,
    ingest_run,
    sync_container,
)

CONTAINER = "images"
RUN = {"id": naming.run_id(CONTAINER, 1), "number": 1, "requested": 1, "changes": 1}
WORK = {"container": "imagerag-work", "prefix": RUN["id"]}
REPORT = {"container": "imagerag-work", "path": f"{RUN['id']}/report.json"}
TARGET = {"container": CONTAINER, "index": "images-v", "changes": 1}
REQUEST = {"container": CONTAINER, "index": "images-v", "run": RUN}


@functools.cache
def registered() -> dict[str, str]:
    """Every function of function_app.py with its trigger type."""
    names = {}
    for fn in app_functions():
        bindings = json.loads(fn.get_function_json())["bindings"]
        trigger = next(b["type"] for b in bindings if b["type"].endswith("Trigger"))
        names[fn.get_function_name()] = trigger
    return names


def generator(function: Any) -> Any:
    return function.build().get_user_function().orchestrator_function


class Pipeline:
    """Stand-ins for the activities: ``items`` work items, each with a status."""

    def __init__(self, items: int, partition_size: int, statuses: dict[int, str] | None = None):
        self.items = items
        self.partition_size = partition_size
        self.statuses = statuses or {}
        self.plan_error: dict[str, str] | None = None
        self.index_error: dict[str, str] | None = None
        self.superseded = False
        self.runs = 0
        self.again: list[bool] = []
        self.ended: list[dict] = []
        self.failed: list[dict] = []
        self.crash_runs: set[int] = set()  # runs whose planning raises (a bug, an outage)

    def handlers(self) -> dict[str, Any]:
        return {
            contract.BEGIN_RUN.name: self.begin_run,
            contract.END_RUN.name: self.end_run,
            contract.FAIL_RUN.name: self.fail_run,
            contract.PLAN_RUN.name: self.plan,
            contract.ENSURE_INDEX.name: self.ensure_index,
            contract.INGEST_IMAGE.name: self.ingest_image,
            contract.WRITE_PARTITION_REPORT.name: self.write_partition_report,
            contract.DELETE_STALE.name: self.delete_stale,
            contract.WRITE_REPORT.name: self.write_report,
        }

    def begin_run(self, payload: dict) -> dict:
        assert payload == {"container": CONTAINER, "epoch": 4}
        self.runs += 1
        number = self.runs
        run_id = naming.run_id(CONTAINER, number)
        return {"id": run_id, "number": number, "requested": number, "changes": number}

    def end_run(self, payload: dict) -> dict:
        self.ended.append(payload)
        return {"again": self.again.pop(0) if self.again else False}

    def fail_run(self, payload: dict) -> bool:
        self.failed.append(payload)
        return True

    def plan(self, payload: dict) -> dict:
        assert payload["container"] == CONTAINER and payload["index"] == "images-v"
        if payload["run"]["number"] in self.crash_runs:
            raise RuntimeError("Traceback (most recent call last): ...")
        work = {"container": "imagerag-work", "prefix": payload["run"]["id"]}
        if self.plan_error is not None:
            return {"work": work, "error": self.plan_error}
        sizes = contract.partition_counts(self.items, self.partition_size)
        return {
            "work": work,
            "items": self.items,
            "partitions": len(sizes),
            "partition_size": self.partition_size,
            "files": 1,
            "stale": 2,
        }

    def ensure_index(self, payload: dict) -> dict:
        assert payload == {"index": "images-v"}
        if self.index_error is not None:
            return {"error": self.index_error}
        return {"index": "images-v", "model": {"name": "m", "version": "1"}}

    def ingest_image(self, payload: dict) -> dict:
        assert payload["target"]["container"] == CONTAINER
        position = payload["partition"] * self.partition_size + payload["slot"]
        return {
            "path": f"{position}.jpg",
            "id": str(position),
            "status": self.statuses.get(position, "indexed"),
        }

    def write_partition_report(self, payload: dict) -> dict:
        statuses = [r["status"] for r in payload["results"]]
        counts = {s: statuses.count(s) for s in contract.STATUSES}
        return {"entries": len(statuses), **counts}

    def delete_stale(self, payload: dict) -> dict:
        assert payload["target"]["index"] == "images-v"
        return {"deleted": 0 if self.superseded else 2, "superseded": self.superseded}

    def write_report(self, payload: dict) -> dict:
        counts = {s: 0 for s in contract.STATUSES}
        for position in range(self.items if "error" not in payload else 0):
            counts[self.statuses.get(position, "indexed")] += 1
        phase = "rejected" if "error" in payload else "completed"
        if payload["superseded"]:
            phase = "superseded"
        return {
            "report": {"container": "imagerag-work", "path": f"{payload['run']['id']}/report.json"},
            "phase": phase,
            "counts": {"entries": sum(counts.values()), **counts},
            "deleted": payload["deleted"],
        }


def script(pipeline: Pipeline, **options: Any) -> Script:
    return Script(
        activities=pipeline.handlers(),
        orchestrators={
            SYNC_ORCHESTRATOR: generator(sync_container),
            INGEST_ORCHESTRATOR: generator(ingest_run),
            INGEST_PARTITION: generator(ingest_partition),
        },
        registered=registered(),
        **options,
    )


def names(calls: list[Call]) -> list[str]:
    return [c.name for c in calls]


# --------------------------------------------------------------------------- one run


def test_a_run_plans_ensures_processes_deletes_and_reports() -> None:
    pipeline = Pipeline(items=5, partition_size=2, statuses={3: "skipped"})
    run = script(pipeline)
    output, context = run.run(INGEST_ORCHESTRATOR, REQUEST, RUN["id"])

    assert names(context.calls) == [
        "plan_run",
        "ensure_index",
        "ingest_partition",
        "ingest_partition",
        "ingest_partition",
        "delete_stale",
        "write_report",
    ]
    partitions = [c for c in context.calls if c.kind == "sub_orchestrator"]
    assert [c.instance_id for c in partitions] == [
        naming.partition_instance_id(RUN["id"], i) for i in range(3)
    ]
    assert [c.payload["entries"] for c in partitions] == [2, 2, 1]
    assert all(c.payload["target"] == TARGET for c in partitions)
    assert output == {
        "run": RUN["id"],
        "container": CONTAINER,
        "index": "images-v",
        "phase": "completed",
        "entries": 5,
        "indexed": 4,
        "updated": 0,
        "unchanged": 0,
        "skipped": 1,
        "failed": 0,
        "deleted": 2,
        "report": REPORT,
    }
    # Every activity of a partition is retried by the same policy, one per slot of its
    # partition, then the partition's report.
    last = run.children[naming.partition_instance_id(RUN["id"], 2)]
    assert names(last.calls) == ["ingest_image", "write_partition_report"]
    assert [c.retry for c in last.calls] == [PARTITION_RETRY, PARTITION_RETRY]
    first = run.children[partitions[0].instance_id]
    assert [c.payload["slot"] for c in first.calls[:2]] == [0, 1]


@pytest.mark.parametrize("refusal", ["plan", "index"])
def test_a_refused_run_writes_a_report_saying_why_and_touches_nothing(refusal: str) -> None:
    pipeline = Pipeline(items=3, partition_size=2)
    error = {"code": "ContainerNotAllowed", "message": "not this one"}
    if refusal == "plan":
        pipeline.plan_error = error
    else:
        pipeline.index_error = error | {"code": "IndexModelMismatch"}
    output, context = script(pipeline).run(INGEST_ORCHESTRATOR, REQUEST, RUN["id"])
    expected = (
        ["plan_run", "write_report"]
        if refusal == "plan"
        else [
            "plan_run",
            "ensure_index",
            "write_report",
        ]
    )
    assert names(context.calls) == expected
    report_call = context.calls[-1]
    assert report_call.payload["error"]["message"] == "not this one"
    assert report_call.payload["partitions"] == 0
    assert output["phase"] == "rejected" and output["error"]["message"] == "not this one"


def test_a_superseded_run_deletes_nothing_and_says_so() -> None:
    pipeline = Pipeline(items=2, partition_size=2, statuses={1: "skipped"})
    pipeline.superseded = True
    output, context = script(pipeline).run(INGEST_ORCHESTRATOR, REQUEST, RUN["id"])
    assert context.calls[-1].payload["superseded"] is True
    assert (output["phase"], output["deleted"]) == ("superseded", 0)
    assert (output["indexed"], output["skipped"]) == (1, 1)


def test_an_empty_container_schedules_no_partition() -> None:
    output, context = script(Pipeline(items=0, partition_size=100)).run(
        INGEST_ORCHESTRATOR, REQUEST, RUN["id"]
    )
    assert "ingest_partition" not in names(context.calls)
    assert output["entries"] == 0


@pytest.mark.parametrize("items", [1, 100])
def test_a_partition_reports_one_result_per_slot(items: int) -> None:
    pipeline = Pipeline(items=items, partition_size=100)
    request = {"work": WORK, "partition": 0, "entries": items, "target": TARGET}
    counts, context = script(pipeline).run(INGEST_PARTITION, request, f"{RUN['id']}-p0000")
    assert counts == {"entries": items, **{s: 0 for s in contract.STATUSES}, "indexed": items}
    report = context.calls[-1]
    assert report.name == "write_partition_report"
    assert [r["path"] for r in report.payload["results"]] == [f"{i}.jpg" for i in range(items)]


# --------------------------------------------------------------------------- the sync loop


SYNC = {"container": CONTAINER, "index": "images-v", "epoch": 4}


def test_the_sync_orchestration_runs_until_no_request_is_left() -> None:
    pipeline = Pipeline(items=1, partition_size=10)
    pipeline.again = [True, True, False]
    run = script(pipeline)
    output, context = run.run(SYNC_ORCHESTRATOR, SYNC, naming.sync_instance_id(CONTAINER))
    assert output == 3
    assert names(context.calls) == ["begin_run", "ingest_run", "end_run"] * 3
    runs = [c for c in context.calls if c.kind == "sub_orchestrator"]
    assert [c.instance_id for c in runs] == [naming.run_id(CONTAINER, n) for n in (1, 2, 3)]
    assert all(c.payload["run"]["id"] == c.instance_id for c in runs)
    assert pipeline.ended == [{"container": CONTAINER, "epoch": 4}] * 3
    assert context.continued_with is None


def test_a_failed_run_is_closed_as_failed_and_the_next_runs_go_on() -> None:
    pipeline = Pipeline(items=1, partition_size=10)
    pipeline.again = [True, False]
    pipeline.crash_runs = {1}
    output, context = script(pipeline).run(
        SYNC_ORCHESTRATOR, SYNC, naming.sync_instance_id(CONTAINER)
    )
    assert output == 2
    assert names(context.calls) == [
        "begin_run",
        "ingest_run",
        "fail_run",
        "end_run",
        "begin_run",
        "ingest_run",
        "end_run",
    ]
    assert pipeline.failed == [{"container": CONTAINER, "run": naming.run_id(CONTAINER, 1)}]
    assert len(pipeline.ended) == 2


def test_the_sync_orchestration_starts_a_fresh_history_after_many_runs() -> None:
    pipeline = Pipeline(items=0, partition_size=10)
    pipeline.again = [True] * (RUNS_PER_HISTORY + 5)
    output, context = script(pipeline).run(
        SYNC_ORCHESTRATOR, SYNC, naming.sync_instance_id(CONTAINER)
    )
    assert output == RUNS_PER_HISTORY
    assert names(context.calls).count("ingest_run") == RUNS_PER_HISTORY
    assert context.continued_with == SYNC
