"""Progress that moves while partitions run, and a host that stops promptly mid-ingestion.

Runs the real function_app.py under devhost against Azurite; a storage gate holds chosen
image reads so the ingestion is stopped at a known point instead of raced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ingestion_driver import Driver, metadata, wait
from sample_images import picture_bytes
from storage_gate import StorageGate

from imagerag.adapters.blob import AzureBlobStore
from imagerag.ingestion import runs
from imagerag.ingestion.contract import STATUSES

REPO = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (it opens only the local emulator).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
PARTITION = 30  # two partitions
STOP_WITHIN_S = 10.0


def start(devhost, blob_service, container: str, tmp_path: Path, storage: str) -> Driver:
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": container,
            "WORK_CONTAINER": f"{container}-work",
            "LOCAL_DATA_DIR": str(tmp_path / "data"),
            "INGEST_PARTITION_SIZE": str(PARTITION),
            "AzureWebJobsStorage": storage,
        },
        state_dir=tmp_path / "state",
    )
    return Driver(host, blob_service, container, f"{container}-work", tmp_path / "data")


@pytest.fixture
def gate(azurite):
    gate = StorageGate(azurite.port)
    try:
        yield gate
    finally:
        gate.close()


def hold_all_but(gate: StorageGate, container: str, free: set[str]) -> None:
    """Every image read (GET) of ``container`` waits at the gate, but those of ``free``."""

    def held(method: str, path: str) -> bool:
        name = path.split("?")[0]
        prefix = f"/{container}/"
        return method == "GET" and prefix + "set/" in name and name.split(prefix, 1)[1] not in free

    gate.hold(held)


def test_live_counts_add_up_and_give_way_to_each_partitions_exact_counts(blob_service) -> None:
    store = AzureBlobStore(service=blob_service)
    work, run_id = f"w{uuid.uuid4().hex[:12]}", "ingest-0123456789abcdef-00000001"
    store.ensure_container(work)
    runs.write_record(store, work, {"id": run_id, "kind": "run", "phase": runs.INGESTING})
    live = runs.LiveProgress(interval=3600)  # flushed by hand here
    for partition, status in [(0, "indexed"), (0, "skipped"), (1, "indexed"), (1, "indexed")]:
        live.add(store, work, run_id, partition, {"path": "p", "id": "i", "status": status})
    live.flush()
    record = runs.read_record(store, work, run_id)
    assert record is not None and record["done"] == 4
    assert record["byStatus"] == dict.fromkeys(STATUSES, 0) | {"indexed": 3, "skipped": 1}
    assert runs.list_records(store, work)[0]["done"] == 4  # the listed summary too

    exact = dict.fromkeys(STATUSES, 0) | {"entries": 3, "indexed": 3}
    runs.record_partition(store, work, run_id, 0, exact)
    runs.record_partition(store, work, run_id, 0, exact)  # delivered twice: same result
    live.add(store, work, run_id, 0, {"path": "p", "id": "i", "status": "failed"})  # late
    live.flush()
    record = runs.read_record(store, work, run_id)
    assert record is not None and record["done"] == 3 + 2
    assert record["byStatus"] == dict.fromkeys(STATUSES, 0) | {"indexed": 5}

    runs.update_record(store, work, run_id, phase=runs.COMPLETED, done=6)
    live.add(store, work, run_id, 1, {"path": "p", "id": "i", "status": "indexed"})
    live.flush()  # after the run ended: nothing changes
    record = runs.read_record(store, work, run_id)
    assert record is not None and (record["phase"], record["done"]) == (runs.COMPLETED, 6)


class SlowReads(AzureBlobStore):
    """Reads that take as long as on a loaded host, which widens each writer's race window."""

    def read_versioned(self, container: str, path: str) -> tuple[bytes, str] | None:
        time.sleep(0.02)
        return super().read_versioned(container, path)


