"""The chat-completions request: validation of an On Your Data body into a ChatRequest.

Every refusal is a ChatError that names the first bad field (``param``): 400, or 413 for a
body over MAX_BODY_BYTES. Nothing a client sends raises anything else."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from imagerag.chat.errors import ChatError, invalid, too_large
from imagerag.chat.generation import parse_generation
from imagerag.chat.source_params import (
    Authentication,
    EmbeddingDependency,
    authentication,
    embedding_dependency,
    endpoint,
)
from imagerag.ports import FieldMapping, GenerationOptions

MAX_TOP_N = 20
MAX_SEARCH_QUERIES = 2**31 - 1  # int32, as the document types it
# Images come as data: URLs, each under the 20 MB Vision limit (27 MB in base64): 50 MB admits
# a full-size one with room to spare, and a larger body is refused before json.loads copies it.
MAX_BODY_BYTES = 50 * 1024 * 1024
# 128 exchanges: far past what a vision model's context holds, yet each message is validated
# and sent on to the answerer, so the count is bounded (OpenAI's own limit is 2,048).
MAX_MESSAGES = 256
# The deepest valid body is 6 levels (messages[].content[].image_url.url). Deeper values in
# messages would reach code that recurses (the SDKs' json.dumps) inside the answerer.
MAX_JSON_DEPTH = 32
# json.loads keeps a lone surrogate escape ("\\ud800") as is; UTF-8 cannot encode it, so it
# would fail later, when the text is sent on or logged. Valid pairs are joined by json.loads.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
QUERY_TYPES = ("simple", "semantic", "vector", "vector_simple_hybrid", "vector_semantic_hybrid")
CONTEXTS = ("citations", "intent", "all_retrieved_documents")
DEFAULT_CONTEXTS = ("citations", "intent")
ROLES = ("system", "developer", "user", "assistant", "tool")
# Index names: Azure AI Search rules (lowercase letters, digits, dashes; up to 128 chars).
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")

P = "data_sources[0].parameters"


@dataclass(frozen=True, slots=True)
class DataSource:
    index_name: str
    fields: FieldMapping | None = None  # None: not given (a registered source's, or defaults)
    query_type: str = "vector_simple_hybrid"
    top_n: int = 5
    strictness: int = 3
    in_scope: bool = True
    role_information: str | None = None
    filter: str | None = None
    include_contexts: tuple[str, ...] = DEFAULT_CONTEXTS
    endpoint: str | None = None  # checked against the configured search service
    authentication: Authentication | None = None  # shape checked; the app uses its identity
    semantic_configuration: str | None = None
    embedding_dependency: EmbeddingDependency | None = None
    max_search_queries: int | None = None
    allow_partial_result: bool = False


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    data_source: DataSource
    stream: bool = False
    model: str | None = None
    options: GenerationOptions = GenerationOptions()
    n: int = 1  # choices to return


def parse_request(body: bytes, *, default_index: str) -> ChatRequest:
    """Validate a chat-completions body; ChatError(400) names the first bad field."""
    data = _json_body(body)
    if not isinstance(data, dict):
        raise invalid(None, "the request body must be a JSON object", "invalid_type")
    messages = _messages(data.get("messages"))
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("stream", "'stream' must be a boolean", "invalid_type")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("model", "'model' must be a string", "invalid_type")
    options, n = parse_generation(data)
    return ChatRequest(
        messages=messages,
        data_source=_data_sources(data.get("data_sources"), default_index),
        stream=stream,
        model=model,
        options=options,
        n=n,
    )


class _NotJson(ValueError):
    """A value json.loads would accept that JSON does not define (NaN, Infinity)."""


def _json_body(body: bytes) -> Any:
    """The body as JSON; every way it cannot be read is a ChatError naming the reason."""
    if len(body) > MAX_BODY_BYTES:
        raise too_large(
            f"the request body is {len(body):,} bytes; at most {MAX_BODY_BYTES:,} are accepted"
        )
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        reason = f"it is nested deeper than {MAX_JSON_DEPTH} levels"
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except UnicodeDecodeError:
        reason = "it is not UTF-8 text"
    except _NotJson as exc:
        reason = str(exc)
    except ValueError:
        # int() refuses over 4,300 digits (a guard against quadratic conversion).
        reason = "a number has more than 4,300 digits"
    raise invalid(None, f"the request body is not valid JSON: {reason}", "invalid_json")


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _unsafe_value(value: Any, where: str) -> ChatError | None:
    """The first value under ``where`` (in document order) that is nested deeper than
    MAX_JSON_DEPTH or holds a lone surrogate, as the error naming it; None if there is none.
    Iterative: the nesting it guards against must not exhaust the stack here either."""
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return invalid(path, f"'{path}' is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, str) and _LONE_SURROGATE.search(item):
            return invalid(
                path, f"'{path}' contains a lone UTF-16 surrogate (not text)", "invalid_text"
            )
        if isinstance(item, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            if any(_LONE_SURROGATE.search(key) for key in item):
                return invalid(
                    path, f"a key in '{path}' contains a lone UTF-16 surrogate", "invalid_text"
                )
            stack.extend((v, f"{path}.{k}", depth + 1) for k, v in reversed(item.items()))
    return None


def _messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise invalid("messages", "'messages' is required", "missing_required_parameter")
    if not isinstance(value, list):
        raise invalid("messages", "'messages' must be an array", "invalid_type")
    if not value:
        raise invalid("messages", "'messages' must not be empty", "empty_array")
    if len(value) > MAX_MESSAGES:
        raise invalid(
            "messages",
            f"'messages' has {len(value):,} items; at most {MAX_MESSAGES} are accepted",
            "array_above_max_length",
        )
    unsafe = _unsafe_value(value, "messages")
    if unsafe is not None:
        raise unsafe
    for i, message in enumerate(value):
        _message(message, i)
    if value[-1]["role"] != "user":
        raise invalid(
            f"messages[{len(value) - 1}].role", "the last message must be the user's question"
        )
    return value


def _message(message: Any, i: int) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise invalid(where, f"'{where}' must be an object", "invalid_type")
    role = message.get("role")
    if role not in ROLES:
        raise invalid(f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}")
    content = message.get("content")
    if content is None and role in ("assistant", "tool"):
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid(
            f"{where}.content", f"'{where}.content' must be a string or an array", "invalid_type"
        )
    for j, part in enumerate(content):
        _part(part, f"{where}.content[{j}]", role)


def _part(part: Any, where: str, role: str) -> None:
    if not isinstance(part, dict):
        raise invalid(where, f"'{where}' must be an object", "invalid_type")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise invalid(f"{where}.text", f"'{where}.text' must be a string", "invalid_type")
    elif kind == "image_url":
        if role != "user":
            raise invalid(f"{where}.type", "only user messages may contain images")
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else None
        if not isinstance(url, str) or not url:
            raise invalid(
                f"{where}.image_url.url", f"'{where}.image_url.url' must be a non-empty string"
            )
    else:
        raise invalid(f"{where}.type", f"'{where}.type' must be 'text' or 'image_url'")


def _data_sources(value: Any, default_index: str) -> DataSource:
    if value is None:
        return DataSource(index_name=default_index)
    if not isinstance(value, list):
        raise invalid("data_sources", "'data_sources' must be an array", "invalid_type")
    if len(value) != 1:
        raise invalid("data_sources", "'data_sources' must have exactly one element")
    unsafe = _unsafe_value(value, "data_sources")
    if unsafe is not None:
        raise unsafe
    source = value[0]
    if not isinstance(source, dict):
        raise invalid("data_sources[0]", "'data_sources[0]' must be an object", "invalid_type")
    if source.get("type") != "azure_search":
        raise invalid("data_sources[0].type", "'data_sources[0].type' must be 'azure_search'")
    params = source.get("parameters")
    if not isinstance(params, dict):
        raise invalid(P, f"'{P}' must be an object", "missing_required_parameter")
    index_name = params.get("index_name")
    if not isinstance(index_name, str) or not _INDEX_NAME.match(index_name):
        raise invalid(
            f"{P}.index_name",
            f"'{P}.index_name' must be an index name (lowercase letters, digits, dashes)",
        )
    query_type = _optional(params, "query_type", str, "vector_simple_hybrid")
    if query_type not in QUERY_TYPES:
        raise invalid(f"{P}.query_type", f"'{P}.query_type' must be one of {QUERY_TYPES}")
    semantic_configuration = _name(params, "semantic_configuration")
    if semantic_configuration is not None and "semantic" not in query_type:
        raise invalid(
            f"{P}.semantic_configuration",
            f"'{P}.semantic_configuration' applies to query_type semantic or "
            f"vector_semantic_hybrid, not {query_type}",
        )
    top_n = _int_in(params, "top_n_documents", 5, 1, MAX_TOP_N)
    strictness = _int_in(params, "strictness", 3, 1, 5)
    contexts = params.get("include_contexts")
    if contexts is None:
        contexts = list(DEFAULT_CONTEXTS)
    if not isinstance(contexts, list) or any(c not in CONTEXTS for c in contexts):
        raise invalid(
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
        endpoint=endpoint(params.get("endpoint"), f"{P}.endpoint"),
        authentication=authentication(params.get("authentication"), f"{P}.authentication"),
        semantic_configuration=semantic_configuration,
        embedding_dependency=embedding_dependency(
            params.get("embedding_dependency"), f"{P}.embedding_dependency"
        ),
        # One query is searched per request (the prompt itself): any limit of 1 or more holds.
        max_search_queries=_int_in(params, "max_search_queries", 1, 1, MAX_SEARCH_QUERIES),
        allow_partial_result=_optional(params, "allow_partial_result", bool, False),
    )


def _name(params: dict[str, Any], name: str) -> str | None:
    value: str | None = _optional(params, name, str, None)
    if value is not None and not value.strip():
        raise invalid(f"{P}.{name}", f"'{P}.{name}' must not be empty")
    return value


def _optional(params: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise invalid(f"{P}.{name}", f"'{P}.{name}' must be a {kind.__name__}", "invalid_type")
    return value


def _int_in(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{P}.{name}", f"'{P}.{name}' must be an integer from {low} to {high}")
    return value


def _fields_mapping(value: Any) -> FieldMapping | None:
    where = f"{P}.fields_mapping"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(where, f"'{where}' must be an object", "invalid_type")
    defaults = FieldMapping()

    def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = value.get(key)
        if raw is None:
            return default
        if not isinstance(raw, list) or not raw or not all(isinstance(n, str) and n for n in raw):
            raise invalid(f"{where}.{key}", f"'{where}.{key}' must be a non-empty string array")
        return tuple(raw)

    def name(key: str, default: str | None) -> str | None:
        if key not in value:
            return default
        raw = value[key]
        if raw is not None and (not isinstance(raw, str) or not raw):
            raise invalid(f"{where}.{key}", f"'{where}.{key}' must be a field name or null")
        return raw

    separator = value.get("content_fields_separator")
    if separator is None:
        separator = defaults.content_fields_separator
    if not isinstance(separator, str):
        raise invalid(
            f"{where}.content_fields_separator",
            f"'{where}.content_fields_separator' must be a string",
            "invalid_type",
        )
    return FieldMapping(
        vector_fields=names("vector_fields", defaults.vector_fields),
        content_fields_separator=separator,
        image_vector_fields=names("image_vector_fields", defaults.image_vector_fields),
        content_fields=names("content_fields", defaults.content_fields),
        title_field=name("title_field", defaults.title_field),
        url_field=name("url_field", defaults.url_field),
        filepath_field=name("filepath_field", defaults.filepath_field),
    )
