"""The local vectorizer on whatever device torch sees (a CUDA GPU when present, else the CPU).

    python bench/vectorizer_device.py [--images 4096] [--thread-images 512] [--max-s 30]

Prints, all from one run: decoding rates in the callers' threads and in worker processes
(the two ways the vectorizer can decode); the raw model's throughput by batch size; the
micro-batching LocalVectorizer's throughput under concurrent callers, decoding in worker
processes and in the callers' threads, each as a ratio to the best raw batch; on a GPU, how
closely its vectors agree with the CPU's for the same images; and the ceiling the parent
process's own steps per image put on the vectorizer (run with a model that costs nothing:
``pipeline_cap``), with the parent's CPU per image.

The last line is ``RESULT raw_best=... vectorizer=... ratio=... threads_ratio=...
pipeline_cap=...``.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from sample_images import picture_bytes  # noqa: E402

from imagerag.adapters import local_vectorizer as lv  # noqa: E402
from imagerag.adapters.local_decoders import DecoderProcesses, shared_memory_free  # noqa: E402


def pictures(count: int) -> list[bytes]:
    # fork: torch is imported but has not touched CUDA yet.
    with ProcessPoolExecutor(mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(picture_bytes, range(count), chunksize=64))


def decode_in_threads(images: list[bytes], threads: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lv.prepared, images))
    return len(images) / (time.perf_counter() - started)


def decode_in_processes(images: list[bytes], processes: int, threads: int, chunk: int) -> float:
    decoders = DecoderProcesses(lv.prepared, processes, lv.CROP_SHAPE, chunk=chunk)
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


def plan_costs(model: torch.nn.Module, sizes: list[int]) -> list[tuple[int, float, float]]:
    """(size, first pass s, second pass s) on a new thread: what a new batch shape costs a
    thread whose cuDNN plans (cached per thread) do not have it yet."""
    costs: list[tuple[int, float, float]] = []

    def run() -> None:
        for size in sizes:
            blank = np.zeros((size, lv.IMAGE_SIZE, lv.IMAGE_SIZE, 3), dtype=np.uint8)
            times = []
            for _ in range(2):
                started = time.perf_counter()
                lv.embed_batch(model, blank)
                sync()
                times.append(time.perf_counter() - started)
            first, second = times
            costs.append((size, first, second))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return costs


@dataclass
class Run:
    images_per_s: float
    mean_batch: float
    parent_us_per_image: float  # CPU of the whole parent process (all its threads)


def concurrent(
    images: list[bytes], threads: int, max_batch: int, processes: int, max_s: float
) -> Run:
    """The vectorizer under ``threads`` callers, over all the images or the first ``max_s``
    seconds."""
    vectorizer = lv.LocalVectorizer(max_batch=max_batch, decoder_processes=processes)
    try:
        vectorizer.warm()  # the model, its trace, the worker thread's plans for each size
        with ThreadPoolExecutor(threads) as pool:
            # Warm-up: the decoder processes.
            list(pool.map(vectorizer.vectorize_image, images[: max(threads, processes * 8)]))
            passes = vectorizer.forward_passes
            started, cpu = time.perf_counter(), time.process_time()
            calls = [pool.submit(vectorizer.vectorize_image, data) for data in images]
            done, _ = wait(calls, timeout=max_s)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            passes = vectorizer.forward_passes - passes
            for call in calls:
                call.cancel()
    finally:
        vectorizer.close()
    count = max(len(done), 1)
    return Run(len(done) / seconds, len(done) / max(passes, 1), cpu / count * 1e6)


def pipeline_cap(
    images: list[bytes], threads: int, max_batch: int, processes: int, max_s: float
) -> Run:
    """The vectorizer with a model that costs nothing: what the parent's own steps per image
    (hand-overs, queues, copies) allow, whatever the device."""
    real = lv.embed_batch
    lv.embed_batch = lambda model, batch: np.zeros((len(batch), lv.DIMENSIONS), np.float32)
    try:
        return concurrent(images, threads, max_batch, processes, max_s)
    finally:
        lv.embed_batch = real


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
    parser.add_argument(
        "--max-s", type=float, default=30.0, help="time limit of each vectorizer run, seconds"
    )
    args = parser.parse_args()

    images = pictures(args.images)
    cores = lv.cpu_count()
    processes = max(1, cores - 1)
    threaded = decode_in_threads(images, 16)
    print(f"decoding in 16 threads: {threaded:.0f} images/s", flush=True)
    free = shared_memory_free()
    needed = DecoderProcesses.shared_memory_needed(processes, lv.CROP_SHAPE)
    print(f"shared memory free: {free >> 20} MB", flush=True)
    if needed > free // 2:  # the vectorizer would decode in threads; the runs below would fail
        raise SystemExit(f"{processes} decoder processes need {needed >> 20} MB of shared memory")
    decoded = 0.0
    for chunk in (8, 16):
        rate = decode_in_processes(images, processes, 256, chunk)
        decoded = max(decoded, rate)
        print(f"decoding in {processes} processes, chunks of {chunk}: {rate:.0f} images/s")

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

    if device.type == "cuda":
        print("a new batch size on a new thread: first pass s, second pass s")
        for size, first, second in plan_costs(model, [1, 8, 100]):
            print(f"  {size:>4} {first:8.3f} {second:8.3f}", flush=True)

    header = "LocalVectorizer (threads, max_batch, decoding)"
    print(f"{header:<48} {'images/s':>9} {'vs best':>8} {'parent us/image':>16}")
    results: dict[tuple[int, int, bool], Run] = {}
    for threads, max_batch, decoders, count in (
        (128, 128, processes, args.images),
        # More callers than a batch: the next batch decodes while the model runs this one.
        (512, 128, processes, args.images),
        (512, 256, processes, args.images),
        (16, 16, 0, args.thread_images),
    ):
        run = concurrent(images[:count], threads, max_batch, decoders, args.max_s)
        results[(threads, max_batch, decoders > 0)] = run
        where = f"{decoders} processes" if decoders else "in threads"
        label = f"{threads}, {max_batch}, {where} (mean batch {run.mean_batch:.0f})"
        rate = run.images_per_s
        print(f"{label:<48} {rate:>9.1f} {rate / best:>8.2f} {run.parent_us_per_image:>16.0f}")
    cap = pipeline_cap(images, 512, 128, processes, args.max_s)
    label = f"512, 128, {processes} processes, no model"
    print(f"{label:<48} {cap.images_per_s:>9.1f} {'':>8} {cap.parent_us_per_image:>16.0f}")

    cosine = 1.0
    if device.type == "cuda":
        sample = np.stack(arrays[:64])
        on_device = lv.embed_batch(model, sample)
        on_cpu = lv.embed_batch(copy.deepcopy(model).to("cpu"), sample)
        cosine = float((on_device * on_cpu).sum(axis=1).min())
        print(f"cosine(GPU vector, CPU vector), 64 images: min {cosine:.6f}")

    in_processes = max((r for k, r in results.items() if k[2]), key=lambda r: r.images_per_s)
    in_threads = max((r for k, r in results.items() if not k[2]), key=lambda r: r.images_per_s)
    print(
        f"RESULT device={device.type} cores={os.cpu_count()} raw_best={best:.0f} "
        f"decode_threads16={threaded:.0f} decode_processes={decoded:.0f} "
        f"vectorizer={in_processes.images_per_s:.0f} "
        f"ratio={in_processes.images_per_s / best:.2f} "
        f"parent_us_per_image={in_processes.parent_us_per_image:.0f} "
        f"threads_vectorizer={in_threads.images_per_s:.0f} "
        f"threads_ratio={in_threads.images_per_s / best:.2f} "
        f"pipeline_cap={cap.images_per_s:.0f} pipeline_parent_us={cap.parent_us_per_image:.0f} "
        f"cosine_gpu_cpu_min={cosine:.6f}"
    )


if __name__ == "__main__":
    main()
