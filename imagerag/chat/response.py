"""The response bodies: the message context (citations, intent, retrieved documents), the
``chat.completion`` JSON, the ``chat.completion.chunk`` stream as server-sent events, and the
HTTP-neutral :class:`ChatResponse` the endpoint hands back."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagerag.chat.errors import ChatError
from imagerag.ports import SearchHit
from imagerag.retrieval import RetrievalResult, RetrievedDocument

UrlOf = Callable[[SearchHit], str | None]


@dataclass(frozen=True, slots=True)
class Citation:
    content: str
    title: str | None
    url: str | None
    filepath: str | None
    chunk_id: str = "0"


@dataclass(frozen=True)
class ChatResponse:
    """What the HTTP layer sends: a status, headers and a body (bytes, or chunks to stream)."""

    status: int
    body: bytes | Iterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


JSON_TYPE = "application/json; charset=utf-8"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> ChatResponse:
    return ChatResponse(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": JSON_TYPE, **(headers or {})},
    )


def error_response(error: ChatError) -> ChatResponse:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return json_response(error.body(), error.status, headers)


def build_context(
    result: RetrievalResult,
    citations: Sequence[Citation],
    include: Sequence[str],
    url_of: UrlOf | None = None,
) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if "citations" in include:
        context["citations"] = [_citation_json(c) for c in citations]
    if "intent" in include:
        # Azure sends the intent as a JSON-encoded list of the search queries.
        context["intent"] = json.dumps(result.intent)
    if "all_retrieved_documents" in include:
        context["all_retrieved_documents"] = [
            _retrieved_json(doc, url_of) for doc in result.all_documents
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


def _retrieved_json(doc: RetrievedDocument, url_of: UrlOf | None) -> dict[str, Any]:
    hit = doc.hit
    url = (url_of(hit) if url_of is not None else None) or hit.url
    retrieved = {
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
    }
    if not doc.kept:  # as the service: present only on documents that were filtered out
        retrieved["filter_reason"] = "score"
    return retrieved


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(
    *,
    completion_id: str,
    created: int,
    model: str,
    content: str,
    context: dict[str, Any],
    more: Sequence[str] = (),
    finish_reasons: Sequence[str] = (),
) -> dict[str, Any]:
    """``content`` is the first choice, ``more`` the others (n > 1); ``finish_reasons`` by
    choice, "stop" where missing."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "finish_reason": _reason(finish_reasons, i),
                # logprobs and refusal are required (nullable): none are produced here.
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "context": context,
                },
            }
            for i, text in enumerate([content, *more])
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
    more: Sequence[Iterable[str]] = (),
    finish_reasons: Sequence[str] = (),
) -> Iterator[dict[str, Any]]:
    """The stream: per choice (one after the other when n > 1), the context first (with the
    role), then content deltas, then its finish reason (read once its deltas are consumed)."""

    def chunk(i: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }

    for i, choice_deltas in enumerate([deltas, *more]):
        yield chunk(i, {"role": "assistant", "context": context})
        for delta in choice_deltas:
            if delta:
                yield chunk(i, {"content": delta})
        yield chunk(i, {}, _reason(finish_reasons, i))


def _reason(finish_reasons: Sequence[str], i: int) -> str:
    return finish_reasons[i] if i < len(finish_reasons) else "stop"


def sse_body(chunks: Iterable[dict[str, Any]]) -> bytes:
    """Server-sent events as the service sends them, ending with ``data: [DONE]``."""
    lines = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks]
    lines.append("data: [DONE]\n\n")
    return "".join(lines).encode("utf-8")


def now() -> int:
    return int(time.time())
