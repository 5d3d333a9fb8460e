"""The chat endpoint against the Azure OpenAI inference document (stable 2024-10-21): every
request field the document defines is honoured or refused with a 400 naming it, and every
body answered validates against the document's response schemas.

The fields walked come from the trimmed document in tests/spec/ (not from a list here): a
field the document gains without a case below fails the walk."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_service import FakeOpenAIService
from openapi_contract import (
    assert_chunk,
    assert_completion,
    assert_error,
    azure_search_fields,
    request_fields,
)
from sample_images import picture_bytes

from imagerag.adapters.azure_openai import AzureOpenAIAnswerer
from imagerag.adapters.extractive import ExtractiveAnswerer
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.chat import completion, endpoint
from imagerag.ports import Answerer, ImageEmbedding, ImageIndex, IndexDocument, ModelInfo

P = "data_sources[0].parameters"
SEARCH = "https://contoso.search.windows.net"
# A model that embeds images and text into 4 dimensions; unknown to the calibrated
# thresholds, so the default (relative) strictness rule applies.
MODEL = ModelInfo("contract-model", "1", 4, True)
IMAGE_VECTOR = [1.0, 0.0, 0.0, 0.0]
TEXT_VECTOR = [0.0, 1.0, 0.0, 0.0]
DOCS = {
    # id: (description, vector)
    "bike": ("a red bicycle leaning on a brick wall", [1.0, 0.0, 0.0, 0.0]),
    "wheel": ("a color wheel showing purple, red and green hues", [0.0, 0.0, 1.0, 0.0]),
    "dog": ("a brown dog running on grass", [0.0, 0.0, 0.0, 1.0]),
}
IMAGE_URL = "data:image/jpeg;base64," + base64.b64encode(picture_bytes(1)).decode()


class Vectorizer:
    """Fixed vectors: the prompt image is the bicycle's, text matches no picture."""

    model = MODEL

    def vectorize_image(self, data: bytes, *, interactive: bool = False) -> list[float]:
        return IMAGE_VECTOR

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        return ImageEmbedding(IMAGE_VECTOR)

    def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
        return TEXT_VECTOR


def document(doc_id: str) -> IndexDocument:
    description, vector = DOCS[doc_id]
    return IndexDocument(
        id=doc_id,
        description=description,
        image_vector=vector,
        filepath=f"{doc_id}.jpg",
        url=f"https://account.blob.core.windows.net/images/{doc_id}.jpg",
        title=f"{doc_id}.jpg",
        source="images/metadata.json",
        model_name=MODEL.name,
        model_version=MODEL.version,
        content_hash=f"{len(doc_id):064x}",
    )


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> ImageIndex:
    index = LocalImageIndex(directory=tmp_path_factory.mktemp("index"), name="images-v")
    index.ensure(MODEL)
    index.upsert([document(doc_id) for doc_id in DOCS])
    return index


@pytest.fixture(scope="module")
def openai_service() -> Iterator[FakeOpenAIService]:
    server = FakeOpenAIService().start()
    yield server
    server.stop()