def test_partitions_that_report_at_once_all_land_in_the_record(blob_service) -> None:
    # As at the end of a 10,000-entry run: its 100 partitions complete at the same moment.
    store = SlowReads(service=blob_service)
    work, run_id = f"w{uuid.uuid4().hex[:12]}", "ingest-0123456789abcdef-00000001"
    store.ensure_container(work)
    runs.write_record(store, work, {"id": run_id, "kind": "run", "phase": runs.INGESTING})
    partitions = 100
    start = threading.Barrier(partitions)

    def report(partition: int) -> None:
        counts = dict.fromkeys(STATUSES, 0) | {"entries": 2, "indexed": 2}
        start.wait()
        runs.record_partition(store, work, run_id, partition, counts)  # type: ignore[arg-type]

    with ThreadPoolExecutor(partitions) as pool:
        list(pool.map(report, range(partitions)))
    record = runs.read_record(store, work, run_id)
    assert record is not None
    assert sorted(int(p) for p in record[runs.PARTITIONS]) == list(range(partitions))
    assert record["done"] == 2 * partitions
    assert runs.list_records(store, work)[0]["done"] == 2 * partitions


def test_progress_counts_move_before_any_partition_completes(
    devhost, blob_service, unique_container, tmp_path, gate
) -> None:
    storage = gate.connection_string(AZURITE_ACCOUNT, AZURITE_KEY)
    app = start(devhost, blob_service, unique_container, tmp_path, storage)
    paths = [f"set/{i:03d}.jpg" for i in range(2 * PARTITION)]
    for seed, path in enumerate(paths):
        app.put_image(path, picture_bytes(seed, size=(64, 48)))
    # The last image of each partition is held: no partition can complete until the gate
    # opens, every other image can.
    last = {paths[PARTITION - 1], paths[-1]}
    hold_all_but(gate, app.name, set(paths) - last)
    app.put_metadata("metadata.json", metadata(*paths))

    run_id = wait(lambda: app.runs(), 60, "the run to be listed")[0]["instanceId"]
    moving = wait(
        lambda: (r := app.record(run_id))["done"] == len(paths) - 2 and r,
        300,
        "the counts of the images done so far",
    )
    assert moving["phase"] == "ingesting" and moving["total"] == len(paths)
    assert moving["byStatus"]["indexed"] == len(paths) - 2
    assert gate.waiting >= 2  # the last image of each partition is still held
    # the list route shows the same (its listing blob is written just after the record)
    wait(lambda: app.runs()[0]["done"] == len(paths) - 2, 10, "the listed counts")
    reports = app.blob_service.get_container_client(app.work).list_blobs(f"{run_id}/reports/")
    assert list(reports) == []  # no partition has completed

    gate.release()
    app.wait_idle()
    done = app.record(run_id)
    assert (done["phase"], done["done"], done["byStatus"]["indexed"]) == ("completed", 60, 60)
    assert "liveCounts" not in done and "partitionCounts" not in done  # exact totals only
    assert set(app.documents()) == {app.doc_id(p) for p in paths}


def test_devhost_stops_soon_after_sigterm_mid_ingestion_and_a_restart_resumes(
    devhost, blob_service, unique_container, tmp_path, gate
) -> None:
    storage = gate.connection_string(AZURITE_ACCOUNT, AZURITE_KEY)
    app = start(devhost, blob_service, unique_container, tmp_path, storage)
    paths = [f"set/{i:03d}.jpg" for i in range(2 * PARTITION)]
    for seed, path in enumerate(paths):
        app.put_image(path, picture_bytes(seed, size=(64, 48)))
    hold_all_but(gate, app.name, set(paths[:5]))
    app.put_metadata("metadata.json", metadata(*paths))
    # Activities are now stuck in image reads that the gate will not answer.
    wait(lambda: gate.waiting >= 4, 300, "image reads to be held")

    process = app.host.process
    asked = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"devhost still running {STOP_WITHIN_S:g} s after SIGTERM")
    assert time.monotonic() - asked < STOP_WITHIN_S

    gate.release()
    restarted = start(devhost, blob_service, unique_container, tmp_path, storage)
    app.host = restarted.host
    app.wait_idle()
    assert "Resumed" in restarted.host.log_text()
    record = app.latest()
    assert (record["phase"], record["done"]) == ("completed", 60)
    # An image indexed just before the stop, whose result had not been recorded, is found
    # already indexed when its activity runs again.
    counts = record["byStatus"]
    assert counts["indexed"] + counts["unchanged"] == 60, counts
    assert set(app.documents()) == {app.doc_id(p) for p in paths}
