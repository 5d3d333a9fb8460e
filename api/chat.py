"""Grounded chat over HTTP: the On Your Data chat-completions endpoint (plain and Azure-style
paths) and the image route that citation URLs point to when storage does not sign URLs."""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any
from urllib.parse import quote, urlsplit

import azure.functions as func

from imagerag import chat, config
from imagerag.ports import BlobNotFoundError, InvalidBlobNameError, SearchHit

logger = logging.getLogger(__name__)

bp = func.Blueprint()

IMAGE_ROUTE = "images"
CITATION_URL_TTL_S = 3600
AZURE_ROUTE = "openai/deployments/{deployment}/chat/completions"


@bp.function_name("chat_completions")
@bp.route(route="chat/completions", methods=["POST"])
def chat_completions(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(req, suffix="/chat/completions", deployment=None)


@bp.function_name("azure_chat_completions")
@bp.route(route=AZURE_ROUTE, methods=["POST"])
def azure_chat_completions(req: func.HttpRequest) -> func.HttpResponse:
    deployment = req.route_params.get("deployment", "")
    if not req.params.get("api-version"):
        return _error_response(
            chat.ChatError(
                400,
                "the api-version query parameter is required",
                param="api-version",
                code="missing_required_parameter",
            )
        )
    return _handle(
        req, suffix=f"/openai/deployments/{deployment}/chat/completions", deployment=deployment
    )


@bp.function_name("chat_images")
@bp.route(route=IMAGE_ROUTE + "/{container}/{*path}", methods=["GET"])
def chat_images(req: func.HttpRequest) -> func.HttpResponse:
    container = req.route_params.get("container", "")
    path = req.route_params.get("path", "")
    settings = _settings()
    # Only the images container is served: this route must not open the rest of storage.
    if container not in _served_containers(settings) or not path:
        return _not_found(f"no image {container}/{path}")
    store = config.blob_store(settings)
    try:
        properties = store.properties(container, path)
        if properties is None:
            return _not_found(f"no image {container}/{path}")
        data = store.read(container, path, etag=properties.etag)
    except (BlobNotFoundError, InvalidBlobNameError):
        return _not_found(f"no image {container}/{path}")
    return func.HttpResponse(
        data,
        status_code=200,
        headers={
            "Content-Type": properties.content_type or "application/octet-stream",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=300",
        },
    )


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=1)
def _settings() -> config.Settings:
    return config.Settings.from_env()


def _served_containers(settings: config.Settings) -> frozenset[str]:
    return frozenset({settings.images_container})


def _handle(req: func.HttpRequest, *, suffix: str, deployment: str | None) -> func.HttpResponse:
    try:
        settings = _settings()
        request = chat.parse_request(req.get_body(), default_index=settings.chat_default_index)
        deps = _dependencies(settings, req, suffix)
        outcome = chat.complete(request, deps)
        model = deployment or request.model or _configured_model(settings)
        completion_id, created = chat.new_completion_id(), chat.now()
        if request.stream:
            # The whole stream is produced before the response starts (the Python worker
            # streams only through the FastAPI extension): clients parse it as SSE alike.
            chunks = list(
                chat.chunk_bodies(
                    completion_id=completion_id,
                    created=created,
                    model=model,
                    context=outcome.context,
                    deltas=outcome.deltas,
                )
            )
            return func.HttpResponse(
                chat.sse_body(chunks),
                status_code=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            )
        content = "".join(outcome.deltas)
        body = chat.completion_body(
            completion_id=completion_id,
            created=created,
            model=model,
            content=content,
            context=outcome.context,
        )
        return _json(body, 200)
    except chat.ChatError as exc:
        logger.info("chat request refused: %d %s (%s)", exc.status, exc.code, exc.param)
        return _error_response(exc)
    except Exception:
        logger.exception("chat request failed")
        return _error_response(
            chat.ChatError(500, "the request failed unexpectedly", type="server_error")
        )


def _dependencies(
    settings: config.Settings, req: func.HttpRequest, suffix: str
) -> chat.ChatDependencies:
    store = config.blob_store(settings)
    image_route = _image_route(req.url, suffix)
    containers = _served_containers(settings)
    code = req.params.get("code")

    def citation_url(hit: SearchHit) -> str | None:
        url = chat.citation_url(
            hit,
            store,
            image_route=image_route,
            containers=containers,
            expires_in_s=CITATION_URL_TTL_S,
        )
        # A function key the caller used opens the image route too (FUNCTION auth level).
        if url is not None and url.startswith(image_route) and code:
            url += f"?code={quote(code)}"
        return url

    return chat.ChatDependencies(
        vectorizer=lambda: config.vectorizer(settings),
        index=lambda name: config.image_index(settings, name),
        answerer=config.answerer(settings),
        blobs=store,
        image_policy=chat.ImageUrlPolicy(allowlist=settings.chat_image_url_allowlist),
        citation_url=citation_url,
    )


def _image_route(request_url: str, suffix: str) -> str:
    """This app's image route, from the URL the caller used (keeps host and route prefix)."""
    parts = urlsplit(request_url)
    prefix = parts.path
    cut = prefix.lower().rfind(suffix.lower())
    if cut >= 0:
        prefix = prefix[:cut]
    return f"{parts.scheme}://{parts.netloc}{prefix.rstrip('/')}/{IMAGE_ROUTE}/"


def _configured_model(settings: config.Settings) -> str:
    if settings.openai_endpoint is not None:
        return settings.openai_deployment
    if settings.compatible_base_url is not None and settings.compatible_model:
        return settings.compatible_model
    return "imagerag-extractive"


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def _error_response(error: chat.ChatError) -> func.HttpResponse:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return _json(error.body(), error.status, headers)


def _not_found(message: str) -> func.HttpResponse:
    return _error_response(chat.ChatError(404, message, code="not_found"))
