"""Grounded chat over HTTP: the On Your Data chat-completions endpoint (plain and Azure-style
paths) and the image route that citation URLs point to when storage does not sign URLs.

A streamed answer leaves as a ``StreamingResponse`` (HTTP streams, see function_app.py): the
context event once retrieval is done, then each delta as the model writes it."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

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
async def chat_completions(req: Request) -> Response:
    return await _chat(req, suffix="/chat/completions")


@bp.function_name("azure_chat_completions")
@bp.route(route=AZURE_ROUTE, methods=["POST"])
async def azure_chat_completions(req: Request) -> Response:
    if not req.query_params.get("api-version"):
        missing = ChatError(
            400,
            "the api-version query parameter is required",
            param="api-version",
            code="missing_required_parameter",
        )
        return _http(error_response(missing))
    deployment = req.path_params.get("deployment", "")
    return await _chat(req, suffix=f"/openai/deployments/{deployment}/chat/completions")


@bp.function_name("chat_images")
@bp.route(
    route=IMAGE_ROUTE + "/{container}/{*path}",
    methods=["GET"],
    # The signed link is the credential: a browser's <img> cannot send a function key.
    auth_level=func.AuthLevel.ANONYMOUS,
)
def chat_images(req: Request) -> Response:
    container = req.path_params.get("container", "")
    path = req.path_params.get("path", "")
    settings = config.settings()
    image = read_cited_image(
        container=container,
        path=path,
        expires=req.query_params.get("exp", ""),
        signature=req.query_params.get("sig", ""),
        links=config.image_links(settings),
        index_of=lambda name: config.index_of_container(settings, name),
        store=config.blob_store(settings),
        index=lambda name: config.image_index(settings, name),
    )
    if image is None:
        return _http(error_response(ChatError(404, "no such image", code="not_found")))
    return Response(
        image.data,
        status_code=200,
        headers={
            "Content-Type": image.mime_type,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=300",
        },
    )


async def _chat(req: Request, *, suffix: str) -> Response:
    body = await req.body()
    settings = config.settings()
    deps = config.chat_dependencies(settings, image_route=_image_route(str(req.url), suffix))
    # Retrieval blocks (vectorizer, index): off the event loop. A streamed body is a plain
    # iterator, which the response consumes on worker threads as the client reads.
    response = await asyncio.to_thread(
        endpoint.respond, body, deps, default_index=settings.chat_default_index
    )
    return _http(response)


def _image_route(request_url: str, suffix: str) -> str:
    """This app's image route, from the URL the caller used (keeps host and route prefix)."""
    parts = urlsplit(request_url)
    prefix = parts.path
    cut = prefix.lower().rfind(suffix.lower())
    if cut >= 0:
        prefix = prefix[:cut]
    return f"{parts.scheme}://{parts.netloc}{prefix.rstrip('/')}/{IMAGE_ROUTE}/"


def _http(response: ChatResponse) -> Response:
    if isinstance(response.body, bytes):
        return Response(response.body, status_code=response.status, headers=response.headers)
    return StreamingResponse(response.body, status_code=response.status, headers=response.headers)
