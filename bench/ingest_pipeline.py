"""End-to-end ingestion throughput: metadata.json dropped into Azurite -> Completed under devhost.

    .venv/bin/python bench/ingest_pipeline.py [--entries 10000]

Starts its own Azurite (node_modules) and devhost on free ports. Prints the time from the
upload of the metadata file to the orchestration's Completed status, and entries per second.
Images are tiny placeholder blobs: this measures the pipeline's own overhead (trigger, plan,
partitions, one activity per entry, reports), not image decoding or vectorizing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from azure.storage.blob import BlobServiceClient

REPO = Path(__file__).resolve().parent.parent
# Azurite's public development key (not a secret: it opens only the local emulator).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(predicate)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    entries = parser.parse_args().entries

    scratch = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    blob_port, host_port = free_port(), free_port()
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
    )
    processes = [
        subprocess.Popen(
            [
                str(REPO / "node_modules/.bin/azurite-blob"),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(blob_port),
                "--location",
                str(scratch / "azurite"),
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--disableTelemetry",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        service = BlobServiceClient.from_connection_string(connection)
        wait_until(lambda: service.create_container("images") is not None, 30)
        images = service.get_container_client("images")
        paths = [f"set/{i:05d}.jpg" for i in range(entries)]
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: images.upload_blob(p, b"\xff\xd8\xff placeholder"), paths))
        print(f"uploaded {entries:,} image blobs in {time.perf_counter() - started:.1f} s")

        env = dict(
            os.environ,
            AzureWebJobsStorage=connection,
            IMAGES_CONTAINER="images",
            WORK_CONTAINER="imagerag-work",
        )
        log = open(scratch / "devhost.log", "wb")  # noqa: SIM115 - lives as long as the host
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devhost",
                    "--port",
                    str(host_port),
                    "--state-dir",
                    str(scratch / "state"),
                    "--blob-poll-interval",
                    "0.2",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{host_port}"
        wait_until(lambda: requests.get(f"{base}/admin/host/status", timeout=1).ok, 60)

        manifest = [{"image_blob_path": p, "description": f"photo {p}"} for p in paths]
        started = time.perf_counter()
        images.upload_blob("metadata.json", json.dumps(manifest).encode())

        def completed() -> bool:
            found = requests.get(f"{base}/api/ingestions", timeout=10).json()["value"]
            return bool(found) and found[0]["runtimeStatus"] == "Completed"

        wait_until(completed, 3600, interval=0.5)  # listing is not free: poll gently
        seconds = time.perf_counter() - started
        found = requests.get(f"{base}/api/ingestions", timeout=10).json()["value"][0]
        counts = found["customStatus"]
        print(
            f"ingested {counts['entries']:,} entries ({counts['recorded']:,} recorded) "
            f"in {seconds:.1f} s: {counts['entries'] / seconds:.0f} entries/s "
            f"on {os.cpu_count()} cores (devhost log: {scratch / 'devhost.log'})"
        )
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
