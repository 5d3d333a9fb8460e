"""ImageIndex embedded on disk: one LanceDB table per index name.

Design (numbers in bench/index.py):

- The model is recorded in the table's Arrow schema metadata, written by the same commit that
  creates the table, so it is atomic and travels with the data.
- Writes go through a group commit: concurrent callers queue their rows; one of them writes
  everything queued as a single ``merge_insert`` while the others wait, so 16 activities
  upserting one document each make a handful of table versions instead of 16.
- Vector search is exact cosine over an in-memory float32 matrix (rows pre-normalised), which
  is several times faster than LanceDB's flat search. The matrix is refreshed whenever the
  table version changes: a cheap scan of ``_rowid`` finds the rows added and removed since
  the last refresh, and only those are read. Compaction renumbers rows and costs a full reload.
- Text search is LanceDB's inverted (BM25) index. LanceDB also searches rows written after the
  index was built (unindexed fragments are scanned) and honours deletions, so results are right
  immediately after a write; ``optimize()`` folds the new rows into the index.
- The connection has ``read_consistency_interval=0``: every read checks for the latest version,
  so writes by other handles or other processes are seen at once.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from lancedb.index import FTS

from imagerag import odata
from imagerag.adapters.index_rules import check_documents, check_index_model, search_hit
from imagerag.ports import (
    DocumentState,
    FieldMapping,
    ImageIndexError,
    IndexDocument,
    IndexNotFoundError,
    MetadataPatch,
    ModelInfo,
    SearchHit,
)

logger = logging.getLogger(__name__)

MODEL_METADATA_KEY = b"imagerag.model"
KEY_FIELD = "id"
VECTOR_FIELD = "image_vector"
TEXT_FIELD = "description"
STRING_FIELDS = (
    "description",
    "filepath",
    "url",
    "title",
    "source",
    "model_name",
    "model_version",
    "content_hash",
)
DEFAULT_FIELDS = FieldMapping()
# LanceDB table names: letters, digits, underscore, hyphen, period.
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IN_CHUNK = 1000  # ids per SQL IN (...) list
_TAKE_CHUNK = 4096  # row ids per take when refreshing the matrix
_STRING = np.dtypes.StringDType()

FloatMatrix = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
StringArray = npt.NDArray[Any]  # StringDType has no static type yet


class LocalImageIndex:
    """imagerag.ports.ImageIndex on LanceDB under ``directory`` (thread-safe; one per process
    and name is enough, but any number of handles and processes may share the directory)."""

    def __init__(
        self,
        *,
        directory: Path,
        name: str,
        keep_versions_for: timedelta = timedelta(minutes=1),
    ) -> None:
        if not _TABLE_NAME.match(name):
            raise ValueError(
                f"index name {name!r} must be letters, digits, '_', '-' or '.' (max 128)"
            )
        self._name = name
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        # Versions younger than this survive optimize(), so a reader in another process that
        # is still on an older version does not lose its files mid-query.
        self._keep_versions_for = keep_versions_for
        self._db = lancedb.connect(self._directory, read_consistency_interval=timedelta(0))
        self._table: Any = None  # lancedb Table, opened lazily
        self._open_lock = threading.Lock()
        self._ensured: ModelInfo | None = None
        self._fts_columns: set[str] = set()
        self._search_lock = threading.Lock()
        self._caches: dict[str, _VectorCache] = {}
        self._writer = _GroupCommit(self._apply)

    @property
    def name(self) -> str:
        return self._name

    # ------------------------------------------------------------------ schema and model

    def ensure(self, model: ModelInfo) -> None:
        if self._ensured == model:
            return
        with self._open_lock:
            table = self._open_locked()
            if table is None:
                table = self._create_locked(model)
            self._check_model(table, model)
            self._ensure_fts(table, [TEXT_FIELD])
            self._ensured = model

    def model(self) -> ModelInfo | None:
        table = self._open()
        return None if table is None else _recorded_model(table.schema)

    def _open(self) -> Any:
        if self._table is not None:
            return self._table
        with self._open_lock:
            return self._open_locked()

    def _open_locked(self) -> Any:
        if self._table is None:
            try:
                self._table = self._db.open_table(self._name)
            except ValueError:  # LanceDB: "Table '...' was not found"
                return None
        return self._table

    def _require(self) -> Any:
        table = self._open()
        if table is None:
            raise IndexNotFoundError(self._name)
        return table

    def _create_locked(self, model: ModelInfo) -> Any:
        try:
            self._table = self._db.create_table(self._name, schema=_schema(model))
            logger.info("created local index %s for %s %s", self._name, model.name, model.version)
        except Exception as exc:  # another handle or process created it first
            try:
                self._table = self._db.open_table(self._name)
            except ValueError:
                raise exc from None
        return self._table

    def _check_model(self, table: Any, model: ModelInfo) -> None:
        check_index_model(
            index=f"local index {self._name!r}",
            recorded=_recorded_model(table.schema),
            dims=_vector_dims(table.schema, VECTOR_FIELD),
            model=model,
            delete_hint=f"{self._directory / self._name}.lance",
        )

    def _ensure_fts(self, table: Any, columns: Iterable[str]) -> None:
        missing = [c for c in columns if c not in self._fts_columns]
        if not missing:
            return
        indexed = {
            config.columns[0] for config in table.list_indices() if config.index_type == "FTS"
        }
        for column in missing:
            if column not in indexed:
                try:
                    table.create_index(column, config=FTS(), replace=False)
                except RuntimeError:  # created meanwhile by another handle or process
                    if not any(
                        c.index_type == "FTS" and c.columns == [column]
                        for c in table.list_indices()
                    ):
                        raise
            self._fts_columns.add(column)

    # ------------------------------------------------------------------ reads

    def get_states(self, ids: list[str]) -> dict[str, DocumentState]:
        table = self._require()
        states: dict[str, DocumentState] = {}
        columns = [KEY_FIELD, "content_hash", "description", "source", "model_name"]
        columns.append("model_version")
        for chunk in _chunks(list(dict.fromkeys(ids)), _IN_CHUNK):
            rows = (
                table.search()
                .where(f"{KEY_FIELD} IN ({_sql_list(chunk)})")
                .select(columns)
                .limit(None)
                .to_arrow()
                .to_pylist()
            )
            for row in rows:
                states[row[KEY_FIELD]] = DocumentState(
                    id=row[KEY_FIELD],
                    content_hash=row["content_hash"] or "",
                    description=row["description"] or "",
                    source=row["source"] or "",
                    model_name=row["model_name"] or "",
                    model_version=row["model_version"] or "",
                )
        return states

    def ids_from_source(self, source: str) -> set[str]:
        table = self._require()
        result = (
            table.search()
            .where(f"source = {_sql_string(source)}")
            .select([KEY_FIELD])
            .limit(None)
            .to_arrow()
        )
        return set(result.column(KEY_FIELD).to_pylist())

    # ------------------------------------------------------------------ writes

    def upsert(self, documents: list[IndexDocument]) -> None:
        if not documents:
            return
        table = self._require()
        self._check_documents(table, documents)
        rows = _document_rows(documents, table.schema)
        self._writer.submit(_Op("upsert", rows=rows))

    def merge_metadata(self, patches: list[MetadataPatch]) -> None:
        """Patches for ids that do not exist are ignored (nothing is inserted)."""
        if not patches:
            return
        self._require()
        rows = pa.table(
            {
                KEY_FIELD: [p.id for p in patches],
                "description": [p.description for p in patches],
                "source": [p.source for p in patches],
            }
        )
        self._writer.submit(_Op("merge", rows=rows))

    def delete(self, ids: list[str]) -> None:
        if not ids:
            return
        self._require()
        self._writer.submit(_Op("delete", ids=list(ids)))

    def optimize(self) -> None:
        self._require()
        self._writer.submit(_Op("optimize"))

    def _check_documents(self, table: Any, documents: list[IndexDocument]) -> None:
        # Checked per caller before queueing, so one bad document fails only its own caller.
        schema = table.schema
        check_documents(
            documents,
            index=self._name,
            dims=_vector_dims(schema, VECTOR_FIELD),
            recorded=_recorded_model(schema),
        )

    def _apply(self, kind: str, ops: list[_Op]) -> None:
        """Runs in the group-commit leader: one LanceDB write for ``ops`` of one kind."""
        table = self._require()
        if kind == "upsert":
            rows = _last_per_id(pa.concat_tables([op.rows for op in ops if op.rows is not None]))
            (
                table.merge_insert(KEY_FIELD)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )
        elif kind == "merge":
            rows = _last_per_id(pa.concat_tables([op.rows for op in ops if op.rows is not None]))
            table.merge_insert(KEY_FIELD).when_matched_update_all().execute(rows)
        elif kind == "delete":
            ids = list(dict.fromkeys(i for op in ops for i in op.ids))
            for chunk in _chunks(ids, _IN_CHUNK):
                table.delete(f"{KEY_FIELD} IN ({_sql_list(chunk)})")
        else:
            before = len(table.list_versions())
            table.optimize(cleanup_older_than=self._keep_versions_for)
            logger.info(
                "optimized local index %s: %d versions before, %d after",
                self._name,
                before,
                len(table.list_versions()),
            )

    # ------------------------------------------------------------------ search

    def vector_search(
        self,
        vector: list[float],
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
    ) -> list[SearchHit]:
        """Exact cosine similarity (``score`` in [-1, 1]) over every matching document."""
        if not fields.image_vector_fields:
            raise ImageIndexError("fields.image_vector_fields is empty: no vector field to search")
        table = self._require()
        field_name = fields.image_vector_fields[0]
        with self._search_lock:
            cache = self._cache(table, field_name)
            condition = odata.parse(filter, cache.strings) if filter else None
            if top <= 0:
                return []
            query = np.asarray(vector, dtype=np.float32)
            if query.shape != (cache.dims,):
                raise ImageIndexError(
                    f"query vector has {query.size} dimensions; {field_name!r} has {cache.dims}"
                )
            norm = float(np.linalg.norm(query))
            size = cache.size
            scores = cache.matrix[:size] @ (query / norm if norm > 0 else query)
            mask = cache.valid[:size]
            if condition is not None:
                mask = mask & odata.evaluate(condition, cache.columns(size))
            candidates = np.flatnonzero(mask)
            slots = candidates[_top_k(scores[candidates], top)]
            return [cache.hit(int(slot), float(scores[slot]), fields) for slot in slots]

    def text_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
    ) -> list[SearchHit]:
        """BM25 over the content fields (LanceDB's inverted index); ``score`` is BM25."""
        table = self._require()
        strings = _string_fields(table.schema)
        condition = odata.parse(filter, strings) if filter else None
        if top <= 0 or not text.strip():
            return []
        content = list(fields.content_fields)
        _check_mapped_fields(table.schema, fields, strings)
        self._ensure_fts(table, content)
        wanted = [KEY_FIELD, *content]
        wanted += [f for f in (fields.title_field, fields.url_field, fields.filepath_field) if f]
        query = table.search(text, query_type="fts", fts_columns=content)
        if condition is not None:
            query = query.where(odata.to_sql(condition), prefilter=True)
        rows = query.select([*dict.fromkeys(wanted), "_score"]).limit(top).to_arrow().to_pylist()
        return [_hit_from_row(row, float(row["_score"]), fields) for row in rows]

    def _cache(self, table: Any, field_name: str) -> _VectorCache:
        version = table.version  # read before scanning: a later commit triggers a new refresh
        cache = self._caches.get(field_name)
        if cache is not None and cache.version == version:
            return cache
        schema = table.schema
        dims = _vector_dims(schema, field_name)
        if dims is None:
            raise ImageIndexError(
                f"index {self._name!r} has no fixed-size vector field {field_name!r}"
            )
        if KEY_FIELD not in schema.names:
            raise ImageIndexError(f"index {self._name!r} has no {KEY_FIELD!r} field")
        if cache is None or cache.strings != _string_fields(schema) or cache.dims != dims:
            cache = _VectorCache(field_name, dims, _string_fields(schema))
        cache.refresh(table)
        cache.version = version
        self._caches[field_name] = cache
        return cache


# ---------------------------------------------------------------------- in-memory vectors


class _VectorCache:
    """Normalised float32 rows of one vector field plus the table's string columns, in slots
    addressed by LanceDB ``_rowid`` (removed rows leave free slots that are reused)."""

    def __init__(self, field_name: str, dims: int, strings: tuple[str, ...]) -> None:
        self.field = field_name
        self.dims = dims
        self.strings = strings
        self.version = -1
        self._reset()

    def _reset(self) -> None:
        dims, strings = self.dims, self.strings
        self.size = 0  # slots in use (high-water mark)
        self.matrix: FloatMatrix = np.zeros((0, dims), dtype=np.float32)
        self.valid: BoolArray = np.zeros(0, dtype=np.bool_)
        self.values: dict[str, StringArray] = {f: np.zeros(0, dtype=_STRING) for f in strings}
        self.nulls: dict[str, BoolArray] = {f: np.zeros(0, dtype=np.bool_) for f in strings}
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
        for chunk in _chunks(added.tolist(), _TAKE_CHUNK):
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

    def hit(self, slot: int, score: float, fields: FieldMapping) -> SearchHit:
        def value(name: str | None) -> str | None:
            if name is None or name not in self.values or self.nulls[name][slot]:
                return None
            return str(self.values[name][slot])

        return search_hit(id=value(KEY_FIELD) or "", score=score, fields=fields, value=value)


def _resized(array: npt.NDArray[Any], capacity: int) -> npt.NDArray[Any]:
    grown = np.zeros(capacity, dtype=array.dtype)
    grown[: array.size] = array
    return grown


def _to_matrix(column: pa.Array, dims: int) -> FloatMatrix:
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, dtype=np.float32).reshape(-1, dims)