class Chat:
    """Sends bodies through the endpoint, validating every answer against the document."""

    def __init__(self, index: ImageIndex, service: FakeOpenAIService) -> None:
        self.index = index
        self.service = service
        self.search_endpoint: str | None = SEARCH  # None: offline, the embedded index alone

    def answerer(self, kind: str) -> Answerer:
        if kind == "extractive":
            return ExtractiveAnswerer()
        return AzureOpenAIAnswerer.for_azure(
            endpoint=self.service.endpoint,
            deployment="gpt-4o",
            api_version="2024-10-21",
            key="test-key",
            max_retries=0,
        )

    def ask(
        self,
        *,
        answerer: str = "extractive",
        params: dict[str, Any] | None = None,
        content: Any = "a red bicycle",
        **fields: Any,
    ) -> tuple[int, Any]:
        """(status, body): the JSON body, or the list of chunks of a stream."""
        data = {
            "messages": [{"role": "user", "content": content}],
            "data_sources": [
                {"type": "azure_search", "parameters": {"index_name": "images-v", **(params or {})}}
            ],
            **fields,
        }
        deps = completion.ChatDependencies(
            vectorizer=Vectorizer,
            index=lambda name: self.index,
            answerer=self.answerer(answerer),
            blobs=None,
            search_endpoint=self.search_endpoint,
        )
        answer = endpoint.respond(json.dumps(data).encode(), deps, default_index="images-v")
        raw = answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)
        if answer.headers.get("Content-Type") == "text/event-stream":
            chunks = [
                json.loads(event.removeprefix("data: "))
                for event in raw.decode().split("\n\n")
                if event and event != "data: [DONE]"
            ]
            for chunk in chunks:
                assert_chunk(chunk)
            return answer.status, chunks
        body = json.loads(raw)
        if answer.status == 200:
            assert_completion(body)
        else:
            assert_error(body)
        return answer.status, body

    def refused(self, param: str, **kwargs: Any) -> str:
        """The message of a 400 that names ``param``."""
        status, body = self.ask(**kwargs)
        assert status == 400, body
        assert body["error"]["param"] == param, body
        return str(body["error"]["message"])

    def answered(self, **kwargs: Any) -> dict[str, Any]:
        status, body = self.ask(**kwargs)
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    def sent(self) -> dict[str, Any]:
        """The body the last model call carried."""
        return self.service.requests[-1].body


@pytest.fixture
def chat(local_index: ImageIndex, openai_service: FakeOpenAIService) -> Chat:
    return Chat(local_index, openai_service)


def content_of(body: dict[str, Any], i: int = 0) -> str:
    return str(body["choices"][i]["message"]["content"])


