"""Grounded chat in the Azure OpenAI On Your Data shape: request validation, the prompt image,
retrieval + answering through the ports, and the chat.completion / chunk bodies.

Knows nothing of Azure Functions: api/chat.py parses HTTP, calls :func:`complete` and turns a
:class:`ChatError` into an OpenAI-style error response.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from PIL import Image

from imagerag import images
from imagerag.ports import (
    Answerer,
    AnswererError,
    AnswerRequest,
    BlobNotFoundError,
    BlobStore,
    FieldMapping,
    GroundingDocument,
    ImageIndex,
    ImageIndexError,
    IndexModelMismatchError,
    IndexNotFoundError,
    InvalidFilterError,
    SearchHit,
    Vectorizer,
    VectorizerInputError,
    VectorizerUnavailableError,
)
from imagerag.retrieval import (
    Query,
    RetrievalResult,
    RetrievedDocument,
    SearchOptions,
    extract_query,
    retrieve,
)

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = images.MAX_BYTES  # 20 MB, the Vision limit, also for prompt images
MAX_TOP_N = 20
QUERY_TYPES = ("simple", "semantic", "vector", "vector_simple_hybrid", "vector_semantic_hybrid")
CONTEXTS = ("citations", "intent", "all_retrieved_documents")
DEFAULT_CONTEXTS = ("citations", "intent")
ROLES = ("system", "developer", "user", "assistant", "tool")
# The sentence Azure OpenAI On Your Data answers with when in_scope finds nothing.
NOT_FOUND_ANSWER = (
    "The requested information is not available in the retrieved data. "
    "Please try another query or topic."
)
# Index names: Azure AI Search rules (lowercase letters, digits, dashes; up to 128 chars).
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.I)
# Images shown to a vision model: downscaled so ten fit a request comfortably.
GROUNDING_IMAGE_SIDE = 768
GROUNDING_IMAGE_QUALITY = 85
MAX_REDIRECTS = 3

P = "data_sources[0].parameters"


# --------------------------------------------------------------------------- errors


class ChatError(Exception):
    """A request that cannot be answered, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _invalid(param: str | None, message: str, code: str = "invalid_value") -> ChatError:
    return ChatError(400, message, param=param, code=code)


# --------------------------------------------------------------------------- request


@dataclass(frozen=True, slots=True)
class DataSource:
    index_name: str
    fields: FieldMapping = FieldMapping()
    query_type: str = "vector_simple_hybrid"
    top_n: int = 5
    strictness: int = 3
    in_scope: bool = True
    role_information: str | None = None
    filter: str | None = None
    include_contexts: tuple[str, ...] = DEFAULT_CONTEXTS


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    data_source: DataSource
    stream: bool = False
    model: str | None = None


