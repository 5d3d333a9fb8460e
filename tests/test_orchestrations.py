"""The ingestion orchestrators driven in-process with a scripted Durable context (no host, no
storage): which activities they schedule, with what, and what they report."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from durable_script import Call, Script

import function_app
from imagerag import naming
from imagerag.ingestion import contract
from orchestrations.ingest import (
    IMAGE_RETRY,
    INGEST_ORCHESTRATOR,
    INGEST_PARTITION,
    ingest_metadata,
    ingest_partition,
)

PARENT = naming.ingestion_instance_id("images", "metadata.json", "ab" * 32)
METADATA = contract.blob_ref("images", "metadata.json")
WORK = {"container": "imagerag-work", "prefix": PARENT}
REQUEST = {"metadata": METADATA, "sha256": "ab" * 32}


@functools.cache
def registered() -> dict[str, str]:
    """Every function of function_app.py with its trigger type."""
    names = {}
    for fn in function_app.app.get_functions():
        bindings = json.loads(fn.get_function_json())["bindings"]
        trigger = next(b["type"] for b in bindings if b["type"].endswith("Trigger"))
        names[fn.get_function_name()] = trigger
    return names


def generator(function: Any) -> Any:
    return function.build().get_user_function().orchestrator_function


class Pipeline:
    """Stand-ins for the activities: a file of ``entries`` entries, each with a status."""

    def __init__(self, entries: int, partition_size: int, statuses: dict[int, str] | None = None):
        self.entries = entries
        self.partition_size = partition_size
        self.statuses = statuses or {}
        self.plan_error: dict[str, str] | None = None
        self.index_error: dict[str, str] | None = None
        self.superseded = False

    def handlers(self) -> dict[str, Any]:
        return {
            contract.PLAN_INGESTION.name: self.plan,
            contract.ENSURE_INDEX.name: self.ensure_index,
            contract.INGEST_IMAGE.name: self.ingest_image,
            contract.WRITE_PARTITION_REPORT.name: self.write_partition_report,
            contract.SYNC_DELETIONS.name: self.sync,
            contract.WRITE_REPORT.name: self.write_report,
        }

    def plan(self, payload: dict) -> dict:
        assert payload == {"metadata": METADATA, "sha256": "ab" * 32, "instance_id": PARENT}
        if self.plan_error is not None:
            report = contract.blob_ref("imagerag-work", f"{PARENT}/report.json")
            return {"metadata": METADATA, "error": self.plan_error, "report": report}
        sizes = contract.partition_counts(self.entries, self.partition_size)
        return {
            "metadata": METADATA,
            "index": "images-v",
            "metadata_etag": '"0x1"',
            "entries": self.entries,
            "partitions": len(sizes),
            "partition_size": self.partition_size,
            "problems": 0,
            "work": WORK,
        }

    def ensure_index(self, payload: dict) -> dict:
        assert payload == {"index": "images-v"}
        if self.index_error is not None:
            return {"error": self.index_error}
        return {"index": "images-v", "model": {"name": "m", "version": "1"}}

    def ingest_image(self, payload: dict) -> dict:
        assert payload["target"] == {"index": "images-v", "source": METADATA, "etag": '"0x1"'}
        position = payload["partition"] * self.partition_size + payload["slot"]
        return {
            "index": position,
            "image_blob_path": f"{position}.jpg",
            "id": str(position),
            "status": self.statuses.get(position, "indexed"),
        }

    def write_partition_report(self, payload: dict) -> dict:
        statuses = [r["status"] for r in payload["results"]]
        counts = {s: statuses.count(s) for s in contract.STATUSES}
        return {"entries": len(statuses), **counts}

    def sync(self, payload: dict) -> dict:
        assert payload["metadata"] == METADATA and payload["index"] == "images-v"
        return {"deleted": 0 if self.superseded else 2, "superseded": self.superseded}

    def write_report(self, payload: dict) -> dict:
        counts = {s: 0 for s in contract.STATUSES}
        for position in range(self.entries if "error" not in payload else 0):
            counts[self.statuses.get(position, "indexed")] += 1
        return {
            "report": contract.blob_ref("imagerag-work", f"{PARENT}/report.json"),
            "counts": {"entries": sum(counts.values()), **counts},
            "deleted": payload["deleted"],
        }


def script(pipeline: Pipeline, **options: Any) -> Script:
    return Script(
        activities=pipeline.handlers(),
        orchestrators={
            INGEST_ORCHESTRATOR: generator(ingest_metadata),
            INGEST_PARTITION: generator(ingest_partition),
        },
        registered=registered(),
        **options,
    )


def activity_names(calls: list[Call]) -> list[str]:
    return [c.name for c in calls]


def test_a_file_is_planned_partitioned_synced_and_reported() -> None:
    pipeline = Pipeline(entries=5, partition_size=2, statuses={3: "skipped"})
    run = script(pipeline)
    output, context = run.run(INGEST_ORCHESTRATOR, REQUEST, PARENT)

    assert activity_names(context.calls) == [
        "plan_ingestion",
        "ensure_index",
        "ingest_partition",
        "ingest_partition",
        "ingest_partition",
        "sync_deletions",
        "write_report",
    ]
    partitions = [c for c in context.calls if c.kind == "sub_orchestrator"]
    assert [c.instance_id for c in partitions] == [
        naming.partition_instance_id(PARENT, i) for i in range(3)
    ]
    assert [c.payload["entries"] for c in partitions] == [2, 2, 1]
    assert output == {
        "metadata": METADATA,
        "index": "images-v",
        "entries": 5,
        "indexed": 4,
        "updated": 0,
        "unchanged": 0,
        "skipped": 1,
        "failed": 0,
        "deleted": 2,
        "report": {"container": "imagerag-work", "path": f"{PARENT}/report.json"},
    }
    # Every image activity is retried by the same policy, one per slot of its partition.
    last = run.children[naming.partition_instance_id(PARENT, 2)]
    assert activity_names(last.calls) == ["ingest_image", "write_partition_report"]
    assert last.calls[0].retry is IMAGE_RETRY
    assert [c.payload["slot"] for c in run.children[partitions[0].instance_id].calls[:2]] == [0, 1]


def test_progress_is_published_as_partitions_finish() -> None:
    pipeline = Pipeline(entries=5, partition_size=2, statuses={0: "failed", 4: "skipped"})
    _, context = script(pipeline, any_order=lambda tasks: tasks[-1]).run(
        INGEST_ORCHESTRATOR, REQUEST, PARENT
    )
    ingesting = [s for s in context.statuses if s["phase"] == "ingesting"]
    assert [(s["partitionsDone"], s["done"]) for s in ingesting] == [
        (0, 0),
        (1, 1),  # the last partition (1 entry) finished first
        (2, 3),
        (3, 5),
    ]
    assert ingesting[-1]["byStatus"] == {
        "indexed": 3,
        "updated": 0,
        "unchanged": 0,
        "skipped": 1,
        "failed": 1,
    }
    assert context.statuses[-1]["phase"] == "completed"
    assert context.statuses[-1]["deleted"] == 2


def test_a_rejected_file_is_reported_without_touching_the_index() -> None:
    pipeline = Pipeline(entries=0, partition_size=100)
    pipeline.plan_error = {"code": "InvalidManifest", "rule": "json", "message": "not JSON"}
    output, context = script(pipeline).run(INGEST_ORCHESTRATOR, REQUEST, PARENT)

    assert activity_names(context.calls) == ["plan_ingestion"]
    assert output["error"] == pipeline.plan_error
    assert output["report"] == {"container": "imagerag-work", "path": f"{PARENT}/report.json"}
    assert context.statuses == [
        {"phase": "rejected", "error": pipeline.plan_error, "report": output["report"]}
    ]


def test_an_index_of_another_model_stops_the_ingestion_with_a_report() -> None:
    pipeline = Pipeline(entries=3, partition_size=2)
    pipeline.index_error = {"code": "IndexModelMismatch", "message": "other model"}
    output, context = script(pipeline).run(INGEST_ORCHESTRATOR, REQUEST, PARENT)

    assert activity_names(context.calls) == ["plan_ingestion", "ensure_index", "write_report"]
    report_call = context.calls[-1]
    assert report_call.payload["error"] == pipeline.index_error
    assert report_call.payload["partitions"] == 0
    assert output["error"] == pipeline.index_error
    assert context.statuses[-1]["phase"] == "rejected"


def test_a_superseded_version_deletes_nothing() -> None:
    pipeline = Pipeline(entries=2, partition_size=2, statuses={1: "skipped"})
    pipeline.superseded = True
    output, context = script(pipeline).run(INGEST_ORCHESTRATOR, REQUEST, PARENT)
    assert output["deleted"] == 0
    assert context.calls[-1].payload["deleted"] == 0
    assert (output["indexed"], output["skipped"]) == (1, 1)


def test_an_empty_file_schedules_no_partition() -> None:
    output, context = script(Pipeline(entries=0, partition_size=100)).run(
        INGEST_ORCHESTRATOR, REQUEST, PARENT
    )
    assert "ingest_partition" not in activity_names(context.calls)
    assert output["entries"] == 0


@pytest.mark.parametrize("entries", [1, 100])
def test_a_partition_reports_one_result_per_slot(entries: int) -> None:
    pipeline = Pipeline(entries=entries, partition_size=100)
    request = {
        "work": WORK,
        "partition": 0,
        "entries": entries,
        "target": {"index": "images-v", "source": METADATA, "etag": '"0x1"'},
    }
    counts, context = script(pipeline).run(INGEST_PARTITION, request, f"{PARENT}-p0000")
    assert counts == {"entries": entries, **{s: 0 for s in contract.STATUSES}, "indexed": entries}
    report = context.calls[-1]
    assert report.name == "write_partition_report"
    assert [r["index"] for r in report.payload["results"]] == list(range(entries))
