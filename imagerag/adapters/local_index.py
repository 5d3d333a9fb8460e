"""ImageIndex embedded on disk: one LanceDB table per index name.

Design (numbers in bench/index.py):

- The model is recorded in the table's Arrow schema metadata, written by the same commit that
  creates the table, so it is atomic and travels with the data.
- Writes go through a group commit: concurrent callers queue their rows; one of them writes
  everything queued as a single ``merge_insert`` while the others wait, so 16 activities
  upserting one document each make a handful of table versions instead of 16.
- Vector search scores an in-memory float32 matrix (rows pre-normalised) exactly, which is
  several times faster than LanceDB's flat search. The matrix is refreshed whenever the
  table version changes: a cheap scan of ``_rowid`` finds the rows added and removed since
  the last refresh, and only those are read. Compaction renumbers the rows it moves (those of
  small fragments only), which are read again. From ``quantised_from`` rows on, a scan of
  4-bit copies of the rows picks the candidates that are scored exactly (local_quantised.py).
  With ``approximate_from`` (opt-in: the LOCAL_INDEX_GRAPH_FROM_ROWS setting), an HNSW graph
  saved beside the table (``<name>.ann/``) picks the candidates of unfiltered searches
  instead (local_vectors.py, local_neighbours.py).
- The upserts' join on ``id`` and deletes use a B-tree on it, so that their cost does not
  grow with the table. ``get_states`` (once per image while ingesting) answers from the state
  columns held in memory and carried along by this handle's writes (local_states.py).
- Text search is LanceDB's inverted (BM25) index. LanceDB also searches rows written after the
  index was built (unindexed fragments are scanned) and honours deletions, so results are right
  immediately after a write; ``optimize()`` folds the new rows into the index.
- Each image's verification thumbnail (``image_thumbnail``, ~1-2 KB) is stored with it and
  kept in memory beside the image vectors: image hits carry it for retrieval's re-ranking.
- With a text embedder, each description is also stored as a sentence embedding
  (``description_vector``), computed when a document is written or its description changes,
  and searched like the image vectors. The text model is recorded next to the image model and
  is part of the index's identity.
- Every handle in the process shares one LanceDB session whose metadata cache is capped: it
  keeps manifests and file footers of each version read, each write makes a version, and at
  its default size it grew a process by ~13 KB of RSS per one-document write, for good.
- The connection has ``read_consistency_interval=0``: every read checks for the latest version,
  so writes by other handles or other processes are seen at once.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import FTS, BTree

from imagerag.adapters import odata
from imagerag.adapters.group_commit import GroupCommit, Op
from imagerag.adapters.index_rules import check_documents, check_index_model
from imagerag.adapters.local_states import STATE_COLUMNS, KnownStates, states_of
from imagerag.adapters.local_table import (
    DESCRIPTION_VECTOR_FIELD,
    KEY_FIELD,
    TEXT_MODEL_METADATA_KEY,
    THUMBNAIL_FIELD,
    VECTOR_FIELD,
    check_mapped_fields,
    chunks,
    document_rows,
    hit_from_row,
    last_per_id,
    recorded_model,
    schema,
    sql_list,
    sql_string,
    string_fields,
    vector_column,
    vector_dims,
)
from imagerag.adapters.local_vectors import QUANTISED_FROM_ROWS, VectorCache
from imagerag.ports import (
    DocumentState,
    FieldMapping,
    FieldMappingError,
    ImageIndexError,
    IndexDocument,
    IndexField,
    IndexModelMismatchError,
    IndexNotFoundError,
    MetadataPatch,
    ModelInfo,
    SearchHit,
    SemanticConfigurationError,
    TextEmbedder,
)

logger = logging.getLogger(__name__)

TEXT_FIELD = "description"
DEFAULT_FIELDS = FieldMapping()
# LanceDB table names: letters, digits, underscore, hyphen, period.
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_IN_CHUNK = 1000  # ids per SQL IN (...) list
# Ingestion's upserts come in bursts (one forward pass of the image model releases its images
# together); a write costs ~25 ms of CPU however few rows it has, so the leader waits this long
# for the burst to queue.
WRITE_GATHER_S = 0.02
# Each write adds a fragment and a version, and until compaction every lookup, write and search
# lists all fragments: with 120 one-row fragments a lookup by id costs ~60 ms of CPU and an
# upsert ~90, against 6 and 22 right after compaction, whatever the table's size. So the writer
# compacts every COMPACT_AFTER_WRITES writes, merging only fragments under COMPACT_TARGET_ROWS
# rows (LanceDB's own optimize() aims at 1M rows, so it rewrote a smaller table whole: 4 s at
# 90,000 rows; this takes 0.1 s). Those compactions bring only the key's B-tree up to date: the
# full-text index is rebuilt whole (0.6 s at 90,000 rows), so it folds in the new rows every
# FOLD_TEXT_INDEX_AFTER compactions and at optimize(); text search scans the rest meanwhile.
COMPACT_AFTER_WRITES = 32
COMPACT_TARGET_ROWS = 8192
FOLD_TEXT_INDEX_AFTER = 16


# Room for the current versions' manifests and file footers of every index in the process.
METADATA_CACHE_BYTES = 32 * 2**20


@functools.cache
def lance_session() -> lancedb.Session:
    """The process's LanceDB caches, shared so that the cap holds for the process."""
    return lancedb.Session(metadata_cache_size_bytes=METADATA_CACHE_BYTES)


