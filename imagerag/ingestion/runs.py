"""Run records: one small JSON blob per ingestion run (``<work>/runs/<run id>.json``), what the
status and list routes read, instead of the Durable instance store.

Each record has a listing blob, ``<work>/runs-by-time/<inverted creation time>-<run id>``,
named when the record is created (the record keeps the name under ``listing``) and rewritten
with the record's summary (id, container, phase, times, counts) each time the record is: its
name sorts newest first, so a page of the newest runs is one listing request of that page's
size, whatever the number of runs, partitions or entries. Activities write records (they may
read the clock; orchestrators may not).

While a run ingests, ``done`` and ``byStatus`` move as images finish, not only as partitions
complete: each process adds up the results of its image activities and writes them to the
run's record once a second (:class:`LiveProgress`; per partition, under ``liveCounts``); when a
partition completes, its exact counts (under ``partitionCounts``) replace its live ones. When the
run ends, the record keeps the exact totals only.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from imagerag.ingestion.contract import STATUSES, Counts, EntryResult
from imagerag.ports import BlobChangedError, BlobNotFoundError, BlobStore

logger = logging.getLogger(__name__)

PREFIX = "runs/"
LISTING = "runs-by-time/"
# Phases of a run, in order; a run ends in one of the last four.
PLANNING = "planning"
INGESTING = "ingesting"
COMPLETED = "completed"
SUPERSEDED = "superseded"  # stopped early: the metadata files changed; the next run redoes it
REJECTED = "rejected"  # nothing was ingested (the index holds another model, ...)
FAILED = "failed"  # its orchestration failed unexpectedly (the host log has why)
# A notice: a file the app saw but does not ingest (a near-miss metadata name), not a run.
IGNORED = "ignored"

_ATTEMPTS = 50
# After a lost race a writer waits a random time, up to BACKOFF_BASE_S * 2**attempt (at most
# BACKOFF_CAP_S), before reading again. Retrying at once, the 100 partitions that all report
# at the end of a 10,000-entry run kept colliding until one ran out of attempts.
BACKOFF_BASE_S = 0.01
BACKOFF_CAP_S = 1.0
_jitter = random.SystemRandom()
_SUMMARY_FIELDS = ("id", "kind", "container", "index", "phase", "created", "updated")
_SUMMARY_COUNTS = ("total", "done")
REVISION = "revision"  # how many times the record was written: the listing keeps the latest
BOOKKEEPING = ("listing", REVISION)  # fields of a record the routes do not show
_MICROS = 10**16  # listing names hold 10**16 minus the creation time in microseconds


def record_path(run_id: str) -> str:
    return f"{PREFIX}{run_id}.json"


def now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def listing_path(run_id: str, created: datetime) -> str:
    """Names that sort newest first (then by id): the creation time counted down."""
    micros = int(created.timestamp() * 1_000_000)
    return f"{LISTING}{_MICROS - micros:016d}-{run_id}"


def write_record(
    store: BlobStore, work_container: str, record: dict[str, Any], *, if_match: str | None = None
) -> None:
    """Write the record (``if_match``: only while it has this ETag), then its listing blob."""
    moment = datetime.now(UTC)
    record["updated"] = _iso(moment)
    if "created" not in record:
        record["created"] = record["updated"]
        record.setdefault("listing", listing_path(str(record["id"]), moment))
    elif "listing" not in record:
        created = datetime.fromisoformat(str(record["created"]).replace("Z", "+00:00"))
        record["listing"] = listing_path(str(record["id"]), created)
    record[REVISION] = int(record.get(REVISION, 0)) + 1
    summary = {key: record.get(key) for key in (*_SUMMARY_FIELDS, *_SUMMARY_COUNTS)}
    metadata = {"summary": json.dumps(summary, ensure_ascii=True, separators=(",", ":"))}
    store.write(
        work_container,
        record_path(str(record["id"])),
        json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        content_type="application/json",
        if_match=if_match,
        metadata=metadata,
    )
    _write_listing(store, work_container, str(record["listing"]), record[REVISION], metadata)


def _write_listing(
    store: BlobStore, work_container: str, path: str, revision: int, metadata: dict[str, str]
) -> None:
    """The listing blob gets the summary of this revision unless a later one is already
    there: two writers of a record may reach its listing in either order."""
    body = json.dumps({REVISION: revision}).encode("utf-8")
    for attempt in range(_ATTEMPTS):
        found = store.read_versioned(work_container, path)
        if found is not None and int(json.loads(found[0]).get(REVISION, 0)) >= revision:
            return
        try:
            store.write(
                work_container,
                path,
                body,
                content_type="application/json",
                if_match=None if found is None else found[1],
                create_only=found is None,
                metadata=metadata,
            )
            return
        except BlobChangedError:
            _back_off(attempt)
    raise RuntimeError(f"the listing {path} kept changing; gave up after retries")


def _back_off(attempt: int) -> None:
    time.sleep(_jitter.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))


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
    for attempt in range(_ATTEMPTS):
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
            _back_off(attempt)
        except BlobNotFoundError:
            store.ensure_container(work_container)
    raise RuntimeError(f"the record of run {run_id} kept changing; gave up after retries")


def fail_run(store: BlobStore, work_container: str, run_id: str) -> bool:
    """Close the record of a run whose orchestration failed, without the exception text (a
    traceback with server paths; the host log has it). False if the run had ended."""

    closed = {"now": False}  # by the last attempt (update_record retries on conflicts)

    def change(record: dict[str, Any]) -> bool:
        closed["now"] = record.get("phase") in (PLANNING, INGESTING)
        if not closed["now"]:
            return False
        record["phase"] = FAILED
        record["error"] = {
            "code": "IngestionFailed",
            "message": "the ingestion failed unexpectedly; the host log has the details "
            f"(instance {run_id})",
        }
        return True

    update_record(store, work_container, run_id, change)
    return closed["now"]


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


def list_page(
    store: BlobStore, work_container: str, *, size: int, continuation: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Summaries of at most ``size`` runs and notices, newest first, from where the page that
    returned ``continuation`` ended; and the continuation of the next page (None: the last).
    One listing request. Runs created after the first page sort before it: a later page
    neither repeats nor skips any."""
    page = store.list_page(work_container, prefix=LISTING, size=size, continuation=continuation)
    summaries = [json.loads(b.metadata["summary"]) for b in page.blobs if "summary" in b.metadata]
    return summaries, page.continuation


def list_records(store: BlobStore, work_container: str) -> list[dict[str, Any]]:
    """Summaries of every run and notice, newest first (every page)."""
    summaries: list[dict[str, Any]] = []
    continuation: str | None = None
    while True:
        page, continuation = list_page(store, work_container, size=1000, continuation=continuation)
        summaries.extend(page)
        if continuation is None:
            return summaries


def write_notice(
    store: BlobStore, work_container: str, *, notice_id: str, container: str, path: str, rule: str
) -> None:
    """A visible trace of a file the app saw but will not ingest, with the rule it broke; a
    notice written again moves to the top of the list."""
    store.ensure_container(work_container)  # a notice may come before any run
    previous = read_record(store, work_container, notice_id)
    record: dict[str, Any] = {
        "id": notice_id,
        "kind": "notice",
        "container": container,
        "phase": IGNORED,
        "metadata": f"{container}/{path}",
        "rule": rule,
    }
    if previous is not None:
        record[REVISION] = previous.get(REVISION, 0)
    write_record(store, work_container, record)
    if previous is not None and previous.get("listing") not in (None, record["listing"]):
        store.delete(work_container, str(previous["listing"]))
