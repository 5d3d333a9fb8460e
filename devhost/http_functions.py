"""HTTP-triggered functions: route templates, request and response conversion.

Two models, as in the Python worker. The classic one hands a function ``func.HttpRequest`` and
sends the ``func.HttpResponse`` it returns. HTTP streams (the app imports
``azurefunctions.extensions.http.fastapi``) hand every HTTP function a FastAPI ``Request`` and
run the FastAPI ``Response`` it returns as an ASGI app, each body message written to the
client as it comes (chunked when the response has no Content-Length).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict
from starlette.requests import ClientDisconnect
from starlette.requests import Request as AsgiRequest
from starlette.responses import Response as AsgiResponse

from .functions import HTTP_TRIGGER, FunctionIndex, FunctionInfo, Invoker

log = logging.getLogger("devhost.http")

# Route constraints the Functions host understands (ASP.NET route templates).
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
    "float": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}
_PARAMETER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(\?)?(?::([A-Za-z]+))?(?:=[^}]*)?\}")


def compile_route(template: str) -> re.Pattern[str]:
    """`items/{id:int}/{rest?}` -> a regex with one named group per parameter."""
    pattern = ""
    for segment in template.strip("/").split("/"):
        parameter = _PARAMETER.fullmatch(segment)
        if parameter and (parameter.group(1) or parameter.group(3)):
            catch_all, name, _, constraint = parameter.groups()
            value = ".*" if catch_all else _CONSTRAINTS.get(constraint or "", "[^/]+")
            pattern += f"(?:/(?P<{name}>{value}))?"
            continue
        literal = 0
        segment_pattern = ""
        for match in _PARAMETER.finditer(segment):
            segment_pattern += re.escape(segment[literal : match.start()])
            value = _CONSTRAINTS.get(match.group(4) or "", "[^/]+")
            segment_pattern += f"(?P<{match.group(2)}>{value})"
            literal = match.end()
        segment_pattern += re.escape(segment[literal:])
        pattern += "/" + segment_pattern
    return re.compile(f"^{pattern}/?$", re.IGNORECASE)


@dataclass(frozen=True)
class HttpRoute:
    info: FunctionInfo
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    auth_level: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        if self.methods is not None and method.upper() not in self.methods:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}


def http_routes(index: FunctionIndex) -> list[HttpRoute]:
    routes = []
    for info in index.of_trigger(HTTP_TRIGGER):
        template = info.trigger.get("route") or info.name
        methods = info.trigger.get("methods")
        routes.append(
            HttpRoute(
                info=info,
                template=template,
                pattern=compile_route(template),
                methods=frozenset(m.upper() for m in methods) if methods else None,
                auth_level=str(info.trigger.get("authLevel", "FUNCTION")).lower(),
            )
        )
    # Literal segments win over parameters, as in ASP.NET routing.
    routes.sort(key=lambda r: (r.template.count("{"), -len(r.template)))
    return routes


def to_http_request(request: web.Request, body: bytes, route_params: dict[str, str]) -> Any:
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=headers,
        params={k: v for k, v in request.query.items()},
        route_params=route_params,
        body=body,
    )


def http_streams_enabled() -> bool:
    """True once the app imported the FastAPI extension: the worker's own test."""
    try:
        from azurefunctions.extensions.base import HttpV2FeatureChecker
    except ImportError:
        return False
    return bool(HttpV2FeatureChecker.http_v2_enabled())


class AsgiExchange:
    """One request as an ASGI scope and receive channel, and the response sent back through
    an aiohttp StreamResponse as the ASGI messages arrive."""

    def __init__(self, request: web.Request, body: bytes, route_params: dict[str, str]) -> None:
        self._request = request
        self._body: bytes | None = body
        self._finished = asyncio.Event()
        self._response: web.StreamResponse | None = None
        host, _, port = (request.host or "127.0.0.1").partition(":")
        self.scope: MutableMapping[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.partition("?")[0].encode("latin-1"),
            "query_string": request.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "server": (host, int(port) if port.isdigit() else 80),
            "client": None,
            "path_params": route_params,
        }

    def request(self) -> AsgiRequest:
        return AsgiRequest(self.scope, self.receive)

    async def receive(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._finished.wait()  # nothing more to read: wait for the end of the exchange
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = CIMultiDict(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
            )
            self._response = web.StreamResponse(status=message["status"], headers=headers)
            await self._response.prepare(self._request)
        elif message["type"] == "http.response.body":
            assert self._response is not None, "body before http.response.start"
            await self._response.write(message.get("body", b""))
            if not message.get("more_body", False):
                await self._response.write_eof()

    @property
    def started(self) -> bool:
        return self._response is not None and self._response.prepared

    async def respond(self, result: Any) -> web.StreamResponse:
        if not isinstance(result, AsgiResponse):
            raise TypeError(
                "with HTTP streams an HTTP function must return a FastAPI Response, "
                f"not {type(result)!r}"
            )
        try:
            await result(self.scope, self.receive, self.send)
        except (ClientDisconnect, ConnectionResetError):
            log.info("The client went away before the response ended")
        finally:
            self._finished.set()
        assert self._response is not None, "the response never started"
        return self._response


def to_web_response(result: Any) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str | bytes):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse, not {type(result)!r}")
    headers = dict(result.headers.items())
    if not any(k.lower() == "content-type" for k in headers):
        content_type = result.mimetype or "text/plain"
        if result.charset and (content_type.startswith("text/") or "json" in content_type):
            content_type += f"; charset={result.charset}"
        headers["Content-Type"] = content_type
    return web.Response(status=result.status_code, body=result.get_body(), headers=headers)


def make_handler(
    routes: list[HttpRoute],
    invoker: Invoker,
    client_binding: Callable[[], str],
    *,
    streams: bool = False,
) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info.get("tail", "")
        for route in routes:
            params = route.match(request.method, path)
            if params is None:
                continue
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge as exc:
                log.info("Refused a %s body over the host's limit", request.method)
                return web.json_response(_too_large_body(exc), status=413)
            exchange = AsgiExchange(request, body, params) if streams else None
            trigger = exchange.request() if exchange else to_http_request(request, body, params)
            try:
                durable = client_binding() if route.info.binding_of_type("durableClient") else None
                result = await invoker.call(route.info, trigger, durable_client=durable)
                response: web.StreamResponse
                if exchange is None:
                    response = to_web_response(result)
                else:
                    response = await exchange.respond(result)
            except Exception:
                log.exception("Executed 'Functions.%s' (Failed)", route.info.name)
                if exchange is not None and exchange.started:
                    raise  # headers are out: the connection is cut, as the host does
                return web.Response(status=500)
            log.info("Executed 'Functions.%s' (%d)", route.info.name, response.status)
            return response
        return web.Response(status=404)

    return handle


def _too_large_body(exc: web.HTTPRequestEntityTooLarge) -> dict[str, Any]:
    """The host refuses oversized bodies before any function runs; answered as JSON in the
    OpenAI error shape the app's own routes use."""
    return {
        "error": {
            "message": f"the request body is larger than the host accepts: {exc.text}",
            "type": "invalid_request_error",
            "code": "request_too_large",
        }
    }