def _top_k(scores: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores, best first."""
    k = min(k, scores.size)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return part[np.argsort(-scores[part], kind="stable")]


# ---------------------------------------------------------------------- group commit


@dataclass(eq=False)
class _Op:
    kind: str  # upsert | merge | delete | optimize
    rows: pa.Table | None = None
    ids: list[str] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None


class _GroupCommit:
    """Serialises writes and coalesces the ones that queue up while a write runs.

    The first caller to find no write running becomes the leader: it takes everything queued
    (its own op included), applies consecutive ops of one kind as one write, and wakes the
    others. Every caller returns once its own op is committed, or raises its group's error.
    """

    def __init__(self, apply: Callable[[str, list[_Op]], None]) -> None:
        self._apply = apply
        self._cond = threading.Condition()
        self._queue: list[_Op] = []
        self._writing = False

    def submit(self, op: _Op) -> None:
        with self._cond:
            self._queue.append(op)
            while self._writing and not op.done:
                self._cond.wait()
            if not op.done:
                self._writing = True
                batch, self._queue = self._queue, []
        if not op.done:
            try:
                self._run(batch)
            finally:
                with self._cond:
                    for queued in batch:
                        queued.done = True
                    self._writing = False
                    self._cond.notify_all()
        if op.error is not None:
            if isinstance(op.error, ImageIndexError):
                raise op.error
            raise ImageIndexError(f"{op.kind} failed: {op.error}") from op.error

    def _run(self, batch: list[_Op]) -> None:
        for kind, group in _runs(batch):
            try:
                self._apply(kind, group)
            except Exception as exc:  # handed to every caller of this group
                logger.warning("%s of %d queued writes failed: %s", kind, len(group), exc)
                for op in group:
                    op.error = exc


def _runs(batch: list[_Op]) -> Iterator[tuple[str, list[_Op]]]:
    """Consecutive ops of the same kind (order between kinds is kept)."""
    group: list[_Op] = []
    for op in batch:
        if group and (op.kind != group[0].kind or op.kind == "optimize"):
            yield group[0].kind, group
            group = []
        group.append(op)
    if group:
        yield group[0].kind, group


# ---------------------------------------------------------------------- helpers


def _schema(model: ModelInfo) -> pa.Schema:
    recorded = {
        "name": model.name,
        "version": model.version,
        "dimensions": model.dimensions,
        "supports_text": model.supports_text,
    }
    fields = [pa.field(KEY_FIELD, pa.string(), nullable=False)]
    fields.append(pa.field(VECTOR_FIELD, pa.list_(pa.float32(), model.dimensions)))
    fields += [pa.field(name, pa.string()) for name in STRING_FIELDS]
    return pa.schema(fields, metadata={MODEL_METADATA_KEY: json.dumps(recorded).encode()})


def _recorded_model(schema: pa.Schema) -> ModelInfo | None:
    raw = (schema.metadata or {}).get(MODEL_METADATA_KEY)
    if raw is None:
        return None
    data = json.loads(raw)
    return ModelInfo(
        name=str(data["name"]),
        version=str(data["version"]),
        dimensions=int(data["dimensions"]),
        supports_text=bool(data.get("supports_text", False)),
    )


def _vector_dims(schema: pa.Schema, name: str) -> int | None:
    if name not in schema.names:
        return None
    kind = schema.field(name).type
    return int(kind.list_size) if pa.types.is_fixed_size_list(kind) else None


def _string_fields(schema: pa.Schema) -> tuple[str, ...]:
    return tuple(
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    )


def _check_mapped_fields(schema: pa.Schema, fields: FieldMapping, strings: tuple[str, ...]) -> None:
    mapped = [*fields.content_fields, fields.title_field, fields.url_field, fields.filepath_field]
    for name in mapped:
        if name is not None and name not in strings:
            raise ImageIndexError(f"mapped field {name!r} is not a text field of the index")


def _hit_from_row(row: dict[str, Any], score: float, fields: FieldMapping) -> SearchHit:
    def value(name: str | None) -> str | None:
        return None if name is None else row.get(name)

    return search_hit(id=row[KEY_FIELD], score=score, fields=fields, value=value)


def _document_rows(documents: list[IndexDocument], schema: pa.Schema) -> pa.Table:
    dims = len(documents[0].image_vector)
    flat = np.asarray([d.image_vector for d in documents], dtype=np.float32).reshape(-1)
    columns: dict[str, Any] = {
        KEY_FIELD: [d.id for d in documents],
        VECTOR_FIELD: pa.FixedSizeListArray.from_arrays(pa.array(flat), dims),
    }
    for name in STRING_FIELDS:
        columns[name] = [getattr(d, name) for d in documents]
    return pa.table(columns, schema=schema)


def _last_per_id(rows: pa.Table) -> pa.Table:
    """merge_insert refuses two source rows for one key: keep the last write of each id."""
    last = {key: i for i, key in enumerate(rows.column(KEY_FIELD).to_pylist())}
    if len(last) == rows.num_rows:
        return rows
    return rows.take(sorted(last.values()))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: list[str]) -> str:
    return ", ".join(_sql_string(v) for v in values)
