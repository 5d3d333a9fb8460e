"""The in-memory side of the local index: normalised float32 rows of one vector field, the
table's string columns and (for the image vectors) the verification thumbnails, kept in step
with the LanceDB table by ``_rowid``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from imagerag.adapters.index_rules import search_hit
from imagerag.adapters.local_table import KEY_FIELD, chunks
from imagerag.ports import FieldMapping, SearchHit

_TAKE_CHUNK = 4096  # row ids per take when refreshing the matrix
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
    ) -> None:
        self.field = field_name
        self.dims = dims
        self.strings = strings
        self.thumbnail_field = thumbnail_field  # a binary column whose values hits carry
        self.version = -1
        self._reset()

    def _reset(self) -> None:
        dims, strings = self.dims, self.strings
        self.size = 0  # slots in use (high-water mark)
        self.matrix: FloatMatrix = np.zeros((0, dims), dtype=np.float32)
        self.valid: BoolArray = np.zeros(0, dtype=np.bool_)
        self.values: dict[str, StringArray] = {f: np.zeros(0, dtype=_STRING) for f in strings}
        self.nulls: dict[str, BoolArray] = {f: np.zeros(0, dtype=np.bool_) for f in strings}
        self.thumbnails: list[bytes | None] = []  # by slot; all None without thumbnail_field
        self.slot_of: dict[int, int] = {}
        self.free: list[int] = []

    def columns(self, size: int) -> dict[str, tuple[StringArray, BoolArray]]:
        return {f: (self.values[f][:size], self.nulls[f][:size]) for f in self.strings}

    def refresh(self, table: Any) -> None:
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
            return
        for rowid in removed.tolist():
            slot = self.slot_of.pop(rowid)
            self.valid[slot] = False
            self.free.append(slot)
        for chunk in chunks(added.tolist(), _TAKE_CHUNK):
            taken = table.take_row_ids(chunk).select(columns).with_row_id().to_arrow()
            for batch in taken.to_batches():
                self._insert(batch)

    def _insert(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        vectors = _to_matrix(batch.column(self.field), self.dims)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms > 0, norms, 1.0)
        slots = self._slots(batch.num_rows)
        self.matrix[slots] = vectors
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
        for name in self.strings:
            self.values[name] = _resized(self.values[name], capacity)
            self.nulls[name] = _resized(self.nulls[name], capacity)
        self.thumbnails += [None] * (capacity - len(self.thumbnails))

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


def top_k(scores: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores, best first."""
    k = min(k, scores.size)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return part[np.argsort(-scores[part], kind="stable")]
