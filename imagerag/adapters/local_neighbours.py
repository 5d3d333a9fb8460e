"""Approximate nearest neighbours for a vector field of the local index: an HNSW graph
(hnswlib) that proposes candidates, which VectorCache then scores exactly from its rows.

- Keys (hnswlib labels) are a 64-bit hash of the document id, so they survive compaction
  renumbering rows and a restart. The graph is saved beside the table; once loaded, each
  stored vector is compared with the row now in the table before the graph may propose it.
- Opt-in (LOCAL_INDEX_GRAPH_FROM_ROWS): at 100,000 rows a search takes 4.4 ms at p95 against
  31 ms for the exact scan (11 ms for the 4-bit first pass used by default), but on
  bench/ann.py's corpus (random unit rows, on which the 2nd to 10th neighbours are near-ties)
  it finds a third of the exact top 10. Clustered real features should fare better; that is
  not measured yet.
- Why hnswlib (bench/ann.py): usearch was about as fast and stores int8, but its extension
  carries its own C++ runtime, and imported before torch it made the local model's first
  traced pass hang; faiss-cpu brings a second OpenMP runtime. hnswlib stores float32, so the
  graph costs about as much memory as the rows it indexes.
- Removed documents are marked deleted; a document that comes back reuses its element.
- The graph is never the only source of truth: rows it does not hold yet (or holds with an
  old vector) are scanned exactly by the caller.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import hnswlib
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

CONNECTIVITY = 16  # hnswlib's M
EXPANSION_ADD = 128  # ef_construction
EXPANSION_SEARCH = 128  # ef: at least the candidates asked for
# A stored vector with this cosine or more with the row now in the table is that row.
SAME_VECTOR_COSINE = 0.9999
_GET_CHUNK = 1024  # labels per get_items

Keys = npt.NDArray[np.uint64]
FloatMatrix = npt.NDArray[np.float32]


def key_of(document_id: str) -> int:
    digest = hashlib.blake2b(document_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class NeighbourGraph:
    """One hnswlib index (thread-safe: one lock around every call), saved to ``path``."""

    def __init__(self, dims: int, path: Path | None) -> None:
        self.dims = dims
        self.path = path
        self._lock = threading.Lock()
        self._index = self._load() or self._new()
        self._labels = set(self._index.get_ids_list())  # deleted ones included
        self._index.set_ef(EXPANSION_SEARCH)
        self._index.set_num_threads(1)

    def _new(self) -> hnswlib.Index:
        index = hnswlib.Index(space="ip", dim=self.dims)  # rows are unit vectors: ip = cosine
        index.init_index(max_elements=1024, ef_construction=EXPANSION_ADD, M=CONNECTIVITY)
        return index

    def _load(self) -> hnswlib.Index | None:
        if self.path is None or not self.path.is_file():
            return None
        index = hnswlib.Index(space="ip", dim=self.dims)
        try:
            index.load_index(str(self.path))
        except (OSError, RuntimeError, ValueError) as exc:  # unreadable: rebuilt from the rows
            logger.warning("ignoring neighbour graph %s: %s", self.path, exc)
            return None
        return index

    def keys(self) -> Keys:
        """Every label in the graph, deleted ones included."""
        with self._lock:
            return np.fromiter(self._labels, dtype=np.uint64, count=len(self._labels))

    def holding(self, keys: Keys, vectors: FloatMatrix) -> npt.NDArray[np.bool_]:
        """Which of ``keys`` the graph holds, undeleted, with the unit ``vectors`` given."""
        with self._lock:
            same = np.zeros(keys.size, dtype=np.bool_)
            known = np.flatnonzero([key in self._labels for key in keys.tolist()])
            for start in range(0, known.size, _GET_CHUNK):
                chunk = known[start : start + _GET_CHUNK]
                stored = self._stored(keys[chunk])
                found = ~np.isnan(stored[:, 0])
                cosine = np.einsum("ij,ij->i", stored[found], vectors[chunk[found]])
                same[chunk[found]] = cosine >= SAME_VECTOR_COSINE
            return same

    def _stored(self, keys: Keys) -> FloatMatrix:
        """The stored vectors of ``keys``; rows of NaN for deleted ones."""
        try:
            return np.asarray(self._index.get_items(keys), dtype=np.float32)
        except RuntimeError:  # a deleted label in the chunk: one at a time
            stored = np.full((keys.size, self.dims), np.nan, dtype=np.float32)
            for i, key in enumerate(keys.tolist()):
                try:
                    stored[i] = self._index.get_items([key])[0]
                except RuntimeError:
                    pass
            return stored

    def search(self, query: FloatMatrix, count: int) -> Keys | None:
        """Labels of about the ``count`` nearest; None when the graph cannot answer (fewer
        live elements than ``count``)."""
        with self._lock:
            try:
                labels, _ = self._index.knn_query(query, k=count, num_threads=1)
            except RuntimeError:
                return None
            return np.asarray(labels[0], dtype=np.uint64)

    def put(self, keys: Keys, vectors: FloatMatrix) -> None:
        """Adds, or replaces, the vectors of ``keys`` (a deleted key comes back)."""
        if keys.size == 0:
            return
        with self._lock:
            needed = self._index.element_count + keys.size
            if needed > self._index.max_elements:
                self._index.resize_index(max(needed, self._index.max_elements * 2))
            self._index.add_items(vectors, keys, num_threads=1)
            self._labels.update(keys.tolist())

    def remove(self, keys: Keys) -> None:
        with self._lock:
            for key in keys.tolist():
                try:
                    self._index.mark_deleted(key)
                except RuntimeError:  # not in the graph, or already deleted
                    pass

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        with self._lock:
            self._index.save_index(str(partial))
        os.replace(partial, self.path)  # readers see the old graph or the new one, whole