class LocalImageIndex:
    """imagerag.ports.ImageIndex on LanceDB under ``directory`` (thread-safe; one per process
    and name is enough, but any number of handles and processes may share the directory)."""

    def __init__(
        self,
        *,
        directory: Path,
        name: str,
        keep_versions_for: timedelta = timedelta(minutes=1),
        text_embedder: TextEmbedder | None = None,
        approximate_from: int | None = None,
        quantised_from: int = QUANTISED_FROM_ROWS,
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
        self._db = lancedb.connect(
            self._directory, read_consistency_interval=timedelta(0), session=lance_session()
        )
        self._table: Any = None  # lancedb Table, opened lazily
        self._open_lock = threading.Lock()
        self._ensured: ModelInfo | None = None
        self._fts_columns: set[str] = set()
        self._search_lock = threading.Lock()
        self._caches: dict[str, VectorCache] = {}
        self._approximate_from = approximate_from
        self._quantised_from = quantised_from
        self._writer = GroupCommit(self._apply, gather_s=WRITE_GATHER_S)
        self._known = KnownStates()  # what get_states answers from
        self._dataset: tuple[Any, Any] | None = None  # (table, its lance dataset): versions
        self._schema_at: tuple[Any, int, pa.Schema] | None = None  # (table, version, schema)
        # Touched by the group-commit leader only.
        self._writes_since_compaction = 0
        self._compactions = 0
        self._embedder = text_embedder

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
            self._ensure_key_index(table)
            self._ensure_fts(table, [TEXT_FIELD])
            self._latest_version(table)  # opens the dataset handle (and imports lance) now
            self._ensured = model

    def model(self) -> ModelInfo | None:
        table = self._open()
        return None if table is None else recorded_model(table.schema)

    def fields(self) -> dict[str, IndexField] | None:
        table = self._open()
        if table is None:
            return None
        found: dict[str, IndexField] = {}
        for name in table.schema.names:
            dims = vector_dims(table.schema, name)
            if dims is not None:
                found[name] = IndexField("vector", dims)
            elif pa.types.is_string(table.schema.field(name).type):
                # The BM25 index covers the description; other strings are only filterable.
                found[name] = IndexField("text", searchable=name == TEXT_FIELD)
            else:
                found[name] = IndexField("other")
        return found

    def drop(self) -> None:
        with self._open_lock:
            try:
                self._db.drop_table(self._name)
            except (ValueError, FileNotFoundError):  # no such table
                pass
            self._table = None
            with self._known.lock:
                self._known.forget()
            with self._search_lock:
                for cache in self._caches.values():
                    cache.close()
                self._caches.clear()
            shutil.rmtree(self._graph_directory, ignore_errors=True)

    def warm(self) -> None:
        """Loads what a first search would (each vector field's rows, the 4-bit first pass, the
        full-text index, the text model), so that the first query after a start does not
        wait for it."""
        table = self._open()
        if table is None:
            return
        for field_name in (VECTOR_FIELD, DESCRIPTION_VECTOR_FIELD):
            dims = vector_dims(table.schema, field_name)
            if dims is not None:
                mapping = replace(DEFAULT_FIELDS, image_vector_fields=(field_name,))
                self.vector_search([1.0] * dims, top=1, fields=mapping)
        if TEXT_FIELD in table.schema.names:
            self.text_search("warm", top=1)
        if self._embedder is not None:
            self._embedder.embed(["warm"], interactive=True)  # loads the text model

    @property
    def _graph_directory(self) -> Path:
        return self._directory / f"{self._name}.ann"

    def wait_for_graphs(self, timeout: float | None = None) -> bool:
        """Blocks until every neighbour graph holds the rows last read and is saved."""
        with self._search_lock:
            caches = list(self._caches.values())
        return all(cache.wait_for_graph(timeout) for cache in caches)

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

    def _latest_version(self, table: Any) -> int:
        """The table's latest version (other handles' and processes' commits included), asked
        of a lance dataset handle: ~5 us, where each property of the LanceDB table is a round
        trip through LanceDB's event-loop thread (~0.2 ms alone, and GIL handoffs under load),
        and ingestion asks for the version and the schema once each per image."""
        held = self._dataset
        if held is None or held[0] is not table:
            held = (table, table.to_lance())
            self._dataset = held
        return int(held[1].latest_version)

    def _schema(self, table: Any) -> pa.Schema:
        """The table's schema, read again only when a version this handle did not write
        itself came in between (see _followed)."""
        version = self._latest_version(table)  # first: a change made after it shows next time
        held = self._schema_at
        if held is None or held[0] is not table or held[1] != version:
            held = (table, version, table.schema)
            self._schema_at = held
        return held[2]

    def _followed(self, table: Any, version: int) -> None:
        """This handle's write committed ``version``: if the schema read was of the version
        before, it holds for this one too (rows written never change the schema)."""
        held = self._schema_at
        if held is not None and held[0] is table and held[1] == version - 1:
            self._schema_at = (table, version, held[2])

    def _create_locked(self, model: ModelInfo) -> Any:
        try:
            self._table = self._db.create_table(self._name, schema=schema(model, self._text_model))
            logger.info("created local index %s for %s %s", self._name, model.name, model.version)
        except Exception as exc:  # another handle or process created it first
            try:
                self._table = self._db.open_table(self._name)
            except ValueError:
                raise exc from None
        return self._table

    @property
    def _text_model(self) -> ModelInfo | None:
        return None if self._embedder is None else self._embedder.model

    def _check_model(self, table: Any, model: ModelInfo) -> None:
        delete_hint = f"{self._directory / self._name}.lance"
        check_index_model(
            index=f"local index {self._name!r}",
            recorded=recorded_model(table.schema),
            dims=vector_dims(table.schema, VECTOR_FIELD),
            model=model,
            delete_hint=delete_hint,
        )
        recorded_text = recorded_model(table.schema, TEXT_MODEL_METADATA_KEY)
        if recorded_text != self._text_model:
            held = "no" if recorded_text is None else recorded_text.name
            wanted = "none" if self._text_model is None else self._text_model.name
            raise IndexModelMismatchError(
                f"local index {self._name!r} holds {held} description vectors but the text "
                f"embedder is {wanted}; use a new index name, or delete {delete_hint} and "
                "ingest again"
            )

    def _ensure_key_index(self, table: Any) -> None:
        """A B-tree on the key, so that lookups by id and the upserts' join on it cost the same
        in a large table as in a small one (at 90,000 rows: 4 and 15 ms instead of 15 and 36).
        Rows written since the last compaction are scanned beside it, so it is never stale."""
        if not _has_index(table, KEY_FIELD):
            _create_index(table, KEY_FIELD, BTree())

    def _ensure_fts(self, table: Any, columns: Iterable[str]) -> None:
        missing = [c for c in columns if c not in self._fts_columns]
        if not missing:
            return
        indexed = {
            config.columns[0] for config in table.list_indices() if config.index_type == "FTS"
        }
        for column in missing:
            if column not in indexed:
                _create_index(table, column, FTS(), index_type="FTS")
            self._fts_columns.add(column)

    # ------------------------------------------------------------------ reads

    def get_states(self, ids: list[str]) -> dict[str, DocumentState]:
        table = self._require()
        with self._known.lock:
            return self._known.get(table, dict.fromkeys(ids), self._latest_version(table))

    def all_states(self) -> list[DocumentState]:
        table = self._open()
        if table is None:
            return []
        rows = table.search().select(STATE_COLUMNS).limit(None).to_arrow()
        return sorted(states_of(rows), key=lambda state: state.id)

    def ids_from_source(self, source: str) -> set[str]:
        table = self._require()
        result = (
            table.search()
            .where(f"source = {sql_string(source)}")
            .select([KEY_FIELD])
            .limit(None)
            .to_arrow()
        )
        return set(result.column(KEY_FIELD).to_pylist())

    # ------------------------------------------------------------------ writes

    def upsert(self, documents: list[IndexDocument]) -> None:
        if not documents:
            return
        schema = self._schema(self._require())
        self._check_documents(schema, documents)
        rows = document_rows(documents, schema, self._embed(schema, documents))
        self._writer.submit(Op("upsert", rows=rows))

    def merge_metadata(self, patches: list[MetadataPatch]) -> None:
        """Patches for ids that do not exist are ignored (nothing is inserted)."""
        if not patches:
            return
        schema = self._schema(self._require())
        columns: dict[str, Any] = {
            KEY_FIELD: [p.id for p in patches],
            "description": [p.description for p in patches],
            "source": [p.source for p in patches],
        }
        vectors = self._embed(schema, patches)
        if vectors is not None:
            columns[DESCRIPTION_VECTOR_FIELD] = vector_column(vectors)
        self._writer.submit(Op("merge", rows=pa.table(columns)))

    def delete(self, ids: list[str]) -> None:
        if not ids:
            return
        self._require()
        self._writer.submit(Op("delete", ids=list(ids)))

    def optimize(self) -> None:
        self._require()
        self._writer.submit(Op("optimize"))

    def _embed(
        self, schema: pa.Schema, items: list[IndexDocument] | list[MetadataPatch]
    ) -> list[list[float]] | None:
        """Description vectors for the rows written, where the table has the field (computed
        by the caller, outside the group commit, so writers embed in parallel)."""
        if self._embedder is None or DESCRIPTION_VECTOR_FIELD not in schema.names:
            return None
        return self._embedder.embed([item.description for item in items])

    def _check_documents(self, schema: pa.Schema, documents: list[IndexDocument]) -> None:
        # Checked per caller before queueing, so one bad document fails only its own caller.
        check_documents(
            documents,
            index=self._name,
            dims=vector_dims(schema, VECTOR_FIELD),
            recorded=recorded_model(schema),
        )

    def _apply(self, kind: str, ops: list[Op]) -> None:
        """Runs in the group-commit leader: one LanceDB write for ``ops`` of one kind."""
        table = self._require()  # before the map's lock: drop() takes the two the other way
        with self._known.lock:  # lookups wait for the write and its report to the map
            self._write(table, kind, ops)

    def _write(self, table: Any, kind: str, ops: list[Op]) -> None:
        known = self._known
        if kind == "upsert":
            rows = last_per_id(pa.concat_tables([op.rows for op in ops if op.rows is not None]))
            self._upsert(table, rows)
        elif kind == "merge":
            rows = last_per_id(pa.concat_tables([op.rows for op in ops if op.rows is not None]))
            result = table.merge_insert(KEY_FIELD).when_matched_update_all().execute(rows)
            patches = zip(
                *(rows.column(c).to_pylist() for c in (KEY_FIELD, "description", "source")),
                strict=True,
            )
            known.patched(result.version, patches)
            self._followed(table, result.version)
        elif kind == "delete":
            ids = list(dict.fromkeys(i for op in ops for i in op.ids))
            for chunk in chunks(ids, _IN_CHUNK):
                deleted = table.delete(f"{KEY_FIELD} IN ({sql_list(chunk)})")
                known.deleted(deleted.version, chunk)
                self._followed(table, deleted.version)
        if kind == "optimize":
            self._compact(table, fold_text_index=True)
            return
        self._writes_since_compaction += 1
        if self._writes_since_compaction >= COMPACT_AFTER_WRITES:
            self._compactions += 1
            self._compact(table, fold_text_index=self._compactions % FOLD_TEXT_INDEX_AFTER == 0)

    def _upsert(self, table: Any, rows: pa.Table) -> None:
        """Rows whose ids the table does not hold are appended: ~4 ms of CPU for a few rows,
        against 15-55 ms for merge_insert, whose join on the key grows with the fragments
        written since the last compaction. A group with any id held is merged."""
        known = self._known
        ids = rows.column(KEY_FIELD).to_pylist()
        if known.get(table, ids, self._latest_version(table)):
            result = (
                table.merge_insert(KEY_FIELD)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(rows)
            )
        else:
            checked = known.version
            result = table.add(rows)
            if checked is None or result.version != checked + 1:
                # Another handle or process committed in between: it may have added some of
                # these ids too. This write is the later one, so its rows are the ones kept.
                self._keep_last_rows(table, rows)
        known.written(result.version, rows)
        self._followed(table, result.version)

    def _keep_last_rows(self, table: Any, rows: pa.Table) -> None:
        """Ids of ``rows`` held more than once: their rows are replaced by those of ``rows``."""
        ids = rows.column(KEY_FIELD).to_pylist()
        held: list[str] = []
        for chunk in chunks(ids, _IN_CHUNK):
            found = (
                table.search()
                .where(f"{KEY_FIELD} IN ({sql_list(chunk)})")
                .select([KEY_FIELD])
                .limit(None)
                .to_arrow()
            )
            held += found.column(KEY_FIELD).to_pylist()
        doubled = sorted(doc_id for doc_id, count in Counter(held).items() if count > 1)
        for chunk in chunks(doubled, _IN_CHUNK):
            table.delete(f"{KEY_FIELD} IN ({sql_list(chunk)})")
            table.add(rows.filter(pc.is_in(rows.column(KEY_FIELD), pa.array(chunk))))
        self._known.forget()

    def _compact(self, table: Any, *, fold_text_index: bool) -> None:
        self._known.forget()  # its versions are not writes the map can follow
        before = len(table.list_versions())
        table.to_lance().optimize.compact_files(target_rows_per_fragment=COMPACT_TARGET_ROWS)
        compacted = table.to_lance()
        if fold_text_index:
            compacted.optimize.optimize_indices()
        else:
            keys = [c.name for c in table.list_indices() if c.columns == [KEY_FIELD]]
            compacted.optimize.optimize_indices(index_names=keys)
        compacted.cleanup_old_versions(older_than=self._keep_versions_for)
        self._writes_since_compaction = 0
        logger.info(
            "compacted local index %s: %d versions before, %d after",
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
        """Cosine similarity (``score`` in [-1, 1]), exact for every candidate; the candidates
        are every matching document, or with a neighbour graph and no filter, its proposals
        plus the rows it does not hold yet."""
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
            query = query / norm if norm > 0 else query
            mask = None
            if condition is not None:
                mask = odata.evaluate(condition, cache.columns(cache.size))
            slots, scores = cache.nearest(query, top, mask)
            return [
                cache.hit(slot, score, fields)
                for slot, score in zip(slots.tolist(), scores.tolist(), strict=True)
            ]

    def text_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
        semantic: bool = False,
        semantic_configuration: str | None = None,
    ) -> list[SearchHit]:
        """BM25 over the content fields (LanceDB's inverted index); ``score`` is BM25.
        There is no semantic ranker here: ``semantic`` lists stay in BM25 order, and a named
        semantic configuration is refused rather than ignored."""
        if semantic_configuration is not None:
            raise SemanticConfigurationError(
                f"the embedded index {self._name!r} has no semantic configurations (semantic "
                "ranking needs Azure AI Search); omit semantic_configuration"
            )
        table = self._require()
        schema = self._schema(table)
        strings = string_fields(schema)
        condition = odata.parse(filter, strings) if filter else None
        if top <= 0 or not text.strip():
            return []
        content = list(fields.content_fields)
        check_mapped_fields(schema, fields, strings)
        self._ensure_fts(table, content)
        wanted = [KEY_FIELD, *content]
        wanted += [f for f in (fields.title_field, fields.url_field, fields.filepath_field) if f]
        query = table.search(text, query_type="fts", fts_columns=content)
        if condition is not None:
            query = query.where(odata.to_sql(condition), prefilter=True)
        rows = query.select([*dict.fromkeys(wanted), "_score"]).limit(top).to_arrow().to_pylist()
        return [hit_from_row(row, float(row["_score"]), fields) for row in rows]

    def description_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
    ) -> list[SearchHit] | None:
        """Cosine of the text's embedding against the description vectors; None when this
        handle has no embedder or the index was made without the field."""
        table = self._require()
        if self._embedder is None or DESCRIPTION_VECTOR_FIELD not in self._schema(table).names:
            return None
        if top <= 0 or not text.strip():
            return []
        vector = self._embedder.embed([text], interactive=True)[0]
        mapping = replace(fields, image_vector_fields=(DESCRIPTION_VECTOR_FIELD,))
        return self.vector_search(vector, top=top, fields=mapping, filter=filter)

    def _cache(self, table: Any, field_name: str) -> VectorCache:
        version = self._latest_version(table)  # before scanning: a later commit refreshes
        cache = self._caches.get(field_name)
        if cache is not None and cache.version == version:
            return cache
        schema = self._schema(table)
        dims = vector_dims(schema, field_name)
        if dims is None:
            raise FieldMappingError(
                f"index {self._name!r} has no fixed-size vector field {field_name!r}",
                mapping="image_vector_fields",
                field=field_name,
            )
        if KEY_FIELD not in schema.names:
            raise ImageIndexError(f"index {self._name!r} has no {KEY_FIELD!r} field")
        # Image hits carry the verification thumbnails (retrieval re-ranks with them).
        image_field = field_name == VECTOR_FIELD and THUMBNAIL_FIELD in schema.names
        thumbnails = THUMBNAIL_FIELD if image_field else None
        strings = string_fields(schema)
        if cache is None or (cache.strings, cache.dims, cache.thumbnail_field) != (
            strings,
            dims,
            thumbnails,
        ):
            if cache is not None:
                cache.close()
            cache = VectorCache(
                field_name,
                dims,
                strings,
                thumbnails,
                graph_path=self._graph_directory / f"{field_name}.{dims}.hnsw",
                approximate_from=self._approximate_from,
                quantised_from=self._quantised_from,
            )
        cache.refresh(table)
        cache.version = version
        self._caches[field_name] = cache
        return cache


def index_names(directory: Path) -> list[str]:
    """The embedded indexes kept under ``directory``."""
    if not Path(directory).is_dir():
        return []
    db = lancedb.connect(directory, session=lance_session())
    names: list[str] = []
    page: str | None = None
    while True:
        listed = db.list_tables(page_token=page)
        names += listed.tables
        page = listed.page_token
        if not page:
            return sorted(names)


def _has_index(table: Any, column: str, index_type: str | None = None) -> bool:
    return any(
        config.columns == [column] and index_type in (None, config.index_type)
        for config in table.list_indices()
    )


def _create_index(table: Any, column: str, config: Any, index_type: str | None = None) -> None:
    try:
        table.create_index(column, config=config, replace=False)
    except RuntimeError:  # created meanwhile by another handle or process
        if not _has_index(table, column, index_type):
            raise
