"""Ingestion entry points: the metadata blob trigger and the ingestion status API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from imagerag import config, manifest, naming
from imagerag.ingestion.contract import BlobRef, IngestRequest, blob_ref, ref_text
from orchestrations.ingest import INGEST_ORCHESTRATOR

logger = logging.getLogger(__name__)

bp = df.Blueprint()

# When the file's latest ingestion is of the same content and in one of these states, a new
# upload of it starts nothing. Failed, Terminated and Canceled ones are started again under
# the same id (start_new replaces them): re-uploading the same bytes retries a failed ingestion.
_ALREADY_STARTED = {
    OrchestrationRuntimeStatus.Pending,
    OrchestrationRuntimeStatus.Running,
    OrchestrationRuntimeStatus.ContinuedAsNew,
    OrchestrationRuntimeStatus.Suspended,
    OrchestrationRuntimeStatus.Completed,
}
_IN_PROGRESS = {
    OrchestrationRuntimeStatus.Pending,
    OrchestrationRuntimeStatus.Running,
    OrchestrationRuntimeStatus.ContinuedAsNew,
    OrchestrationRuntimeStatus.Suspended,
}


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
    container, _, blob_path = (blob.name or "").partition("/")
    if not manifest.is_metadata_name(blob_path):
        # {name} also matches across '/', e.g. "metadata-old/photo.json": not a metadata file.
        logger.info("ignoring %s/%s: not a metadata*.json file name", container, blob_path)
        return
    data = blob.read()
    sha256 = hashlib.sha256(data).hexdigest()
    # Keyed by content, not ETag: re-uploading the same bytes gets a new ETag (and a new
    # trigger) but must start nothing, while any change of content is a new ingestion. Only
    # the file's latest ingestion counts, so content A, then B, then A again ingests A again.
    instance_id = naming.ingestion_instance_id(container, blob_path, sha256)

    status = await _latest_ingestion(client, naming.ingestion_id_prefix(container, blob_path))
    if status is not None and status.instance_id == instance_id:
        if status.runtime_status in _ALREADY_STARTED and not _had_transient_failures(status):
            logger.info(
                "metadata %s/%s already ingested or in progress: %s is %s",
                container,
                blob_path,
                instance_id,
                status.runtime_status.value,
            )
            return
    elif status is not None and status.runtime_status in _IN_PROGRESS:
        # An older version of the file is still being ingested: the newest content wins, and two
        # versions must not upsert and delete against each other.
        await _terminate_with_partitions(client, status.instance_id, f"superseded by {instance_id}")
        logger.info(
            "metadata %s/%s: stopped %s, superseded", container, blob_path, status.instance_id
        )
    request: IngestRequest = {"metadata": blob_ref(container, blob_path), "sha256": sha256}
    try:
        await client.start_new(INGEST_ORCHESTRATOR, instance_id, request)
    except Exception:
        # Two deliveries of the same upload can race to start the same id; the loser's
        # start is refused. Only swallow that case: anything else is re-raised.
        again = await client.get_status(instance_id)
        if again.runtime_status not in _ALREADY_STARTED:
            raise
        logger.info(
            "metadata %s/%s: %s was started concurrently", container, blob_path, instance_id
        )
        return
    logger.info(
        "metadata %s/%s (%d bytes): started ingestion %s",
        container,
        blob_path,
        len(data),
        instance_id,
    )


async def _terminate_with_partitions(
    client: df.DurableOrchestrationClient, instance_id: str, reason: str
) -> None:
    # Terminating an orchestration does not stop its sub-orchestrations: stop them too. The
    # parent goes first: stopped children would otherwise wake it with their failures.
    await client.terminate(instance_id, reason)
    children = await client.get_status_by(
        instance_id_prefix=naming.partition_id_prefix(instance_id)
    )
    for child in children:
        if child.runtime_status in _IN_PROGRESS and child.instance_id:
            await client.terminate(child.instance_id, reason)


def _had_transient_failures(status: DurableOrchestrationStatus) -> bool:
    # A completed ingestion whose images failed only because a service stayed unavailable is
    # run again when the same file is dropped again (the report tells users to do that).
    output = _parse_if_json_text(status.output)
    return (
        status.runtime_status == OrchestrationRuntimeStatus.Completed
        and isinstance(output, dict)
        and bool(output.get("failed"))
    )


async def _latest_ingestion(
    client: df.DurableOrchestrationClient, prefix: str
) -> DurableOrchestrationStatus | None:
    statuses = await client.get_status_by(instance_id_prefix=prefix)
    ingestions = [s for s in statuses if s.name == INGEST_ORCHESTRATOR]
    return max(ingestions, key=_created_sort_key, default=None)


@bp.function_name("list_ingestions")
@bp.route(route="ingestions", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def list_ingestions(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    statuses = await client.get_status_all()
    ingestions = [s for s in statuses if s.name == INGEST_ORCHESTRATOR]
    ingestions.sort(key=_created_sort_key, reverse=True)
    value = [
        {
            "instanceId": s.instance_id,
            "runtimeStatus": _runtime_status(s),
            "createdTime": _iso(s.created_time),
            "lastUpdatedTime": _iso(s.last_updated_time),
            "metadata": _metadata_of(s.input_, _public_output(s)),
            "customStatus": s.custom_status,
        }
        for s in ingestions
    ]
    return _json_response({"value": value})


@bp.function_name("get_ingestion")
@bp.route(route="ingestions/{instanceId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def get_ingestion(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    status = await _find_ingestion(req, client, show_input=True)
    if isinstance(status, func.HttpResponse):
        return status
    return _json_response(
        {
            "instanceId": status.instance_id,
            "runtimeStatus": _runtime_status(status),
            "createdTime": _iso(status.created_time),
            "lastUpdatedTime": _iso(status.last_updated_time),
            "input": _parse_if_json_text(status.input_),
            "customStatus": status.custom_status,
            "output": _public_output(status),
        }
    )


@bp.function_name("get_ingestion_report")
@bp.route(
    route="ingestions/{instanceId}/report", methods=["GET"], auth_level=func.AuthLevel.FUNCTION
)
@bp.durable_client_input(client_name="client")
async def get_ingestion_report(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """The per-image report of a finished ingestion (what happened to each entry, and why)."""
    status = await _find_ingestion(req, client, show_input=False)
    if isinstance(status, func.HttpResponse):
        return status
    instance_id = status.instance_id
    output = _parse_if_json_text(status.output)
    if not isinstance(output, dict) or not isinstance(output.get("report"), dict):
        return _error(
            HTTPStatus.NOT_FOUND,
            "ReportNotReady",
            f"ingestion {instance_id} is {_runtime_status(status)}; its report is written when "
            "it completes",
        )
    report_ref: BlobRef = output["report"]
    store = config.blob_store(config.settings())
    # Off the event loop: a large report must not stall the other requests.
    report = await asyncio.to_thread(store.read, report_ref["container"], report_ref["path"])
    return func.HttpResponse(report, status_code=200, mimetype="application/json", charset="utf-8")


async def _find_ingestion(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, *, show_input: bool
) -> DurableOrchestrationStatus | func.HttpResponse:
    """The ingestion named by the route, or the 400/404 response to send instead."""
    instance_id = req.route_params.get("instanceId", "")
    if not naming.is_ingestion_instance_id(instance_id):
        return _error(
            HTTPStatus.BAD_REQUEST,
            "InvalidInstanceId",
            f"must match {naming.INSTANCE_ID_PATTERN}",
            field="instanceId",
        )
    status = await client.get_status(instance_id, show_input=show_input)
    if status.runtime_status is None or status.name not in (None, INGEST_ORCHESTRATOR):
        return _error(HTTPStatus.NOT_FOUND, "NotFound", f"no ingestion {instance_id}")
    return status


def _json_response(body: Any, status: int = HTTPStatus.OK) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False),
        status_code=int(status),
        mimetype="application/json",
        charset="utf-8",
    )


def _error(
    status: HTTPStatus, code: str, message: str, *, field: str | None = None
) -> func.HttpResponse:
    error: dict[str, str] = {"code": code}
    if field is not None:
        error["field"] = field
    error["message"] = message
    return _json_response({"error": error}, status)


def _runtime_status(status: DurableOrchestrationStatus) -> str | None:
    return status.runtime_status.value if status.runtime_status is not None else None


def _created_sort_key(status: DurableOrchestrationStatus) -> tuple[bool, datetime]:
    created = status.created_time
    if created is None:
        return (False, datetime.min.replace(tzinfo=UTC))
    return (True, created if created.tzinfo else created.replace(tzinfo=UTC))


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_if_json_text(value: Any) -> Any:
    # The extension returns JSON values; hosts that pass the raw JSON text are tolerated.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _public_output(status: DurableOrchestrationStatus) -> Any:
    """The output as callers may see it. A Failed instance's output is the exception with its
    traceback (server paths, code): the host log has it already, the caller gets a pointer.
    customStatus needs no such care: only the orchestrator sets it, with counts and reasons."""
    if status.runtime_status == OrchestrationRuntimeStatus.Failed:
        return {
            "error": {
                "code": "IngestionFailed",
                "message": "the ingestion failed unexpectedly; the host log has the details "
                f"(instance {status.instance_id})",
            }
        }
    return _parse_if_json_text(status.output)


def _metadata_of(orchestration_input: Any, output: Any) -> str | None:
    """``container/path`` of the ingested file, from the input (or, for hosts that list
    without inputs, from the output of a finished ingestion)."""
    for value in (orchestration_input, output):
        data = _parse_if_json_text(value)
        if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
            return ref_text(data["metadata"])
    return None
