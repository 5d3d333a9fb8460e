"""A FastAPI ``Request`` as the Python worker hands one to an HTTP function under HTTP streams
(route parameters in ``path_params``), for calling a function directly in a test."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request


def fastapi_request(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
) -> Request:
    parts = urlsplit(url)
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "scheme": parts.scheme or "http",
        "server": (parts.hostname or "127.0.0.1", parts.port or 80),
        "path": parts.path,
        "root_path": "",
        "query_string": parts.query.encode("latin-1"),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "path_params": dict(route_params or {}),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)
