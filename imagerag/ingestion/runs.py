"""Run records: one small JSON blob per ingestion run (``<work>/runs/<run id>.json``), what the
status and list routes read, instead of the Durable instance store.

Each record also carries its summary (id, container, phase, times, counts) in the blob's
metadata, so listing every run is one listing request whatever the number of runs, partitions
or entries. Activities write records (they may read the clock; orchestrators may not).

While a run ingests, ``done`` and ``byStatus`` move as images finish, not only as partitions
complete: each process adds up the results of its image activities and writes them to the
run's record once a second (:class:`LiveProgress`; per partition, under ``liveCounts``); when a
partition completes, its exact counts (under ``partitionCounts``) replace its live ones. When the
run ends, the record keeps the exact totals only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from imagerag.ingestion.contract import STATUSES, Counts, EntryResult
from imagerag.ports import BlobChangedError, BlobNotFoundError, BlobStore

logger = logging.getLogger(__name__)

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
    change: Callable[[dict[str, Any]], bool | None] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Merge ``fields`` into the record, then apply ``change`` to it (which may answer False:
    nothing to write); written only if nobody wrote meanwhile (partitions of a run report at
    the same time), else read and redone."""
    for _attempt in range(_ATTEMPTS):
        found = store.read_versioned(work_container, record_path(run_id))
        record = {"id": run_id, "kind": "run"} if found is None else json.loads(found[0])
        record.update(fields)
        if change is not None and change(record) is False:
            return dict(record)
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


# --------------------------------------------------------------------------- progress

PARTITIONS = "partitionCounts"  # {partition: row}: exact counts of completed partitions
LIVE = "liveCounts"  # {partition: row}: counts so far of the others (image activities)
# A row: [entries, then one count per status of STATUSES]
LIVE_INTERVAL_S = 1.0


def record_partition(
    store: BlobStore, work_container: str, run_id: str, partition: int, counts: Counts
) -> None:
    """A partition completed: its exact counts replace its live ones. Writing them again
    (a repeated delivery) changes nothing."""

    def change(record: dict[str, Any]) -> bool:
        if record.get("phase") not in (PLANNING, INGESTING):
            return False
        record.setdefault(PARTITIONS, {})[str(partition)] = _row(counts)
        record.get(LIVE, {}).pop(str(partition), None)
        _sum_up(record)
        return True

    update_record(store, work_container, run_id, change)


def add_live(
    store: BlobStore, work_container: str, run_id: str, rows: dict[int, list[int]]
) -> None:
    """Add entries done in partitions still running. Approximate (an image activity delivered
    twice counts twice) until each partition completes; counts of a completed partition or
    an ended run are dropped."""

    def change(record: dict[str, Any]) -> bool:
        if record.get("phase") not in (PLANNING, INGESTING):
            return False
        completed, live = record.get(PARTITIONS, {}), record.setdefault(LIVE, {})
        for partition, row in rows.items():
            if str(partition) not in completed:
                before = live.get(str(partition), [0] * len(row))
                live[str(partition)] = [a + b for a, b in zip(before, row, strict=True)]
        _sum_up(record)
        return True

    update_record(store, work_container, run_id, change)


class LiveProgress:
    """This process's image results not yet counted in their runs' records, written by a
    daemon thread every LIVE_INTERVAL_S: one record write per run and interval, however many
    images finish meanwhile, and nothing added to any orchestration history."""

    def __init__(self, interval: float = LIVE_INTERVAL_S) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple[BlobStore, dict[int, list[int]]]] = {}
        self._thread: threading.Thread | None = None

    def add(
        self,
        store: BlobStore,
        work_container: str,
        run_id: str,
        partition: int,
        result: EntryResult,
    ) -> None:
        with self._lock:
            _, rows = self._pending.setdefault((work_container, run_id), (store, {}))
            row = rows.setdefault(partition, [0] * (1 + len(STATUSES)))
            row[0] += 1
            row[1 + STATUSES.index(result["status"])] += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_every_interval, name="ingestion-progress", daemon=True
                )
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for (work_container, run_id), (store, rows) in pending.items():
            try:
                add_live(store, work_container, run_id, rows)
            except Exception:  # progress only: each partition's report has the exact counts
                logger.warning("could not write the progress of run %s", run_id, exc_info=True)

    def _write_every_interval(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


live_progress = LiveProgress()


def _row(counts: Counts) -> list[int]:
    return [counts["entries"], *(counts[s] for s in STATUSES)]


def _sum_up(record: dict[str, Any]) -> None:
    completed: dict[str, list[int]] = record.get(PARTITIONS, {})
    live: dict[str, list[int]] = record.get(LIVE, {})
    rows = [*completed.values(), *(row for p, row in live.items() if p not in completed)]
    record["done"] = sum(row[0] for row in rows)
    record["byStatus"] = {s: sum(row[1 + i] for row in rows) for i, s in enumerate(STATUSES)}


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