def citations(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["choices"][0]["message"]["context"]["citations"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- request fields

# (a valid value the Azure OpenAI model receives as is, a value outside the document's rule)
SENT_TO_MODEL: dict[str, tuple[Any, Any]] = {
    "temperature": (0.2, 3),
    "top_p": (0.5, "most"),
    "presence_penalty": (1.5, -2.5),
    "frequency_penalty": (-1.0, 2.01),
    "seed": (42, 4.5),
    "user": ("user-1234", 7),
    "logit_bias": ({"50256": -100}, {"50256": 101}),
    "response_format": ({"type": "json_object"}, {"type": "xml"}),
}


def sampling_case(name: str) -> Callable[[Chat], None]:
    valid, wrong = SENT_TO_MODEL[name]

    def case(chat: Chat) -> None:
        chat.answered(answerer="azure", **{name: valid})
        assert chat.sent()[name] == valid
        status, body = chat.ask(answerer="azure", **{name: wrong})
        assert status == 400 and body["error"]["param"].startswith(name), body
        # The offline answerer cannot apply it: refused, not ignored.
        assert "not supported" in chat.refused(name, **{name: valid})

    return case


def token_limit_case(name: str) -> Callable[[Chat], None]:
    def case(chat: Chat) -> None:
        chat.answered(answerer="azure", **{name: 50})
        assert chat.sent()[name] == 50
        chat.refused(name, **{name: 0})
        chat.refused(name, **{name: "many"})
        cut = chat.answered(**{name: 4})
        assert cut["choices"][0]["finish_reason"] == "length"
        assert content_of(cut) == "The closest match in"

    return case


def stop_case(chat: Chat) -> None:
    chat.answered(answerer="azure", stop="\n")
    assert chat.sent()["stop"] == ["\n"]
    full = content_of(chat.answered())
    assert "[doc1]" in full
    cut = chat.answered(stop=["[doc1]", "never"])
    assert content_of(cut) == full[: full.index("[doc1]")]
    assert cut["choices"][0]["finish_reason"] == "stop"
    chat.refused("stop", stop=["a", "b", "c", "d", "e"])
    chat.refused("stop", stop=[1])


def n_case(chat: Chat) -> None:
    two = chat.answered(n=2)
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert content_of(two, 0) == content_of(two, 1)
    calls = len(chat.service.requests)
    chat.answered(answerer="azure", n=3)
    assert len(chat.service.requests) == calls + 3  # one model call per choice
    chat.refused("n", n=0)
    chat.refused("n", n=129)


def stream_case(chat: Chat) -> None:
    status, chunks = chat.ask(stream=True)
    assert status == 200
    assert "citations" in chunks[0]["choices"][0]["delta"]["context"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "[doc1]" in text
    chat.refused("stream", stream="yes")


def logprobs_case(chat: Chat) -> None:
    chat.answered(logprobs=False)
    assert "log probabilities" in chat.refused("logprobs", answerer="azure", logprobs=True)
    chat.refused("logprobs", logprobs="yes")


def top_logprobs_case(chat: Chat) -> None:
    chat.refused("top_logprobs", top_logprobs=2)
    chat.refused("logprobs", logprobs=True, top_logprobs=2)
    chat.refused("top_logprobs", logprobs=True, top_logprobs=21)


TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
TOOL_VALUES = {
    "tools": [TOOL],
    "tool_choice": "auto",
    "functions": [TOOL["function"]],
    "function_call": "auto",
    "parallel_tool_calls": True,
}


def tools_case(name: str) -> Callable[[Chat], None]:
    def case(chat: Chat) -> None:
        message = chat.refused(name, answerer="azure", **{name: TOOL_VALUES[name]})
        assert "not supported with On Your Data" in message

    return case


def messages_case(chat: Chat) -> None:
    chat.refused("messages[0].content", content=None)
    chat.refused("messages", messages=[])


def data_sources_case(chat: Chat) -> None:
    chat.refused("data_sources", data_sources="images-v")
    chat.refused("data_sources[0].type", data_sources=[{"type": "azure_cosmos_db"}])


REQUEST_CASES: dict[str, Callable[[Chat], None]] = {
    **{name: sampling_case(name) for name in SENT_TO_MODEL},
    "max_tokens": token_limit_case("max_tokens"),
    "max_completion_tokens": token_limit_case("max_completion_tokens"),
    "stop": stop_case,
    "n": n_case,
    "stream": stream_case,
    "logprobs": logprobs_case,
    "top_logprobs": top_logprobs_case,
    **{name: tools_case(name) for name in TOOL_VALUES},
    "messages": messages_case,
    "data_sources": data_sources_case,
}


@pytest.mark.parametrize("field", sorted(request_fields()))
def test_every_request_field_of_the_document_is_honoured_or_refused(chat: Chat, field: str) -> None:
    case = REQUEST_CASES.get(field)
    if case is None:
        pytest.fail(f"createChatCompletionRequest.{field} has no case: honour it or refuse it")
    case(chat)


def test_all_generation_parameters_reach_the_azure_openai_stand_in(chat: Chat) -> None:
    values = {name: valid for name, (valid, _) in SENT_TO_MODEL.items()}
    values |= {"max_tokens": 64, "stop": ["END"]}
    chat.answered(answerer="azure", **values)
    sent = chat.sent()
    assert {name: sent[name] for name in values} == values
    assert sent["stream"] is True and sent["model"] == "gpt-4o"


# ---------------------------------------------------------------------- azure_search fields


def authentication_case(chat: Chat) -> None:
    # Accepted after its shape is checked; the app searches with its own identity.
    chat.answered(params={"authentication": {"type": "api_key", "key": "k"}})
    chat.answered(params={"authentication": {"type": "system_assigned_managed_identity"}})
    chat.refused(f"{P}.authentication.key", params={"authentication": {"type": "api_key"}})
    chat.refused(f"{P}.authentication.type", params={"authentication": {"type": "password"}})
    chat.refused(
        f"{P}.authentication.managed_identity_resource_id",
        params={"authentication": {"type": "user_assigned_managed_identity"}},
    )


def endpoint_case(chat: Chat) -> None:
    chat.answered(params={"endpoint": SEARCH + "/"})
    message = chat.refused(
        f"{P}.endpoint", params={"endpoint": "https://elsewhere.search.windows.net"}
    )
    assert "not the search service" in message
    chat.refused(f"{P}.endpoint", params={"endpoint": "contoso"})
    # Offline the field (required by the spec) is accepted whatever it names: the app
    # searches its embedded index only.
    chat.search_endpoint = None
    chat.answered(params={"endpoint": "https://elsewhere.search.windows.net"})
    chat.refused(f"{P}.endpoint", params={"endpoint": "contoso"})


def embedding_dependency_case(chat: Chat) -> None:
    mine = {"type": "deployment_name", "deployment_name": MODEL.name}
    chat.answered(params={"embedding_dependency": mine})
    other = {"type": "deployment_name", "deployment_name": "text-embedding-ada-002"}
    message = chat.refused(
        f"{P}.embedding_dependency.deployment_name", params={"embedding_dependency": other}
    )
    assert "names no deployment" in message
    remote = {
        "type": "endpoint",
        "endpoint": "https://x.openai.azure.com/openai/deployments/ada/embeddings",
        "authentication": {"type": "api_key", "key": "k"},
    }
    chat.refused(f"{P}.embedding_dependency.endpoint", params={"embedding_dependency": remote})
    chat.refused(f"{P}.embedding_dependency.type", params={"embedding_dependency": {"type": "x"}})


def mapping(**values: Any) -> dict[str, Any]:
    return {"fields_mapping": values}


def content_fields_case(chat: Chat) -> None:
    both = chat.answered(params=mapping(content_fields=["description", "title"]))
    assert citations(both)[0]["content"] == f"{DOCS['bike'][0]}\nbike.jpg"
    chat.refused(f"{P}.fields_mapping.content_fields", params=mapping(content_fields=["nope"]))


def separator_case(chat: Chat) -> None:
    joined = chat.answered(
        params=mapping(content_fields=["description", "title"], content_fields_separator=" | ")
    )
    assert citations(joined)[0]["content"] == f"{DOCS['bike'][0]} | bike.jpg"
    chat.refused(
        f"{P}.fields_mapping.content_fields_separator",
        params=mapping(content_fields_separator=1),
    )


def field_case(name: str) -> Callable[[Chat], None]:
    def case(chat: Chat) -> None:
        remapped = chat.answered(params=mapping(**{name: "filepath"}))
        key = name.removesuffix("_field")
        assert citations(remapped)[0][key] == "bike.jpg"
        chat.refused(f"{P}.fields_mapping.{name}", params=mapping(**{name: ""}))

    return case


def vector_fields_case(chat: Chat) -> None:
    # The text's vector searches the named fields: a field holding no vectors is refused.
    chat.answered(params=mapping(vector_fields=["image_vector"]))
    chat.refused(f"{P}.fields_mapping.vector_fields", params=mapping(vector_fields=["title"]))
    chat.refused(f"{P}.fields_mapping.vector_fields", params=mapping(vector_fields=[]))


def searched(body: dict[str, Any]) -> set[str]:
    """The queries the retrieved documents were found with."""
    documents = body["choices"][0]["message"]["context"]["all_retrieved_documents"]
    return {query for doc in documents for query in doc["search_queries"]}


def query_type_case(chat: Chat) -> None:
    image_and_text = [
        {"type": "text", "text": "a red bicycle"},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
    ]
    every = ["all_retrieved_documents"]
    for query_type, expected in [
        ("simple", {"a red bicycle"}),
        ("vector", {"<image>", "a red bicycle"}),
        ("vector_simple_hybrid", {"<image>", "a red bicycle"}),
    ]:
        params = {"query_type": query_type, "include_contexts": every}
        body = chat.answered(content=image_and_text, params=params)
        assert searched(body) == expected, query_type
    image_only = [{"type": "image_url", "image_url": {"url": IMAGE_URL}}]
    message = chat.refused(f"{P}.query_type", content=image_only, params={"query_type": "simple"})
    assert "only an image" in message
    chat.refused(f"{P}.query_type", params={"query_type": "keyword"})


def semantic_configuration_case(chat: Chat) -> None:
    params = {"query_type": "semantic", "semantic_configuration": "default"}
    assert "no semantic configurations" in chat.refused(
        f"{P}.semantic_configuration", params=params
    )
    params = {"query_type": "vector", "semantic_configuration": "default"}
    assert "applies to query_type" in chat.refused(f"{P}.semantic_configuration", params=params)


def top_n_case(chat: Chat) -> None:
    one = chat.answered(content="red", params={"top_n_documents": 1, "strictness": 1})
    assert len(citations(one)) == 1
    chat.refused(f"{P}.top_n_documents", params={"top_n_documents": 0})


def in_scope_case(chat: Chat) -> None:
    assert content_of(chat.answered(content="an elephant")) == completion.NOT_FOUND_ANSWER
    free = chat.answered(content="an elephant", params={"in_scope": False})
    assert content_of(free) != completion.NOT_FOUND_ANSWER
    chat.refused(f"{P}.in_scope", params={"in_scope": "no"})


def strictness_case(chat: Chat) -> None:
    chat.answered(params={"strictness": 5})
    chat.refused(f"{P}.strictness", params={"strictness": 6})


def role_information_case(chat: Chat) -> None:
    chat.answered(answerer="azure", params={"role_information": "You are a bike expert."})
    assert chat.sent()["messages"][0]["content"].startswith("You are a bike expert.")
    chat.refused(f"{P}.role_information", params={"role_information": 5})


def filter_case(chat: Chat) -> None:
    only = chat.answered(content="red", params={"filter": "filepath eq 'wheel.jpg'"})
    assert [c["filepath"] for c in citations(only)] == ["wheel.jpg"]
    chat.refused(f"{P}.filter", params={"filter": "filepath eq"})


def index_name_case(chat: Chat) -> None:
    chat.refused(f"{P}.index_name", params={"index_name": "Not An Index"})


SEARCH_CASES: dict[str, Callable[[Chat], None]] = {
    "authentication": authentication_case,
    "endpoint": endpoint_case,
    "embedding_dependency": embedding_dependency_case,
    "fields_mapping.content_fields": content_fields_case,
    "fields_mapping.content_fields_separator": separator_case,
    "fields_mapping.title_field": field_case("title_field"),
    "fields_mapping.url_field": field_case("url_field"),
    "fields_mapping.filepath_field": field_case("filepath_field"),
    "fields_mapping.vector_fields": vector_fields_case,
    "query_type": query_type_case,
    "semantic_configuration": semantic_configuration_case,
    "top_n_documents": top_n_case,
    "in_scope": in_scope_case,
    "strictness": strictness_case,
    "role_information": role_information_case,
    "filter": filter_case,
    "index_name": index_name_case,
}


@pytest.mark.parametrize("field", sorted(azure_search_fields()))
def test_every_azure_search_field_of_the_document_is_honoured_or_refused(
    chat: Chat, field: str
) -> None:
    case = SEARCH_CASES.get(field)
    if case is None:
        pytest.fail(f"azure_search parameters.{field} has no case: honour it or refuse it")
    case(chat)


def test_fields_of_later_api_versions(chat: Chat) -> None:
    """max_search_queries, allow_partial_result, include_contexts (2024-12-01-preview)."""
    chat.answered(params={"max_search_queries": 3})  # one query is searched: any limit holds
    chat.refused(f"{P}.max_search_queries", params={"max_search_queries": 0})
    chat.refused(f"{P}.allow_partial_result", params={"allow_partial_result": "yes"})
    body = chat.answered(params={"include_contexts": ["citations"]})
    assert set(body["choices"][0]["message"]["context"]) == {"citations"}


# ---------------------------------------------------------------------- response shape


def test_response_fields_the_document_requires(chat: Chat) -> None:
    body = chat.answered(params={"include_contexts": ["citations", "all_retrieved_documents"]})
    choice = body["choices"][0]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None
    assert body["model"] == "imagerag-extractive"
    documents = choice["message"]["context"]["all_retrieved_documents"]
    kept = [d for d in documents if "filter_reason" not in d]
    assert kept and all(d.get("filter_reason") in (None, "score") for d in documents)
    assert None not in [d.get("filter_reason", "absent") for d in documents]
    assert chat.answered(answerer="azure")["model"] == "gpt-4o"
    status, error = chat.ask(content="")
    assert status == 400 and None not in error["error"].values()


def test_a_stop_word_match_is_not_in_scope(chat: Chat) -> None:
    """ "show" finds "showing" in the colour wheel's description: not an elephant."""
    elephant = chat.answered(content="Show me a purple elephant")
    assert content_of(elephant) == completion.NOT_FOUND_ANSWER
    wheel = chat.answered(content="Show me a purple color wheel")
    assert [c["filepath"] for c in citations(wheel)] == ["wheel.jpg"]


def test_partial_results_only_when_allowed(chat: Chat, local_index: ImageIndex) -> None:
    from imagerag.ports import ImageIndexError

    class TextSearchDown:
        def __getattr__(self, name: str) -> Any:
            return getattr(local_index, name)

        def text_search(self, *args: Any, **kwargs: Any) -> Any:
            raise ImageIndexError("the full-text query timed out")

    chat.index = TextSearchDown()  # type: ignore[assignment]
    image_and_text = [
        {"type": "text", "text": "a red bicycle"},
        {"type": "image_url", "image_url": {"url": IMAGE_URL}},
    ]
    status, _ = chat.ask(content=image_and_text)
    assert status == 400
    partial = chat.answered(content=image_and_text, params={"allow_partial_result": True})
    assert [c["filepath"] for c in citations(partial)] == ["bike.jpg"]
    # Every query failing fails the request, partial results or not.
    status, _ = chat.ask(params={"allow_partial_result": True, "query_type": "simple"})
    assert status == 400


SPEC_DIR = Path(__file__).parent / "spec"


def test_the_trimmed_document_keeps_every_schema_it_references() -> None:
    document = json.loads((SPEC_DIR / "inference-2024-10-21.chat.json").read_text())
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs <= set(document["components"]["schemas"])


# ---------------------------------------------------------------------- citation image types


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_the_type_of_an_image_is_found_from_its_first_bytes(fmt: str, mime: str) -> None:
    from imagerag.cited_images import HEAD_BYTES, type_from_head

    assert type_from_head(picture_bytes(2, fmt)[:HEAD_BYTES]) == mime
    assert type_from_head(b'[{"image_blob_path"') is None


def test_a_sas_url_names_the_type_of_a_blob_stored_without_one() -> None:
    """Storage answers a blob uploaded without a content type as application/octet-stream:
    the signed URL overrides it (rsct) with the type its bytes have."""
    from urllib.parse import parse_qs, urlsplit

    from azure.storage.blob import BlobServiceClient, UserDelegationKey

    from imagerag.adapters.blob import AzureBlobStore

    class Token:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("not called: storage calls are answered below")

    stored = {"a.png": None, "b.png": "image/png", "c.png": "application/octet-stream"}

    class Blob:
        """The two calls storage answers: properties, and the first bytes."""

        def __init__(self, name: str) -> None:
            self.name = name
            self.url = f"https://typed.blob.core.windows.net/images/{name}"

        def get_blob_properties(self) -> Any:
            settings = type("Settings", (), {"content_type": stored[self.name]})
            return type("Properties", (), {"content_settings": settings})

        def download_blob(self, *, offset: int, length: int) -> Any:
            head = picture_bytes(3, "PNG")[offset : offset + length]
            return type("Download", (), {"readall": lambda self: head})()

    # An account of its own: delegation keys are cached per account for the process.
    service = BlobServiceClient("https://typed.blob.core.windows.net", credential=Token())
    key = UserDelegationKey()
    key.signed_oid, key.signed_tid = "oid", "tid"
    key.signed_start, key.signed_expiry = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
    key.signed_service, key.signed_version = "b", "2021-08-06"
    key.value = base64.b64encode(b"s" * 32).decode()
    service.get_user_delegation_key = lambda start, expiry: key  # type: ignore[method-assign]
    service.get_blob_client = lambda container, path: Blob(path)  # type: ignore[assignment,method-assign,misc]
    store = AzureBlobStore(service=service)

    def rsct(path: str) -> list[str]:
        url = store.read_url("images", path, expires_in_s=600)
        assert url is not None
        return parse_qs(urlsplit(url).query).get("rsct", [])

    assert rsct("a.png") == ["image/png"]
    assert rsct("c.png") == ["image/png"]
    assert rsct("b.png") == []  # a stored image type is served as it is
