"""Vectorizer throughput: the local EfficientNet model and the Azure adapter's pacing.

    .venv/bin/python bench/vectorizer.py [--images 96] [--azure-images 200]

Local: raw model throughput on preprocessed tensors at batch 1, 8, 16, 32 on all cores, and at
batch 2 one pass per core side by side (as LocalVectorizer runs it on the CPU); preprocessing
(decode + resize + crop) throughput; LocalVectorizer with 16 threads calling
vectorize_image, and its ratio to the best raw row measured in the same run.
Azure: AzureVisionVectorizer against the local fake capped at 20 TPS with 100 ms latency,
16 threads: achieved TPS, its ratio to the cap, and how many 429s the fake answered.

Last line: ``RESULT raw_best=... vectorizer=... vectorizer_ratio=... azure_ratio=...``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fakes.vision_service import FakeVisionService  # noqa: E402
from sample_images import picture_bytes  # noqa: E402

from imagerag.adapters.azure_vision import AzureVisionVectorizer  # noqa: E402
from imagerag.adapters.local_vectorizer import (  # noqa: E402
    CPU_MAX_BATCH,
    LocalVectorizer,
    cpu_count,
    embed_batch,
    load_model,
    preprocess,
)

THREADS = 16
KEY = "bench-key"


def row(name: str, count: int, seconds: float, note: str = "") -> float:
    rate = count / seconds
    print(f"{name:<44} {count:>6} {seconds:>8.2f} {rate:>9.1f}  {note}")
    return rate


def raw_model(images: list[bytes]) -> float:
    """The raw model's rows; returns the best rate of them."""
    import torch

    model = load_model()
    pixels = np.stack([preprocess(data) for data in images])
    best = 0.0
    torch.set_num_threads(cpu_count())  # this thread's passes split over all cores
    for size in (1, 8, 16, 32):
        embed_batch(model, pixels[:size])  # warm-up: oneDNN primes each input shape once
        count = max(size, len(pixels) // size * size)
        started = time.perf_counter()
        for start in range(0, count, size):
            embed_batch(model, pixels[start : start + size])
        rate = row(f"raw model, batch {size}, all cores", count, time.perf_counter() - started)
        best = max(best, rate)
    torch.set_num_threads(1)  # for the pool's threads, which keep the count they first meet
    with ThreadPoolExecutor(cpu_count()) as pool:
        seconds = len(pixels) / side_by_side_rate(model, pixels, pool)
    rate = row(f"raw model, batch {CPU_MAX_BATCH}, one per core", len(pixels), seconds)
    return max(best, rate)


def side_by_side_rate(model: Any, pixels: np.ndarray, pool: ThreadPoolExecutor) -> float:
    """Images/s of passes of CPU_MAX_BATCH, one per core side by side, as LocalVectorizer runs
    them on the CPU. ``pool`` has a thread per core, whose first pass met torch's count of 1
    (torch.set_num_threads(1) before it: a thread keeps the count it first meets)."""
    cores = cpu_count()
    starts = list(range(0, len(pixels), CPU_MAX_BATCH))

    def passes(first: int) -> None:
        for start in starts[first::cores]:
            embed_batch(model, pixels[start : start + CPU_MAX_BATCH])

    list(pool.map(lambda k: embed_batch(model, pixels[k : k + 1]), range(cores)))  # warm-up
    started = time.perf_counter()
    list(pool.map(passes, range(cores)))
    return len(pixels) / (time.perf_counter() - started)


def preprocessing(images: list[bytes]) -> None:
    started = time.perf_counter()
    for data in images:
        preprocess(data)
    row("preprocess (decode+resize+crop), 1 thread", len(images), time.perf_counter() - started)
    with ThreadPoolExecutor(THREADS) as pool:
        started = time.perf_counter()
        list(pool.map(preprocess, images))
        seconds = time.perf_counter() - started
    row(f"preprocess, {THREADS} threads", len(images), seconds)


def local_vectorizer(images: list[bytes], best_raw: float) -> float:
    """LocalVectorizer's images/s under THREADS callers."""
    vectorizer = LocalVectorizer()
    vectorizer.vectorize_image(images[0])  # start the worker, load the model
    passes = vectorizer.forward_passes
    with ThreadPoolExecutor(THREADS) as pool:
        started = time.perf_counter()
        list(pool.map(vectorizer.vectorize_image, images))
        seconds = time.perf_counter() - started
    batches = vectorizer.forward_passes - passes
    rate = len(images) / seconds
    row(
        f"LocalVectorizer, {THREADS} threads",
        len(images),
        seconds,
        f"{rate / best_raw:.2f}x the best raw row; {batches} passes, "
        f"mean batch {len(images) / batches:.1f}",
    )
    return rate


def azure_paced(count: int, tps: float, latency_s: float) -> float:
    """The adapter's achieved requests/s over the stand-in's cap."""
    images = [picture_bytes(seed, "JPEG", size=(64, 48)) for seed in range(count)]
    with FakeVisionService(key=KEY, rate_limit_tps=tps, latency_s=latency_s) as service:
        vectorizer = AzureVisionVectorizer(
            endpoint=service.endpoint, key=KEY, token_provider=None, max_attempts=10
        )
        with ThreadPoolExecutor(THREADS) as pool:
            started = time.perf_counter()
            list(pool.map(vectorizer.vectorize_image, images))
            seconds = time.perf_counter() - started
        achieved = count / seconds
        rate = vectorizer.pacer.rate
        row(
            f"Azure adapter vs fake ({tps:g} TPS, {latency_s * 1000:.0f} ms), {THREADS} thr",
            count,
            seconds,
            f"{achieved / tps:.2f}x the cap; {service.throttled} x 429 of "
            f"{len(service.requests)} requests; final pacing "
            + (f"{rate:.1f}/s" if rate else "off"),
        )
        assert not service.violations, service.violations
    return achieved / tps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96, help="local images (multiple of 32)")
    parser.add_argument("--azure-images", type=int, default=200)
    parser.add_argument("--tps", type=float, default=20.0)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the adapter's retry warnings are counted below

    images = [picture_bytes(seed, "JPEG", size=(640, 480)) for seed in range(args.images)]
    print(f"{os.cpu_count()} cores; images: {args.images} JPEG 640x480 (procedural)")
    print(f"{'':<44} {'images':>6} {'seconds':>8} {'per s':>9}")
    best_raw = raw_model(images)
    preprocessing(images)
    vectorizer_rate = local_vectorizer(images, best_raw)
    azure_ratio = azure_paced(args.azure_images, args.tps, args.latency)
    print(
        f"RESULT raw_best={best_raw:.1f} vectorizer={vectorizer_rate:.1f} "
        f"vectorizer_ratio={vectorizer_rate / best_raw:.2f} azure_ratio={azure_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
