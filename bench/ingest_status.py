"""How long the ingestion list and status routes take when many ingestions are recorded.

    .venv/bin/python bench/ingest_status.py [--ingestions 100] [--entries 10000] [--calls 300]

Starts Azurite and devhost (bench/stack.py), then writes the run records of ``--ingestions``
finished runs of ``--entries`` entries each straight into the work container (what those runs
would have left: no need to ingest a million images), plus one run still ingesting with the
progress of each of its partitions (half completed, the others half done). Then it times,
through HTTP, sequential calls of ``GET /api/ingestions`` (the list's first page, 20 runs) and
``GET /api/ingestions/{id}`` (one run, finished and in progress), and the storage request each
route makes (List Blobs of a page, GET of a record) sent from here, without devhost: what the
emulator costs alone on this machine at this moment.

Last line: ``RESULT ingestions=... entries=... list_p95_ms=... status_p95_ms=...
running_status_p95_ms=... floor_p95_ms=... list_storage_p95_ms=... status_storage_p95_ms=...``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from stack import Stack  # noqa: E402

from imagerag import naming  # noqa: E402
from imagerag.adapters.blob import AzureBlobStore  # noqa: E402
from imagerag.ingestion import runs  # noqa: E402
from imagerag.ingestion.contract import STATUSES, Counts  # noqa: E402

CONTAINER = "images"
WORK = "images-work"
PARTITION_SIZE = 100
LIST_PAGE = 20  # the list route's default page


def finished_record(number: int, entries: int) -> dict:
    run_id = naming.run_id(CONTAINER, number)
    by_status = dict.fromkeys(STATUSES, 0) | {"indexed": entries - 2, "skipped": 2}
    return {
        "id": run_id,
        "kind": "run",
        "container": CONTAINER,
        "index": naming.index_name_for(CONTAINER),
        "number": number,
        "phase": runs.COMPLETED,
        "reasons": [{"event": "created", "metadata": f"{CONTAINER}/metadata.json", "request": 1}],
        "total": entries,
        "done": entries,
        "files": [
            {"metadata": f"{CONTAINER}/metadata.json", "sha256": "0" * 64, "entries": entries}
        ],
        "notices": [],
        "byStatus": by_status,
        "deleted": 0,
        "report": {"container": WORK, "path": f"{run_id}/report.json"},
    }


def seed(store: AzureBlobStore, ingestions: int, entries: int) -> tuple[list[str], str]:
    """The finished runs' records, and one run in progress with every partition moving."""
    store.ensure_container(WORK)
    ids = []
    for number in range(1, ingestions + 1):
        record = finished_record(number, entries)
        runs.write_record(store, WORK, record)
        ids.append(record["id"])
    running = finished_record(ingestions + 1, entries) | {"phase": runs.INGESTING, "done": 0}
    for key in ("report", "byStatus", "deleted"):
        running.pop(key)
    runs.write_record(store, WORK, running)
    partitions = -(-entries // PARTITION_SIZE)
    full: Counts = {
        "entries": PARTITION_SIZE,
        "indexed": PARTITION_SIZE,
        "updated": 0,
        "unchanged": 0,
        "skipped": 0,
        "failed": 0,
    }
    for partition in range(partitions // 2):  # half the partitions completed ...
        runs.record_partition(store, WORK, running["id"], partition, full)
    half = [PARTITION_SIZE // 2, PARTITION_SIZE // 2] + [0] * (len(STATUSES) - 1)
    live = {partition: half for partition in range(partitions // 2, partitions)}
    runs.add_live(store, WORK, running["id"], live)  # ... the others half done
    return ids, str(running["id"])


def timed(session: requests.Session, url: str, calls: int, expect: int = 200) -> list[float]:
    def call() -> None:
        response = session.get(url, timeout=30)
        if response.status_code != expect:
            raise SystemExit(f"GET {url}: {response.status_code}, expected {expect}")

    return timed_call(call, calls)


def timed_call(call: Callable[[], object], calls: int) -> list[float]:
    """Milliseconds of each of ``calls`` sequential calls, after 10 to warm up."""
    took = []
    for number in range(10 + calls):
        started = time.perf_counter()
        call()
        if number >= 10:
            took.append((time.perf_counter() - started) * 1000)
    return took


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ingestions", type=int, default=100)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per route")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ingest-status-bench-"))
    env = {"IMAGES_CONTAINER": CONTAINER, "WORK_CONTAINER": WORK}
    # devhost's default scan interval: nothing here waits for a trigger, and the scans' own
    # listings would otherwise be measured as the routes' tail.
    with Stack(scratch, env=env, blob_poll_interval=1.0) as stack:
        store = AzureBlobStore(service=stack.blob_service)
        ids, running = seed(store, args.ingestions, args.entries)
        session = requests.Session()
        base = f"{stack.base_url}/api/ingestions"
        listed, url = [], f"{base}?top=100"
        while url is not None:  # every page, to check the seeding
            page = session.get(url, timeout=30).json()
            listed.extend(page["value"])
            url = page.get("nextLink")
        if len(listed) != args.ingestions + 1:
            raise SystemExit(f"listed {len(listed)} ingestions, seeded {args.ingestions + 1}")
        shown = session.get(f"{base}/{running}", timeout=30).json()
        if shown["done"] != args.entries * 3 // 4:
            raise SystemExit(f"the running record shows done={shown['done']}")
        list_ms = timed(session, base, args.calls)
        status_ms = timed(session, f"{base}/{ids[len(ids) // 2]}", args.calls)
        running_ms = timed(session, f"{base}/{running}", args.calls)
        # The same route refused before any storage call: what devhost and HTTP cost alone.
        floor_ms = timed(session, f"{base}/not-an-id", args.calls, expect=400)
        list_storage_ms = timed_call(
            lambda: runs.list_page(store, WORK, size=LIST_PAGE), args.calls
        )
        status_storage_ms = timed_call(
            lambda: runs.read_record(store, WORK, ids[len(ids) // 2]), args.calls
        )

    timings = (
        ("list", list_ms),
        ("status", status_ms),
        ("running", running_ms),
        ("floor", floor_ms),
        ("list storage", list_storage_ms),
        ("status storage", status_storage_ms),
    )
    for name, values in timings:
        print(
            f"{name:<14} median {statistics.median(values):6.1f} ms   p95 {p95(values):6.1f} ms"
            f"   max {max(values):6.1f} ms"
        )
    print(
        f"RESULT ingestions={args.ingestions} entries={args.entries} "
        f"list_p95_ms={p95(list_ms):.1f} status_p95_ms={p95(status_ms):.1f} "
        f"running_status_p95_ms={p95(running_ms):.1f} floor_p95_ms={p95(floor_ms):.1f} "
        f"list_storage_p95_ms={p95(list_storage_ms):.1f} "
        f"status_storage_p95_ms={p95(status_storage_ms):.1f}"
    )


if __name__ == "__main__":
    main()
