"""Grounded-chat query latency on the local index: retrieval and endpoint overhead.

    .venv/bin/python bench/query.py [--sizes 10000 100000] [--queries 40] [--graph-from-rows N]

For each size, an index of that many documents is seeded through the ImageIndex port: 20 real
pictures (tests/sample_images.py, vectorized by the local EfficientNet-Lite0) among random
non-negative unit vectors (pooled CNN features are non-negative, so random ones score like
unrelated pictures), each with a random description. Queries are cropped, re-encoded copies of
the real pictures with the text "what is this?".

Reported per size (milliseconds, p50 / p95 over the queries, after one warm-up query):
- vectorize: the query image through the local model;
- search+fuse: what the searches, RRF and strictness add to the query image's vectorizing
  (retrieval minus vectorize): the image vector search and the fusion after it, and what is
  left of the text lists (full-text, description vectors), which run meanwhile;
- retrieval: vectorize + search + fuse (imagerag.retrieval.retrieve);
- endpoint: the whole POST /api/chat/completions handler in-process (JSON parsing, data URL
  decoding and image checks, retrieval, citations, the extractive answer, the response body),
  i.e. everything but HTTP transport and a model;
- overhead: endpoint minus the retrieval inside that same request;
- top1: queries whose [doc1] is the picture the query was cropped from;
- vector: ImageIndex.vector_search alone (top 10) for each query's vector, once the index's
  neighbour graph (if any) holds every row; recall10: the share of the exact top 10 (numpy
  over the seeded vectors) it returned;
- cold: the first such search on a fresh handle, as after a restart with no warm-up (it
  loads the rows and the saved graph); warm-up s: LocalImageIndex.warm() on another fresh
  handle, as the app runs it in the background at start (imagerag/warm_up.py); first: the
  first search after that warm-up;
- graph s: with ``--graph-from-rows``, from the first search of the seeded index until its
  neighbour graph holds every row and is saved, built in the background;
- model: the model's own forward pass at batch 1 on the query's preprocessed pixels, so that
  vectorize_ratio = vectorize p95 / model p95 is measured in the same run.

Last line: ``RESULT p95_vector_ms_<size>=... p95_search_fuse_ms_<size>=...
p95_retrieval_ms_<size>=... recall10_<size>=...
cold_first_search_ms_<size>=... warm_up_s_<size>=... first_search_ms_<size>=...
graph_s_<size>=... model_p95_ms=... p95_vectorize_ratio=... recall10=...`` (recall10: the
lowest over the sizes; each is the mean over the queries).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from fastapi_request import fastapi_request  # noqa: E402
from sample_images import altered_copy, picture_bytes  # noqa: E402
from stack import Stack  # noqa: E402

from imagerag import config, retrieval  # noqa: E402
from imagerag.adapters.local_index import LocalImageIndex  # noqa: E402
from imagerag.adapters.local_vectorizer import embed_batch, load_model, preprocess  # noqa: E402
from imagerag.ports import ImageEmbedding, IndexDocument, ModelInfo, Vectorizer  # noqa: E402

REAL_PICTURES = 20
BATCH = 2000
WORDS = (
    "red blue green yellow old new small large bright dark wooden metal stone glass river "
    "mountain city street harbour boat car bicycle tree forest flower field sky cloud sunset "
    "house window door table chair cup book dog cat bird horse child woman man market bridge "
    "tower lamp road beach wave snow rain night morning garden fence wall roof train station"
).split()


class TimedVectorizer:
    """The real vectorizer, remembering how long the last image took."""

    def __init__(self, inner: Vectorizer) -> None:
        self.inner = inner
        self.last_s = 0.0

    @property
    def model(self) -> ModelInfo:
        return self.inner.model

    def vectorize_image(self, data: bytes, *, interactive: bool = False) -> list[float]:
        return self.embed_image(data, interactive=interactive).vector

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        start = time.perf_counter()
        try:
            return self.inner.embed_image(data, interactive=interactive)
        finally:
            self.last_s = time.perf_counter() - start

    def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
        return self.inner.vectorize_text(text, interactive=interactive)


def seed_index(
    settings: config.Settings, name: str, size: int, real: list[list[float]]
) -> np.ndarray:
    """Seeds the index; returns its vectors, unit-normalised, in document order."""
    vectorizer = config.vectorizer(settings)
    index = config.image_index(settings, name)
    index.ensure(vectorizer.model)
    rng = np.random.default_rng(size)
    words = random.Random(size)
    dims = vectorizer.model.dimensions
    real_slots = dict(zip(rng.choice(size, len(real), replace=False).tolist(), real, strict=True))
    seeded = np.zeros((size, dims), dtype=np.float32)
    for start in range(0, size, BATCH):
        count = min(BATCH, size - start)
        vectors = np.abs(rng.standard_normal((count, dims), dtype=np.float32))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        documents = []
        for offset in range(count):
            n = start + offset
            vector = real_slots.get(n)
            seeded[n] = vector if vector is not None else vectors[offset]
            path = f"pictures/{n}.jpg"
            documents.append(
                IndexDocument(
                    id=f"doc-{n}",
                    description=" ".join(words.choices(WORDS, k=8)),
                    image_vector=vector if vector is not None else vectors[offset].tolist(),
                    filepath=path,
                    url=f"http://127.0.0.1:10000/devstoreaccount1/images/{path}",
                    title=f"{n}.jpg",
                    source="images/metadata.json",
                    model_name=vectorizer.model.name,
                    model_version=vectorizer.model.version,
                    content_hash="0" * 64,
                )
            )
        index.upsert(documents)
    index.optimize()
    return seeded / np.linalg.norm(seeded, axis=1, keepdims=True)


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):7.1f} / {p95:7.1f}"


def chat_body(query: bytes, index: str) -> bytes:
    url = "data:image/jpeg;base64," + base64.b64encode(query).decode()
    return json.dumps(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            "data_sources": [{"type": "azure_search", "parameters": {"index_name": index}}],
        }
    ).encode()


def measure(
    settings: config.Settings, name: str, queries: list[bytes], measured: dict[str, float]
) -> dict[str, Any]:
    import imagerag.chat.completion
    from api.chat import chat_completions

    timings: list[tuple[float, float]] = []  # (vectorize, retrieval) of each handled request
    inner = retrieval.retrieve

    def timed_retrieve(**kwargs: Any) -> retrieval.RetrievalResult:
        vectorizer = kwargs["vectorizer"] = TimedVectorizer(kwargs["vectorizer"])
        start = time.perf_counter()
        result = inner(**kwargs)
        timings.append((vectorizer.last_s, time.perf_counter() - start))
        return result

    imagerag.chat.completion.retrieve = timed_retrieve  # type: ignore[assignment]
    vectorize, search, total, endpoint = [], [], [], []
    hits_first = 0
    for i, query in enumerate([queries[0], *queries]):
        request = fastapi_request(
            "POST",
            "http://127.0.0.1:7071/api/chat/completions",
            headers={"Content-Type": "application/json"},
            body=chat_body(query, name),
        )
        start = time.perf_counter()
        response = asyncio.run(chat_completions(request))
        handled = time.perf_counter() - start
        assert response.status_code == 200, response.body[:300]
        if i == 0:
            # Warm-up: model load, vector matrix load, FTS reader, and the graph of the
            # description vectors, which the first text query starts.
            local_index(settings, name).wait_for_graphs()
            continue
        vectorized, retrieved = timings[-1]
        vectorize.append(vectorized)
        search.append(retrieved - vectorized)
        total.append(retrieved)
        endpoint.append(handled)
        citations = json.loads(response.body)["choices"][0]["message"]["context"]
        first = citations["citations"][0]["filepath"] if citations["citations"] else ""
        hits_first += first in planted_paths[f"pictures/{(i - 1) % REAL_PICTURES}"]
    imagerag.chat.completion.retrieve = inner
    measured["vectorize_p95"] = p95_ms(vectorize)
    measured["search_fuse_p95"] = p95_ms(search)
    measured["retrieval_p95"] = p95_ms(total)
    overhead = [e - t for e, t in zip(endpoint, total, strict=True)]
    return {
        "vectorize": percentiles(vectorize),
        "search+fuse": percentiles(search),
        "retrieval": percentiles(total),
        "endpoint": percentiles(endpoint),
        "overhead": percentiles(overhead),
        "top1": f"{hits_first}/{len(total)}",
    }


def local_index(settings: config.Settings, name: str) -> LocalImageIndex:
    index = config.image_index(settings, name)  # the process's handle, as the app uses it
    assert isinstance(index, LocalImageIndex), "bench/query.py runs on the embedded index"
    return index


def p95_ms(values: list[float]) -> float:
    ms = sorted(v * 1000 for v in values)
    return ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


def measure_vector_search(
    settings: config.Settings, name: str, seeded: np.ndarray, query_vectors: list[list[float]]
) -> dict[str, float]:
    """vector_search alone, its recall@10 against exact search, and the first search of a
    fresh handle without and after a warm-up."""

    def fresh_handle() -> LocalImageIndex:
        return LocalImageIndex(
            directory=settings.local_data_dir / "index",
            name=name,
            approximate_from=settings.local_graph_from_rows,
        )

    def timed(call: Any) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    cold = timed(lambda: fresh_handle().vector_search(query_vectors[1], top=10))
    fresh = fresh_handle()
    warm_up = timed(fresh.warm)
    first = timed(lambda: fresh.vector_search(query_vectors[0], top=10))
    fresh.wait_for_graphs()
    timings, answers, recalls = [], [], []
    for vector in query_vectors:
        start = time.perf_counter()
        answers.append(fresh.vector_search(vector, top=10))
        timings.append(time.perf_counter() - start)
    # Recall afterwards: numpy's BLAS threads spin on after a product, and on 2 cores they
    # slowed the next search's torch threads 2x when this ran between the timed searches.
    for vector, hits in zip(query_vectors, answers, strict=True):
        query = np.asarray(vector, dtype=np.float32)
        exact = np.argsort(-(seeded @ (query / np.linalg.norm(query))))[:10]
        found = {int(hit.id.removeprefix("doc-")) for hit in hits}
        recalls.append(len(found & set(exact.tolist())) / 10)
    return {
        "vector": p95_ms(timings),
        "recall10": statistics.mean(recalls),
        "cold": cold * 1000,
        "warm_up": warm_up,
        "first": first * 1000,
    }


def model_latency(queries: list[bytes]) -> list[float]:
    """The model's own batch-1 forward pass on each query's preprocessed pixels."""
    model = load_model()
    pixels = [preprocess(query)[None] for query in queries]
    embed_batch(model, pixels[0])  # warm-up
    timings = []
    for batch in pixels:
        start = time.perf_counter()
        embed_batch(model, batch)
        timings.append(time.perf_counter() - start)
    return timings


planted_paths: dict[str, set[str]] = {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument(
        "--graph-from-rows",
        type=int,
        default=None,
        help="LOCAL_INDEX_GRAPH_FROM_ROWS; unset: exact",
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="query-bench-"))
    # Chat lists the data sources in Blob storage: an Azurite of its own.
    azurite = Stack(scratch, devhost=False).__enter__()
    os.environ.update(
        {
            "AzureWebJobsStorage": azurite.connection,
            "LOCAL_DATA_DIR": str(scratch),
            "IMAGES_CONTAINER": "images",
        }
    )
    os.environ.pop("LOCAL_INDEX_GRAPH_FROM_ROWS", None)
    if args.graph_from_rows is not None:
        os.environ["LOCAL_INDEX_GRAPH_FROM_ROWS"] = str(args.graph_from_rows)
    for name in ("AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "AZURE_VISION_ENDPOINT"):
        os.environ.pop(name, None)
    os.environ.pop("AZURE_SEARCH_ENDPOINT", None)
    settings = config.Settings.from_env()
    vectorizer = config.vectorizer(settings)
    originals = [picture_bytes(seed) for seed in range(REAL_PICTURES)]
    real = [vectorizer.vectorize_image(data) for data in originals]
    queries = [altered_copy(originals[i % REAL_PICTURES]) for i in range(args.queries)]
    query_vectors = [vectorizer.vectorize_image(query) for query in queries]
    rows = []
    results: dict[str, float] = {}
    try:
        for size in args.sizes:
            name = f"bench{size}-v"
            start = time.perf_counter()
            seeded = seed_index(settings, name, size, real)
            seeded_s = time.perf_counter() - start
            index = local_index(settings, name)
            # The first search reads the rows and, with --graph-from-rows, starts the graph,
            # built in the background: timed until it holds every row and is saved.
            start = time.perf_counter()
            index.vector_search(real[0], top=1)
            index.wait_for_graphs()
            graph_s = time.perf_counter() - start
            # Which seeded path holds each real picture: found by its own vector.
            planted_paths.clear()
            for seed, vector in enumerate(real):
                top = index.vector_search(vector, top=1)[0]
                planted_paths.setdefault(f"pictures/{seed}", set()).add(str(top.filepath))
            alone = measure_vector_search(settings, name, seeded, query_vectors)
            measured: dict[str, float] = {}
            row = {
                "docs": f"{size:,}",
                "seed s": f"{seeded_s:.0f}",
                "graph s": f"{graph_s:.0f}",
                **measure(settings, name, queries, measured),
                "vector p95": f"{alone['vector']:.1f}",
                "recall10": f"{alone['recall10']:.2f}",
                "cold": f"{alone['cold']:.0f}",
                "warm-up s": f"{alone['warm_up']:.1f}",
                "first": f"{alone['first']:.0f}",
            }
            results[f"p95_vector_ms_{size}"] = alone["vector"]
            results[f"p95_search_fuse_ms_{size}"] = measured["search_fuse_p95"]
            results[f"p95_retrieval_ms_{size}"] = measured["retrieval_p95"]
            results[f"recall10_{size}"] = alone["recall10"]
            results[f"cold_first_search_ms_{size}"] = alone["cold"]
            results[f"warm_up_s_{size}"] = alone["warm_up"]
            results[f"first_search_ms_{size}"] = alone["first"]
            results[f"graph_s_{size}"] = graph_s
            results["vectorize_p95"] = measured["vectorize_p95"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        azurite.__exit__(None, None, None)
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nquery latency, ms p50 / p95 over {args.queries} queries ({os.cpu_count()} CPUs)")
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[h]).rjust(w) for h, w in zip(headers, widths, strict=True)))
    model_p95 = p95_ms(model_latency(queries))
    ratio = results.pop("vectorize_p95") / model_p95
    recall = min(v for k, v in results.items() if k.startswith("recall10_"))
    fields = " ".join(f"{k}={v:.2f}" for k, v in results.items())
    print(
        f"RESULT {fields} model_p95_ms={model_p95:.1f} p95_vectorize_ratio={ratio:.2f} "
        f"recall10={recall:.2f}"
    )


if __name__ == "__main__":
    main()
