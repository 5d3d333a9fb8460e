"""Ingestion entry points: what starts runs (the metadata blob trigger, Event Grid events) and
the ingestion status API (run records, not the Durable instance store)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from http import HTTPStatus
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus
from azurefunctions.extensions.http.fastapi import Request, Response

from imagerag import config, manifest, naming
from imagerag.ingestion import runs, sync_state
from imagerag.ingestion.contract import SyncRequest
from imagerag.ports import InvalidBlobNameError
from orchestrations.ingest import SYNC_ORCHESTRATOR

logger = logging.getLogger(__name__)

bp = df.Blueprint()

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
_ACTIVE = {OrchestrationRuntimeStatus.Pending, OrchestrationRuntimeStatus.Running}
# How long the caller that turned a container's sync on waits for the previous sync
# orchestration (which just decided to end) to complete, before it can start the next one.
_START_ATTEMPTS = 120
_START_PAUSE_S = 0.25
JSON_TYPE = "application/json; charset=utf-8"
# Runs and notices per page of the list route: ``top`` (default, most).
PAGE_DEFAULT = 20
PAGE_MAX = 100


@bp.function_name("ingest_metadata_trigger")
@bp.blob_trigger(
    arg_name="blob",
    path="%IMAGES_CONTAINER%/metadata{name}.json",
    connection="AzureWebJobsStorage",
    source=func.BlobSource(config.ingest_trigger_source()),
)
@bp.durable_client_input(client_name="client")
async def ingest_metadata_trigger(
    blob: func.InputStream, client: df.DurableOrchestrationClient
) -> None:
    """A metadata file of the app's own images container was created or replaced."""
    container, _, path = (blob.name or "").partition("/")
    if not manifest.is_metadata_name(path):
        # {name} also matches across '/', e.g. "metadata-old/photo.json": not read.
        await _notice(container, path)
        return
    sha256 = hashlib.sha256(blob.read()).hexdigest()
    reason = {"event": "created", "metadata": f"{container}/{path}", "sha256": sha256}
    index = naming.index_name_for(container)
    await request_run(client, container, index, reason, written=(path, sha256))


@bp.function_name("metadata_events")
@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def metadata_events(
    event: func.EventGridEvent, client: df.DurableOrchestrationClient
) -> None:
    """Blob events of ``*.json`` files delivered by Event Grid (devhost emulates the same), in
    the containers of data sources: metadata files created (but in the app's own container,
    which the blob trigger watches) or deleted, and names that look like metadata files but
    break the rule."""
    located = _blob_of(event.subject or "")
    if located is None:
        return
    container, path = located
    settings = config.settings()
    source = await asyncio.to_thread(config.registry(settings).by_container, container)
    if source is None or source.container is None:
        return
    if not manifest.is_metadata_name(path):
        if event.event_type == BLOB_CREATED:
            await _notice(container, path)
        return
    metadata = f"{container}/{path}"
    if event.event_type == BLOB_DELETED:
        reason = {"event": "deleted", "metadata": metadata}
        await request_run(client, container, source.index, reason, deleted=path)
    elif event.event_type == BLOB_CREATED and container != settings.images_container:
        data = await asyncio.to_thread(config.blob_store(settings).read_versioned, container, path)
        if data is None:
            return  # deleted since: its BlobDeleted follows
        sha256 = hashlib.sha256(data[0]).hexdigest()
        reason = {"event": "created", "metadata": metadata, "sha256": sha256}
        await request_run(client, container, source.index, reason, written=(path, sha256))


# --------------------------------------------------------------------------- status routes


