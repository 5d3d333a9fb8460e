"""Descriptor variants of the local model, ranked brute force on the retrieval-quality set.

Used by ``bench/retrieval_quality.py --offline``: every indexed picture and every query is
run through EfficientNet-Lite0 once per geometry (the current centre crop, or the whole
picture at a shorter side of 224 / 320 px) and per mirror, and the 1280 x h x w feature map is
pooled four ways (average, GeM p=3, max, R-MAC regions). Variants then combine those vectors
(mirror-averaged, two scales summed, PCA-whitened on the indexed vectors) and are ranked by
cosine similarity; R@1 / R@5 per edit kind are printed for each.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imagerag.adapters import local_vectorizer as lv

CACHE = Path("/tmp/retrieval-levers.npz")
GEOMETRIES = ("crop224", "full224")
POOLS = ("gap", "gem", "mac", "rmac")


def pixels(data: bytes, geometry: str, mirrored: bool) -> np.ndarray:
    if geometry == "crop224":
        array = ((lv.preprocess(data).astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)
    else:
        side = int(geometry.removeprefix("full"))
        image = Image.open(io.BytesIO(data)).convert("RGB")
        image = lv._shorter_side_to(image, side)
        array = ((np.asarray(image, dtype=np.float32) - 127.0) / 128.0).transpose(2, 0, 1)
    if mirrored:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def rmac(features: Any) -> Any:
    """Sum of the L2-normalised max-pooled regions of 3 scales (Tolias et al.)."""
    import math

    import torch

    _, _, height, width = features.shape
    shorter = min(height, width)
    total = torch.zeros(features.shape[:2])
    for level in (1, 2, 3):
        side = shorter if level == 1 else max(1, round(2 * shorter / (level + 1)))
        rows = _starts(height, side, math.ceil(level * height / shorter))
        cols = _starts(width, side, math.ceil(level * width / shorter))
        for top in rows:
            for left in cols:
                region = features[:, :, top : top + side, left : left + side].amax((2, 3))
                total += torch.nn.functional.normalize(region, dim=1)
    return total


def _starts(length: int, side: int, count: int) -> list[int]:
    if count <= 1 or side >= length:
        return [0]
    return sorted({round(i * (length - side) / (count - 1)) for i in range(count)})


def pooled(model: Any, batch: np.ndarray) -> dict[str, np.ndarray]:
    """(n, 3, h, w) pixels of one size -> each pooling's (n, 1280) vectors."""
    import torch

    inputs = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        features = model.extract_features(inputs)
        values = {
            "gap": features.mean((2, 3)),
            "gem": features.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3),
            "mac": features.amax((2, 3)),
            "rmac": rmac(features),
        }
    return {name: v.numpy() for name, v in values.items()}


