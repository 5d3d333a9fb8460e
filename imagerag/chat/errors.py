"""The one error type of the chat endpoint, in OpenAI's error shape."""

from __future__ import annotations

from typing import Any


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
        # The inference document types param and code as strings: absent, never null.
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": {k: v for k, v in error.items() if v is not None}}


def invalid(param: str | None, message: str, code: str = "invalid_value") -> ChatError:
    return ChatError(400, message, param=param, code=code)


def too_large(message: str) -> ChatError:
    """A body over the size cap: refused before it is parsed."""
    return ChatError(413, message, code="request_too_large")


def unavailable(what: str, status: int | None, retry_after_s: float | None) -> ChatError:
    """A dependency that throttles (429) or fails: the client may retry after a while."""
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
