"""What Azure's documents allow but a real service punishes (issue 16), checked against the
contract-checking stand-ins: query refusals named by parameter, declared field attributes
(and indexes made by the older definition), batches sized from the bytes actually sent, and
the Vision model version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
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
from fakes.search_service import FakeSearchService
from fakes.vision_service import FakeVisionService
from sample_images import picture_bytes

from imagerag import config
from imagerag.adapters.azure_search import AzureSearchImageIndex
from imagerag.adapters.azure_search_schema import document_body, index_definition, profile_name
from imagerag.adapters.azure_search_wire import request_bytes
from imagerag.adapters.azure_vision import AzureVisionVectorizer
from imagerag.ports import (
    FieldMapping,
    FieldMappingError,
    ImageIndexError,
    IndexDocument,
    InvalidFilterError,
    ModelInfo,
)

KEY = "test-search-key"
DIMS = 16
MODEL = ModelInfo(name="azure-ai-vision", version="2023-04-15", dimensions=DIMS, supports_text=True)
VISION = ModelInfo(
    name="azure-ai-vision", version="2023-04-15", dimensions=1024, supports_text=True
)
STRING = SearchFieldDataType.String
VECTOR = SearchFieldDataType.Collection(SearchFieldDataType.Single)


@pytest.fixture
def search() -> Iterator[FakeSearchService]:
    with FakeSearchService(api_key=KEY) as service:
        yield service
        assert service.violations == []


def open_index(service: FakeSearchService, name: str = "images-v") -> AzureSearchImageIndex:
    return AzureSearchImageIndex(
        endpoint=service.endpoint,
        name=name,
        credential=AzureKeyCredential(KEY),
        retry_backoff_factor=0.01,
        connection_verify=service.ca_file,
    )


def index_client(service: FakeSearchService) -> SearchIndexClient:
    return SearchIndexClient(
        service.endpoint, AzureKeyCredential(KEY), connection_verify=service.ca_file
    )


def document(i: int, *, model: ModelInfo = MODEL, source: str = "images/metadata.json") -> Any:
    """A document as ingestion writes it: a unit vector of full-precision floats, as the
    Vision adapter returns them, and realistic metadata."""
    vector = np.random.default_rng(i).standard_normal(model.dimensions)
    path = f"catalogue/2024/spring/item-{i:06d}.jpg"
    return IndexDocument(
        id=f"aW1hZ2VzL2NhdGFsb2d1ZS8yMDI0L3NwcmluZy9pdGVtLTAwMDAwMQ-{i:06d}",
        description=f"a red summer dress with white dots, front view, studio light, item {i}",
        image_vector=(vector / np.linalg.norm(vector)).tolist(),
        filepath=path,
        url=f"https://stimageragprod.blob.core.windows.net/images/{path}",
        title=f"item-{i:06d}.jpg",
        source=source,
        model_name=model.name,
        model_version=model.version,
        content_hash=f"{i:064x}",
    )


# ====================================================================== 1. query refusals


@pytest.fixture
def filled(search: FakeSearchService) -> AzureSearchImageIndex:
    index = open_index(search)
    index.ensure(MODEL)
    index.upsert([document(i) for i in range(3)])
    return index


VALID_FILTER = "source eq 'images/metadata.json'"


@pytest.mark.parametrize(
    ("fields", "mapping", "named"),
    [
        (FieldMapping(content_fields=("colour",)), "content_fields", "colour"),  # unknown
        (FieldMapping(content_fields=("url",)), "content_fields", "url"),  # not searchable
        (FieldMapping(title_field="heading"), "title_field", "heading"),  # unknown in select
    ],
)
def test_text_search_refusals_name_the_mapping_not_the_filter(
    filled: AzureSearchImageIndex, fields: FieldMapping, mapping: str, named: str
) -> None:
    with pytest.raises(FieldMappingError) as caught:
        filled.text_search("dress", top=3, fields=fields, filter=VALID_FILTER)
    assert not isinstance(caught.value, InvalidFilterError)
    assert (caught.value.mapping, caught.value.field) == (mapping, named)
    assert named in str(caught.value) and "\r" not in str(caught.value)


@pytest.mark.parametrize("vector_field", ["embedding", "description"])  # unknown, not a vector
def test_vector_search_refusals_name_the_vector_mapping(
    filled: AzureSearchImageIndex, vector_field: str
) -> None:
    fields = FieldMapping(image_vector_fields=(vector_field,))
    with pytest.raises(FieldMappingError) as caught:
        filled.vector_search(document(0).image_vector, top=3, fields=fields, filter=VALID_FILTER)
    assert (caught.value.mapping, caught.value.field) == ("image_vector_fields", vector_field)


@pytest.mark.parametrize(
    ("expression", "said"),
    [
        ("colour eq 'red'", "Could not find a property named 'colour'"),
        ("url eq 'x'", "url is not a filterable field"),  # declared not filterable
        ("source eq", "Invalid expression"),
    ],
)
def test_filter_refusals_are_invalid_filter_errors(
    filled: AzureSearchImageIndex, expression: str, said: str
) -> None:
    with pytest.raises(InvalidFilterError, match=said):
        filled.vector_search(document(0).image_vector, top=3, filter=expression)
    with pytest.raises(InvalidFilterError, match=said):
        filled.text_search("dress", top=3, filter=expression)


def test_a_refusal_about_no_mapped_field_stays_generic(filled: AzureSearchImageIndex) -> None:
    # A query of the adapter's own (no mapping involved) that the service refuses.
    with pytest.raises(ImageIndexError, match="'nope'") as caught:
        filled._search(fields=None, search_text="x", select=["nope"])
    assert not isinstance(caught.value, FieldMappingError | InvalidFilterError)


def _post_search(service: FakeSearchService, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{service.endpoint}/indexes('images-v')/docs/search.post.search",
        params={"api-version": "2024-07-01"},
        headers={"api-key": KEY, "Content-Type": "application/json"},
        data=json.dumps(body),
        verify=service.ca_file,
        timeout=10,
    )


def test_stand_in_answers_with_the_services_400_bodies(
    search: FakeSearchService, filled: AzureSearchImageIndex
) -> None:
    unknown = _post_search(
        search, {"search": "x", "searchFields": "colour", "filter": VALID_FILTER}
    )
    assert unknown.status_code == 400
    assert unknown.json() == {
        "error": {
            "code": "",
            "message": (
                "Unknown field 'colour' in search field list.\r\nParameter name: searchFields"
            ),
        }
    }
    bad_filter = _post_search(search, {"search": "x", "filter": "colour eq 'red'"})
    assert bad_filter.status_code == 400
    assert bad_filter.json()["error"]["message"] == (
        "Invalid expression: Could not find a property named 'colour' on type "
        "'search.document'.\r\nParameter name: $filter"
    )
    vector = _post_search(
        search,
        {"vectorQueries": [{"kind": "vector", "vector": [0.1] * DIMS, "k": 1, "fields": "x"}]},
    )
    assert vector.json()["error"]["code"] == "InvalidRequestParameter"
    assert vector.json()["error"]["details"][0]["code"] == "UnknownField"


# ====================================================================== 2. field attributes


def _attributes(service: FakeSearchService, name: str = "images-v") -> dict[str, dict[str, Any]]:
    return service.indexes[name].fields


def test_every_attribute_is_declared_and_only_what_is_used_is_enabled(
    search: FakeSearchService,
) -> None:
    open_index(search).ensure(MODEL)
    (create,) = [r for r in search.requests if r.path == "/indexes"]
    assert create.body is not None
    for sent in create.body["fields"]:
        declared = {"key", "searchable", "filterable", "sortable", "facetable", "retrievable"}
        assert declared <= set(sent), sent["name"]
    fields = _attributes(search)  # as the service answers them on GET

    def having(attribute: str) -> set[str]:
        return {name for name, spec in fields.items() if spec[attribute]}

    assert having("searchable") == {"description", "title", "image_vector"}
    assert having("filterable") == {"id", "filepath", "source", "model_name", "model_version"}
    assert having("sortable") == {"id"}
    assert having("facetable") == set()
    assert having("retrievable") == set(fields)


def test_text_queries_of_other_clients_no_longer_match_urls_and_hashes(
    search: FakeSearchService, filled: AzureSearchImageIndex
) -> None:
    client = SearchClient(
        search.endpoint, "images-v", AzureKeyCredential(KEY), connection_verify=search.ca_file
    )
    doc = document(1)
    assert list(client.search(search_text=doc.content_hash)) == []
    assert list(client.search(search_text="stimageragprod")) == []
    assert len(list(client.search(search_text="dress"))) == 3


def _old_definition(name: str, model: ModelInfo) -> SearchIndex:
    """The index definition imagerag created before attributes were declared."""
    profile = profile_name(model)
    return SearchIndex(
        name=name,
        fields=[
            SearchField(name="id", type=STRING, key=True, filterable=True, sortable=True),
            SearchField(name="description", type=STRING, searchable=True),
            SearchField(
                name="image_vector",
                type=VECTOR,
                searchable=True,
                vector_search_dimensions=model.dimensions,
                vector_search_profile_name=profile,
            ),
            SearchField(name="filepath", type=STRING, filterable=True),
            SearchField(name="url", type=STRING),
            SearchField(name="title", type=STRING, searchable=True),
            SearchField(name="source", type=STRING, filterable=True),
            SearchField(name="model_name", type=STRING, filterable=True),
            SearchField(name="model_version", type=STRING, filterable=True),
            SearchField(name="content_hash", type=STRING),
        ],
        vector_search=VectorSearch(
            algorithms=[
                HnswAlgorithmConfiguration(
                    name="imagerag-hnsw-cosine",
                    parameters=HnswParameters(
                        m=4,
                        ef_construction=400,
                        ef_search=500,
                        metric=VectorSearchAlgorithmMetric.COSINE,
                    ),
                )
            ],
            profiles=[
                VectorSearchProfile(
                    name=profile, algorithm_configuration_name="imagerag-hnsw-cosine"
                )
            ],
        ),
    )


def test_an_index_made_by_the_old_definition_keeps_working(search: FakeSearchService) -> None:
    index_client(search).create_index(_old_definition("images-v", MODEL))
    assert _attributes(search)["url"]["searchable"]  # the service's default for strings
    before = len(search.requests)
    index = open_index(search)
    index.ensure(MODEL)
    assert index.model() == MODEL
    assert [r.method for r in search.requests[before:]] == ["GET", "GET"]  # never updated
    index.upsert([document(i, source="c/a.json") for i in range(4)])
    index.upsert([document(i, source="c/b.json") for i in range(4, 6)])
    assert set(index.get_states([document(1).id, document(5).id])) == {
        document(1).id,
        document(5).id,
    }
    assert len(index.ids_from_source("c/a.json")) == 4
    assert index.vector_search(document(2).image_vector, top=1)[0].id == document(2).id
    assert len(index.text_search("dress", top=10, filter="source eq 'c/b.json'")) == 2
    index.delete([document(0).id])
    assert len(index.ids_from_source("c/a.json")) == 3


def test_updating_an_existing_fields_attributes_is_refused_as_the_service_does(
    search: FakeSearchService,
) -> None:
    client = index_client(search)
    client.create_index(_old_definition("images-v", MODEL))
    with pytest.raises(HttpResponseError) as caught:
        client.create_or_update_index(index_definition("images-v", MODEL))
    assert caught.value.status_code == 400
    assert caught.value.error is not None and caught.value.error.code == "OperationNotAllowed"
    assert caught.value.error.details[0].code == "CannotChangeExistingField"
    assert caught.value.error.message == "Existing field 'id' cannot be changed."
    # What the service does allow: a new field, and retrievable changed on an existing one.
    current = client.get_index("images-v")
    current.fields.append(SearchField(name="notes", type=STRING, searchable=True))
    next(f for f in current.fields if f.name == "content_hash").hidden = True
    client.create_or_update_index(current)
    fields = _attributes(search)
    assert fields["notes"]["searchable"] and not fields["content_hash"]["retrievable"]


@pytest.mark.parametrize(
    ("field", "said"),
    [
        (
            SearchField(name="n", type=SearchFieldDataType.Int32, searchable=True),
            "cannot be searchable",
        ),
        (
            SearchField(
                name="v",
                type=VECTOR,
                searchable=True,
                filterable=True,
                vector_search_dimensions=DIMS,
                vector_search_profile_name=profile_name(MODEL),
            ),
            "cannot be filterable",
        ),
        (
            SearchField(name="tags", type=SearchFieldDataType.Collection(STRING), sortable=True),
            "cannot be sortable",
        ),
    ],
)
def test_stand_in_enforces_the_attribute_rules(
    search: FakeSearchService, field: SearchField, said: str
) -> None:
    definition = index_definition("images-v", MODEL)
    definition.fields.append(field)
    with pytest.raises(HttpResponseError, match=said) as caught:
        index_client(search).create_index(definition)
    assert caught.value.status_code == 400
    search.violations.clear()  # the refusal was the point


# ====================================================================== 3. batch sizes


def test_batches_of_1024_d_documents_are_sized_from_the_bytes_sent(
    search: FakeSearchService,
) -> None:
    index = open_index(search)
    index.ensure(VISION)
    documents = [document(i, model=VISION) for i in range(1500)]
    index.upsert(documents)
    sent = search.requests_to("/docs/search.index")
    assert sum(r.actions for r in sent) == 1500 and len(sent) == 3
    bodies = [document_body(d) for d in documents]
    start = 0
    for request in sent:
        batch = bodies[start : start + request.actions]
        start += request.actions
        assert request.body_bytes == request_bytes("mergeOrUpload", batch)  # exact
        assert request.body_bytes <= 16_000_000 and request.actions <= 1000
    # Full batches are full: within one document of the limit (no 5 % left unused).
    assert all(r.body_bytes > 16_000_000 - 30_000 for r in sent[:-1])
    assert len(index.ids_from_source("images/metadata.json")) == 1500


def _post_batch(service: FakeSearchService, body: str) -> requests.Response:
    return requests.post(
        f"{service.endpoint}/indexes('images-v')/docs/search.index",
        params={"api-version": "2024-07-01"},
        headers={"api-key": KEY, "Content-Type": "application/json"},
        data=body.encode(),
        verify=service.ca_file,
        timeout=60,
    )


def test_the_stand_in_measures_the_body_and_refuses_one_over_16_mb(
    search: FakeSearchService,
) -> None:
    open_index(search).ensure(VISION)
    batch = [document_body(document(i, model=VISION)) for i in range(600)]
    short = 16_000_000 - request_bytes("mergeOrUpload", batch)
    assert short > 0
    batch[-1]["description"] += "x" * short  # exactly 16,000,000 bytes
    actions = [{"@search.action": "mergeOrUpload", **d} for d in batch]
    body = json.dumps({"value": actions})
    assert len(body) == request_bytes("mergeOrUpload", batch) == 16_000_000
    assert _post_batch(search, body).status_code == 200
    batch[-1]["description"] += "x"
    actions[-1] = {"@search.action": "mergeOrUpload", **batch[-1]}
    over = _post_batch(search, json.dumps({"value": actions}))
    assert over.status_code == 413
    assert [r.body_bytes for r in search.requests_to("/docs/search.index")] == [
        16_000_000,
        16_000_001,
    ]
    assert len(search.violations) == 1 and "over 16 MB" in search.violations[0]
    search.violations.clear()


# ====================================================================== 4. model version


@pytest.mark.parametrize("version", ["latest", "2023-4-15", "2023-02-30", " 2023-04-15", ""])
def test_a_model_version_that_is_not_a_date_is_refused_at_construction(version: str) -> None:
    with pytest.raises(ValueError) as caught:
        AzureVisionVectorizer(
            endpoint="https://vision.example", key="k", token_provider=None, model_version=version
        )
    message = str(caught.value)
    assert "AZURE_VISION_MODEL_VERSION" in message and "2023-04-15" in message
    assert repr(version) in message


def test_latest_is_refused_where_settings_build_the_vectorizer() -> None:
    settings = config.Settings(
        vision_endpoint="https://vision.example", vision_key="k", vision_model_version="latest"
    )
    with pytest.raises(ValueError, match="AZURE_VISION_MODEL_VERSION='latest'"):
        config.vectorizer(settings)


def test_why_latest_cannot_work_the_service_answers_the_concrete_version() -> None:
    with FakeVisionService(key="k") as vision:
        answered = requests.post(
            f"{vision.endpoint}/computervision/retrieval:vectorizeImage",
            params={"api-version": "2024-02-01", "model-version": "latest"},
            data=picture_bytes(3),
            headers={"Ocp-Apim-Subscription-Key": "k", "Content-Type": "application/octet-stream"},
            timeout=10,
        )
        assert answered.status_code == 200
        assert answered.json()["modelVersion"] == "2023-04-15"
        older = AzureVisionVectorizer(
            endpoint=vision.endpoint, key="k", token_provider=None, model_version="2022-04-11"
        )
        assert len(older.vectorize_image(picture_bytes(4))) == 1024
        assert older.model.version == "2022-04-11"
        assert vision.violations == []
