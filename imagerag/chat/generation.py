"""The generation parameters of a chat-completions body, checked against the Azure OpenAI
inference document (stable 2024-10-21, ``createChatCompletionRequest``): each wrong type or
value is a 400 naming the field and its rule."""

from __future__ import annotations

import math
import re
from typing import Any

from imagerag.chat.errors import ChatError, invalid
from imagerag.ports import GenerationOptions

INT64 = 2**63
MAX_N = 128
MAX_STOP = 4
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Azure OpenAI On Your Data answers 400 "Functions are not supported ..." to a request with
# data_sources and tools; every request here is answered from an index.
TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")
TOOLS_REFUSED = (
    "'{name}' is not supported with On Your Data: answers are grounded on the index, and "
    "Azure OpenAI refuses function calling together with data_sources"
)
LOGPROBS_REFUSED = "'logprobs' is not supported: this endpoint returns no token log probabilities"


def parse_generation(data: dict[str, Any]) -> tuple[GenerationOptions, int]:
    """The options for the answerer, and ``n`` (how many choices the endpoint returns)."""
    for name in TOOL_FIELDS:
        if data.get(name) is not None:
            raise invalid(name, TOOLS_REFUSED.format(name=name), "unsupported_parameter")
    logprobs = _bool(data, "logprobs")
    top_logprobs = _int(data, "top_logprobs", 0, 20)
    if top_logprobs is not None and logprobs is not True:
        raise invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true")
    if logprobs:
        # The answerer port carries text only: log probabilities would be lost on the way,
        # so they are refused rather than silently missing from the response.
        raise invalid("logprobs", LOGPROBS_REFUSED, "unsupported_parameter")
    options = GenerationOptions(
        temperature=_number(data, "temperature", 0, 2),
        top_p=_number(data, "top_p", 0, 1),
        max_tokens=_int(data, "max_tokens", 1, INT64 - 1),
        max_completion_tokens=_int(data, "max_completion_tokens", 1, INT64 - 1),
        stop=_stop(data.get("stop")),
        seed=_int(data, "seed", -INT64, INT64 - 1),
        user=_string(data, "user"),
        presence_penalty=_number(data, "presence_penalty", -2, 2),
        frequency_penalty=_number(data, "frequency_penalty", -2, 2),
        logit_bias=_logit_bias(data.get("logit_bias")),
        response_format=_response_format(data.get("response_format")),
    )
    n = _int(data, "n", 1, MAX_N)
    return options, 1 if n is None else n


def refuse_unhonoured(options: GenerationOptions, honoured: frozenset[str], model: str) -> None:
    """A 400 naming the first parameter the answerer cannot apply (never ignored)."""
    for name in options.given():
        if name not in honoured:
            raise ChatError(
                400,
                f"'{name}' is not supported by the answering model {model!r} of this app",
                param=name,
                code="unsupported_parameter",
            )


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(name, f"'{name}' must be a number from {low} to {high}", "invalid_type")
    if not low <= value <= high:
        raise invalid(name, f"'{name}' must be a number from {low} to {high}")
    return float(value)


def _int(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"'{name}' must be an integer", "invalid_type")
    if not low <= value <= high:
        raise invalid(name, f"'{name}' must be an integer from {low} to {high}")
    return value


def _bool(data: dict[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be a boolean", "invalid_type")
    return value


def _string(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(name, f"'{name}' must be a string", "invalid_type")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_STOP
        or not all(isinstance(s, str) and s for s in value)
    ):
        raise invalid(
            "stop", f"'stop' must be a non-empty string or an array of 1 to {MAX_STOP} of them"
        )
    return tuple(value)


def _logit_bias(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("logit_bias", "'logit_bias' must be an object", "invalid_type")
    for token, bias in value.items():
        if not token.isdigit():
            raise invalid("logit_bias", "'logit_bias' keys must be token ids (digits)")
        if isinstance(bias, bool) or not isinstance(bias, int) or not -100 <= bias <= 100:
            raise invalid("logit_bias", "'logit_bias' values must be integers from -100 to 100")
    return dict(value)


def _response_format(value: Any) -> dict[str, Any] | None:
    where = "response_format"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(where, f"'{where}' must be an object", "invalid_type")
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid(f"{where}.type", f"'{where}.type' must be text, json_object or json_schema")
    if kind != "json_schema":
        return dict(value)
    schema = value.get("json_schema")
    if not isinstance(schema, dict):
        raise invalid(f"{where}.json_schema", f"'{where}.json_schema' must be an object")
    name = schema.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise invalid(
            f"{where}.json_schema.name",
            f"'{where}.json_schema.name' must be 1 to 64 letters, digits, '_' or '-'",
        )
    if schema.get("schema") is not None and not isinstance(schema["schema"], dict):
        raise invalid(f"{where}.json_schema.schema", "the JSON schema must be an object")
    if schema.get("strict") is not None and not isinstance(schema["strict"], bool):
        raise invalid(f"{where}.json_schema.strict", "'strict' must be a boolean")
    return dict(value)
