"""The in-memory side of the local index: normalised float32 rows of one vector field, the
table's string columns and (for the image vectors) the verification thumbnails, kept in step
with the LanceDB table by ``_rowid``.

From ``quantised_from`` rows on, a first pass over 4-bit copies of the rows
(local_quantised.py) chooses the candidates, which are scored exactly here: an eighth of the
bytes of the float32 scan. The copies are made at the first search that needs them and
then written with the float32 rows, so every write is searchable at once.

From ``approximate_from`` rows on (None: never), a neighbour graph (local_neighbours.py)
proposes candidates for unfiltered searches instead, also scored exactly here. A background
thread adds each new or changed row to the graph and saves it when writes pause; until it
has, the row is scanned exactly, so a search always sees every write the cache has read."""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from imagerag.adapters import local_quantised
from imagerag.adapters.index_rules import search_hit
from imagerag.adapters.local_neighbours import NeighbourGraph, key_of
from imagerag.adapters.local_table import KEY_FIELD, chunks
from imagerag.ports import FieldMapping, SearchHit

logger = logging.getLogger(__name__)

_TAKE_CHUNK = 4096  # row ids per take when refreshing the matrix
# Candidates the graph proposes for exact scoring (recall in bench/ann.py).
GRAPH_CANDIDATES = 100
# Below this many rows the float32 scan is cheap (~5 ms at 20,000 1280-d rows): no first pass.
QUANTISED_FROM_ROWS = 20_000
# Candidates the 4-bit first pass keeps for exact scoring, at least (recall in bench/ann.py).
QUANTISED_CANDIDATES = 200
# Rows added to the graph per step: the search waits at most one step for the graph.
_GRAPH_STEP = 16
# The graph is saved once writes have paused this long.
_SAVE_AFTER_IDLE_S = 2.0
_STRING = np.dtypes.StringDType()

FloatMatrix = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
StringArray = npt.NDArray[Any]  # StringDType has no static type yet


