"""What the Azure AI Search adapter sends and reads back, as pure functions: indexing batches
sized from the exact request bytes, OData helpers, scores, and which parameter a refusal names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.serialization import AzureJSONEncoder

from imagerag.ports import FieldMapping

MAX_BATCH_ACTIONS = 1000
# The service's limit is "16 MB" per request, with MB undocumented (10**6 or 2**20 bytes):
# the decimal reading satisfies both. Sizes are exact (see request_bytes), so no headroom.
MAX_BATCH_BYTES = 16_000_000
# The request body is {"value": [action, action, ...]} as json.dumps writes it.
_ENVELOPE_BYTES = len(json.dumps({"value": []}))
_SEPARATOR_BYTES = len(", ")
# "...\r\nParameter name: $filter" (classic) or "... Parameters: $filter" (details).
_PARAMETER = re.compile(r"Parameters?(?: name)?: *(\S+)")
# Refusals that name no parameter, by what the service says.
_PHRASES = {"in search field list": "searchFields", "in vector field list": "vector.fields"}


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


def action_bytes(action: str, document: dict[str, Any]) -> int:
    """Bytes of one action in the request body, serialised as the SDK does (azure-core's
    ``json.dumps(..., cls=AzureJSONEncoder)``: default separators, ASCII escapes)."""
    return len(json.dumps({"@search.action": action, **document}, cls=AzureJSONEncoder))


def request_bytes(action: str, documents: list[dict[str, Any]]) -> int:
    """Bytes of the whole indexing request body for these documents."""
    costs = [action_bytes(action, d) for d in documents]
    return _ENVELOPE_BYTES + sum(costs) + _SEPARATOR_BYTES * max(0, len(costs) - 1)


def batches(
    documents: Iterable[dict[str, Any]], *, action: str = "mergeOrUpload"
) -> Iterator[list[dict[str, Any]]]:
    """Runs of at most MAX_BATCH_ACTIONS actions whose request body is at most
    MAX_BATCH_BYTES (a single larger document goes alone, for the service to refuse)."""
    batch: list[dict[str, Any]] = []
    size = _ENVELOPE_BYTES
    for document in documents:
        cost = action_bytes(action, document)
        if batch and (
            len(batch) == MAX_BATCH_ACTIONS or size + _SEPARATOR_BYTES + cost > MAX_BATCH_BYTES
        ):
            yield batch
            batch, size = [], _ENVELOPE_BYTES
        size += cost + (_SEPARATOR_BYTES if batch else 0)
        batch.append(document)
    if batch:
        yield batch


def service_messages(exc: HttpResponseError) -> list[str]:
    """The service's error message and its details' messages, as sent."""
    error = exc.error
    if error is not None:
        found = [error.message, *(d.message for d in error.details or [])]
    else:
        try:
            body = json.loads(exc.response.text())["error"] if exc.response is not None else {}
            details = [d.get("message") for d in body.get("details") or []]
            found = [body.get("message"), *details]
        except (ValueError, KeyError, TypeError, AttributeError):
            found = []
    return [str(m) for m in found if m]


def refused_parameter(messages: list[str]) -> str | None:
    """The request parameter a refusal is about (``$filter``, ``searchFields``, ``$select``,
    ``vector.fields``, ``$orderby``...), or None when the messages do not say."""
    for message in messages:
        found = _PARAMETER.search(message)
        if found is not None:
            return found.group(1).rstrip(".")
    for message in messages:
        for phrase, parameter in _PHRASES.items():
            if phrase in message:
                return parameter
    return None


def one_line(message: str) -> str:
    """The service's message on one line (it puts CR LF before ``Parameter name: x``)."""
    return re.sub(r"\s*[\r\n]+\s*", " ", message).strip()


def mapping_of(fields: FieldMapping, name: str) -> str | None:
    """Which FieldMapping attribute names this index field (None: none of them)."""
    roles = [
        ("image_vector_fields", name in fields.image_vector_fields),
        ("content_fields", name in fields.content_fields),
        ("title_field", name == fields.title_field),
        ("url_field", name == fields.url_field),
        ("filepath_field", name == fields.filepath_field),
    ]
    return next((role for role, named in roles if named), None)
