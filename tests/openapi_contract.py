"""The Azure OpenAI inference document (stable 2024-10-21, trimmed to chat completions in
tests/spec/) as JSON Schema validators: response bodies, stream chunks, errors, requests.

OpenAPI 3.0 is not JSON Schema: ``nullable: true`` becomes an explicit ``null`` alternative
here; ``discriminator`` is left out (oneOf already decides)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC_PATH = Path(__file__).parent / "spec" / "inference-2024-10-21.chat.json"


@functools.cache
def spec() -> dict[str, Any]:
    """The trimmed document as published (OpenAPI 3.0)."""
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def schema(name: str) -> dict[str, Any]:
    return spec()["components"]["schemas"][name]  # type: ignore[no-any-return]


def _json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {
        key: _json_schema(value)
        for key, value in node.items()
        if key not in ("nullable", "discriminator")
    }
    if node.get("nullable") is True:
        if isinstance(converted.get("type"), str) and not any(
            k in converted for k in ("oneOf", "anyOf", "allOf", "$ref")
        ):
            converted["type"] = [converted["type"], "null"]
            if "enum" in converted:
                converted["enum"] = [*converted["enum"], None]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator of one schema of the document (its $refs resolve within it)."""
    components = _json_schema(spec()["components"])
    root = {"$ref": f"#/components/schemas/{name}", "components": components}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def errors_of(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the schema, as 'path: message' lines (empty: valid)."""
    found = sorted(validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def assert_valid(name: str, instance: Any) -> None:
    problems = errors_of(name, instance)
    assert not problems, f"not a valid {name}:\n" + "\n".join(problems)


def assert_completion(body: Any) -> None:
    """A non-streaming chat-completions body."""
    assert_valid("createChatCompletionResponse", body)


def assert_chunk(chunk: Any) -> None:
    """One ``chat.completion.chunk`` of a stream (the JSON after ``data: ``)."""
    assert_valid("createChatCompletionStreamResponse", chunk)


def assert_error(body: Any) -> None:
    """An error body; the document's ``error.param`` is a string when present."""
    assert_valid("errorResponse", body)
    assert isinstance(body.get("error"), dict), body


def request_fields() -> dict[str, dict[str, Any]]:
    """Every top-level field of createChatCompletionRequest with its (merged) schema."""
    merged: dict[str, dict[str, Any]] = {}
    for part in schema("createChatCompletionRequest")["allOf"]:
        target = schema(part["$ref"].rsplit("/", 1)[1]) if "$ref" in part else part
        merged.update(target.get("properties", {}))
    return merged


def azure_search_fields() -> dict[str, dict[str, Any]]:
    """Every field of azure_search ``parameters``, with ``fields_mapping.*`` spelled out."""
    params = schema("azureSearchChatExtensionParameters")["properties"]
    fields = {k: v for k, v in params.items() if k != "fields_mapping"}
    mapping = schema("azureSearchIndexFieldMappingOptions")["properties"]
    fields.update({f"fields_mapping.{k}": v for k, v in mapping.items()})
    return fields
