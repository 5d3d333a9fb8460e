"""The Durable HTTP API the SDK's DurableOrchestrationClient calls (and people can curl).

Served twice, as the real host does: under `/durabletask/` (the client's rpcBaseUrl) and under
`/runtime/webhooks/durabletask/` (the public URLs of create_check_status_response).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .engine import DurableEngine, InstanceExistsError, UnknownOrchestratorError
from .store import InstanceRecord

RPC_PREFIX = "/durabletask"
WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
_HTTP_STATUS_OF = {
    "Completed": 200,
    "Running": 202,
    "Pending": 202,
    "Failed": 400,
    "Terminated": 400,
}


def client_binding(base_url: str, task_hub: str) -> str:
    """The JSON the Durable extension hands a `durableClient` binding."""
    webhook = f"{base_url}{WEBHOOK_PREFIX}"
    query = f"taskHub={quote(task_hub)}&connection=Storage"
    instance = f"{webhook}/instances/INSTANCEID"
    create = f"{webhook}/orchestrators/{{functionName}}[/{{instanceId}}]"
    wait = "timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}"
    return json.dumps(
        {
            "taskHubName": task_hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{create}?{query}",
                "createAndWaitOnNewInstancePostUri": f"{create}?{wait}&{query}",
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{query}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
                "purgeHistoryDeleteUri": f"{instance}?{query}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
                "restartPostUri": f"{instance}/restart?{query}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
            },
            "baseUrl": webhook,
            "requiredQueryStringParameters": query,
            "rpcBaseUrl": f"{base_url}{RPC_PREFIX}/",
        }
    )


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def status_json(
    record: InstanceRecord, *, show_input: bool = True, history: list[Any] | None = None
) -> dict[str, Any]:
    body = {
        "name": record.name,
        "instanceId": record.instance_id,
        "runtimeStatus": record.runtime_status,
        # As in the real extension, the input stays the JSON text the client sent.
        "input": record.input if show_input else None,
        "customStatus": _loads(record.custom_status),
        "output": _loads(record.output),
        "createdTime": record.created_time,
        "lastUpdatedTime": record.last_updated_time,
    }
    if history is not None:
        body["historyEvents"] = history
    return body


def _input_json(body: str) -> str | None:
    """The client posts its input already serialized, as a JSON string: keep the inner text."""
    if not body:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        raise web.HTTPBadRequest(text="the request body must be JSON") from None
    return value if isinstance(value, str) else body


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() == "true"


def durable_routes(engine: DurableEngine) -> list[web.RouteDef]:
    async def start(request: web.Request) -> web.Response:
        try:
            instance_id = engine.start_new(
                request.match_info["name"],
                request.match_info.get("instance_id"),
                _input_json(await request.text()),
            )
        except UnknownOrchestratorError as exc:
            return web.json_response(
                {"Message": str(exc), "ExceptionMessage": str(exc)}, status=400
            )
        except InstanceExistsError as exc:
            return web.json_response(
                {"Message": str(exc), "ExceptionMessage": str(exc)}, status=409
            )
        return web.json_response({"id": instance_id}, status=202)

    async def get_status(request: web.Request) -> web.Response:
        record = engine.get(request.match_info["instance_id"])
        if record is None:
            return web.Response(status=404)
        history = (
            engine.history_of(record.instance_id)
            if _flag(request, "showHistory", default=False)
            else None
        )
        body = status_json(record, show_input=_flag(request, "showInput", True), history=history)
        return web.json_response(body, status=_HTTP_STATUS_OF.get(record.runtime_status, 200))

    async def list_instances(request: web.Request) -> web.Response:
        statuses = request.query.get("runtimeStatus")
        records = engine.query(
            statuses=statuses.split(",") if statuses else None,
            created_from=request.query.get("createdTimeFrom"),
            created_to=request.query.get("createdTimeTo"),
            prefix=request.query.get("instanceIdPrefix"),
        )
        show_input = _flag(request, "showInput", default=True)
        return web.json_response([status_json(r, show_input=show_input) for r in records])

    async def terminate(request: web.Request) -> web.Response:
        terminated = engine.terminate(
            request.match_info["instance_id"], request.query.get("reason", "")
        )
        if terminated is None:
            return web.Response(status=404)
        return web.Response(status=202 if terminated else 410)

    async def raise_event(request: web.Request) -> web.Response:
        raised = engine.raise_event(
            request.match_info["instance_id"],
            request.match_info["event"],
            _input_json(await request.text()),
        )
        return web.Response(status=202 if raised else 410)

    async def purge(request: web.Request) -> web.Response:
        if not engine.purge(request.match_info["instance_id"]):
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": 1})

    routes = []
    for prefix in (RPC_PREFIX, WEBHOOK_PREFIX):
        routes += [
            web.post(f"{prefix}/orchestrators/{{name}}", start),
            web.post(f"{prefix}/orchestrators/{{name}}/{{instance_id}}", start),
            web.get(f"{prefix}/instances", list_instances),
            web.get(f"{prefix}/instances/", list_instances),
            web.get(f"{prefix}/instances/{{instance_id}}", get_status),
            web.delete(f"{prefix}/instances/{{instance_id}}", purge),
            web.post(f"{prefix}/instances/{{instance_id}}/terminate", terminate),
            web.post(f"{prefix}/instances/{{instance_id}}/raiseEvent/{{event}}", raise_event),
        ]
    return routes
