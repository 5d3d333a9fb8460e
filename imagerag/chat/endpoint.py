"""The chat-completions endpoint as one call: request body in, :class:`ChatResponse` out.

The HTTP layer (api/chat.py) only maps its request to :func:`respond` and the result back.
A streamed answer is a lazy body: retrieval is done when :func:`respond` returns, the context
chunk is the first event, and each content delta is an event as soon as the model writes it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

from imagerag import cpu_share
from imagerag.chat.completion import ChatDependencies, complete
from imagerag.chat.errors import ChatError
from imagerag.chat.request import parse_request
from imagerag.chat.response import (
    SSE_HEADERS,
    ChatResponse,
    chunk_bodies,
    completion_body,
    error_response,
    json_response,
    new_completion_id,
    now,
)

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def respond(body: bytes, deps: ChatDependencies, *, default_index: str) -> ChatResponse:
    """Answer one chat-completions request; every refusal is an OpenAI-shaped error."""
    cpu_share.process_share().note_interactive()  # ingestion's CPU work yields meanwhile
    try:
        request = parse_request(body, default_index=default_index)
        outcome = complete(request, deps)
        completion_id, created = new_completion_id(), now()
        if request.stream:
            chunks = chunk_bodies(
                completion_id=completion_id,
                created=created,
                model=outcome.model,
                context=outcome.context,
                deltas=outcome.deltas,
                more=outcome.more,
                finish_reasons=outcome.finish,
            )
            return ChatResponse(status=200, body=sse_events(chunks), headers=SSE_HEADERS)
        content = "".join(outcome.deltas)
        more = ["".join(deltas) for deltas in outcome.more]
        return json_response(
            completion_body(
                completion_id=completion_id,
                created=created,
                model=outcome.model,
                content=content,
                context=outcome.context,
                more=more,
                finish_reasons=outcome.finish,
            )
        )
    except ChatError as exc:
        logger.info("chat request refused: %d %s (%s)", exc.status, exc.code, exc.param)
        return error_response(exc)
    except Exception:
        logger.exception("chat request failed")
        return error_response(
            ChatError(500, "the request failed unexpectedly", type="server_error")
        )


def sse_events(chunks: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The stream as server-sent events, one per chunk as it is produced, ending with
    ``data: [DONE]``. A failure after the first byte (the status line is out) ends the stream
    with one error event in the service's error shape, which the openai SDK raises as
    ``APIError``; no ``[DONE]`` follows it."""
    try:
        for chunk in chunks:
            yield _event(chunk)
    except ChatError as exc:
        logger.info("chat stream ended by an error: %d %s", exc.status, exc.code)
        yield _event(stream_error(exc))
        return
    except Exception:
        logger.exception("chat stream failed")
        failed = ChatError(500, "the request failed unexpectedly", type="server_error")
        yield _event(stream_error(failed))
        return
    yield DONE


def stream_error(error: ChatError) -> dict[str, Any]:
    """The error event: the error body, the retry delay in words (no header can carry it)."""
    body = error.body()
    if error.retry_after_s is not None:
        seconds = max(1, math.ceil(error.retry_after_s))
        body["error"]["message"] += f" Please retry after {seconds} seconds."
    return body


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
