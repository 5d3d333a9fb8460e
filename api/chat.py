"""Grounded chat over HTTP: the On Your Data chat-completions endpoint (plain and Azure-style
paths) and the image route that citation URLs point to when storage does not sign URLs."""

from __future__ import annotations

from urllib.parse import urlsplit

import azure.functions as func

from imagerag import config
from imagerag.chat import endpoint
from imagerag.chat.errors import ChatError
from imagerag.chat.response import ChatResponse, error_response
from imagerag.cited_images import read_cited_image

bp = func.Blueprint()

IMAGE_ROUTE = "images"
AZURE_ROUTE = "openai/deployments/{deployment}/chat/completions"


@bp.function_name("chat_completions")
@bp.route(route="chat/completions", methods=["POST"])
def chat_completions(req: func.HttpRequest) -> func.HttpResponse:
    return _chat(req, suffix="/chat/completions")


@bp.function_name("azure_chat_completions")
@bp.route(route=AZURE_ROUTE, methods=["POST"])
def azure_chat_completions(req: func.HttpRequest) -> func.HttpResponse:
    if not req.params.get("api-version"):
        missing = ChatError(
            400,
            "the api-version query parameter is required",
            param="api-version",
            code="missing_required_parameter",
        )
        return _http(error_response(missing))
    deployment = req.route_params.get("deployment", "")
    return _chat(req, suffix=f"/openai/deployments/{deployment}/chat/completions")


@bp.function_name("chat_images")
@bp.route(
    route=IMAGE_ROUTE + "/{container}/{*path}",
    methods=["GET"],
    # The signed link is the credential: a browser's <img> cannot send a function key.
    auth_level=func.AuthLevel.ANONYMOUS,
)
def chat_images(req: func.HttpRequest) -> func.HttpResponse:
    container = req.route_params.get("container", "")
    path = req.route_params.get("path", "")
    settings = config.settings()
    image = read_cited_image(
        container=container,
        path=path,
        expires=req.params.get("exp", ""),
        signature=req.params.get("sig", ""),
        links=config.image_links(settings),
        index_of=lambda name: config.index_of_container(settings, name),
        store=config.blob_store(settings),
        index=lambda name: config.image_index(settings, name),
    )
    if image is None:
        return _http(error_response(ChatError(404, "no such image", code="not_found")))
    return func.HttpResponse(
        image.data,
        status_code=200,
        headers={
            "Content-Type": image.mime_type,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=300",
        },
    )


def _chat(req: func.HttpRequest, *, suffix: str) -> func.HttpResponse:
    settings = config.settings()
    deps = config.chat_dependencies(settings, image_route=_image_route(req.url, suffix))
    return _http(endpoint.respond(req.get_body(), deps, default_index=settings.chat_default_index))


def _image_route(request_url: str, suffix: str) -> str:
    """This app's image route, from the URL the caller used (keeps host and route prefix)."""
    parts = urlsplit(request_url)
    prefix = parts.path
    cut = prefix.lower().rfind(suffix.lower())
    if cut >= 0:
        prefix = prefix[:cut]
    return f"{parts.scheme}://{parts.netloc}{prefix.rstrip('/')}/{IMAGE_ROUTE}/"


def _http(response: ChatResponse) -> func.HttpResponse:
    body = response.body if isinstance(response.body, bytes) else b"".join(response.body)
    return func.HttpResponse(body, status_code=response.status, headers=response.headers)
