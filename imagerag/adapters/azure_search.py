"""ImageIndex on Azure AI Search (azure-search-documents 11.6, REST api-version 2024-07-01).

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
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import (
    HnswAlgorithmConfiguration,
    HnswParameters,
    SearchField,
    SearchFieldDataType,
    SearchIndex,
    VectorSearch,
    VectorSearchAlgorithmMetric,
    VectorSearchProfile,
)
from azure.search.documents.models import VectorizedQuery

from imagerag.adapters.index_rules import check_documents, check_index_model, search_hit
from imagerag.ports import (
    DocumentState,
    FieldMapping,
    ImageIndexError,
    IndexDocument,
    IndexNotFoundError,
    InvalidFilterError,
    MetadataPatch,
    ModelInfo,
    SearchHit,
)

logger = logging.getLogger(__name__)

API_VERSION = "2024-07-01"
KEY_FIELD = "id"
VECTOR_FIELD = "image_vector"
ALGORITHM_NAME = "imagerag-hnsw-cosine"
PROFILE_PREFIX = "imagerag"
MAX_BATCH_ACTIONS = 1000
# The service's limit is 16 MB per request; keep headroom for the SDK's own serialisation.
MAX_BATCH_BYTES = 15 * 1024 * 1024
STATE_FIELDS = ["id", "content_hash", "description", "source", "model_name", "model_version"]
DEFAULT_FIELDS = FieldMapping()
_IDS_PER_QUERY = 500
_PLAIN = re.compile(r"[A-Za-z0-9-]")


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
        return None if index is None else _recorded_model(index)

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
            recorded=_recorded_model(index),
            dims=_vector_dims(index),
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
        self._vector_dims = _vector_dims(index)
        self._recorded = _recorded_model(index)
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
        """Pages ordered by id with ``id gt '<last>'`` (``skip`` stops at 100,000)."""
        ids: set[str] = set()
        last: str | None = None
        while True:
            condition = f"source eq {odata_string(source)}"
            if last is not None:
                condition += f" and {KEY_FIELD} gt {odata_string(last)}"
            page = [
                row[KEY_FIELD]
                for row in self._search(
                    search_text=None,
                    filter=condition,
                    select=[KEY_FIELD],
                    order_by=[f"{KEY_FIELD} asc"],
                    top=self._page_size,
                )
            ]
            ids.update(page)
            if len(page) < self._page_size:
                return ids
            last = page[-1]

    # ------------------------------------------------------------------ writes

    def upsert(self, documents: list[IndexDocument]) -> None:
        if not documents:
            return
        # The service would refuse the whole batch; name the document instead.
        check_documents(documents, index=self._name, dims=self._dims(), recorded=self._recorded)
        actions = [_document_body(doc) for doc in documents]
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
        for batch in batches(documents):
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
    ) -> list[SearchHit]:
        """Full-text (simple syntax) over the content fields; ``score`` is the BM25 score."""
        if top <= 0 or not text.strip():
            return []
        rows = self._search(
            search_text=text,
            search_fields=list(fields.content_fields),
            filter=filter,
            select=self._hit_fields(fields),
            top=top,
        )
        return [self._hit(row, float(row["@search.score"]), fields) for row in rows]

    def _hit_fields(self, fields: FieldMapping) -> list[str]:
        mapped = [fields.title_field, fields.url_field, fields.filepath_field]
        return list(dict.fromkeys([self._key(), *fields.content_fields, *filter(None, mapped)]))

    def _hit(self, row: dict[str, Any], score: float, fields: FieldMapping) -> SearchHit:
        def value(name: str | None) -> str | None:
            found = None if name is None else row.get(name)
            return None if found is None else str(found)

        return search_hit(id=str(row[self._key()]), score=score, fields=fields, value=value)

    def _search(self, **kwargs: Any) -> list[dict[str, Any]]:
        """All rows of one query (the SDK sends it on first iteration, so errors land here)."""
        try:
            return [dict(row) for row in self._documents.search(**kwargs)]
        except ResourceNotFoundError as exc:
            raise IndexNotFoundError(self._name) from exc
        except HttpResponseError as exc:
            if exc.status_code == 400 and kwargs.get("filter"):
                raise InvalidFilterError(
                    f"search in {self._name!r} rejected filter {kwargs['filter']!r}: {exc.message}"
                ) from exc
            raise ImageIndexError(f"search in {self._name!r} failed: {exc.message}") from exc


# ---------------------------------------------------------------------- index definition


def index_definition(name: str, model: ModelInfo) -> SearchIndex:
    string = SearchFieldDataType.String
    profile = profile_name(model)
    return SearchIndex(
        name=name,
        fields=[
            SearchField(name=KEY_FIELD, type=string, key=True, filterable=True, sortable=True),
            SearchField(name="description", type=string, searchable=True),
            SearchField(
                name=VECTOR_FIELD,
                type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                searchable=True,
                vector_search_dimensions=model.dimensions,
                vector_search_profile_name=profile,
            ),
            SearchField(name="filepath", type=string, filterable=True),
            SearchField(name="url", type=string),
            SearchField(name="title", type=string, searchable=True),
            SearchField(name="source", type=string, filterable=True),
            SearchField(name="model_name", type=string, filterable=True),
            SearchField(name="model_version", type=string, filterable=True),
            SearchField(name="content_hash", type=string),
        ],
        vector_search=VectorSearch(
            algorithms=[
                HnswAlgorithmConfiguration(
                    name=ALGORITHM_NAME,
                    parameters=HnswParameters(
                        m=4,
                        ef_construction=400,
                        ef_search=500,
                        metric=VectorSearchAlgorithmMetric.COSINE,
                    ),
                )
            ],
            profiles=[
                VectorSearchProfile(name=profile, algorithm_configuration_name=ALGORITHM_NAME)
            ],
        ),
    )


def profile_name(model: ModelInfo) -> str:
    parts = [PROFILE_PREFIX, _encode(model.name), _encode(model.version)]
    return "__".join([*parts, "t1" if model.supports_text else "t0"])


def _recorded_model(index: SearchIndex) -> ModelInfo | None:
    field = next((f for f in index.fields or [] if f.name == VECTOR_FIELD), None)
    if field is None or field.vector_search_profile_name is None:
        return None
    parts = field.vector_search_profile_name.split("__")
    if len(parts) != 4 or parts[0] != PROFILE_PREFIX or parts[3] not in ("t0", "t1"):
        return None
    try:
        name, version = _decode(parts[1]), _decode(parts[2])
    except ValueError:
        return None
    return ModelInfo(
        name=name,
        version=version,
        dimensions=int(field.vector_search_dimensions or 0),
        supports_text=parts[3] == "t1",
    )


def _vector_dims(index: SearchIndex) -> int | None:
    field = next((f for f in index.fields or [] if f.name == VECTOR_FIELD), None)
    return None if field is None else field.vector_search_dimensions


def _encode(text: str) -> str:
    return "".join(
        ch if _PLAIN.fullmatch(ch) else "".join(f"_{b:02x}" for b in ch.encode()) for ch in text
    )


def _decode(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "_":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return out.decode()


# ---------------------------------------------------------------------- helpers


def cosine_from_score(score: float) -> float:
    """Invert the service's cosine score ``1 / (2 - cosine)``."""
    return 2.0 - 1.0 / float(score)


def odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def search_in(field: str, values: list[str]) -> str:
    """``search.in`` with a delimiter that occurs in none of the values."""
    for delimiter in ("|", ",", "~", "^", ";", "#"):
        if not any(delimiter in v for v in values):
            return f"search.in({field}, {odata_string(delimiter.join(values))}, '{delimiter}')"
    return " or ".join(f"{field} eq {odata_string(v)}" for v in values)


def batches(documents: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Runs of at most MAX_BATCH_ACTIONS actions and about MAX_BATCH_BYTES of JSON."""
    batch: list[dict[str, Any]] = []
    size = 0
    for document in documents:
        cost = len(json.dumps(document, separators=(",", ":"))) + 40  # + "@search.action"
        if batch and (len(batch) == MAX_BATCH_ACTIONS or size + cost > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(document)
        size += cost
    if batch:
        yield batch


def _document_body(doc: IndexDocument) -> dict[str, Any]:
    return {
        KEY_FIELD: doc.id,
        "description": doc.description,
        VECTOR_FIELD: list(doc.image_vector),
        "filepath": doc.filepath,
        "url": doc.url,
        "title": doc.title,
        "source": doc.source,
        "model_name": doc.model_name,
        "model_version": doc.model_version,
        "content_hash": doc.content_hash,
    }