def parse_request(body: bytes, *, default_index: str) -> ChatRequest:
    """Validate a chat-completions body; ChatError(400) names the first bad field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid(None, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(data, dict):
        raise _invalid(None, "the request body must be a JSON object", "invalid_type")
    messages = _messages(data.get("messages"))
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid("stream", "'stream' must be a boolean", "invalid_type")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid("model", "'model' must be a string", "invalid_type")
    return ChatRequest(
        messages=messages,
        data_source=_data_sources(data.get("data_sources"), default_index),
        stream=stream,
        model=model,
    )


def _messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise _invalid("messages", "'messages' is required", "missing_required_parameter")
    if not isinstance(value, list):
        raise _invalid("messages", "'messages' must be an array", "invalid_type")
    if not value:
        raise _invalid("messages", "'messages' must not be empty", "empty_array")
    for i, message in enumerate(value):
        _message(message, i)
    if value[-1]["role"] != "user":
        raise _invalid(
            f"messages[{len(value) - 1}].role", "the last message must be the user's question"
        )
    return value


def _message(message: Any, i: int) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _invalid(where, f"'{where}' must be an object", "invalid_type")
    role = message.get("role")
    if role not in ROLES:
        raise _invalid(f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}")
    content = message.get("content")
    if content is None and role in ("assistant", "tool"):
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(
            f"{where}.content", f"'{where}.content' must be a string or an array", "invalid_type"
        )
    for j, part in enumerate(content):
        _part(part, f"{where}.content[{j}]", role)


def _part(part: Any, where: str, role: str) -> None:
    if not isinstance(part, dict):
        raise _invalid(where, f"'{where}' must be an object", "invalid_type")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise _invalid(f"{where}.text", f"'{where}.text' must be a string", "invalid_type")
    elif kind == "image_url":
        if role != "user":
            raise _invalid(f"{where}.type", "only user messages may contain images")
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else None
        if not isinstance(url, str) or not url:
            raise _invalid(
                f"{where}.image_url.url", f"'{where}.image_url.url' must be a non-empty string"
            )
    else:
        raise _invalid(f"{where}.type", f"'{where}.type' must be 'text' or 'image_url'")


def _data_sources(value: Any, default_index: str) -> DataSource:
    if value is None:
        return DataSource(index_name=default_index)
    if not isinstance(value, list):
        raise _invalid("data_sources", "'data_sources' must be an array", "invalid_type")
    if len(value) != 1:
        raise _invalid("data_sources", "'data_sources' must have exactly one element")
    source = value[0]
    if not isinstance(source, dict):
        raise _invalid("data_sources[0]", "'data_sources[0]' must be an object", "invalid_type")
    if source.get("type") != "azure_search":
        raise _invalid("data_sources[0].type", "'data_sources[0].type' must be 'azure_search'")
    params = source.get("parameters")
    if not isinstance(params, dict):
        raise _invalid(P, f"'{P}' must be an object", "missing_required_parameter")
    index_name = params.get("index_name")
    if not isinstance(index_name, str) or not _INDEX_NAME.match(index_name):
        raise _invalid(
            f"{P}.index_name",
            f"'{P}.index_name' must be an index name (lowercase letters, digits, dashes)",
        )
    query_type = _optional(params, "query_type", str, "vector_simple_hybrid")
    if query_type not in QUERY_TYPES:
        raise _invalid(f"{P}.query_type", f"'{P}.query_type' must be one of {QUERY_TYPES}")
    top_n = _int_in(params, "top_n_documents", 5, 1, MAX_TOP_N)
    strictness = _int_in(params, "strictness", 3, 1, 5)
    contexts = params.get("include_contexts")
    if contexts is None:
        contexts = list(DEFAULT_CONTEXTS)
    if not isinstance(contexts, list) or any(c not in CONTEXTS for c in contexts):
        raise _invalid(
            f"{P}.include_contexts", f"'{P}.include_contexts' items must be among {CONTEXTS}"
        )
    return DataSource(
        index_name=index_name,
        fields=_fields_mapping(params.get("fields_mapping")),
        query_type=query_type,
        top_n=top_n,
        strictness=strictness,
        in_scope=_optional(params, "in_scope", bool, True),
        role_information=_optional(params, "role_information", str, None),
        filter=_optional(params, "filter", str, None),
        include_contexts=tuple(dict.fromkeys(contexts)),
    )


def _optional(params: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise _invalid(f"{P}.{name}", f"'{P}.{name}' must be a {kind.__name__}", "invalid_type")
    return value


def _int_in(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{P}.{name}", f"'{P}.{name}' must be an integer from {low} to {high}")
    return value


def _fields_mapping(value: Any) -> FieldMapping:
    where = f"{P}.fields_mapping"
    if value is None:
        return FieldMapping()
    if not isinstance(value, dict):
        raise _invalid(where, f"'{where}' must be an object", "invalid_type")
    defaults = FieldMapping()

    def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = value.get(key)
        if raw is None:
            return default
        if not isinstance(raw, list) or not raw or not all(isinstance(n, str) and n for n in raw):
            raise _invalid(f"{where}.{key}", f"'{where}.{key}' must be a non-empty string array")
        return tuple(raw)

    def name(key: str, default: str | None) -> str | None:
        if key not in value:
            return default
        raw = value[key]
        if raw is not None and (not isinstance(raw, str) or not raw):
            raise _invalid(f"{where}.{key}", f"'{where}.{key}' must be a field name or null")
        return raw

    return FieldMapping(
        image_vector_fields=names("image_vector_fields", defaults.image_vector_fields),
        content_fields=names("content_fields", defaults.content_fields),
        title_field=name("title_field", defaults.title_field),
        url_field=name("url_field", defaults.url_field),
        filepath_field=name("filepath_field", defaults.filepath_field),
    )


# --------------------------------------------------------------------------- prompt image


Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class ImageUrlPolicy:
    """Which http(s) image URLs may be fetched: hosts on the allow-list ("example.com", or
    "*.example.com" for its subdomains) whose every address is public."""

    allowlist: tuple[str, ...] = ()
    resolve: Resolver = system_resolver
    timeout_s: float = 10.0

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.allowlist:
            entry = entry.lower().rstrip(".")
            if entry.startswith("*."):
                if host.endswith(entry[1:]) and host != entry[2:]:
                    return True
            elif host == entry:
                return True
        return False


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
    )


def check_image_url(url: str, policy: ImageUrlPolicy, param: str) -> tuple[str, int, str]:
    """(host, port, vetted address) of an http(s) URL the policy allows; ChatError otherwise.
    Every resolved address must be public: one private address refuses the URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(param, "image URLs must be data: URLs or allowed http(s) URLs")
    host = parts.hostname
    if not policy.allows_host(host):
        raise ChatError(
            400,
            f"image URL host {host!r} is not allowed; send the image as a data: URL or add the "
            "host to CHAT_IMAGE_URL_ALLOWLIST",
            param=param,
            code="image_url_not_allowed",
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = policy.resolve(host, port)
    except OSError:
        raise ChatError(
            400, f"image URL host {host!r} does not resolve", param=param, code="invalid_image_url"
        ) from None
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise ChatError(
            400,
            f"image URL host {host!r} resolves to a non-public address",
            param=param,
            code="image_url_not_allowed",
        )
    return host, port, addresses[0]


def fetch_image_url(url: str, policy: ImageUrlPolicy, param: str) -> bytes:
    """GET an allowed image URL, connecting only to the vetted address (no second lookup a
    rebinding DNS could answer differently); redirects are re-checked hop by hop."""
    import urllib3

    for _hop in range(MAX_REDIRECTS + 1):
        host, port, address = check_image_url(url, policy, param)
        parts = urlsplit(url)
        pool: urllib3.HTTPConnectionPool
        if parts.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                address, port, server_hostname=host, assert_hostname=host, timeout=policy.timeout_s
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=policy.timeout_s)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        try:
            response = pool.urlopen(
                "GET",
                target,
                headers={"Host": parts.netloc.rsplit("@", 1)[-1]},
                redirect=False,
                retries=False,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ChatError(
                400, f"image URL could not be fetched: {exc}", param=param, code="invalid_image_url"
            ) from None
        try:
            if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status != 200:
                raise ChatError(
                    400,
                    f"image URL answered HTTP {response.status}",
                    param=param,
                    code="invalid_image_url",
                )
            data = response.read(MAX_IMAGE_BYTES + 1, decode_content=True)
        finally:
            response.release_conn()
        if len(data) > MAX_IMAGE_BYTES:
            raise _too_large(param)
        return bytes(data)
    raise ChatError(400, "image URL redirects too often", param=param, code="invalid_image_url")


def decode_data_url(url: str, param: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        raise _invalid(param, "image data: URLs must be base64 ('data:image/...;base64,...')")
    mime = (match.group("mime") or "").lower()
    if not mime.startswith("image/"):
        raise ChatError(
            400,
            f"the data: URL is {mime or 'untyped'}, not an image",
            param=param,
            code="invalid_image",
        )
    payload = url[match.end() :]
    # Checked before decoding, so an oversized body is refused without allocating it twice.
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES + 3:
        raise _too_large(param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(param, "the data: URL is not valid base64", "invalid_image") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_large(param)
    return data


def _too_large(param: str) -> ChatError:
    return ChatError(
        413,
        f"the image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB",
        param=param,
        code="image_too_large",
    )


def load_prompt_image(
    url: str, param: str, policy: ImageUrlPolicy, fetch: Callable[..., bytes] = fetch_image_url
) -> bytes:
    """The prompt image's bytes, checked as an image the vectorizer accepts."""
    data = decode_data_url(url, param) if url.startswith("data:") else fetch(url, policy, param)
    try:
        images.inspect_image(data, "prompt.jpg")  # the type is checked by content
    except images.ImageRejected as exc:
        status = 413 if exc.code == images.TOO_LARGE else 400
        raise ChatError(
            status,
            f"the image is refused: {exc.message}",
            param=param,
            code="image_too_large" if status == 413 else "invalid_image",
        ) from None
    return data


# --------------------------------------------------------------------------- pipeline


@dataclass
class ChatDependencies:
    vectorizer: Callable[[], Vectorizer]  # built on first use (the local model loads weights)
    index: Callable[[str], ImageIndex]
    answerer: Answerer
    blobs: BlobStore | None
    image_policy: ImageUrlPolicy = field(default_factory=ImageUrlPolicy)
    # hit -> URL the client can open (SAS or this app's image route); None keeps the index's.
    citation_url: Callable[[SearchHit], str | None] = lambda hit: None
    fetch: Callable[..., bytes] = fetch_image_url


@dataclass(frozen=True, slots=True)
class Citation:
    content: str
    title: str | None
    url: str | None
    filepath: str | None
    chunk_id: str = "0"


@dataclass(frozen=True)
class ChatOutcome:
    context: dict[str, Any]
    deltas: Iterator[str]


def complete(request: ChatRequest, deps: ChatDependencies) -> ChatOutcome:
    """Retrieve for the conversation and start answering. Every ChatError that retrieval can
    raise is raised here; answering errors surface while ``deltas`` is consumed."""
    source = request.data_source
    query = extract_query(request.messages)
    image = _query_image(query, deps)
    if not query.text and image is None:
        raise _invalid(
            f"messages[{len(request.messages) - 1}].content",
            "the last user message has neither text nor an image to search with",
        )
    result = _retrieve(query.text, image, source, deps)
    citations = [_citation(doc.hit, deps) for doc in result.documents]
    context = build_context(result, citations, source.include_contexts, deps)
    if not result.documents and source.in_scope:
        return ChatOutcome(context=context, deltas=iter([NOT_FOUND_ANSWER]))
    grounding = [
        GroundingDocument(
            label=f"doc{i}",
            content=doc.hit.content,
            title=doc.hit.title,
            image_url=_grounding_image(doc.hit, deps) if deps.answerer.sees_images else None,
        )
        for i, doc in enumerate(result.documents, start=1)
    ]
    answer = AnswerRequest(
        messages=request.messages,
        documents=grounding,
        role_information=source.role_information,
        in_scope=source.in_scope,
    )
    return ChatOutcome(context=context, deltas=_answer(deps.answerer, answer))


def _query_image(query: Query, deps: ChatDependencies) -> bytes | None:
    if query.image is None:
        return None
    return load_prompt_image(query.image.url, query.image.param, deps.image_policy, deps.fetch)


def _retrieve(
    text: str, image: bytes | None, source: DataSource, deps: ChatDependencies
) -> RetrievalResult:
    options = SearchOptions(
        top_n=source.top_n,
        strictness=source.strictness,
        fields=source.fields,
        filter=source.filter,
        query_type=source.query_type,
    )
    try:
        return retrieve(
            text=text,
            image=image,
            vectorizer=deps.vectorizer(),
            index=deps.index(source.index_name),
            options=options,
        )
    except IndexNotFoundError:
        raise ChatError(
            404,
            f"index {source.index_name!r} does not exist",
            param=f"{P}.index_name",
            code="index_not_found",
        ) from None
    except IndexModelMismatchError as exc:
        raise ChatError(409, str(exc), param=f"{P}.index_name", code="model_mismatch") from None
    except InvalidFilterError as exc:
        raise _invalid(f"{P}.filter", f"the filter is not valid: {exc}") from None
    except ImageIndexError as exc:
        # The index cannot run this query with this mapping (a field it lacks, other dims).
        raise _invalid(f"{P}.fields_mapping", f"the index cannot be searched: {exc}") from None
    except VectorizerInputError as exc:
        raise ChatError(
            400, f"the vectorizer refused the query: {exc}", param="messages", code="invalid_image"
        ) from None
    except VectorizerUnavailableError as exc:
        raise _unavailable("the vectorizer", exc.status, exc.retry_after_s) from None


def _unavailable(what: str, status: int | None, retry_after_s: float | None) -> ChatError:
    if status == 429:
        return ChatError(
            429,
            f"{what} is throttling requests; retry later",
            code="rate_limit_exceeded",
            type="rate_limit_error",
            retry_after_s=retry_after_s,
        )
    return ChatError(
        503,
        f"{what} is unavailable; retry later",
        code="service_unavailable",
        type="server_error",
        retry_after_s=retry_after_s,
    )


def _answer(answerer: Answerer, request: AnswerRequest) -> Iterator[str]:
    try:
        yield from answerer.stream_answer(request)
    except AnswererError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
            raise ChatError(
                502,
                f"the answering model refused the request: {exc}",
                code="upstream_error",
                type="server_error",
            ) from None
        raise _unavailable("the answering model", exc.status, exc.retry_after_s) from None


def _citation(hit: SearchHit, deps: ChatDependencies) -> Citation:
    return Citation(
        content=hit.content,
        title=hit.title,
        url=deps.citation_url(hit) or hit.url,
        filepath=hit.filepath,
    )


def _grounding_image(hit: SearchHit, deps: ChatDependencies) -> str | None:
    if deps.blobs is None or not hit.url:
        return None
    located = deps.blobs.locate(hit.url)
    if located is None:
        return None
    try:
        return grounding_data_url(deps.blobs.read(*located))
    except BlobNotFoundError:
        logger.warning("grounding image of %s is gone from storage", hit.id)
    except Exception:  # a broken image must not fail the answer: the text label remains
        logger.warning("grounding image of %s could not be prepared", hit.id, exc_info=True)
    return None


def grounding_data_url(data: bytes) -> str:
    """A retrieved image as the model sees it: a JPEG of at most 768 px a side, as data URL."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (GROUNDING_IMAGE_SIDE, GROUNDING_IMAGE_SIDE))
        small = image.convert("RGB")
        small.thumbnail((GROUNDING_IMAGE_SIDE, GROUNDING_IMAGE_SIDE))
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=GROUNDING_IMAGE_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def citation_url(
    hit: SearchHit,
    blobs: BlobStore | None,
    *,
    image_route: str,
    containers: Iterable[str],
    expires_in_s: int = 3600,
) -> str | None:
    """Where a citation's image opens: a SAS URL when the store signs, else this app's image
    route (``image_route`` ends with '/') for the served containers; None keeps the index's."""
    if blobs is None or not hit.url:
        return None
    located = blobs.locate(hit.url)
    if located is None:
        return None
    container, path = located
    signed = blobs.read_url(container, path, expires_in_s=expires_in_s)
    if signed is not None:
        return signed
    if container not in set(containers):
        return None
    return f"{image_route}{quote(container)}/{quote(path)}"


# --------------------------------------------------------------------------- response


def build_context(
    result: RetrievalResult,
    citations: Sequence[Citation],
    include: Sequence[str],
    deps: ChatDependencies | None = None,
) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if "citations" in include:
        context["citations"] = [_citation_json(c) for c in citations]
    if "intent" in include:
        # Azure sends the intent as a JSON-encoded list of the search queries.
        context["intent"] = json.dumps(result.intent)
    if "all_retrieved_documents" in include:
        context["all_retrieved_documents"] = [
            _retrieved_json(doc, deps) for doc in result.all_documents
        ]
    return context


def _citation_json(citation: Citation) -> dict[str, Any]:
    return {
        "content": citation.content,
        "title": citation.title,
        "url": citation.url,
        "filepath": citation.filepath,
        "chunk_id": citation.chunk_id,
    }


def _retrieved_json(doc: RetrievedDocument, deps: ChatDependencies | None) -> dict[str, Any]:
    hit = doc.hit
    url = (deps.citation_url(hit) if deps is not None else None) or hit.url
    return {
        "content": hit.content,
        "title": hit.title,
        "url": url,
        "filepath": hit.filepath,
        "chunk_id": "0",
        "search_queries": list(doc.search_queries),
        "data_source_index": 0,
        # The image similarity when the document was found by image, else its first score.
        "original_search_score": doc.scores.get("image", next(iter(doc.scores.values()))),
        "rerank_score": doc.fused_score,
        "filter_reason": None if doc.kept else "score",
    }


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(
    *, completion_id: str, created: int, model: str, content: str, context: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "context": context},
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def chunk_bodies(
    *,
    completion_id: str,
    created: int,
    model: str,
    context: dict[str, Any],
    deltas: Iterable[str],
) -> Iterator[dict[str, Any]]:
    """The stream: the context first (with the role), then content deltas, then the stop."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    yield chunk({"role": "assistant", "context": context})
    for delta in deltas:
        if delta:
            yield chunk({"content": delta})
    yield chunk({}, "stop")


def sse_body(chunks: Iterable[dict[str, Any]]) -> bytes:
    """Server-sent events as the service sends them, ending with ``data: [DONE]``."""
    lines = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks]
    lines.append("data: [DONE]\n\n")
    return "".join(lines).encode("utf-8")


def now() -> int:
    return int(time.time())
