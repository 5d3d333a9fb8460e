"""The local vectorizer on whatever device torch sees (a CUDA GPU when present, else the CPU).

    python bench/vectorizer_device.py [--images 512]

Prints the raw model's throughput by batch size, the micro-batching LocalVectorizer's
throughput under concurrent callers (its ratio to the best raw batch, same run), and, on a
GPU, how closely its vectors agree with the CPU's for the same images.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from sample_images import picture_bytes  # noqa: E402

from imagerag.adapters import local_vectorizer as lv  # noqa: E402


def raw(model: torch.nn.Module, arrays: list[np.ndarray], batch: int) -> float:
    lv.embed_batch(model, np.stack(arrays[:batch]))  # warm-up (kernels, allocator)
    sync()
    started = time.perf_counter()
    for start in range(0, len(arrays), batch):
        lv.embed_batch(model, np.stack(arrays[start : start + batch]))
    sync()
    return len(arrays) / (time.perf_counter() - started)


def concurrent(images: list[bytes], threads: int, max_batch: int) -> tuple[float, float]:
    vectorizer = lv.LocalVectorizer(max_batch=max_batch)
    vectorizer.vectorize_image(images[0])  # start the worker and load the model
    passes = vectorizer.forward_passes
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(vectorizer.vectorize_image, images))
    seconds = time.perf_counter() - started
    mean_batch = len(images) / max(vectorizer.forward_passes - passes, 1)
    return len(images) / seconds, mean_batch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()

    images = [picture_bytes(seed) for seed in range(args.images)]
    started = time.perf_counter()
    arrays = [lv.preprocess(data) for data in images]
    preprocess_rate = len(arrays) / (time.perf_counter() - started)
    model = lv.load_model()
    device = next(model.parameters()).device
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}; {os.cpu_count()} CPU cores; torch {torch.__version__}")
    print(f"preprocessing, one thread: {preprocess_rate:.0f} images/s")

    print(f"{'raw model, batch':<40} {'images/s':>9}")
    best = 0.0
    for batch in (1, 16, 64, 256):
        if batch <= len(arrays):
            rate = raw(model, arrays, batch)
            best = max(best, rate)
            print(f"{batch:<40} {rate:>9.1f}")

    print(
        f"{'LocalVectorizer (threads, max_batch)':<40} {'images/s':>9} {'vs best':>8} {'batch':>6}"
    )
    for threads, max_batch in ((16, 16), (64, 64), (128, 128)):
        rate, mean_batch = concurrent(images, threads, max_batch)
        print(
            f"{f'{threads} threads, max_batch {max_batch}':<40} {rate:>9.1f} "
            f"{rate / best:>8.2f} {mean_batch:>6.1f}"
        )

    if device.type == "cuda":
        sample = np.stack(arrays[:64])
        on_device = lv.embed_batch(model, sample)
        on_cpu = lv.embed_batch(copy.deepcopy(model).to("cpu"), sample)
        agreement = (on_device * on_cpu).sum(axis=1)
        print(f"cosine(GPU vector, CPU vector), 64 images: min {agreement.min():.6f}")


if __name__ == "__main__":
    main()
