"""Approximate search engines for the local index, compared on bench/query.py's corpus.

    .venv/bin/python bench/ann.py [--rows 100000] [--queries 200]
        [--engines int4 int8 hnswlib usearch faiss]

Rows: random non-negative unit vectors (1280-d, like pooled CNN features) with the 20 real
pictures (vectorized by the local model) planted among them. Queries: the altered copies of
the real pictures, plus rows perturbed by noise. On random rows the 2nd to 10th neighbours are
near-ties, the hardest case for a graph; top1 (the exact first found first) is also reported.
Each engine proposes candidates, which are
scored exactly from the float32 rows, as VectorCache does; per engine: build seconds (2
threads), query p50/p95 (graphs: 1 thread; scans: numpy's and torch's, 2 here), recall@10
against exact search, and the memory the engine adds (its own estimate where it has one).
int4 is the first pass VectorCache runs from QUANTISED_FROM_ROWS rows on (local_quantised.py),
int8 the one it ran before (torch's int8 kernel, for comparison); hnswlib (chroma-hnswlib) the
opt-in graph; usearch and faiss-cpu are measured only where they are installed (they are not
dependencies).

Last line: ``RESULT rows=... exact_p95_ms=... int4_p95_ms=... int4_recall10=... int4_top1=...
int4_mb=... int8_p95_ms=... int8_recall10=... graph_build_s=... graph_p95_ms=...
graph_recall10=... graph_top1=... graph_mb=...``
for the settings local_quantised.py and local_neighbours.py use.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from sample_images import altered_copy, picture_bytes  # noqa: E402

from imagerag.adapters import local_neighbours, local_quantised, local_vectors  # noqa: E402
from imagerag.adapters.local_vectorizer import LocalVectorizer  # noqa: E402

DIMS = 1280
PICTURES = 20
Search = Callable[[np.ndarray], np.ndarray]


def corpus(rows: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(rows)
    matrix = np.abs(rng.standard_normal((rows, DIMS), dtype=np.float32))
    vectorizer = LocalVectorizer()
    originals = [picture_bytes(seed) for seed in range(PICTURES)]
    matrix[rng.choice(rows, PICTURES, replace=False)] = [
        vectorizer.vectorize_image(data) for data in originals
    ]
    altered = [vectorizer.vectorize_image(altered_copy(data)) for data in originals]
    # Rows moved by noise about a third of their length (cosine ~0.95 with the row).
    perturbed = matrix[rng.choice(rows, queries - PICTURES)] + 0.3 / np.sqrt(DIMS) * (
        rng.standard_normal((queries - PICTURES, DIMS), dtype=np.float32)
    )
    asked = np.vstack([altered, perturbed]).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    return matrix, asked


def exact(matrix: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    return local_vectors.top_k(matrix @ query, k)


def rescored(matrix: np.ndarray, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    candidates = candidates.astype(np.intp)
    return candidates[local_vectors.top_k(local_vectors.rescored(matrix, candidates, query), 10)]


def report(name: str, build_s: float, mb: float, search: Search, matrix, queries) -> dict:
    timings, answers, recalls, firsts = [], [], [], 0
    for query in queries:
        start = time.perf_counter()
        answers.append(search(query))
        timings.append(time.perf_counter() - start)
    # The truth afterwards: numpy's BLAS threads spin on after a large product, and between
    # timed searches they made the int8 and 4-bit passes (torch's threads) ~2x slower on 2 cores.
    for query, found in zip(queries, answers, strict=True):
        truth = exact(matrix, query)
        recalls.append(len(set(found.tolist()) & set(truth.tolist())) / 10)
        firsts += int(found[0] == truth[0])
    ms = sorted(t * 1000 for t in timings)
    figures = {
        "build_s": build_s,
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[round(0.95 * (len(ms) - 1))],
        "recall10": statistics.mean(recalls),
        "top1": firsts / len(queries),
        "mb": mb,
    }
    print(
        f"{name:<36} build {build_s:6.1f} s  p50 {figures['p50_ms']:6.2f}  "
        f"p95 {figures['p95_ms']:6.2f} ms  recall@10 {figures['recall10']:.4f}  "
        f"worst {min(recalls):.1f}  top1 {figures['top1']:.3f}  {mb:6.0f} MB",
        flush=True,
    )
    return figures


def by_candidates(
    engine: str,
    also: tuple[int, ...],
    used: int,
    build_s: float,
    mb: float,
    search: Callable[[np.ndarray, int], np.ndarray],
    matrix: np.ndarray,
    queries: np.ndarray,
) -> dict:
    """report() of ``search`` at each candidate count in ``also`` and at ``used`` (the count
    the index uses); returns the figures at ``used``."""
    for count in also:
        report(
            f"{engine}, {count} candidates",
            build_s,
            mb,
            lambda q, c=count: search(q, c),
            matrix,
            queries,
        )
    return report(
        f"{engine}, {used} candidates", build_s, mb, lambda q: search(q, used), matrix, queries
    )


def int4_runs(matrix: np.ndarray, queries: np.ndarray) -> dict:
    """The 4-bit first pass VectorCache uses, its candidates scored exactly."""
    if not local_quantised.available():
        raise ImportError("torch's 4-bit kernel is unavailable here")
    rows = local_quantised.QuantisedRows(DIMS)
    start = time.perf_counter()
    rows.set(np.arange(len(matrix)), matrix)
    build = time.perf_counter() - start
    mb = (rows.packed.nbytes + 2 * rows.scale_zero.numel()) / 2**20

    def search(query: np.ndarray, count: int) -> np.ndarray:
        approximate = rows.scores(query, len(matrix))
        assert approximate is not None
        return rescored(matrix, query, local_vectors.top_k(approximate, count))

    return by_candidates(
        "4-bit scan",
        (50, 100),
        local_vectors.QUANTISED_CANDIDATES,
        build,
        mb,
        search,
        matrix,
        queries,
    )


def int8_runs(matrix: np.ndarray, queries: np.ndarray) -> dict:
    """For comparison: torch's int8 weight x bfloat16 kernel, one scale per row (the index's
    first pass before the 4-bit one; 1280 columns and a row count divisible by 4 are shapes
    it handles)."""
    import torch

    start = time.perf_counter()
    scales = np.abs(matrix).max(axis=1) / 127
    codes = torch.from_numpy(np.rint(matrix / scales[:, None]).astype(np.int8))
    bf16_scales = torch.from_numpy(scales.astype(np.float32)).to(torch.bfloat16)
    build = time.perf_counter() - start

    def search(query: np.ndarray, count: int) -> np.ndarray:
        with torch.inference_mode():
            approximate = (
                torch._weight_int8pack_mm(
                    torch.from_numpy(query)[None].to(torch.bfloat16), codes, bf16_scales
                )[0]
                .float()
                .numpy()
            )
        return rescored(matrix, query, local_vectors.top_k(approximate, count))

    mb = (codes.numel() + 2 * len(scales)) / 2**20
    return by_candidates(
        "int8 scan", (), local_vectors.QUANTISED_CANDIDATES, build, mb, search, matrix, queries
    )


def hnswlib_runs(matrix: np.ndarray, queries: np.ndarray) -> dict:
    """The engine and settings local_neighbours.py uses (the figures RESULT reports)."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=DIMS)
    start = time.perf_counter()
    index.init_index(
        max_elements=len(matrix),
        ef_construction=local_neighbours.EXPANSION_ADD,
        M=local_neighbours.CONNECTIVITY,
    )
    index.add_items(matrix, np.arange(len(matrix)), num_threads=2)
    build = time.perf_counter() - start
    index.set_ef(local_neighbours.EXPANSION_SEARCH)
    links = len(matrix) * local_neighbours.CONNECTIVITY * 2 * 4  # level-0 links, 4 B each
    mb = (matrix.nbytes + links) / 2**20  # it stores float32 rows

    def search(query: np.ndarray, count: int) -> np.ndarray:
        return rescored(matrix, query, index.knn_query(query, k=count, num_threads=1)[0][0])

    return by_candidates(
        "hnswlib HNSW f32",
        (50,),
        local_vectors.GRAPH_CANDIDATES,
        build,
        mb,
        search,
        matrix,
        queries,
    )


