"""The index definition imagerag creates on Azure AI Search, and how it records the model.

The model is recorded in the name of the vector profile the vector field uses:
``imagerag__<name>__<version>__t<0|1>`` (letters, digits and '-' as is, any other character as
``_xx`` hex per UTF-8 byte, so ``__`` only separates). Every field attribute is declared (the
service defaults unset ones to true on strings).
"""

from __future__ import annotations

import re
from typing import Any

from azure.search.documents.indexes.models import (
    HnswAlgorithmConfiguration,
    HnswParameters,
    SearchField,
    SearchFieldDataType,
    SearchIndex,
    SemanticConfiguration,
    SemanticField,
    SemanticPrioritizedFields,
    SemanticSearch,
    VectorSearch,
    VectorSearchAlgorithmMetric,
    VectorSearchProfile,
)

from imagerag.ports import IndexDocument, ModelInfo

KEY_FIELD = "id"
VECTOR_FIELD = "image_vector"
ALGORITHM_NAME = "imagerag-hnsw-cosine"
PROFILE_PREFIX = "imagerag"
# The semantic ranker's configuration of generated indexes (query_type semantic and
# vector_semantic_hybrid use it when a request names none).
SEMANTIC_CONFIGURATION = "imagerag-semantic"
_PLAIN = re.compile(r"[A-Za-z0-9-]")


def index_definition(name: str, model: ModelInfo) -> SearchIndex:
    """Every attribute declared. Full-text: description, and title on purpose (file names
    often carry words). Filterable: the key (get_states, paging), source (ids_from_source),
    and filepath/model_name/model_version for users' filters. url and content_hash are only
    retrieved."""
    profile = profile_name(model)
    return SearchIndex(
        name=name,
        fields=[
            _string(KEY_FIELD, key=True, filterable=True, sortable=True),
            _string("description", searchable=True),
            SearchField(
                name=VECTOR_FIELD,
                type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                key=False,
                hidden=False,
                stored=True,
                searchable=True,
                filterable=False,
                sortable=False,
                facetable=False,
                vector_search_dimensions=model.dimensions,
                vector_search_profile_name=profile,
            ),
            _string("filepath", filterable=True),
            _string("url"),
            _string("title", searchable=True),
            _string("source", filterable=True),
            _string("model_name", filterable=True),
            _string("model_version", filterable=True),
            _string("content_hash"),
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
        semantic_search=SemanticSearch(
            default_configuration_name=SEMANTIC_CONFIGURATION,
            configurations=[
                SemanticConfiguration(
                    name=SEMANTIC_CONFIGURATION,
                    prioritized_fields=SemanticPrioritizedFields(
                        title_field=SemanticField(field_name="title"),
                        content_fields=[SemanticField(field_name="description")],
                    ),
                )
            ],
        ),
    )


def semantic_configurations(index: SearchIndex) -> tuple[str | None, list[str]]:
    """The index's default semantic configuration (None: none) and every one's name."""
    semantic = index.semantic_search
    if semantic is None:
        return None, []
    names = [c.name for c in semantic.configurations or []]
    return semantic.default_configuration_name, names


def _string(
    name: str,
    *,
    key: bool = False,
    searchable: bool = False,
    filterable: bool = False,
    sortable: bool = False,
) -> SearchField:
    return SearchField(
        name=name,
        type=SearchFieldDataType.String,
        key=key,
        hidden=False,
        searchable=searchable,
        filterable=filterable,
        sortable=sortable,
        facetable=False,
    )


def profile_name(model: ModelInfo) -> str:
    parts = [PROFILE_PREFIX, _encode(model.name), _encode(model.version)]
    return "__".join([*parts, "t1" if model.supports_text else "t0"])


def recorded_model(index: SearchIndex) -> ModelInfo | None:
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


def vector_dims(index: SearchIndex) -> int | None:
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


def document_body(doc: IndexDocument) -> dict[str, Any]:
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
