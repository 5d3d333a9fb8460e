"""What each query_type searches, the same on both index adapters (embedded and Azure AI Search
through its contract-checking stand-in), and the semantic ranker on Azure AI Search."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from fakes.search_service import FakeSearchService
from test_chat_contract import DOCS, MODEL, Vectorizer, document

from imagerag import retrieval
from imagerag.adapters.azure_search import AzureSearchImageIndex
from imagerag.adapters.azure_search_schema import SEMANTIC_CONFIGURATION
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.ports import FieldMapping, ImageIndex, SemanticConfigurationError

KEY = "test-search-key"
IMAGE = b"prompt image bytes (the stand-in vectorizer does not decode them)"


@pytest.fixture
def search_service() -> Iterator[FakeSearchService]:
    with FakeSearchService(api_key=KEY) as service:
        yield service
        assert service.violations == []


def azure_index(service: FakeSearchService) -> AzureSearchImageIndex:
    return AzureSearchImageIndex(
        endpoint=service.endpoint,
        name="images-v",
        credential=AzureKeyCredential(KEY),
        retry_backoff_factor=0.01,
        connection_verify=service.ca_file,
    )


@pytest.fixture(params=["local", "azure"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> ImageIndex:
    made: ImageIndex
    if request.param == "local":
        made = LocalImageIndex(directory=tmp_path / "index", name="images-v")
    else:
        made = azure_index(request.getfixturevalue("search_service"))
    made.ensure(MODEL)
    made.upsert([document(doc_id) for doc_id in DOCS])
    return made


def searched(index: ImageIndex, query_type: str, text: str, image: bytes | None) -> set[str]:
    result = retrieval.retrieve(
        text=text,
        image=image,
        vectorizer=Vectorizer(),
        index=index,
        options=retrieval.SearchOptions(query_type=query_type),
    )
    return {name for doc in result.all_documents for name in doc.scores}


# query_type -> lists searched for (image + text prompt, text-only prompt)
PLANS = {
    "simple": ({"text"}, {"text"}),
    "semantic": ({"text"}, {"text"}),
    "vector": ({"image", "text_vector"}, {"text_vector"}),
    "vector_simple_hybrid": ({"image", "text_vector", "text"}, {"text_vector", "text"}),
    "vector_semantic_hybrid": ({"image", "text_vector", "text"}, {"text_vector", "text"}),
}


@pytest.mark.parametrize("query_type", sorted(PLANS))
def test_each_query_type_searches_the_same_lists_on_both_adapters(
    index: ImageIndex, query_type: str
) -> None:
    with_image, text_only = PLANS[query_type]
    # "red" is in two descriptions and the text vector is near none: every list finds some.
    assert searched(index, query_type, "red", IMAGE) == with_image
    assert searched(index, query_type, "red", None) == text_only


@pytest.mark.parametrize("query_type", ["simple", "semantic"])
def test_text_query_types_refuse_an_image_only_prompt(index: ImageIndex, query_type: str) -> None:
    with pytest.raises(retrieval.QueryTypeError, match="only an image"):
        searched(index, query_type, "", IMAGE)


def semantic_bodies(service: FakeSearchService) -> list[dict[str, Any]]:
    bodies = [r.body or {} for r in service.requests_to("/docs/search.post.search")]
    return [b for b in bodies if b.get("queryType") == "semantic"]


def test_semantic_query_types_rank_with_the_semantic_ranker_on_azure(
    search_service: FakeSearchService,
) -> None:
    index = azure_index(search_service)
    index.ensure(MODEL)
    index.upsert([document(doc_id) for doc_id in DOCS])
    searched(index, "vector_simple_hybrid", "red", None)
    assert semantic_bodies(search_service) == []
    searched(index, "vector_semantic_hybrid", "red", None)
    (body,) = semantic_bodies(search_service)
    # The REST contract: queryType semantic, the index's configuration, search text.
    assert body["semanticConfiguration"] == SEMANTIC_CONFIGURATION
    assert body["search"] == "red" and "vectorQueries" not in body
    hits = index.text_search("red", top=5, semantic=True)
    assert {h.id for h in hits} == {"bike", "wheel"}
    assert all(0 <= h.score <= 4 for h in hits)  # the ranker's scale, not BM25
    with pytest.raises(SemanticConfigurationError, match="no semantic configuration 'other'"):
        index.text_search("red", top=5, semantic=True, semantic_configuration="other")


def test_the_embedded_index_refuses_a_named_semantic_configuration(tmp_path: Path) -> None:
    index = LocalImageIndex(directory=tmp_path / "index", name="images-v")
    index.ensure(MODEL)
    index.upsert([document(doc_id) for doc_id in DOCS])
    plain = index.text_search("red", top=5)
    assert index.text_search("red", top=5, semantic=True) == plain  # no ranker: BM25 order
    with pytest.raises(SemanticConfigurationError, match="no semantic configurations"):
        index.text_search("red", top=5, semantic=True, semantic_configuration="default")


@pytest.mark.parametrize("search", ["text", "vector"])
def test_content_fields_separator_on_both_adapters(index: ImageIndex, search: str) -> None:
    fields = FieldMapping(content_fields=("description", "title"), content_fields_separator=" | ")
    find: Callable[[], Any] = (
        (lambda: index.text_search("bicycle", top=1, fields=fields))
        if search == "text"
        else (lambda: index.vector_search([1.0, 0.0, 0.0, 0.0], top=1, fields=fields))
    )
    (hit,) = find()
    assert hit.content == f"{DOCS['bike'][0]} | bike.jpg"
