"""HTTP-triggered functions: route templates, request and response conversion."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web

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
            try:
                durable = client_binding() if route.info.binding_of_type("durableClient") else None
                result = await invoker.call(
                    route.info, to_http_request(request, body, params), durable_client=durable
                )
                response = to_web_response(result)
            except Exception:
                log.exception("Executed 'Functions.%s' (Failed)", route.info.name)
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