@bp.function_name("list_ingestions")
@bp.route(route="ingestions", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_ingestions(req: Request) -> Response:
    """Runs and notices, newest first, a page at a time: ``top`` of them (default 20, at most
    100) from where ``continuationToken`` (a previous page's) left off. A page that is not the
    last carries ``nextLink``, the URL of the next one. One listing request per page."""
    top_text = req.query_params.get("top", str(PAGE_DEFAULT))
    if not top_text.isdigit() or not 1 <= int(top_text) <= PAGE_MAX:
        return _error(
            HTTPStatus.BAD_REQUEST,
            "InvalidTop",
            f"must be an integer from 1 to {PAGE_MAX}",
            field="top",
        )
    top = int(top_text)
    continuation = req.query_params.get("continuationToken") or None
    settings = config.settings()
    store = config.blob_store(settings)
    try:
        summaries, following = await asyncio.to_thread(
            runs.list_page, store, settings.work_container, size=top, continuation=continuation
        )
    except InvalidBlobNameError:
        return _error(
            HTTPStatus.BAD_REQUEST,
            "InvalidContinuationToken",
            "pass the continuationToken of a nextLink unchanged",
            field="continuationToken",
        )
    body: dict[str, Any] = {"value": [_listed(s) for s in summaries]}
    if following is not None:
        body["nextLink"] = str(req.url.include_query_params(top=top, continuationToken=following))
    return _json_response(body)


@bp.function_name("get_ingestion")
@bp.route(route="ingestions/{instanceId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_ingestion(req: Request) -> Response:
    """One run (progress, counts, files read, notices) or notice: one read of its record (a
    run whose orchestration failed is closed as failed by the sync orchestration)."""
    record = await _find_record(req)
    if isinstance(record, Response):
        return record
    return _json_response({k: v for k, v in record.items() if k not in runs.BOOKKEEPING})


@bp.function_name("get_ingestion_report")
@bp.route(
    route="ingestions/{instanceId}/report", methods=["GET"], auth_level=func.AuthLevel.FUNCTION
)
async def get_ingestion_report(req: Request) -> Response:
    """The per-entry report of a finished run (what happened to each entry, and why)."""
    record = await _find_record(req)
    if isinstance(record, Response):
        return record
    report = record.get("report")
    if not isinstance(report, dict):
        return _error(
            HTTPStatus.NOT_FOUND,
            "ReportNotReady",
            f"{record['id']} is {record.get('phase')}; its report is written when it ends",
        )
    store = config.blob_store(config.settings())
    # Off the event loop: a large report must not stall the other requests.
    data = await asyncio.to_thread(store.read, report["container"], report["path"])
    return Response(data, status_code=200, media_type=JSON_TYPE)


# --------------------------------------------------------------------------- helpers


async def request_run(
    client: df.DurableOrchestrationClient,
    container: str,
    index: str,
    reason: dict[str, Any],
    *,
    written: tuple[str, str] | None = None,
    deleted: str | None = None,
) -> sync_state.RunRequest:
    """Ask for a run of ``container`` (into ``index``) and make sure one will take it."""
    settings = config.settings()
    store = config.blob_store(settings)
    request = await asyncio.to_thread(
        sync_state.request_run,
        store,
        settings.work_container,
        container,
        reason=reason,
        written=written,
        deleted=deleted,
    )
    logger.info(
        "%s %s: run requested (request %d)", reason["event"], reason["metadata"], request.requested
    )
    await _ensure_sync(client, container, index, request)
    return request


async def _ensure_sync(
    client: df.DurableOrchestrationClient,
    container: str,
    index: str,
    request: sync_state.RunRequest,
) -> None:
    """Make sure a sync orchestration will take the request. The caller that turned the sync
    on (``request.start``) starts it, waiting if the previous one is still completing; any
    caller starts it when the state says on but no orchestration runs (it failed)."""
    instance_id = naming.sync_instance_id(container)
    payload: SyncRequest = {
        "container": container,
        "index": index,
        "epoch": request.epoch,
    }
    for _attempt in range(_START_ATTEMPTS):
        status = await client.get_status(instance_id, show_input=True)
        if status.runtime_status in _ACTIVE:
            if not request.start or _epoch_of(status.input_) >= request.epoch:
                return  # the orchestration that runs covers this request
            await asyncio.sleep(_START_PAUSE_S)  # the previous one is completing
            continue
        try:
            await client.start_new(SYNC_ORCHESTRATOR, instance_id, payload)
            logger.info("started %s (epoch %d)", instance_id, request.epoch)
            return
        except Exception:  # another caller started it between our two calls: look again
            await asyncio.sleep(_START_PAUSE_S)
    raise RuntimeError(f"could not start {instance_id} for request {request.requested}")


def _epoch_of(orchestration_input: Any) -> int:
    data = _parse_if_json_text(orchestration_input)
    return int(data.get("epoch", 0)) if isinstance(data, dict) else 0


async def _notice(container: str, path: str) -> None:
    rule = manifest.near_miss_rule(path)
    if rule is None:
        logger.info("ignoring %s/%s: not a metadata file", container, path)
        return
    logger.warning("ignoring %s/%s: %s", container, path, rule)
    settings = config.settings()
    await asyncio.to_thread(
        runs.write_notice,
        config.blob_store(settings),
        settings.work_container,
        notice_id=naming.notice_id(container, path),
        container=container,
        path=path,
        rule=rule,
    )


def _blob_of(subject: str) -> tuple[str, str] | None:
    """(container, blob) of a storage event subject
    ``/blobServices/default/containers/<container>/blobs/<blob>``."""
    head, found, path = subject.partition("/blobs/")
    marker = "/blobServices/default/containers/"
    if not found or not head.startswith(marker) or not path:
        return None
    return head[len(marker) :], path


async def _find_record(req: Request) -> dict[str, Any] | Response:
    """The run or notice named by the route, or the 400/404 response to send instead."""
    record_id = req.path_params.get("instanceId", "")
    if not (naming.is_ingestion_instance_id(record_id) or naming.is_notice_id(record_id)):
        return _error(
            HTTPStatus.BAD_REQUEST,
            "InvalidInstanceId",
            f"must match {naming.INSTANCE_ID_PATTERN} (a run) or {naming.NOTICE_ID_PATTERN}",
            field="instanceId",
        )
    settings = config.settings()
    store = config.blob_store(settings)
    record = await asyncio.to_thread(runs.read_record, store, settings.work_container, record_id)
    if record is None:
        return _error(HTTPStatus.NOT_FOUND, "NotFound", f"no ingestion {record_id}")
    return record


def _listed(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "instanceId": summary.get("id"),
        "kind": summary.get("kind"),
        "container": summary.get("container"),
        "index": summary.get("index"),
        "phase": summary.get("phase"),
        "createdTime": summary.get("created"),
        "lastUpdatedTime": summary.get("updated"),
        "total": summary.get("total"),
        "done": summary.get("done"),
    }


def _json_response(body: Any, status: int = HTTPStatus.OK) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status_code=int(status),
        media_type=JSON_TYPE,
    )


def _error(status: HTTPStatus, code: str, message: str, *, field: str | None = None) -> Response:
    error: dict[str, str] = {"code": code}
    if field is not None:
        error["field"] = field
    error["message"] = message
    return _json_response({"error": error}, status)


def _parse_if_json_text(value: Any) -> Any:
    # The extension returns JSON values; hosts that pass the raw JSON text are tolerated.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
