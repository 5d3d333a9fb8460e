"""Local ImageIndex (LanceDB) throughput and search latency, and the alternatives compared.

    .venv/bin/python bench/index.py [--sizes 10000 100000] [--dims 1280] [--queries 40]

Random unit vectors and short generated descriptions in a temporary directory. Prints:
upsert throughput (16 threads x single-document upserts, and bulk batches), then per size
the p50/p95 of LocalImageIndex.vector_search (exact cosine over the in-memory matrix),
text_search (LanceDB BM25), the first search after opening (matrix load), and the
alternatives: LanceDB flat search and a LanceDB IVF_PQ index (built at the smallest size).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import lancedb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagerag.adapters.local_index import LocalImageIndex  # noqa: E402
from imagerag.ports import IndexDocument, ModelInfo  # noqa: E402

WORDS = "cat dog bird tree car boat house flower river mountain beach city road bridge".split()


def documents(start: int, count: int, dims: int, rng: np.random.Generator) -> list[IndexDocument]:
    vectors = rng.standard_normal((count, dims), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = rng.integers(0, len(WORDS), size=(count, 3))
    return [
        IndexDocument(
            id=f"doc-{start + i:07d}",
            description="a photo of a " + " and a ".join(WORDS[w] for w in words[i]),
            image_vector=vectors[i].tolist(),
            filepath=f"set/{start + i:07d}.jpg",
            url=f"https://example.blob.core.windows.net/images/set/{start + i:07d}.jpg",
            title=f"{start + i:07d}.jpg",
            source="images/metadata.json",
            model_name="bench",
            model_version="1",
            content_hash="0" * 64,
        )
        for i in range(count)
    ]


def percentiles(samples: list[float]) -> str:
    p50, p95 = np.percentile(np.asarray(samples) * 1000, [50, 95])
    return f"{p50:8.1f} {p95:8.1f}"


def timed(call: object, repeat: int) -> list[float]:
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        call(i)  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return samples


def measure(
    search: LocalImageIndex,
    scratch: Path,
    size: int,
    args: argparse.Namespace,
    rng: np.random.Generator,
    with_ann: bool,
) -> tuple[list[tuple[int, str, str]], str]:
    rows: list[tuple[int, str, str]] = []
    ann_note = ""
    queries = rng.standard_normal((args.queries, args.dims), dtype=np.float32).tolist()

    fresh = LocalImageIndex(directory=scratch, name="search")
    started = time.perf_counter()
    fresh.vector_search(queries[0], top=10)
    first = time.perf_counter() - started
    del fresh

    search.vector_search(queries[0], top=10)  # load once
    vector = timed(lambda i: search.vector_search(queries[i], top=10), args.queries)
    filtered = timed(
        lambda i: search.vector_search(
            queries[i], top=10, filter="source eq 'images/metadata.json'"
        ),
        args.queries,
    )
    text = timed(
        lambda i: search.text_search(f"{WORDS[i % len(WORDS)]} boat", top=10), args.queries
    )
    lance = lancedb.connect(scratch).open_table("search")
    flat = timed(
        lambda i: (
            lance.search(queries[i], vector_column_name="image_vector")
            .distance_type("cosine")
            .limit(10)
            .select(["id"])
            .to_arrow()
        ),
        min(args.queries, 10),
    )
    rows.append((size, "vector_search (numpy, exact)", percentiles(vector)))
    rows.append((size, "vector_search + filter", percentiles(filtered)))
    rows.append((size, "text_search (LanceDB BM25)", percentiles(text)))
    rows.append((size, "LanceDB flat cosine search", percentiles(flat)))
    rows.append((size, "first search (matrix load)", f"{first * 1000:8.1f}"))

    if with_ann:
        # An ANN copy of the table, built once at the smallest size.
        copy = lancedb.connect(scratch).create_table("ann", data=lance.to_arrow())
        started = time.perf_counter()
        copy.create_index(
            metric="cosine",
            vector_column_name="image_vector",
            index_type="IVF_PQ",
            num_partitions=max(1, size // 4096),
            num_sub_vectors=args.dims // 16,
        )
        ann_note = f"IVF_PQ build at {size:,}: {time.perf_counter() - started:.1f} s"
        exact = [set(h.id for h in search.vector_search(q, top=10)) for q in queries]
        found = []

        def ann_query(i: int) -> None:
            result = (
                copy.search(queries[i], vector_column_name="image_vector")
                .distance_type("cosine")
                .nprobes(20)
                .refine_factor(5)
                .limit(10)
                .select(["id"])
                .to_arrow()
            )
            found.append(len(exact[i] & set(result.column("id").to_pylist())) / 10)

        ann = timed(ann_query, args.queries)
        rows.append((size, "LanceDB IVF_PQ (nprobes 20, refine 5)", percentiles(ann)))
        ann_note += f", recall@10 vs exact {np.mean(found):.2f}"

    return rows, ann_note


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dims", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--per-thread", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # LanceDB deprecation notices
    rng = np.random.default_rng(7)
    model = ModelInfo("bench", "1", args.dims, False)
    scratch = Path(tempfile.mkdtemp(prefix="index-bench-"))

    # ---------------------------------------------------------------- writes
    index = LocalImageIndex(directory=scratch, name="writes")
    index.ensure(model)
    per_thread = [
        documents(t * args.per_thread, args.per_thread, args.dims, rng) for t in range(args.threads)
    ]
    table = lancedb.connect(scratch).open_table("writes")
    before = len(table.list_versions())

    def writer(docs: list[IndexDocument]) -> None:
        for doc in docs:
            index.upsert([doc])

    threads = [threading.Thread(target=writer, args=(docs,)) for docs in per_thread]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = args.threads * args.per_thread
    versions = len(table.list_versions()) - before
    print(f"scratch directory: {scratch}")
    print(
        f"single-doc upserts, {args.threads} threads: {total} docs in {elapsed:.2f} s = "
        f"{total / elapsed:,.0f} docs/s, {versions} table versions"
    )

    # ---------------------------------------------------------------- searches
    search = LocalImageIndex(directory=scratch, name="search")
    search.ensure(model)
    rows = []
    loaded = 0
    bulk_time = 0.0
    ann_note = ""
    for size in sorted(args.sizes):
        while loaded < size:
            batch = documents(loaded, min(5000, size - loaded), args.dims, rng)
            started = time.perf_counter()
            search.upsert(batch)
            bulk_time += time.perf_counter() - started
            loaded += len(batch)
        search.optimize()
        size_rows, note = measure(search, scratch, size, args, rng, size == min(args.sizes))
        rows += size_rows
        ann_note = note or ann_note

    print(
        f"bulk upserts (batches of 5,000): {loaded:,} docs in {bulk_time:.1f} s = "
        f"{loaded / bulk_time:,.0f} docs/s"
    )
    print(ann_note)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{'docs':>8}  {'what':<40} {'p50 ms':>8} {'p95 ms':>8}")
    for size, what, numbers in rows:
        print(f"{size:>8,}  {what:<40} {numbers}")


if __name__ == "__main__":
    main()
