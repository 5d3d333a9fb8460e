"""ImageIndex on Azure AI Search (azure-search-documents 11.6, REST api-version 2024-07-01).
The index definition is in azure_search_schema.py, request sizing and refusals in
azure_search_wire.py.

- Scores: for the cosine metric the service reports ``@search.score = 1 / (1 + distance)``
  with ``distance = 1 - cosine``, i.e. ``1 / (2 - cosine)``. Vector hits are converted back
  with ``cosine = 2 - 1 / score`` so that ``SearchHit.score`` means the same as locally.
  Text hits keep the service's BM25 score.
- The model is recorded in the name of the vector profile the vector field uses:
  ``imagerag__<name>__<version>__t<0|1>`` (letters, digits and '-' as is, any other character
  as ``_xx`` hex per UTF-8 byte, so ``__`` only separates). The index definition is the one
  place the GA API lets us label, it is created atomically with the index, and the service
  rejects a vector field of another dimension count, so dims come from the field itself.
- Throttling (429) and 5xx are retried by azure-core's RetryPolicy, which honours
  Retry-After; ``retry_total`` and the backoff are set explicitly on both clients.
- Every field attribute is declared (the service defaults unset ones to true on strings):
  only ``description`` and ``title`` are full-text searchable, filterable only what filters
  and ``ids_from_source`` use, sortable only the key, nothing facetable. ``ensure`` never
  updates an existing index (the service refuses changing an existing field's attributes),
  so indexes made by older definitions keep working as they are.
- Indexing batches are sized from the bytes the SDK sends (its ``json.dumps`` with default
  separators): at most 1,000 actions and 16,000,000 bytes per request.
- A query the service refuses (400) is reported by the parameter its message names:
  ``$filter`` -> InvalidFilterError; ``searchFields``, ``vector.fields`` or a ``$select`` of a
  mapped field -> FieldMappingError naming the mapping; anything else -> ImageIndexError.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import SearchIndex
from azure.search.documents.models import VectorizedQuery

from imagerag.adapters.azure_search_schema import (
    KEY_FIELD,
    document_body,
    index_definition,
    recorded_model,
    semantic_configurations,
    vector_dims,
)
from imagerag.adapters.azure_search_wire import (
    batches,
    cosine_from_score,
    mapping_of,
    odata_string,
    one_line,
    refused_parameter,
    search_in,
    service_messages,
)
from imagerag.adapters.index_rules import check_documents, check_index_model, search_hit
from imagerag.ports import (
    DocumentState,
    FieldMapping,
    FieldMappingError,
    ImageIndexError,
    IndexDocument,
    IndexField,
    IndexNotFoundError,
    InvalidFilterError,
    MetadataPatch,
    ModelInfo,
    SearchHit,
    SemanticConfigurationError,
)

logger = logging.getLogger(__name__)

API_VERSION = "2024-07-01"
STATE_FIELDS = ["id", "content_hash", "description", "source", "model_name", "model_version"]
DEFAULT_FIELDS = FieldMapping()
_IDS_PER_QUERY = 500
_QUOTED = re.compile(r"'([^']+)'")


class AzureSearchImageIndex:
    """imagerag.ports.ImageIndex over one Azure AI Search index (thread-safe: the SDK clients
    are, and the only local state is a cached key-field name and the ensured model)."""

    def __init__(
        self,
        *,
        endpoint: str,
        name: str,
        credential: AzureKeyCredential | TokenCredential,
        api_version: str = API_VERSION,
        retry_total: int = 6,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 60.0,
        page_size: int = 1000,
        **client_kwargs: Any,
    ) -> None:
        """``client_kwargs`` go to both SDK clients (e.g. ``transport``, timeouts)."""
        self._name = name
        self._page_size = page_size
        options: dict[str, Any] = {
            "api_version": api_version,
            "retry_total": retry_total,
            "retry_backoff_factor": retry_backoff_factor,
            "retry_backoff_max": retry_backoff_max,
            **client_kwargs,
        }
        self._indexes = SearchIndexClient(endpoint, credential, **options)
        self._documents = SearchClient(endpoint, name, credential, **options)
        self._lock = threading.Lock()
        self._ensured: ModelInfo | None = None
        self._key_field: str | None = None
        self._vector_dims: int | None = None
        self._recorded: ModelInfo | None = None

    @property
    def name(self) -> str:
        return self._name

    # ------------------------------------------------------------------ schema and model

    def ensure(self, model: ModelInfo) -> None:
        if self._ensured == model:
            return
        with self._lock:
            index = self._get_index()
            if index is None:
                index = self._create(model)
            self._check_model(index, model)
            self._ensured = model

    def model(self) -> ModelInfo | None:
        index = self._get_index()
        return None if index is None else recorded_model(index)

    def fields(self) -> dict[str, IndexField] | None:
        index = self._get_index()
        if index is None:
            return None
        found: dict[str, IndexField] = {}
        for f in index.fields or []:
            kind = str(f.type)
            if f.vector_search_dimensions:
                found[f.name] = IndexField("vector", int(f.vector_search_dimensions))
            elif kind == "Edm.String":
                found[f.name] = IndexField("text", searchable=bool(f.searchable))
            else:
                found[f.name] = IndexField("other")
        return found

    def drop(self) -> None:
        try:
            self._indexes.delete_index(self._name)
        except ResourceNotFoundError:
            pass

    def _get_index(self) -> SearchIndex | None:
        try:
            return self._indexes.get_index(self._name)
        except ResourceNotFoundError:
            return None

    def _create(self, model: ModelInfo) -> SearchIndex:
        try:
            created = self._indexes.create_index(index_definition(self._name, model))
            logger.info("created search index %s for %s %s", self._name, model.name, model.version)
            return created
        except HttpResponseError as exc:
            # Created meanwhile by another worker (409), or a real failure: look again.
            existing = self._get_index()
            if existing is None:
                raise ImageIndexError(f"could not create index {self._name!r}: {exc}") from exc
            return existing

    def _check_model(self, index: SearchIndex, model: ModelInfo) -> None:
        check_index_model(
            index=f"search index {self._name!r}",
            recorded=recorded_model(index),
            dims=vector_dims(index),
            model=model,
            delete_hint="the index",
        )

    def _key(self) -> str:
        if self._key_field is None:
            self._describe()
        assert self._key_field is not None
        return self._key_field

    def _dims(self) -> int | None:
        if self._key_field is None:
            self._describe()
        return self._vector_dims

    def _describe(self) -> None:
        """Key field and vector dims of the index, read once (they cannot change)."""
        index = self._get_index()
        if index is None:
            raise IndexNotFoundError(self._name)
        self._vector_dims = vector_dims(index)
        self._recorded = recorded_model(index)
        self._key_field = next((f.name for f in index.fields if f.key), KEY_FIELD)

    # ------------------------------------------------------------------ reads

    def get_states(self, ids: list[str]) -> dict[str, DocumentState]:
        states: dict[str, DocumentState] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[start : start + _IDS_PER_QUERY]
            rows = self._search(
                search_text=None,
                filter=search_in(KEY_FIELD, chunk),
                select=STATE_FIELDS,
                top=len(chunk),
            )
            for row in rows:
                states[row[KEY_FIELD]] = DocumentState(
                    **{name: row.get(name) or "" for name in STATE_FIELDS}
                )
        return states

    def ids_from_source(self, source: str) -> set[str]:
        condition = f"source eq {odata_string(source)}"
        return {row[KEY_FIELD] for row in self._pages(condition, [KEY_FIELD])}

    def all_states(self) -> list[DocumentState]:
        if self._get_index() is None:
            return []
        return [
            DocumentState(**{name: row.get(name) or "" for name in STATE_FIELDS})
            for row in self._pages(None, STATE_FIELDS)
        ]

    def _pages(self, condition: str | None, select: list[str]) -> Iterator[dict[str, Any]]:
        """Every matching document, in pages ordered by id with ``id gt '<last>'`` (``skip``
        stops at 100,000)."""
        last: str | None = None
        while True:
            clauses = [c for c in (condition, last and f"{KEY_FIELD} gt {odata_string(last)}") if c]
            page = self._search(
                search_text=None,
                filter=" and ".join(clauses) or None,
                select=select,
                order_by=[f"{KEY_FIELD} asc"],
                top=self._page_size,
            )
            yield from page
            if len(page) < self._page_size:
                return
            last = page[-1][KEY_FIELD]

    # ------------------------------------------------------------------ writes

    def upsert(self, documents: list[IndexDocument]) -> None:
        if not documents:
            return
        # The service would refuse the whole batch; name the document instead.
        check_documents(documents, index=self._name, dims=self._dims(), recorded=self._recorded)
        actions = [document_body(doc) for doc in documents]
        self._index("mergeOrUpload", actions)

    def merge_metadata(self, patches: list[MetadataPatch]) -> None:
        """Patches for ids that do not exist are ignored, as in the local index."""
        actions = [
            {KEY_FIELD: p.id, "description": p.description, "source": p.source} for p in patches
        ]
        self._index("merge", actions, ignore_missing=True)

    def delete(self, ids: list[str]) -> None:
        self._index("delete", [{KEY_FIELD: i} for i in dict.fromkeys(ids)])

    def optimize(self) -> None:
        """Nothing to do: the service merges its segments itself."""

    def _index(
        self, action: str, documents: list[dict[str, Any]], *, ignore_missing: bool = False
    ) -> None:
        send = {
            "mergeOrUpload": self._documents.merge_or_upload_documents,
            "merge": self._documents.merge_documents,
            "delete": self._documents.delete_documents,
        }[action]
        failed: list[str] = []
        for batch in batches(documents, action=action):
            try:
                results = send(documents=batch)
            except ResourceNotFoundError as exc:
                raise IndexNotFoundError(self._name) from exc
            except HttpResponseError as exc:
                raise ImageIndexError(
                    f"{action} of {len(batch)} documents in {self._name!r} failed: {exc.message}"
                ) from exc
            for result in results:
                if result.succeeded or (ignore_missing and result.status_code == 404):
                    continue
                failed.append(f"{result.key} ({result.status_code}: {result.error_message})")
        if failed:
            shown = ", ".join(failed[:20]) + (" ..." if len(failed) > 20 else "")
            raise ImageIndexError(
                f"{action} failed for {len(failed)} documents in {self._name!r}: {shown}"
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
        """HNSW (efSearch 500) cosine; ``score`` is the cosine similarity (see module doc)."""
        if not fields.image_vector_fields:
            raise ImageIndexError("fields.image_vector_fields is empty: no vector field to search")
        if top <= 0:
            return []
        query = VectorizedQuery(
            vector=list(vector), k_nearest_neighbors=top, fields=fields.image_vector_fields[0]
        )
        rows = self._search(
            fields=fields,
            search_text=None,
            vector_queries=[query],
            filter=filter,
            select=self._hit_fields(fields),
            top=top,
        )
        return [self._hit(row, cosine_from_score(row["@search.score"]), fields) for row in rows]

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
        """Full-text (simple syntax) over the content fields; ``score`` is the BM25 score,
        or with ``semantic`` the semantic ranker's score (0..4), in the ranker's order."""
        if top <= 0 or not text.strip():
            return []
        ranker: dict[str, Any] = {}
        if semantic:
            ranker = {
                "query_type": "semantic",
                "semantic_configuration_name": self._semantic_name(semantic_configuration),
            }
        try:
            rows = self._search(
                fields=fields,
                search_text=text,
                search_fields=list(fields.content_fields),
                filter=filter,
                select=self._hit_fields(fields),
                top=top,
                **ranker,
            )
        except (FieldMappingError, InvalidFilterError, IndexNotFoundError):
            raise
        except ImageIndexError as exc:
            cause = exc.__cause__
            if not (semantic and isinstance(cause, HttpResponseError) and cause.status_code == 400):
                raise
            # e.g. a service whose semantic ranker is disabled (the Bicep default).
            raise SemanticConfigurationError(
                f"{exc}; semantic query types need the semantic ranker enabled on the service"
            ) from exc
        score = "@search.rerankerScore" if semantic else "@search.score"
        return [self._hit(row, float(row.get(score) or 0.0), fields) for row in rows]

    def description_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
    ) -> list[SearchHit] | None:
        """None: these indexes hold no description vectors; meaning-level matching of text
        is the semantic ranker's (query types semantic and vector_semantic_hybrid)."""
        return None

    def _semantic_name(self, requested: str | None) -> str:
        """The configuration to rank with: the requested one, else the index's default;
        SemanticConfigurationError when the index has no such configuration."""
        index = self._get_index()
        if index is None:
            raise IndexNotFoundError(self._name)
        default, names = semantic_configurations(index)
        name = requested or default
        if name is None or name not in names:
            has = ", ".join(names) or "none"
            wanted = f"semantic configuration {name!r}" if name else "a default configuration"
            raise SemanticConfigurationError(
                f"index {self._name!r} has no {wanted} (its semantic configurations: {has})"
            )
        return name

    def _hit_fields(self, fields: FieldMapping) -> list[str]:
        mapped = [fields.title_field, fields.url_field, fields.filepath_field]
        return list(dict.fromkeys([self._key(), *fields.content_fields, *filter(None, mapped)]))

    def _hit(self, row: dict[str, Any], score: float, fields: FieldMapping) -> SearchHit:
        def value(name: str | None) -> str | None:
            found = None if name is None else row.get(name)
            return None if found is None else str(found)

        return search_hit(id=str(row[self._key()]), score=score, fields=fields, value=value)

    def _search(self, *, fields: FieldMapping | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """All rows of one query (the SDK sends it on first iteration, so errors land here).
        ``fields`` is the caller's mapping, to say which of its fields a refusal is about."""
        try:
            return [dict(row) for row in self._documents.search(**kwargs)]
        except ResourceNotFoundError as exc:
            raise IndexNotFoundError(self._name) from exc
        except HttpResponseError as exc:
            if exc.status_code == 400:
                raise self._refusal(exc, kwargs.get("filter"), fields) from exc
            raise ImageIndexError(f"search in {self._name!r} failed: {exc.message}") from exc

    def _refusal(
        self, exc: HttpResponseError, filter: str | None, fields: FieldMapping | None
    ) -> ImageIndexError:
        """The 400 in domain terms, by the parameter the service's message names."""
        messages = service_messages(exc)
        said = one_line(messages[0] if messages else str(exc.message))
        parameter = refused_parameter(messages)
        named = next((m.group(1) for m in map(_QUOTED.search, messages) if m), None)
        if parameter == "$filter":
            return InvalidFilterError(
                f"search in {self._name!r} rejected filter {filter!r}: {said}"
            )
        mapping = None
        if fields is not None and parameter == "searchFields":
            mapping = "content_fields"
        elif fields is not None and parameter == "vector.fields":
            mapping = "image_vector_fields"
        elif fields is not None and parameter == "$select" and named is not None:
            mapping = mapping_of(fields, named)
        if mapping is not None:
            return FieldMappingError(
                f"index {self._name!r} cannot serve fields_mapping.{mapping}: {said}",
                mapping=mapping,
                field=named,
            )
        return ImageIndexError(f"search in {self._name!r} was refused: {said}")