def usearch_runs(matrix: np.ndarray, queries: np.ndarray) -> None:
    """usearch (int8 and float16 storage). Only ever imported after torch here: loaded first,
    its extension made the local model's traced pass hang (see local_neighbours.py)."""
    from usearch.index import Index

    for dtype in ("i8", "f16"):
        index = Index(
            ndim=DIMS,
            metric="cos",
            dtype=dtype,
            connectivity=local_neighbours.CONNECTIVITY,
            expansion_add=local_neighbours.EXPANSION_ADD,
            expansion_search=local_neighbours.EXPANSION_SEARCH,
        )
        start = time.perf_counter()
        index.add(np.arange(len(matrix), dtype=np.uint64), matrix, threads=2)
        build = time.perf_counter() - start
        report(
            f"usearch HNSW {dtype}, 100 candidates",
            build,
            index.memory_usage / 2**20,
            lambda q, ix=index: rescored(matrix, q, ix.search(q, 100, threads=1).keys),
            matrix,
            queries,
        )
        del index
        gc.collect()


def faiss_runs(matrix: np.ndarray, queries: np.ndarray) -> None:
    import faiss

    for factory in ("SQ8", "HNSW16,SQ8"):
        faiss.omp_set_num_threads(2)
        index = faiss.index_factory(DIMS, factory, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        index.train(matrix)
        index.add(matrix)
        build = time.perf_counter() - start
        faiss.omp_set_num_threads(1)
        if factory.startswith("HNSW"):
            index.hnsw.efSearch = 128
        report(
            f"faiss {factory}, 100 candidates",
            build,
            matrix.nbytes / 4 / 2**20,
            lambda q, ix=index: rescored(matrix, q, ix.search(q[None], 100)[1][0]),
            matrix,
            queries,
        )
        del index
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--engines", nargs="+", default=["int4", "int8", "hnswlib", "usearch", "faiss"]
    )
    args = parser.parse_args()
    matrix, queries = corpus(args.rows, args.queries)
    base = report("exact float32 (numpy)", 0.0, 0.0, lambda q: exact(matrix, q), matrix, queries)
    chosen: dict[str, dict] = {}
    for engine, run in (
        ("int4", int4_runs),
        ("int8", int8_runs),
        ("hnswlib", hnswlib_runs),
        ("usearch", usearch_runs),
        ("faiss", faiss_runs),
    ):
        if engine not in args.engines:
            continue
        try:
            result = run(matrix, queries)
        except ImportError:
            print(f"{engine}: not installed")
            continue
        if result:
            chosen[engine] = result
    int4, int8 = chosen.get("int4", {}), chosen.get("int8", {})
    graph = chosen.get("hnswlib", {})
    print(
        f"RESULT rows={args.rows} exact_p95_ms={base['p95_ms']:.2f} "
        f"int4_p95_ms={int4.get('p95_ms', 0):.2f} int4_recall10={int4.get('recall10', 0):.4f} "
        f"int4_top1={int4.get('top1', 0):.3f} int4_mb={int4.get('mb', 0):.0f} "
        f"int8_p95_ms={int8.get('p95_ms', 0):.2f} int8_recall10={int8.get('recall10', 0):.4f} "
        f"graph_build_s={graph.get('build_s', 0):.1f} graph_p95_ms={graph.get('p95_ms', 0):.2f} "
        f"graph_recall10={graph.get('recall10', 0):.4f} graph_top1={graph.get('top1', 0):.3f} "
        f"graph_mb={graph.get('mb', 0):.0f}"
    )


if __name__ == "__main__":
    main()