def compute(images: list[bytes], geometries: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Pooled vectors keyed "geometry/mirrored/pool", cached per geometry in /tmp."""
    import torch

    model = lv.load_model()
    # One thread: on a busy shared machine two threads mostly wait for each other.
    torch.set_num_threads(1)
    found: dict[str, np.ndarray] = {}
    for geometry in geometries:
        cache = CACHE.with_name(f"{CACHE.stem}-{geometry}-{len(images)}.npz")
        if cache.exists():
            found.update(np.load(cache))
            continue
        started = time.perf_counter()
        vectors: dict[str, list[np.ndarray]] = {}
        # Pictures of the same size run as one batch.
        arrays = [pixels(data, geometry, False) for data in images]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for number, array in enumerate(arrays):
            by_shape.setdefault(array.shape, []).append(number)
        order: list[int] = []
        for numbers in by_shape.values():
            for start in range(0, len(numbers), 16):
                chunk = numbers[start : start + 16]
                order += chunk
                batch = np.stack([arrays[i] for i in chunk])
                for mirrored in (False, True):
                    pixels_ = np.ascontiguousarray(batch[:, :, :, ::-1]) if mirrored else batch
                    for pool, value in pooled(model, pixels_).items():
                        vectors.setdefault(f"{geometry}/{int(mirrored)}/{pool}", []).append(value)
        inverse = np.argsort(np.array(order))
        stacked = {k: np.concatenate(v)[inverse] for k, v in vectors.items()}
        np.savez(cache, **stacked)
        print(f"  {geometry}: {time.perf_counter() - started:.0f} s", flush=True)
        found.update(stacked)
    return found


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def whitened(index: np.ndarray, queries: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    mean = index.mean(0)
    _, s, vt = np.linalg.svd(index - mean, full_matrices=False)
    variance = s**2 / len(index)
    projection = vt[:dims].T / np.sqrt(variance[:dims] + 1e-6 * variance[0])
    return unit((index - mean) @ projection), unit((queries - mean) @ projection)


def run_offline(
    docs: list[Any], queries: list[Any], kinds: list[str], geometries: tuple[str, ...] = GEOMETRIES
) -> None:
    from retrieval_quality import png

    images = [png(d.image) for d in docs] + [q.data for q in queries]
    print(f"descriptors for {len(images)} pictures x {len(geometries)} geometries x 2 mirrors")
    raw = compute(images, geometries)
    n = len(docs)
    paths = [d.path for d in docs]
    target = np.array([paths.index(q.target) for q in queries])
    query_kinds = np.array([q.kind for q in queries])

    def vec(geometry: str, pool: str, mirror: str = "no") -> np.ndarray:
        plain = unit(raw[f"{geometry}/0/{pool}"])
        if mirror == "no":
            return plain
        return unit(plain + unit(raw[f"{geometry}/1/{pool}"]))

    def score(all_vectors: np.ndarray, whiten: int = 0) -> tuple[float, float, dict[str, float]]:
        index, asked = all_vectors[:n], all_vectors[n:]
        if whiten:
            index, asked = whitened(index, asked, whiten)
        similarity = asked @ index.T
        true = similarity[np.arange(len(asked)), target]
        rank = 1 + (similarity > true[:, None]).sum(1)
        per_kind = {k: float((rank[query_kinds == k] == 1).mean()) for k in kinds}
        return float((rank == 1).mean()), float((rank <= 5).mean()), per_kind

    variants: dict[str, Callable[[], np.ndarray]] = {}
    for geometry in geometries:
        for pool in POOLS:
            variants[f"{geometry} {pool}"] = lambda g=geometry, p=pool: vec(g, p)
            variants[f"{geometry} {pool} +mirror"] = lambda g=geometry, p=pool: vec(g, p, "avg")
    for pool in POOLS if "full320/0/gap" in raw else ():
        variants[f"full224+320 {pool}"] = lambda p=pool: unit(vec("full224", p) + vec("full320", p))
        variants[f"full224+320 {pool} +mirror"] = lambda p=pool: unit(
            vec("full224", p, "avg") + vec("full320", p, "avg")
        )
    header = f"{'variant':<34} {'white':>5} {'R@1':>6} {'R@5':>6}  " + " ".join(
        f"{k:>6}" for k in kinds
    )
    print(header)
    best = ("", 0, -1.0, -1.0)  # (variant, whitening, R@1, R@5) with the highest R@1
    for name, make in variants.items():
        vectors = make()
        for whiten in (0, 128, 256, 512):
            r1, r5, per_kind = score(vectors, whiten)
            cells = " ".join(f"{per_kind[k]:>6.3f}" for k in kinds)
            print(f"{name:<34} {whiten:>5} {r1:>6.3f} {r5:>6.3f}  {cells}", flush=True)
            best = max(best, (name, whiten, r1, r5), key=lambda row: row[2])
    variant, whiten, r1, r5 = best
    print(
        f"RESULT variants={len(variants)} best_variant={variant.replace(' ', '_')} "
        f"best_whiten={whiten} best_r1={r1:.3f} best_r5={r5:.3f}"
    )
