"""The local vectorizer on whatever device torch sees (a CUDA GPU when present, else the CPU).

    python bench/vectorizer_device.py [--images 4096] [--thread-images 512]

Prints, all from one run: decoding rates in the callers' threads and in worker processes
(the two ways the vectorizer can decode); the raw model's throughput by batch size; the
micro-batching LocalVectorizer's throughput under concurrent callers, decoding in worker
processes and in the callers' threads, each as a ratio to the best raw batch; and, on a GPU,
how closely its vectors agree with the CPU's for the same images.

The last line is ``RESULT raw_best=... vectorizer=... ratio=... threads_ratio=...``.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from sample_images import picture_bytes  # noqa: E402

from imagerag.adapters import local_vectorizer as lv  # noqa: E402
from imagerag.adapters.local_decoders import DecoderProcesses  # noqa: E402


def pictures(count: int) -> list[bytes]:
    # fork: torch is imported but has not touched CUDA yet.
    with ProcessPoolExecutor(mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(picture_bytes, range(count), chunksize=64))


def decode_in_threads(images: list[bytes], threads: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lv.prepared, images))
    return len(images) / (time.perf_counter() - started)


def decode_in_processes(images: list[bytes], processes: int, threads: int) -> float:
    decoders = DecoderProcesses(lv.prepared, processes)
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(decoders.run, images[: processes * 8]))  # start the processes
            started = time.perf_counter()
            list(pool.map(decoders.run, images))
            return len(images) / (time.perf_counter() - started)
    finally:
        decoders.close()


def raw(model: torch.nn.Module, arrays: list[np.ndarray], batch: int) -> float:
    lv.embed_batch(model, np.stack(arrays[:batch]))  # warm-up (kernels, allocator)
    sync()
    started = time.perf_counter()
    for start in range(0, len(arrays), batch):
        lv.embed_batch(model, np.stack(arrays[start : start + batch]))
    sync()
    return len(arrays) / (time.perf_counter() - started)


def concurrent(
    images: list[bytes], threads: int, max_batch: int, processes: int
) -> tuple[float, float]:
    vectorizer = lv.LocalVectorizer(max_batch=max_batch, decoder_processes=processes)
    try:
        with ThreadPoolExecutor(threads) as pool:
            # Warm-up: the model, its trace, the decoder processes.
            list(pool.map(vectorizer.vectorize_image, images[: max(threads, processes * 8)]))
            passes = vectorizer.forward_passes
            started = time.perf_counter()
            list(pool.map(vectorizer.vectorize_image, images))
            seconds = time.perf_counter() - started
    finally:
        vectorizer.close()
    mean_batch = len(images) / max(vectorizer.forward_passes - passes, 1)
    return len(images) / seconds, mean_batch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument(
        "--thread-images",
        type=int,
        default=512,
        help="images for the runs that decode in the callers' threads (slow on a GPU)",
    )
    args = parser.parse_args()

    images = pictures(args.images)
    cores = lv.cpu_count()
    processes = max(1, cores - 1)
    threaded = decode_in_threads(images, 16)
    print(f"decoding in 16 threads: {threaded:.0f} images/s", flush=True)
    decoded = decode_in_processes(images, processes, 64)
    print(f"decoding in {processes} processes: {decoded:.0f} images/s", flush=True)

    arrays = [lv.preprocess(data) for data in images[:2048]]
    model = lv.load_model()
    device = next(model.parameters()).device
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}; {cores} CPU cores; torch {torch.__version__}")

    print(f"{'raw model, batch':<48} {'images/s':>9}")
    best = 0.0
    for batch in (1, 16, 64, 256):
        if batch <= len(arrays):
            rate = raw(model, arrays[: max(batch * 4, 256)], batch)
            best = max(best, rate)
            print(f"{batch:<48} {rate:>9.1f}", flush=True)

    print(f"{'LocalVectorizer (threads, max_batch, decoding)':<48} {'images/s':>9} {'vs best':>8}")
    results = {}
    for threads, max_batch, decoders, count in (
        (128, 128, processes, args.images),
        # More callers than a batch: the next batch decodes while the model runs this one.
        (512, 128, processes, args.images),
        (512, 256, processes, args.images),
        (16, 16, 0, args.thread_images),
        (128, 128, 0, args.thread_images),
    ):
        rate, mean_batch = concurrent(images[:count], threads, max_batch, decoders)
        where = f"{decoders} processes" if decoders else "in threads"
        results[(threads, max_batch, decoders > 0)] = rate
        label = f"{threads}, {max_batch}, {where} (mean batch {mean_batch:.0f})"
        print(f"{label:<48} {rate:>9.1f} {rate / best:>8.2f}", flush=True)

    cosine = 1.0
    if device.type == "cuda":
        sample = np.stack(arrays[:64])
        on_device = lv.embed_batch(model, sample)
        on_cpu = lv.embed_batch(copy.deepcopy(model).to("cpu"), sample)
        cosine = float((on_device * on_cpu).sum(axis=1).min())
        print(f"cosine(GPU vector, CPU vector), 64 images: min {cosine:.6f}")

    vectorizer = max(rate for (_, _, in_processes), rate in results.items() if in_processes)
    in_threads = max(rate for (_, _, in_processes), rate in results.items() if not in_processes)
    print(
        f"RESULT device={device.type} cores={os.cpu_count()} raw_best={best:.0f} "
        f"decode_threads16={threaded:.0f} "
        f"decode_processes={decoded:.0f} vectorizer={vectorizer:.0f} "
        f"ratio={vectorizer / best:.2f} threads_vectorizer={in_threads:.0f} "
        f"threads_ratio={in_threads / best:.2f} cosine_gpu_cpu_min={cosine:.6f}"
    )


if __name__ == "__main__":
    main()
