"""End-to-end ingestion throughput through devhost, against the limits that bound it.

    .venv/bin/python bench/ingest.py [--images 400] [--cloud-images 200]

Starts its own Azurite and devhost on free ports and prints two runs, each timed from the
upload of metadata.json to the orchestration's Completed status:

1. local: the EfficientNet-Lite0 vectorizer and the embedded index, compared with the raw
   model's batch throughput measured in the same run (ratio = how close the whole pipeline
   gets to the model alone);
2. simulated cloud: the Azure AI Vision adapter against a local stand-in that allows 20
   requests/s with 100 ms latency (ratio = achieved images/s / 20).

Pictures are procedural 320x240 JPEGs (tests/sample_images.py), all different.
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

import numpy as np
import requests
from azure.storage.blob import BlobServiceClient

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fakes.vision_service import FakeVisionService  # noqa: E402
from sample_images import picture_bytes  # noqa: E402

from imagerag.adapters import local_vectorizer  # noqa: E402

# Azurite's public development key (not a secret: it opens only the local emulator).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BATCH = 32
FINISHED = ("completed", "superseded", "rejected")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def raw_model_throughput(pictures: list[bytes]) -> tuple[float, float]:
    """(preprocess images/s on one thread, model images/s at batch 32 on preprocessed input)."""
    model = local_vectorizer.load_model()
    started = time.perf_counter()
    arrays = [local_vectorizer.preprocess(p) for p in pictures]
    preprocess_rate = len(arrays) / (time.perf_counter() - started)
    local_vectorizer.embed_batch(model, np.stack(arrays[:BATCH]))  # warm-up
    started = time.perf_counter()
    for start in range(0, len(arrays), BATCH):
        local_vectorizer.embed_batch(model, np.stack(arrays[start : start + BATCH]))
    return preprocess_rate, len(arrays) / (time.perf_counter() - started)


def ingest(
    service: BlobServiceClient,
    connection: str,
    scratch: Path,
    container: str,
    count: int,
    extra_env: dict[str, str],
) -> float:
    """Upload ``count`` pictures + metadata.json, run devhost until Completed; seconds taken."""
    images = service.get_container_client(container)
    images.create_container()
    paths = [f"set/{i:05d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ip: images.upload_blob(ip[1], picture_bytes(ip[0])), enumerate(paths)))

    port = free_port()
    env = dict(
        os.environ,
        AzureWebJobsStorage=connection,
        IMAGES_CONTAINER=container,
        WORK_CONTAINER=f"{container}-work",
        LOCAL_DATA_DIR=str(scratch / "data"),
        **extra_env,
    )
    with open(scratch / f"devhost-{container}.log", "wb") as log:
        host = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--port", str(port)]
            + ["--state-dir", str(scratch / f"state-{container}"), "--blob-poll-interval", "0.2"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: requests.get(f"{base}/admin/host/status", timeout=1).ok, 60)
            manifest = [{"image_blob_path": p, "description": f"photo {p}"} for p in paths]
            started = time.perf_counter()
            images.upload_blob("metadata.json", json.dumps(manifest).encode())

            def completed() -> bool:
                found = requests.get(f"{base}/api/ingestions", timeout=10).json()["value"]
                return bool(found) and found[0]["phase"] in FINISHED

            wait_until(completed, 3600, interval=1.0)
            seconds = time.perf_counter() - started
            latest = requests.get(f"{base}/api/ingestions", timeout=10).json()["value"][0]
            record = requests.get(f"{base}/api/ingestions/{latest['instanceId']}", timeout=10)
            found = record.json()
            if found["phase"] != "completed" or found["byStatus"]["indexed"] != count:
                raise SystemExit(f"ingestion did not index every image: {found}")
            return seconds
        finally:
            host.terminate()
            host.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400, help="pictures in the local run")
    parser.add_argument("--cloud-images", type=int, default=200, help="pictures, cloud run")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    blob_port = free_port()
    connection = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
    )
    azurite = subprocess.Popen(
        [str(REPO / "node_modules/.bin/azurite-blob"), "--blobHost", "127.0.0.1"]
        + ["--blobPort", str(blob_port), "--location", str(scratch / "azurite")]
        + ["--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        service = BlobServiceClient.from_connection_string(connection)
        wait_until(lambda: service.get_account_information() is not None, 30)

        pictures = [picture_bytes(seed) for seed in range(min(args.images, 256))]
        preprocess_rate, model_rate = raw_model_throughput(pictures)
        local_seconds = ingest(service, connection, scratch, "local", args.images, {})
        local_rate = args.images / local_seconds

        with FakeVisionService(key="bench-key", rate_limit_tps=20, latency_s=0.1) as vision:
            cloud_env = {"AZURE_VISION_ENDPOINT": vision.endpoint, "AZURE_VISION_KEY": "bench-key"}
            cloud_seconds = ingest(
                service, connection, scratch, "cloud", args.cloud_images, cloud_env
            )
            throttled = vision.count(429)
            violations = len(vision.violations)
        cloud_rate = args.cloud_images / cloud_seconds

        print(f"cores: {os.cpu_count()}   devhost logs: {scratch}")
        print(f"{'measure':<58} {'images/s':>9} {'ratio':>7}")
        print(f"{'raw model, batch 32, preprocessed input (same run)':<58} {model_rate:>9.1f}")
        print(f"{'preprocessing (decode + resize), one thread':<58} {preprocess_rate:>9.1f}")
        print(
            f"{f'local pipeline, {args.images} images, upload -> Completed':<58} "
            f"{local_rate:>9.1f} {local_rate / model_rate:>7.2f}"
        )
        print(
            f"{f'cloud pipeline, {args.cloud_images} images, Vision stand-in 20 TPS/100 ms':<58} "
            f"{cloud_rate:>9.1f} {cloud_rate / 20:>7.2f}"
        )
        print(f"stand-in answered {throttled} x 429, {violations} contract violations")
    finally:
        azurite.terminate()
        azurite.wait(10)


if __name__ == "__main__":
    main()
