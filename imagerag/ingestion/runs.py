"""Run records: one small JSON blob per ingestion run (``<work>/runs/<run id>.json``), what the
status and list routes read, instead of the Durable instance store.

Each record also carries its summary (id, container, phase, times, counts) in the blob's
metadata, so listing every run is one listing request whatever the number of runs, partitions
or entries. Activities write records (they may read the clock; orchestrators may not).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from imagerag.ports import BlobChangedError, BlobNotFoundError, BlobStore

PREFIX = "runs/"
# Phases of a run, in order; a run ends in one of the last three.
PLANNING = "planning"
INGESTING = "ingesting"
COMPLETED = "completed"
SUPERSEDED = "superseded"  # stopped early: the metadata files changed; the next run redoes it
REJECTED = "rejected"  # nothing was ingested (the index holds another model, ...)
# A notice: a file the app saw but does not ingest (a near-miss metadata name), not a run.
IGNORED = "ignored"

_ATTEMPTS = 50
_SUMMARY_FIELDS = ("id", "kind", "container", "index", "phase", "created", "updated")
_SUMMARY_COUNTS = ("total", "done")


def record_path(run_id: str) -> str:
    return f"{PREFIX}{run_id}.json"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_record(
    store: BlobStore, work_container: str, record: dict[str, Any], *, if_match: str | None = None
) -> None:
    record["updated"] = now()
    record.setdefault("created", record["updated"])
    summary = {key: record.get(key) for key in (*_SUMMARY_FIELDS, *_SUMMARY_COUNTS)}
    store.write(
        work_container,
        record_path(str(record["id"])),
        json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        content_type="application/json",
        if_match=if_match,
        metadata={"summary": json.dumps(summary, ensure_ascii=True, separators=(",", ":"))},
    )


def update_record(
    store: BlobStore,
    work_container: str,
    run_id: str,
    change: Callable[[dict[str, Any]], None] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Merge ``fields`` into the record, then apply ``change`` to it; written only if nobody
    wrote meanwhile (partitions of a run report at the same time), else read and redone."""
    for _attempt in range(_ATTEMPTS):
        found = store.read_versioned(work_container, record_path(run_id))
        record = {"id": run_id, "kind": "run"} if found is None else json.loads(found[0])
        record.update(fields)
        if change is not None:
            change(record)
        try:
            write_record(
                store, work_container, record, if_match=None if found is None else found[1]
            )
            return dict(record)
        except BlobChangedError:
            continue
        except BlobNotFoundError:
            store.ensure_container(work_container)
    raise RuntimeError(f"the record of run {run_id} kept changing; gave up after retries")


def read_record(store: BlobStore, work_container: str, run_id: str) -> dict[str, Any] | None:
    found = store.read_versioned(work_container, record_path(run_id))
    return None if found is None else dict(json.loads(found[0]))


def list_records(store: BlobStore, work_container: str) -> list[dict[str, Any]]:
    """Summaries of every run and notice, newest first (one listing request per 5,000)."""
    summaries = []
    for blob in store.list_blobs(work_container, prefix=PREFIX):
        raw = blob.metadata.get("summary")
        if raw:
            summaries.append(json.loads(raw))
    return sorted(summaries, key=lambda s: str(s.get("created") or ""), reverse=True)


def write_notice(
    store: BlobStore, work_container: str, *, notice_id: str, container: str, path: str, rule: str
) -> None:
    """A visible trace of a file the app saw but will not ingest, with the rule it broke."""
    record = {
        "id": notice_id,
        "kind": "notice",
        "container": container,
        "phase": IGNORED,
        "metadata": f"{container}/{path}",
        "rule": rule,
    }
    store.ensure_container(work_container)  # a notice may come before any run
    write_record(store, work_container, record)
