"""CORS the way `func start` applies it, from local.settings.json:

    "Host": {"CORS": "http://localhost:3000,https://example.org", "CORSCredentials": false}

Core Tools splits ``CORS`` on commas and hands the origins to ASP.NET Core's CORS middleware
with any header and any method allowed, and credentials allowed when ``CORSCredentials`` is
true. So, as there:

- a request without ``Origin`` is not a CORS request and is left alone;
- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered ``204`` by the
  host, without running a function; for an allowed origin it echoes the requested method and
  headers;
- every response to an allowed origin (errors included) carries
  ``Access-Control-Allow-Origin`` (the origin itself, or ``*`` for ``"CORS": "*"`` without
  credentials), ``Access-Control-Allow-Credentials: true`` when credentials are on, and
  ``Vary: Origin`` when the answer depends on the origin;
- ``*`` together with credentials is refused at start-up, as ASP.NET Core refuses it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CORS_SETTING = "CORS"
CREDENTIALS_SETTING = "CORSCredentials"


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[str]  # normalized: lowercase, no trailing slash
    any_origin: bool
    credentials: bool

    @classmethod
    def from_host_settings(cls, host: Mapping[str, Any]) -> CorsPolicy | None:
        """The policy of local.settings.json's "Host" section; None when CORS is not set."""
        origins = [o.strip() for o in str(host.get(CORS_SETTING) or "").split(",") if o.strip()]
        if not origins:
            return None
        credentials = _as_bool(host.get(CREDENTIALS_SETTING, False))
        any_origin = "*" in origins
        if any_origin and credentials:
            raise ValueError(
                'local.settings.json: "Host": {"CORS": "*"} cannot be combined with '
                '"CORSCredentials": true (the CORS protocol forbids a wildcard origin with '
                "credentials): list the origins instead"
            )
        return cls(
            origins=frozenset(_normalized(o) for o in origins if o != "*"),
            any_origin=any_origin,
            credentials=credentials,
        )

    def allowed_origin(self, origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for ``origin``, or None if not allowed."""
        if self.any_origin:
            return "*"  # credentials are never on together with "*"
        return origin if _normalized(origin) in self.origins else None

    def describe(self) -> str:
        origins = "any origin" if self.any_origin else ", ".join(sorted(self.origins))
        return f"CORS: {origins}" + (" (with credentials)" if self.credentials else "")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, policy: CorsPolicy) -> None:
    """Answer preflights and add the CORS headers to every response of ``app``."""

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        method = request.headers.get("Access-Control-Request-Method")
        if request.method != "OPTIONS" or origin is None or method is None:
            return await handler(request)
        response = web.Response(status=204)
        if policy.allowed_origin(origin) is not None:
            response.headers["Access-Control-Allow-Methods"] = method
            requested = request.headers.get("Access-Control-Request-Headers")
            if requested:
                response.headers["Access-Control-Allow-Headers"] = requested
        return response

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return
        allowed = policy.allowed_origin(origin)
        if allowed is None:
            return
        response.headers["Access-Control-Allow-Origin"] = allowed
        if policy.credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"
        if allowed != "*":
            vary = [v.strip() for v in response.headers.get("Vary", "").split(",") if v.strip()]
            if "origin" not in (v.lower() for v in vary):
                response.headers["Vary"] = ", ".join([*vary, "Origin"])

    app.middlewares.append(preflight)
    # A signal rather than the middleware: it also reaches responses a function streams
    # (prepared before the handler returns).
    app.on_response_prepare.append(add_headers)


def _normalized(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)
