"""Grounded chat without services: validation, fusion, strictness, query, URL policy, shapes."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sample_images import altered_copy, picture_bytes

from imagerag import retrieval
from imagerag.adapters.extractive import ExtractiveAnswerer
from imagerag.chat import completion, errors, prompt_image, response
from imagerag.chat import request as parsing
from imagerag.image_links import ImageLinks
from imagerag.ports import (
    AnswererError,
    AnswerRequest,
    FieldMapping,
    FieldMappingError,
    ImageEmbedding,
    IndexNotFoundError,
    InvalidFilterError,
    ModelInfo,
    SearchHit,
    VectorizerInputError,
    VectorizerUnavailableError,
)

P = "data_sources[0].parameters"
JPEG = picture_bytes(1)
DATA_URL = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()


def body(**overrides: Any) -> bytes:
    data: dict[str, Any] = {
        "messages": [{"role": "user", "content": "show me red things"}],
        "data_sources": [{"type": "azure_search", "parameters": {"index_name": "images-v"}}],
    }
    data.update(overrides)
    return json.dumps(data).encode()


def params(**values: Any) -> list[dict[str, Any]]:
    return [{"type": "azure_search", "parameters": {"index_name": "images-v", **values}}]


def user(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


# --------------------------------------------------------------------------- validation


BAD_REQUESTS = [
    (b"{not json", None, "invalid_json"),
    (b"[1, 2]", None, "invalid_type"),
    (body(messages=None), "messages", "missing_required_parameter"),
    (body(messages="hi"), "messages", "invalid_type"),
    (body(messages=[]), "messages", "empty_array"),
    (body(messages=["hi"]), "messages[0]", "invalid_type"),
    (body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role", "invalid_value"),
    (body(messages=[{"role": "user", "content": 5}]), "messages[0].content", "invalid_type"),
    (
        body(messages=[user({"type": "audio", "audio": {}})]),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (body(messages=[user({"type": "text", "text": 3})]), "messages[0].content[0].text", None),
    (
        body(messages=[user(text("a"), {"type": "image_url", "image_url": {}})]),
        "messages[0].content[1].image_url.url",
        "invalid_value",
    ),
    (
        body(messages=[user(text("a")), {"role": "assistant", "content": "b"}]),
        "messages[1].role",
        "invalid_value",
    ),
    (body(stream="yes"), "stream", "invalid_type"),
    (body(data_sources={}), "data_sources", "invalid_type"),
    (body(data_sources=params() * 2), "data_sources", "invalid_value"),
    (
        body(data_sources=[{"type": "elasticsearch", "parameters": {}}]),
        "data_sources[0].type",
        None,
    ),
    (body(data_sources=[{"type": "azure_search"}]), P, "missing_required_parameter"),
    (body(data_sources=params(index_name=None)), f"{P}.index_name", "invalid_value"),
    (body(data_sources=params(index_name="Bad Name!")), f"{P}.index_name", "invalid_value"),
    (body(data_sources=params(strictness=0)), f"{P}.strictness", "invalid_value"),
    (body(data_sources=params(strictness=6)), f"{P}.strictness", "invalid_value"),
    (body(data_sources=params(strictness=2.5)), f"{P}.strictness", "invalid_value"),
    (body(data_sources=params(strictness=True)), f"{P}.strictness", "invalid_value"),
    (body(data_sources=params(top_n_documents=0)), f"{P}.top_n_documents", "invalid_value"),
    (body(data_sources=params(top_n_documents=21)), f"{P}.top_n_documents", "invalid_value"),
    (body(data_sources=params(in_scope="yes")), f"{P}.in_scope", "invalid_type"),
    (body(data_sources=params(query_type="fuzzy")), f"{P}.query_type", "invalid_value"),
    (body(data_sources=params(filter=3)), f"{P}.filter", "invalid_type"),
    (body(data_sources=params(role_information=[])), f"{P}.role_information", "invalid_type"),
    (
        body(data_sources=params(include_contexts=["citations", "secrets"])),
        f"{P}.include_contexts",
        "invalid_value",
    ),
    (
        body(data_sources=params(fields_mapping={"image_vector_fields": "image_vector"})),
        f"{P}.fields_mapping.image_vector_fields",
        "invalid_value",
    ),
    (
        body(data_sources=params(fields_mapping={"title_field": 7})),
        f"{P}.fields_mapping.title_field",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(("raw", "param", "code"), BAD_REQUESTS)
def test_bad_requests_are_refused_naming_the_field(raw: bytes, param: str | None, code: str | None):
    with pytest.raises(errors.ChatError) as caught:
        parsing.parse_request(raw, default_index="images-v")
    error = caught.value
    assert error.status == 400
    assert error.param == param
    if code is not None:
        assert error.code == code
    body = error.body()["error"]
    # param and code are strings in the inference document: absent rather than null.
    assert set(body) == {"message", "type", "code"} | ({"param"} if param else set())
    assert body["type"] == "invalid_request_error"


def test_defaults_and_full_parameters_are_parsed():
    plain = parsing.parse_request(
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
        default_index="products-v",
    )
    assert plain.data_source == parsing.DataSource(index_name="products-v")
    assert plain.data_source.top_n == 5 and plain.data_source.strictness == 3
    assert plain.data_source.in_scope is True and plain.stream is False

    full = parsing.parse_request(
        body(
            stream=True,
            data_sources=params(
                query_type="vector",
                top_n_documents=3,
                strictness=5,
                in_scope=False,
                role_information="Be brief.",
                filter="source eq 'x'",
                include_contexts=["citations", "all_retrieved_documents"],
                fields_mapping={
                    "image_vector_fields": ["vec"],
                    "content_fields": ["caption", "tags"],
                    "title_field": None,
                    "url_field": "link",
                },
                authentication={"type": "api_key", "key": "ignored"},
            ),
        ),
        default_index="images-v",
    )
    source = full.data_source
    assert full.stream is True
    assert (source.query_type, source.top_n, source.strictness, source.in_scope) == (
        "vector",
        3,
        5,
        False,
    )
    assert source.role_information == "Be brief." and source.filter == "source eq 'x'"
    assert source.include_contexts == ("citations", "all_retrieved_documents")
    assert source.fields == FieldMapping(
        image_vector_fields=("vec",),
        content_fields=("caption", "tags"),
        title_field=None,
        url_field="link",
        filepath_field="filepath",
    )


# --------------------------------------------------------------------------- prompt image


def test_data_urls_are_decoded_and_checked():
    assert prompt_image.load_prompt_image(DATA_URL, "p", prompt_image.ImageUrlPolicy()) == JPEG

    def refused(url: str) -> errors.ChatError:
        with pytest.raises(errors.ChatError) as caught:
            prompt_image.load_prompt_image(
                url, "messages[0].content[1].image_url.url", prompt_image.ImageUrlPolicy()
            )
        assert caught.value.param == "messages[0].content[1].image_url.url"
        return caught.value

    text_file = "data:image/png;base64," + base64.b64encode(b"hello, not an image").decode()
    assert (refused(text_file).status, refused(text_file).code) == (400, "invalid_image")
    assert refused("data:text/plain;base64,aGVsbG8=").code == "invalid_image"
    assert refused("data:image/jpeg;base64,%%%").status == 400
    assert refused("data:image/jpeg,rawbytes").status == 400
    huge = "data:image/jpeg;base64," + "A" * (28 * 1024 * 1024)
    assert (refused(huge).status, refused(huge).code) == (413, "image_too_large")
    assert refused("ftp://example.com/a.jpg").status == 400


def public(host: str, port: int) -> list[str]:
    return {"images.example.com": ["93.184.216.34", "2606:2800:220:1::1"]}.get(host, [])


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["93.184.216.34", "192.168.1.5"],  # one private address is enough to refuse
        ["169.254.169.254"],  # cloud metadata endpoint
        ["::1"],
        ["fe80::1"],
        ["fd00::5"],
        ["::ffff:127.0.0.1"],
        ["100.64.0.1"],  # carrier-grade NAT
        ["0.0.0.0"],
    ],
)
def test_allowed_hosts_resolving_to_non_public_addresses_are_refused(addresses: list[str]):
    policy = prompt_image.ImageUrlPolicy(
        allowlist=("cdn.example.com",), resolve=lambda h, p: addresses
    )
    with pytest.raises(errors.ChatError) as caught:
        prompt_image.check_image_url(
            "https://cdn.example.com/a.jpg", policy, "messages[0].content[0]"
        )
    assert caught.value.status == 400
    assert caught.value.code == "image_url_not_allowed"
    assert caught.value.param == "messages[0].content[0]"


def test_allow_list_decides_which_hosts_are_fetched():
    policy = prompt_image.ImageUrlPolicy(
        allowlist=("images.example.com", "*.cdn.example.org"),
        resolve=lambda h, p: ["93.184.216.34"],
    )
    assert prompt_image.check_image_url("https://images.example.com/a.jpg", policy, "p") == (
        "images.example.com",
        443,
        "93.184.216.34",
    )
    assert prompt_image.check_image_url("http://x.cdn.example.org:8080/a", policy, "p")[1:] == (
        8080,
        "93.184.216.34",
    )
    for url in (
        "https://evil.example.com/a.jpg",
        "https://images.example.com.evil.net/a.jpg",
        "https://cdn.example.org/a.jpg",  # "*." means subdomains only
    ):
        with pytest.raises(errors.ChatError) as caught:
            prompt_image.check_image_url(url, policy, "p")
        assert caught.value.code == "image_url_not_allowed"
    nothing_allowed = prompt_image.ImageUrlPolicy(resolve=public)
    with pytest.raises(errors.ChatError):
        prompt_image.check_image_url("https://images.example.com/a.jpg", nothing_allowed, "p")


def test_a_host_that_does_not_resolve_is_a_bad_request():
    def fail(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    policy = prompt_image.ImageUrlPolicy(allowlist=("nowhere.example",), resolve=fail)
    with pytest.raises(errors.ChatError) as caught:
        prompt_image.check_image_url("https://nowhere.example/a.jpg", policy, "p")
    assert (caught.value.status, caught.value.code) == (400, "invalid_image_url")


# --------------------------------------------------------------------------- query


def test_query_uses_the_last_user_turn_and_falls_back_to_an_earlier_image():
    messages = [
        user(text("what is this?"), image("data:image/png;base64,AAA"), image(DATA_URL)),
        {"role": "assistant", "content": "A cat [doc1]."},
        user(text("and where"), text("was it taken?")),
    ]
    query = retrieval.extract_query(messages)
    assert query.text == "and where was it taken?"
    assert query.image == retrieval.PromptImage(
        url=DATA_URL, param="messages[0].content[2].image_url.url", message_index=0
    )

    with_new_image = [*messages, {"role": "assistant", "content": "Paris"}, user(image("data:x"))]
    newest = retrieval.extract_query(with_new_image)
    assert newest.text == "" and newest.image is not None and newest.image.message_index == 4

    assert retrieval.extract_query([{"role": "user", "content": "just text"}]) == retrieval.Query(
        text="just text", image=None
    )


# --------------------------------------------------------------------------- fusion


def hit(doc_id: str, score: float = 1.0) -> SearchHit:
    return SearchHit(
        id=doc_id,
        score=score,
        content=f"about {doc_id}",
        title=f"{doc_id}.jpg",
        url=f"http://blob/{doc_id}.jpg",
        filepath=f"{doc_id}.jpg",
    )


def test_rrf_sums_weighted_reciprocal_ranks_with_k_60():
    fused = retrieval.rrf(
        [
            retrieval.RankedList("image", [hit("a"), hit("b"), hit("c")]),
            retrieval.RankedList("text", [hit("c"), hit("a"), hit("a")], weight=0.5),
        ]
    )
    assert fused["a"] == pytest.approx(1 / 61 + 0.5 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 0.5 / 61)
    assert retrieval.rrf([]) == {}


def test_strictness_rule_floors_gaps_and_text_ranks():
    image_hits = retrieval.RankedList(
        "image", [hit("dup", 0.95), hit("near", 0.8), hit("far", 0.7), hit("junk", 0.3)]
    )
    model = "efficientnet-lite0"
    assert retrieval.passing_ids(image_hits, 1, model) == {"dup", "near", "far", "junk"}
    assert retrieval.passing_ids(image_hits, 2, model) == {"dup", "near", "far"}
    assert retrieval.passing_ids(image_hits, 3, model) == {"dup", "near"}
    assert retrieval.passing_ids(image_hits, 5, model) == {"dup"}
    # No strong match at all: the floor drops everything (relative cut alone would keep one).
    weak = retrieval.RankedList("image", [hit("x", 0.55), hit("y", 0.5)])
    assert retrieval.passing_ids(weak, 3, model) == set()

    texts = retrieval.RankedList("text", [hit(f"t{i}", 10.0 - i) for i in range(30)])
    assert len(retrieval.passing_ids(texts, 1, model)) == 30
    assert retrieval.passing_ids(texts, 5, model) == {"t0", "t1", "t2"}
    with pytest.raises(ValueError):
        retrieval.passing_ids(texts, 0, model)


def matched(doc_id: str, score: float, match: float) -> SearchHit:
    """An image hit that verification matched against the prompt image."""
    return replace(hit(doc_id, score), match=match)


def test_the_best_picture_match_passes_whatever_its_cosine():
    image_hits = retrieval.RankedList(
        "image", [matched("copy", 0.5, 0.75), matched("other", 0.45, 0.4), hit("look", 0.85)]
    )
    model = "efficientnet-lite0"
    # Level 3: "look" by cosine, "copy" as the best match (>= 0.6, well ahead of the next).
    assert retrieval.passing_ids(image_hits, 3, model) == {"copy", "look"}
    # Level 5 asks a match of 0.8.
    assert retrieval.passing_ids(image_hits, 5, model) == {"look"}
    # Two pictures matching about as well: neither is sure.
    twins = retrieval.RankedList("image", [matched("copy", 0.5, 0.75), matched("twin", 0.45, 0.7)])
    assert retrieval.passing_ids(twins, 3, model) == set()


def test_verified_pictures_come_first_among_near_duplicates():
    # The image list as verification ordered it: the matched picture first, though a
    # look-alike (a near-duplicate by cosine alone) is closer.
    lists = [retrieval.RankedList("image", [matched("copy", 0.82, 0.98), hit("look", 0.86)])]
    result = retrieval.fuse(lists, retrieval.SearchOptions(), "efficientnet-lite0")
    assert [d.hit.id for d in result.documents] == ["copy", "look"]
    unverified = [retrieval.RankedList("image", [hit("look", 0.86), hit("copy", 0.82)])]
    result = retrieval.fuse(unverified, retrieval.SearchOptions(), "efficientnet-lite0")
    assert [d.hit.id for d in result.documents] == ["look", "copy"]


def test_fuse_keeps_top_n_passing_and_reports_the_dropped():
    lists = [
        retrieval.RankedList("image", [hit("a", 0.95), hit("b", 0.9), hit("c", 0.4)]),
        retrieval.RankedList("text", [hit("c", 3.0), hit("d", 2.0)], weight=0.5),
    ]
    options = retrieval.SearchOptions(top_n=2, strictness=5)
    result = retrieval.fuse(
        lists, options, "efficientnet-lite0", {"image": "<image>", "text": "red"}
    )
    assert [d.hit.id for d in result.documents] == ["a", "b"]
    everything = {d.hit.id: d for d in result.all_documents}
    assert set(everything) == {"a", "b", "c", "d"}
    # c clears text rank 1 (strictness 5 keeps three text ranks) though its image score fails.
    assert everything["c"].kept and everything["d"].kept
    assert everything["c"].scores == {"image": 0.4, "text": 3.0}
    assert everything["c"].search_queries == ("<image>", "red")
    assert result.intent == ["red"]

    only_image = retrieval.fuse(lists[:1], options, "efficientnet-lite0")
    assert not {d.hit.id: d for d in only_image.all_documents}["c"].kept


# --------------------------------------------------------------------------- pipeline


DEFAULT_FIELDS = FieldMapping()


class FakeVectorizer:
    def __init__(self, model: ModelInfo, error: Exception | None = None) -> None:
        self.model = model
        self.error = error
        self.images: list[bytes] = []
        self.interactive: list[bool] = []  # the flag of every call, images and text

    def vectorize_image(self, data: bytes, *, interactive: bool = False) -> list[float]:
        self.interactive.append(interactive)
        if self.error:
            raise self.error
        self.images.append(data)
        return [1.0, 0.0]

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        return ImageEmbedding(self.vectorize_image(data, interactive=interactive))

    def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
        self.interactive.append(interactive)
        return [0.0, 1.0]


class FakeIndex:
    """Scores are given per document for image and text queries."""

    def __init__(
        self,
        image_scores: dict[str, float],
        text_ranked: list[str],
        model: ModelInfo | None,
        missing: bool = False,
    ) -> None:
        self.name = "images-v"
        self._image = image_scores
        self._text = text_ranked
        self._model = model
        self._missing = missing
        self.filters: list[str | None] = []
        self.mappings: list[FieldMapping] = []

    def model(self) -> ModelInfo | None:
        return self._model

    def vector_search(
        self,
        vector: list[float],
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
    ) -> list[SearchHit]:
        if self._missing:
            raise IndexNotFoundError(self.name)
        if filter == "bad":
            raise InvalidFilterError("unknown field")
        if fields.image_vector_fields != DEFAULT_FIELDS.image_vector_fields:
            raise FieldMappingError("not a vector field", mapping="image_vector_fields")
        self.filters.append(filter)
        self.mappings.append(fields)
        ranked = sorted(self._image.items(), key=lambda kv: -kv[1])[:top]
        return [hit(doc_id, score) for doc_id, score in ranked]

    def text_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
    ) -> list[SearchHit]:
        if self._missing:
            raise IndexNotFoundError(self.name)
        # A full-text engine returns documents holding the query's words.
        return [
            replace(hit(doc_id, 5.0 - i), content=f"{text} ({doc_id})")
            for i, doc_id in enumerate(self._text[:top])
        ]

    def description_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = DEFAULT_FIELDS,
        filter: str | None = None,
    ) -> list[SearchHit] | None:
        return None  # like an Azure AI Search index: no description vectors


class RecordingAnswerer:
    model = "recording-model"
    honoured_options: frozenset[str] = frozenset()

    def __init__(self, error: AnswererError | None = None) -> None:
        self.requests: list[AnswerRequest] = []
        self.error = error

    @property
    def sees_images(self) -> bool:
        return False

    def stream_answer(self, request: AnswerRequest, *, options: Any = None) -> Iterator[str]:
        self.requests.append(request)
        if self.error:
            raise self.error
        yield "See "
        yield " ".join(f"[{d.label}]" for d in request.documents)


LITE = ModelInfo("efficientnet-lite0", "1", 2, False)


def deps(
    index: FakeIndex, vectorizer: FakeVectorizer | None = None, answerer: Any = None
) -> completion.ChatDependencies:
    vec = vectorizer or FakeVectorizer(LITE)
    return completion.ChatDependencies(
        vectorizer=lambda: vec,
        index=lambda name: index,
        answerer=answerer or RecordingAnswerer(),
        blobs=None,
        citation_url=lambda h: f"http://app/api/images/c/{h.filepath}",
    )


def run(
    request_body: bytes, dependencies: completion.ChatDependencies
) -> tuple[dict[str, Any], str]:
    outcome = completion.complete(
        parsing.parse_request(request_body, default_index="images-v"), dependencies
    )
    return outcome.context, "".join(outcome.deltas)


def test_image_query_cites_the_closest_image_first_and_reports_dropped_documents():
    index = FakeIndex(
        {"orig": 0.93, "other": 0.81, "far": 0.45, "junk": 0.3}, ["other", "far"], LITE
    )
    answerer = RecordingAnswerer()
    request = body(
        messages=[user(text("what is this?"), image(DATA_URL))],
        data_sources=params(include_contexts=["citations", "intent", "all_retrieved_documents"]),
    )
    context, content = run(request, deps(index, answerer=answerer))
    citations = context["citations"]
    # "other" is also a text match, yet the near-duplicate stays first; "far" is a weak image
    # match kept by its text rank; "junk" passes nowhere.
    assert [c["filepath"] for c in citations] == ["orig.jpg", "other.jpg", "far.jpg"]
    assert citations[0] == {
        "content": "about orig",
        "title": "orig.jpg",
        "url": "http://app/api/images/c/orig.jpg",
        "filepath": "orig.jpg",
        "chunk_id": "0",
    }
    assert content == "See [doc1] [doc2] [doc3]"
    assert json.loads(context["intent"]) == ["what is this?"]
    dropped = {d["filepath"]: d for d in context["all_retrieved_documents"]}
    assert "filter_reason" not in dropped["far.jpg"]  # kept: the service sends none
    assert dropped["junk.jpg"]["filter_reason"] == "score"
    assert list(dropped)[-1] == "junk.jpg"
    assert dropped["orig.jpg"]["original_search_score"] == 0.93
    assert answerer.requests[0].documents[0].label == "doc1"


def test_in_scope_answers_not_found_when_nothing_passes_strictness():
    index = FakeIndex({"a": 0.5, "b": 0.45}, [], LITE)
    answerer = RecordingAnswerer()
    request = body(messages=[user(image(DATA_URL))], data_sources=params(strictness=4))
    context, content = run(request, deps(index, answerer=answerer))
    assert content == completion.NOT_FOUND_ANSWER
    assert context["citations"] == []
    assert answerer.requests == []

    out_of_scope = body(
        messages=[user(image(DATA_URL))], data_sources=params(strictness=4, in_scope=False)
    )
    _, content = run(out_of_scope, deps(index, answerer=answerer))
    assert content == "See "
    assert answerer.requests[0].in_scope is False


def test_text_question_finds_documents_by_description_without_vectorizing():
    index = FakeIndex({"a": 0.99}, ["b", "c"], LITE)
    vectorizer = FakeVectorizer(LITE)
    context, _ = run(body(), deps(index, vectorizer))
    assert [c["filepath"] for c in context["citations"]] == ["b.jpg", "c.jpg"]
    assert vectorizer.images == []


@pytest.mark.parametrize(
    ("index", "vectorizer", "answerer", "status", "code", "param"),
    [
        (
            FakeIndex({}, [], None, missing=True),
            None,
            None,
            404,
            "index_not_found",
            f"{P}.index_name",
        ),
        (
            FakeIndex({}, [], ModelInfo("azure-ai-vision", "2023-04-15", 1024, True)),
            None,
            None,
            409,
            "model_mismatch",
            f"{P}.index_name",
        ),
        (
            FakeIndex({"a": 0.9}, [], LITE),
            FakeVectorizer(LITE, VectorizerUnavailableError("busy", status=429, retry_after_s=7)),
            None,
            429,
            "rate_limit_exceeded",
            None,
        ),
        (
            FakeIndex({"a": 0.9}, [], LITE),
            FakeVectorizer(LITE, VectorizerUnavailableError("down", status=500)),
            None,
            503,
            "service_unavailable",
            None,
        ),
        (
            FakeIndex({"a": 0.9}, [], LITE),
            None,
            RecordingAnswerer(AnswererError("slow down", status=429, retry_after_s=3)),
            429,
            "rate_limit_exceeded",
            None,
        ),
        (
            FakeIndex({"a": 0.9}, [], LITE),
            None,
            RecordingAnswerer(AnswererError("gone", status=None)),
            503,
            "service_unavailable",
            None,
        ),
    ],
)
def test_dependency_failures_map_to_documented_statuses(
    index, vectorizer, answerer, status, code, param
):
    request = body(messages=[user(text("this?"), image(DATA_URL))])
    with pytest.raises(errors.ChatError) as caught:
        run(request, deps(index, vectorizer, answerer))
    assert (caught.value.status, caught.value.code, caught.value.param) == (status, code, param)
    if status == 429:
        assert caught.value.retry_after_s in (7, 3)


def test_an_invalid_filter_is_a_bad_request_naming_the_filter():
    index = FakeIndex({"a": 0.9}, [], LITE)
    with pytest.raises(errors.ChatError) as caught:
        run(body(messages=[user(image(DATA_URL))], data_sources=params(filter="bad")), deps(index))
    assert (caught.value.status, caught.value.param) == (400, f"{P}.filter")


def test_a_field_the_index_cannot_serve_is_a_bad_request_naming_the_mapping():
    index = FakeIndex({"a": 0.9}, [], LITE)
    mapping = {"image_vector_fields": ["colour"]}
    request = body(messages=[user(image(DATA_URL))], data_sources=params(fields_mapping=mapping))
    with pytest.raises(errors.ChatError) as caught:
        run(request, deps(index))
    assert (caught.value.status, caught.value.param) == (
        400,
        f"{P}.fields_mapping.image_vector_fields",
    )


def test_a_registered_sources_mapping_applies_when_the_request_names_none():
    index = FakeIndex({"a": 0.9}, [], LITE)
    mapping = FieldMapping(content_fields=("caption",), title_field="name")
    dependencies = deps(index)
    dependencies.mapping_for = lambda name: mapping if name == "images-v" else None
    run(body(messages=[user(image(DATA_URL))]), dependencies)
    assert index.mappings == [mapping]
    # A mapping in the request wins over the registered one.
    own = {"image_vector_fields": ["image_vector"], "content_fields": ["description"]}
    run(
        body(messages=[user(image(DATA_URL))], data_sources=params(fields_mapping=own)),
        dependencies,
    )
    assert index.mappings[-1] == FieldMapping()


def test_an_index_without_a_recorded_model_is_trusted():
    index = FakeIndex({"a": 0.9}, [], None)
    context, _ = run(body(messages=[user(image(DATA_URL))]), deps(index))
    assert [c["filepath"] for c in context["citations"]] == ["a.jpg"]


def test_a_message_with_nothing_to_search_is_refused():
    with pytest.raises(errors.ChatError) as caught:
        run(body(messages=[user(text("  "))]), deps(FakeIndex({}, [], LITE)))
    assert (caught.value.status, caught.value.param) == (400, "messages[0].content")


# --------------------------------------------------------------------------- shapes


def test_completion_and_chunk_shapes():
    context = {"citations": [], "intent": "[]"}
    body = response.completion_body(
        completion_id="chatcmpl-1", created=5, model="gpt-4o", content="hi [doc1]", context=context
    )
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hi [doc1]",
        "refusal": None,
        "context": context,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["logprobs"] is None
    chunks = list(
        response.chunk_bodies(
            completion_id="chatcmpl-1",
            created=5,
            model="m",
            context=context,
            deltas=iter(["a", "", "b"]),
        )
    )
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 4
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "context": context}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["a", "b"]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    events = response.sse_body(chunks).decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert json.loads(events[0].removeprefix("data: ")) == chunks[0]
    assert response.new_completion_id().startswith("chatcmpl-")
    assert len(response.new_completion_id()) == len("chatcmpl-") + 32


def test_extractive_answer_cites_each_document():
    from imagerag.ports import GroundingDocument

    docs = [
        GroundingDocument("doc1", "A red bicycle [doc9] against a wall.", "bike.jpg", None),
        GroundingDocument("doc2", "A blue boat", None, None),
    ]
    answer = "".join(
        ExtractiveAnswerer().stream_answer(
            AnswerRequest(messages=[], documents=docs, role_information=None, in_scope=True)
        )
    )
    assert answer.startswith('The closest match in your data is "bike.jpg": A red bicycle')
    assert "[doc1]" in answer and "[doc2]" in answer and "[doc9]" not in answer
    assert ExtractiveAnswerer().sees_images is False


def test_grounding_images_are_small_jpeg_data_urls():
    big = picture_bytes(3, "PNG", size=(2000, 1500))
    url = completion.grounding_data_url(big)
    assert url.startswith("data:image/jpeg;base64,")
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(base64.b64decode(url.split(",", 1)[1]))) as small:
        assert max(small.size) == completion.GROUNDING_IMAGE_SIDE
    assert altered_copy(JPEG) != JPEG


# --------------------------------------------------------------------------- citation URLs


class FakeStore:
    """BlobStore.locate/read_url as an Azure store with or without signing."""

    def __init__(self, signs: bool) -> None:
        self.signs = signs

    def locate(self, url: str) -> tuple[str, str] | None:
        prefix = "https://acct.blob.core.windows.net/"
        if not url.startswith(prefix):
            return None
        container, _, path = url[len(prefix) :].partition("/")
        return container, path

    def read_url(self, container: str, path: str, *, expires_in_s: int) -> str | None:
        return (
            f"https://acct.blob.core.windows.net/{container}/{path}?sig=x" if self.signs else None
        )


def test_citation_urls_are_signed_or_served_by_the_app_and_never_open_other_containers():
    def at(url: str) -> SearchHit:
        return SearchHit("i", 1.0, "c", None, url, "a b.jpg")

    route = "http://host/api/images/"
    own = at("https://acct.blob.core.windows.net/images/a b.jpg")
    other = at("https://acct.blob.core.windows.net/private/a.jpg")
    elsewhere = at("https://example.com/a.jpg")
    signing, plain = FakeStore(signs=True), FakeStore(signs=False)
    links = ImageLinks(b"k" * 32, clock=lambda: 1000.0)

    def url(hit: SearchHit, store: Any) -> str | None:
        return completion.citation_url(
            hit, store, image_route=route, containers=["images"], links=links
        )

    assert url(own, signing) == "https://acct.blob.core.windows.net/images/a b.jpg?sig=x"
    linked = url(own, plain)
    assert linked is not None and linked.startswith("http://host/api/images/images/a%20b.jpg?")
    expires, signature = (part.split("=", 1)[1] for part in linked.split("?")[1].split("&"))
    assert links.verify("images", "a b.jpg", expires, signature)
    assert url(other, plain) is None
    assert url(elsewhere, signing) is None
    assert url(own, None) is None


def test_the_blob_store_signs_read_urls_only_with_an_identity():
    from azure.storage.blob import BlobServiceClient, UserDelegationKey

    from imagerag.adapters.blob import AzureBlobStore

    keyed = AzureBlobStore(
        service=BlobServiceClient.from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
            + base64.b64encode(b"k" * 32).decode()
            + ";EndpointSuffix=core.windows.net"
        )
    )
    assert keyed.read_url("images", "a.jpg", expires_in_s=60) is None
    assert keyed.locate("https://acct.blob.core.windows.net/images/dir/a%20b.jpg") == (
        "images",
        "dir/a b.jpg",
    )
    assert keyed.locate("https://other.blob.core.windows.net/images/a.jpg") is None

    class Token:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("not called: the delegation key request is faked")

    service = BlobServiceClient("https://acct.blob.core.windows.net", credential=Token())
    key = UserDelegationKey()
    key.signed_oid, key.signed_tid = "oid", "tid"
    key.signed_start, key.signed_expiry = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
    key.signed_service, key.signed_version = "b", "2021-08-06"
    key.value = base64.b64encode(b"s" * 32).decode()
    requested: list[Any] = []
    service.get_user_delegation_key = lambda start, expiry: requested.append(expiry) or key  # type: ignore[method-assign]
    store = AzureBlobStore(service=service)
    signed = store.read_url("images", "dir/a.jpg", expires_in_s=600)
    assert signed is not None
    assert signed.startswith("https://acct.blob.core.windows.net/images/dir/a.jpg?")
    assert "sp=r" in signed and "skoid=oid" in signed and "sig=" in signed
    assert store.read_url("images", "b.jpg", expires_in_s=600) is not None
    assert len(requested) == 1  # the delegation key is reused


def test_query_types_and_text_vectors_decide_which_lists_are_searched():
    vision = ModelInfo("azure-ai-vision", "2023-04-15", 2, True)

    class TextIndex(FakeIndex):
        def vector_search(self, vector: list[float], **kwargs: Any) -> list[SearchHit]:
            # [0, 1] is the text vector of FakeVectorizer: "t" is the text-to-image match.
            return (
                [hit("t", 0.3)] if vector == [0.0, 1.0] else super().vector_search(vector, **kwargs)
            )

    def lists(model: ModelInfo, query_type: str, image: bytes | None) -> list[str]:
        result = retrieval.retrieve(
            text="a red bicycle",
            image=image,
            vectorizer=FakeVectorizer(model),
            index=TextIndex({"i": 0.95}, ["w"], model),
            options=retrieval.SearchOptions(query_type=query_type),
        )
        return sorted({name for d in result.all_documents for name in d.scores})

    assert lists(vision, "vector_simple_hybrid", JPEG) == ["image", "text", "text_vector"]
    assert lists(vision, "vector", JPEG) == ["image", "text_vector"]
    assert lists(vision, "simple", None) == ["text"]
    # "simple" searches text only, even when the prompt has an image.
    assert lists(vision, "simple", JPEG) == ["text"]
    # The local model embeds no text: a "vector" text question has nothing to search.
    with pytest.raises(retrieval.QueryTypeError, match="does not embed text"):
        lists(LITE, "vector", None)
    assert lists(LITE, "vector", JPEG) == ["image"]

    class LongTextRefused(FakeVectorizer):
        def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
            raise VectorizerInputError("1..70 words")

    result = retrieval.retrieve(
        text="a red bicycle",
        image=None,
        vectorizer=LongTextRefused(vision),
        index=TextIndex({}, ["w"], vision),
        options=retrieval.SearchOptions(),
    )
    assert [d.hit.id for d in result.documents] == ["w"]


def test_retrieval_vectorizes_queries_as_interactive():
    # A chat query must not queue behind ingestion work inside the vectorizer.
    vision = ModelInfo("azure-ai-vision", "2023-04-15", 2, True)
    vectorizer = FakeVectorizer(vision)
    retrieval.retrieve(
        text="a red bicycle",
        image=JPEG,
        vectorizer=vectorizer,
        index=FakeIndex({"i": 0.95}, ["w"], vision),
        options=retrieval.SearchOptions(),
    )
    assert vectorizer.interactive == [True, True]  # the image, then the text


def test_text_lists_are_searched_while_the_image_is_vectorized():
    # A question beside a picture: the full-text search need not wait for the model's pass.
    vision = ModelInfo("azure-ai-vision", "2023-04-15", 2, True)
    text_searched = threading.Event()

    class SlowVectorizer(FakeVectorizer):
        def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
            self.overlapped = text_searched.wait(timeout=30)
            return super().embed_image(data, interactive=interactive)

    class SignallingIndex(FakeIndex):
        def text_search(self, text: str, **kwargs: Any) -> list[SearchHit]:
            text_searched.set()
            return super().text_search(text, **kwargs)

    vectorizer = SlowVectorizer(vision)
    result = retrieval.retrieve(
        text="a red bicycle",
        image=JPEG,
        vectorizer=vectorizer,
        index=SignallingIndex({"i": 0.95}, ["w"], vision),
        options=retrieval.SearchOptions(),
    )
    assert vectorizer.overlapped
    assert [d.hit.id for d in result.documents] == ["i", "w"]
