"""Data sources over HTTP: register one of the three kinds, upload files to an upload source,
read a source's state, remove it. Errors in OpenAI's shape, naming the field."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from api.ingestion import request_run
from imagerag import config, datasource_ops, naming
from imagerag.chat.errors import ChatError
from imagerag.chat.response import ChatResponse, error_response, json_response
from imagerag.datasources import DataSource, DataSourceError

logger = logging.getLogger(__name__)

bp = df.Blueprint()

MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # the host refuses bigger bodies anyway


@bp.function_name("create_datasource")
@bp.route(route="datasources", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def create_datasource(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """Register a data source: 201 with it (and, for a blob source, its first ingestion)."""
    try:
        body = json.loads(await req.body() or b"null")
    except (ValueError, RecursionError):
        return _refused(DataSourceError(400, None, "the request body is not valid JSON"))
    settings = config.settings()
    try:
        source = await asyncio.to_thread(
            datasource_ops.register,
            config.registry(settings),
            config.blob_store(settings),
            body,
            index=lambda name: config.image_index(settings, name),
            model=config.vectorizer(settings).model,
        )
    except DataSourceError as exc:
        return _refused(exc)
    config.forget_data_sources()
    answer = source.to_json()
    if source.kind == "blob" and source.container is not None:
        # The container already holds metadata files: ingest them now.
        request = await request_run(
            client,
            source.container,
            source.index,
            {"event": "registered", "metadata": f"{source.container}/"},
        )
        answer["ingestion"] = naming.run_id(source.container, request.run)
    return _json(answer, 201)


@bp.function_name("list_datasources")
@bp.route(route="datasources", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_datasources(req: Request) -> Response:
    settings = config.settings()
    store = config.blob_store(settings)

    def listed() -> list[dict[str, Any]]:
        return [
            datasource_ops.describe(store, settings.work_container, source)
            for source in config.registry(settings).all()
        ]

    return _json({"value": await asyncio.to_thread(listed)})


@bp.function_name("get_datasource")
@bp.route(route="datasources/{name}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_datasource(req: Request) -> Response:
    settings = config.settings()
    try:
        source = await _source(req)
    except DataSourceError as exc:
        return _refused(exc)
    store = config.blob_store(settings)
    body = await asyncio.to_thread(datasource_ops.describe, store, settings.work_container, source)
    return _json(body)


@bp.function_name("delete_datasource")
@bp.route(route="datasources/{name}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
async def delete_datasource(req: Request) -> Response:
    """Unregister; with ``?delete_index=true`` also delete the generated index and, for an
    upload source, what was uploaded."""
    settings = config.settings()
    delete_index = req.query_params.get("delete_index", "false").lower() == "true"
    try:
        source = await _source(req)
        removed = await asyncio.to_thread(config.registry(settings).remove, source.name)
    except DataSourceError as exc:
        return _refused(exc)
    config.forget_data_sources()
    answer: dict[str, Any] = {"name": removed.name, "deleted": True, "index_deleted": False}
    if delete_index and removed.kind in ("upload", "blob"):
        await asyncio.to_thread(config.image_index(settings, removed.index).drop)
        answer["index_deleted"] = True
    if delete_index and removed.kind == "upload":
        store = config.blob_store(settings)
        answer["blobs_deleted"] = await asyncio.to_thread(
            datasource_ops.delete_uploaded, store, removed
        )
    return _json(answer)


@bp.function_name("upload_datasource_files")
@bp.route(route="datasources/{name}/files", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def upload_datasource_files(req: Request, client: df.DurableOrchestrationClient) -> Response:
    """``multipart/form-data``: ``file`` parts (the images) and one ``metadata`` part (the
    same JSON array as a metadata file). 202 with the ingestion that will take them."""
    body = await req.body()
    if len(body) > MAX_UPLOAD_BYTES:
        too_large = ChatError(413, "the upload is over 100 MB", code="request_too_large")
        return _http(error_response(too_large))
    # The form parsed by azure.functions' own multipart reader (no extra parser needed).
    form = func.HttpRequest(req.method, str(req.url), headers=dict(req.headers), body=body)
    try:
        source = await _source(req)
        files = [(f.filename or "", f.read()) for f in form.files.getlist("file")]
        metadata = _metadata_part(form)
        if not files:
            raise DataSourceError(400, "file", "send one or more 'file' parts (the images)")
        store = config.blob_store(config.settings())
        upload = await asyncio.to_thread(
            datasource_ops.store_upload, store, source, files, metadata
        )
    except DataSourceError as exc:
        return _refused(exc)
    answer: dict[str, Any] = {
        "name": source.name,
        "accepted": upload.accepted,
        "refused": upload.refused,
        "ingestion": None,
    }
    if upload.metadata is not None and source.container is not None:
        request = await request_run(
            client,
            source.container,
            source.index,
            {"event": "uploaded", "metadata": f"{source.container}/{upload.metadata}"},
            written=(upload.metadata, upload.sha256),
        )
        answer["ingestion"] = naming.run_id(source.container, request.run)
        answer["status"] = f"/api/datasources/{source.name}"
    status = 202 if upload.accepted else 400
    if not upload.accepted:
        first = upload.refused[0] if upload.refused else {"reason": "nothing was uploaded"}
        answer["error"] = {
            "message": f"no file was accepted: {first.get('file', '')} {first['reason']}",
            "type": "invalid_request_error",
            "param": "file",
            "code": first.get("code", "invalid_value"),
        }
    return _json(answer, status)


async def _source(req: Request) -> DataSource:
    name = req.path_params.get("name", "")
    registry = config.registry(config.settings())
    return await asyncio.to_thread(registry.require, name)


def _metadata_part(form: func.HttpRequest) -> bytes:
    part = form.files.get("metadata")
    if part is not None:
        return bytes(part.read())
    text = form.form.get("metadata")
    if text is None:
        raise DataSourceError(400, "metadata", "send a 'metadata' part: the descriptions")
    return str(text).encode("utf-8")


def _refused(exc: DataSourceError) -> Response:
    codes = {400: "invalid_value", 404: "not_found", 409: "conflict"}
    error = ChatError(
        exc.status, exc.message, param=exc.field, code=codes.get(exc.status, "invalid_value")
    )
    return _http(error_response(error))


def _json(body: Any, status: int = 200) -> Response:
    return _http(json_response(body, status))


def _http(response: ChatResponse) -> Response:
    assert isinstance(response.body, bytes)
    return Response(response.body, status_code=response.status, headers=response.headers)