class VectorCache:
    """Normalised float32 rows of one vector field plus the table's string columns, in slots
    addressed by LanceDB ``_rowid`` (removed rows leave free slots that are reused)."""

    def __init__(
        self,
        field_name: str,
        dims: int,
        strings: tuple[str, ...],
        thumbnail_field: str | None = None,
        *,
        graph_path: Path | None = None,
        approximate_from: int | None = None,
        quantised_from: int = QUANTISED_FROM_ROWS,
    ) -> None:
        self.field = field_name
        self.dims = dims
        self.strings = strings
        self.thumbnail_field = thumbnail_field  # a binary column whose values hits carry
        self.version = -1
        # Guards the arrays below against the graph's thread; callers serialise the rest.
        self.lock = threading.Lock()
        self.graph: NeighbourGraph | None = None
        self.graph_path = graph_path
        self.approximate_from = approximate_from
        self.quantised_from = quantised_from
        self._stamps = itertools.count(1)  # never reused, so a stamp names one insert
        self._gone: list[int] = []  # keys of removed rows, still in the graph
        self._wake = threading.Event()
        self._settled = threading.Event()
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        dims, strings = self.dims, self.strings
        self.size = 0  # slots in use (high-water mark)
        self.matrix: FloatMatrix = np.zeros((0, dims), dtype=np.float32)
        self.quantised: local_quantised.QuantisedRows | None = None  # made by _first_pass
        self.valid: BoolArray = np.zeros(0, dtype=np.bool_)
        self.values: dict[str, StringArray] = {f: np.zeros(0, dtype=_STRING) for f in strings}
        self.nulls: dict[str, BoolArray] = {f: np.zeros(0, dtype=np.bool_) for f in strings}
        self.thumbnails: list[bytes | None] = []  # by slot; all None without thumbnail_field
        self.slot_of: dict[int, int] = {}
        self.free: list[int] = []
        self.keys = np.zeros(0, dtype=np.uint64)  # local_neighbours.key_of(id), by slot
        self.stamps = np.zeros(0, dtype=np.uint64)  # which insert filled the slot
        self.in_graph: BoolArray = np.zeros(0, dtype=np.bool_)  # graph holds this row as is
        self.slot_of_key: dict[int, int] = {}

    def columns(self, size: int) -> dict[str, tuple[StringArray, BoolArray]]:
        return {f: (self.values[f][:size], self.nulls[f][:size]) for f in self.strings}

    def refresh(self, table: Any) -> None:
        with self.lock:
            reloaded = self._refresh(table)
            rows = int(self.valid.sum())
            if self.graph is None and rows >= (self.approximate_from or rows + 1):
                self.graph = NeighbourGraph(self.dims, self.graph_path)
                upkeep = threading.Thread(target=self._keep_graph, name="graph", daemon=True)
                upkeep.start()
                reloaded = True
            if self.graph is not None:
                if reloaded:
                    self._forget_stale_keys(self.graph)
                if self._gone or self._pending().size:
                    self._settled.clear()
                    self._wake.set()

    def _refresh(self, table: Any) -> bool:
        """Reads what changed since the last refresh; True when everything was read again."""
        listing = table.search().select([KEY_FIELD]).with_row_id(True).limit(None).to_arrow()
        current = listing.column("_rowid").to_numpy()
        known = np.fromiter(self.slot_of.keys(), dtype=np.uint64, count=len(self.slot_of))
        added = np.setdiff1d(current, known, assume_unique=True)
        removed = np.setdiff1d(known, current, assume_unique=True)
        columns = [KEY_FIELD, self.field, *self.strings]
        if self.thumbnail_field is not None:
            columns.append(self.thumbnail_field)
        columns = list(dict.fromkeys(columns))
        if not self.slot_of or added.size > max(_TAKE_CHUNK, current.size // 2):
            # First load, or after compaction renumbered the rows: read everything once.
            self._reset()
            self._grow(current.size)
            scan = table.search().select(columns).with_row_id(True).limit(None).to_arrow()
            for batch in scan.to_batches():
                self._insert(batch)
            return True
        for rowid in removed.tolist():
            slot = self.slot_of.pop(rowid)
            self.valid[slot] = False
            self.free.append(slot)
            key = int(self.keys[slot])
            if self.slot_of_key.get(key) == slot:
                del self.slot_of_key[key]
            if self.in_graph[slot]:
                self._gone.append(key)
                self.in_graph[slot] = False
        for chunk in chunks(added.tolist(), _TAKE_CHUNK):
            taken = table.take_row_ids(chunk).select(columns).with_row_id().to_arrow()
            for batch in taken.to_batches():
                self._insert(batch)
        return False

    def _insert(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        vectors = _to_matrix(batch.column(self.field), self.dims)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)
        slots = self._slots(batch.num_rows)
        self.matrix[slots] = vectors
        if self.quantised is not None:
            self.quantised.set(slots, self.matrix)
        self.valid[slots] = True
        for name in self.strings:
            column = batch.column(name)
            nulls = column.is_null().to_numpy(zero_copy_only=False)
            self.values[name][slots] = np.asarray(column.fill_null("").to_pylist(), dtype=_STRING)
            self.nulls[name][slots] = nulls
        if self.thumbnail_field is not None:
            thumbnails = batch.column(self.thumbnail_field).to_pylist()
            for slot, thumbnail in zip(slots.tolist(), thumbnails, strict=True):
                self.thumbnails[slot] = thumbnail
        for slot, rowid in zip(slots.tolist(), batch.column("_rowid").to_pylist(), strict=True):
            self.slot_of[rowid] = slot
        keys = [key_of(i or "") for i in batch.column(KEY_FIELD).to_pylist()]
        self.keys[slots] = keys
        self.stamps[slots] = next(self._stamps)
        self.in_graph[slots] = False
        for slot, key in zip(slots.tolist(), keys, strict=True):
            self.slot_of_key[key] = slot

    def _slots(self, count: int) -> npt.NDArray[np.intp]:
        reused = [self.free.pop() for _ in range(min(count, len(self.free)))]
        fresh = count - len(reused)
        self._grow(self.size + fresh)
        slots = np.array(reused + list(range(self.size, self.size + fresh)), dtype=np.intp)
        self.size += fresh
        return slots

    def _grow(self, needed: int) -> None:
        capacity = self.matrix.shape[0]
        if needed <= capacity:
            return
        capacity = max(needed, capacity + capacity // 2, 64)
        matrix = np.zeros((capacity, self.dims), dtype=np.float32)
        matrix[: self.size] = self.matrix[: self.size]
        self.matrix = matrix
        self.valid = _resized(self.valid, capacity)
        self.keys = _resized(self.keys, capacity)
        self.stamps = _resized(self.stamps, capacity)
        self.in_graph = _resized(self.in_graph, capacity)
        for name in self.strings:
            self.values[name] = _resized(self.values[name], capacity)
            self.nulls[name] = _resized(self.nulls[name], capacity)
        self.thumbnails += [None] * (capacity - len(self.thumbnails))

    # ------------------------------------------------------------------ search

    def nearest(
        self, query: FloatMatrix, top: int, mask: BoolArray | None = None
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """Slots of the ``top`` rows of highest cosine with the unit ``query`` (among ``mask``),
        best first, and their scores."""
        with self.lock:  # the graph's thread marks rows as it adds them
            size = self.size
            if mask is None and self.graph is not None:
                pending = self._pending()
                found = None
                if pending.size <= size // 4:  # else the graph is still being built
                    found = self.graph.search(query, max(GRAPH_CANDIDATES, 2 * top))
                if found is not None:
                    slots = [self.slot_of_key.get(int(key), -1) for key in found.tolist()]
                    held = np.array([s for s in slots if s >= 0], dtype=np.intp)
                    held = held[self.in_graph[held]]
                    return self._best_of(np.concatenate([held, pending]), query, top)
            valid = self.valid[:size] if mask is None else mask & self.valid[:size]
            candidates = np.flatnonzero(valid)
            wanted = max(QUANTISED_CANDIDATES, 4 * top)
            if size >= self.quantised_from and candidates.size > wanted:
                approximate = self._first_pass(query, size)
                if approximate is not None:
                    chosen = candidates[top_k(approximate[candidates], wanted)]
                    return self._best_of(chosen, query, top)
            scores = self.matrix[:size] @ query
            best = candidates[top_k(scores[candidates], top)]
            return best, scores[best]

    def _first_pass(self, query: FloatMatrix, size: int) -> npt.NDArray[np.float32] | None:
        """Approximate scores of the first ``size`` slots; None where the kernel is missing.
        The 4-bit copies are made here, at the first search that needs them."""
        if self.quantised is None:
            if not local_quantised.available():
                return None
            quantised = local_quantised.QuantisedRows(self.dims)
            quantised.set(np.arange(size), self.matrix)
            self.quantised = quantised
        return self.quantised.scores(query, size)

    def _best_of(
        self, candidates: npt.NDArray[np.intp], query: FloatMatrix, top: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The ``top`` of a few candidate slots by exact score, best first, and their scores."""
        scores = rescored(self.matrix, candidates, query)
        best = top_k(scores, top)
        return candidates[best], scores[best]

    # ------------------------------------------------------------------ the graph's upkeep

    def _pending(self) -> npt.NDArray[np.intp]:
        """Slots of rows the graph does not hold as they are now."""
        size = self.size
        return np.flatnonzero(self.valid[:size] & ~self.in_graph[:size])

    def _forget_stale_keys(self, graph: NeighbourGraph) -> None:
        """After everything was read again (or the graph was loaded): queues the graph's keys
        that no row has any more. Every row is pending until the graph's thread has checked
        (or put) its vector."""
        live = self.keys[: self.size][self.valid[: self.size]]
        stale = np.setdiff1d(graph.keys(), live)
        self._gone = list(dict.fromkeys([*self._gone, *stale.tolist()]))

    def _keep_graph(self) -> None:
        """The graph's thread: adds pending rows a step at a time, saves when writes pause."""
        unsaved = False
        while not self._closed:
            woke = self._wake.wait(timeout=_SAVE_AFTER_IDLE_S)
            self._wake.clear()
            try:
                if woke:
                    while self._graph_step():
                        unsaved = True
                    continue
                if unsaved and self.graph is not None:
                    unsaved = False
                    self.graph.save()
                with self.lock:  # refresh() queues work under this lock: no wake-up is lost
                    if self._gone or self._pending().size:
                        self._wake.set()  # left by a failed step: retried
                    else:
                        self._settled.set()
            except Exception:  # the exact scan still answers meanwhile
                logger.exception("neighbour graph upkeep failed for %s", self.field)

    def _graph_step(self) -> bool:
        graph = self.graph
        if graph is None or self._closed:
            return False
        with self.lock:
            gone = np.array(self._gone, dtype=np.uint64)
            self._gone = []
            pending = self._pending()[:_GRAPH_STEP]
            keys = self.keys[pending]
            vectors = self.matrix[pending]
            stamps = self.stamps[pending]
        if gone.size == 0 and pending.size == 0:
            return False
        graph.remove(gone)
        held = graph.holding(keys, vectors)  # after a restart most rows are held already
        graph.put(keys[~held], vectors[~held])
        with self.lock:  # rows changed meanwhile (a new stamp) stay pending
            pending, stamps = pending[pending < self.size], stamps[pending < self.size]
            same = (self.stamps[pending] == stamps) & self.valid[pending]
            self.in_graph[pending[same]] = True
        return True

    def wait_for_graph(self, timeout: float | None = None) -> bool:
        """Blocks until the graph holds every row and is saved (False after ``timeout``)."""
        return self.graph is None or self._settled.wait(timeout)

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def hit(self, slot: int, score: float, fields: FieldMapping) -> SearchHit:
        def value(name: str | None) -> str | None:
            if name is None or name not in self.values or self.nulls[name][slot]:
                return None
            return str(self.values[name][slot])

        return search_hit(
            id=value(KEY_FIELD) or "",
            score=score,
            fields=fields,
            value=value,
            thumbnail=self.thumbnails[slot],
        )


def _resized(array: npt.NDArray[Any], capacity: int) -> npt.NDArray[Any]:
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[: array.size] = array
    return grown


def _to_matrix(column: pa.Array, dims: int) -> FloatMatrix:
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, dtype=np.float32).reshape(-1, dims)


def rescored(matrix: FloatMatrix, rows: npt.NDArray[np.intp], query: FloatMatrix) -> FloatMatrix:
    """Exact scores of a few candidate rows. Not through BLAS: for a product this small its
    threads save little, and they spin on afterwards against the first pass's torch threads
    on the same cores (on 2 cores a large numpy product between searches made the next ones
    ~2x slower; this one's share was the slow tail of the description search)."""
    scores: FloatMatrix = np.einsum("ij,j->i", matrix[rows], query)
    return scores


def top_k(scores: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores, best first."""
    k = min(k, scores.size)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return part[np.argsort(-scores[part], kind="stable")]
