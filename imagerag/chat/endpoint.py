"""The chat-completions endpoint as one call: request body in, :class:`ChatResponse` out.

The HTTP layer (api/chat.py) only maps its request to :func:`respond` and the result back.
"""

from __future__ import annotations

import logging

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
    sse_body,
)

logger = logging.getLogger(__name__)


def respond(body: bytes, deps: ChatDependencies, *, default_index: str) -> ChatResponse:
    """Answer one chat-completions request; every refusal is an OpenAI-shaped error."""
    try:
        request = parse_request(body, default_index=default_index)
        outcome = complete(request, deps)
        completion_id, created = new_completion_id(), now()
        if request.stream:
            # The whole stream is produced before the response starts (the Python worker
            # streams only through the FastAPI extension): clients parse it as SSE alike.
            chunks = chunk_bodies(
                completion_id=completion_id,
                created=created,
                model=outcome.model,
                context=outcome.context,
                deltas=outcome.deltas,
            )
            return ChatResponse(status=200, body=sse_body(list(chunks)), headers=SSE_HEADERS)
        content = "".join(outcome.deltas)
        return json_response(
            completion_body(
                completion_id=completion_id,
                created=created,
                model=outcome.model,
                content=content,
                context=outcome.context,
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
