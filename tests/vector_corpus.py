"""A corpus for the local index's vector search tests: real pictures vectorized by the local
model, planted among random non-negative unit vectors (pooled CNN features are
non-negative), with exact search over the same vectors to compare against."""

from __future__ import annotations

import numpy as np
from sample_images import altered_copy, picture_bytes

from imagerag.adapters.local_vectorizer import LocalVectorizer
from imagerag.ports import ImageIndex, IndexDocument, ModelInfo

PICTURES = 20
RANDOM_ROWS = 600


def picture_vectors() -> tuple[ModelInfo, list[list[float]], list[list[float]]]:
    """The model, the pictures' vectors, and the vectors of altered copies (the queries)."""
    vectorizer = LocalVectorizer()
    originals = [picture_bytes(seed) for seed in range(PICTURES)]
    indexed = [vectorizer.vectorize_image(data) for data in originals]
    queries = [vectorizer.vectorize_image(altered_copy(data)) for data in originals]
    return vectorizer.model, indexed, queries


def document(i: int, vector: list[float], model: ModelInfo) -> IndexDocument:
    return IndexDocument(
        id=f"doc-{i:04d}",
        description=f"picture number {i}",
        image_vector=vector,
        filepath=f"set/{i:04d}.jpg",
        url=f"https://account.blob.core.windows.net/images/set/{i:04d}.jpg",
        title=f"{i:04d}.jpg",
        source=f"images/metadata-{'odd' if i % 2 else 'even'}.json",
        model_name=model.name,
        model_version=model.version,
        content_hash=f"{i:064x}",
    )


def corpus(model: ModelInfo, pictures: list[list[float]]) -> dict[str, list[float]]:
    rng = np.random.default_rng(7)
    vectors = np.abs(rng.standard_normal((RANDOM_ROWS, model.dimensions)))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [row.tolist() for row in vectors]
    for n, picture in enumerate(pictures):
        rows.insert(n * 31, picture)
    return {f"doc-{i:04d}": vector for i, vector in enumerate(rows)}


def load(index: ImageIndex, vectors: dict[str, list[float]], model: ModelInfo) -> None:
    index.ensure(model)
    index.upsert([document(int(i[4:]), v, model) for i, v in vectors.items()])


def exact_top(vectors: dict[str, list[float]], query: list[float], k: int) -> list[str]:
    ids = list(vectors)
    matrix = np.array([vectors[i] for i in ids], dtype=np.float64)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    scores = matrix @ np.asarray(query, dtype=np.float64)
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def cosine(vectors: dict[str, list[float]], doc_id: str, query: list[float]) -> float:
    row = np.asarray(vectors[doc_id], dtype=np.float64)
    return float(row @ np.asarray(query, dtype=np.float64) / np.linalg.norm(row))
