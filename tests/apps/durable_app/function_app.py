"""A function app that exercises devhost: HTTP conversion, blob triggers, Durable features."""

import itertools
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def _append(path_setting: str, line: str) -> None:
    with open(os.environ[path_setting], "a", encoding="utf-8") as out:
        out.write(line + "\n")


# ----------------------------------------------------------------------------- HTTP


@app.route(route="echo/{id:int}/{rest?}", methods=["GET", "POST", "PUT"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "method": req.method,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "header": req.headers.get("x-test-header"),
        "body_length": len(req.get_body()),
        "url": req.url,
    }
    return func.HttpResponse(
        json.dumps(body), mimetype="application/json", headers={"x-echo": "yes"}
    )


@app.route(route="bytes", methods=["POST"])
async def reverse_bytes(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body()[::-1], mimetype="application/octet-stream")


@app.route(route="square", methods=["GET"])
def square_http(req: func.HttpRequest) -> func.HttpResponse:
    raw = req.params.get("n")
    if raw is None or not raw.lstrip("-").isdigit():
        error = {
            "error": {"code": "InvalidParameter", "field": "n", "message": "must be an integer"}
        }
        return func.HttpResponse(json.dumps(error), status_code=400, mimetype="application/json")
    return func.HttpResponse(json.dumps({"square": int(raw) ** 2}), mimetype="application/json")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom from the function")


@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_orchestration(req: func.HttpRequest, client) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(
        req.route_params["name"], req.params.get("id"), json.loads(body) if body else None
    )
    return client.create_check_status_response(req, instance_id)


@app.route(route="status/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def get_status(req: func.HttpRequest, client) -> func.HttpResponse:
    status = await client.get_status(req.route_params["instance_id"])
    if status.runtime_status is None:
        return func.HttpResponse(status_code=404)
    return func.HttpResponse(json.dumps(status.to_json(), default=str), mimetype="application/json")


# ---------------------------------------------------------------------------- blobs


@app.blob_trigger(
    arg_name="blob", path="%WATCHED_CONTAINER%/in/{name}.txt", connection="AzureWebJobsStorage"
)
def on_text_blob(blob: func.InputStream) -> None:
    _append("TRIGGER_LOG", f"{blob.name} {blob.length} {blob.read().decode()}")


# -------------------------------------------------------------------------- durable


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    context.set_custom_status({"phase": "fanning out", "partitions": spec["partitions"]})
    tasks = [
        context.call_sub_orchestrator(
            "fan_out_partition",
            {"start": p * spec["size"], "size": spec["size"], "delay": spec.get("delay", 0)},
            instance_id=f"{context.instance_id}-p{p:03d}",
        )
        for p in range(spec["partitions"])
    ]
    results = yield context.task_all(tasks)
    context.set_custom_status({"phase": "done"})
    return {"count": sum(r["count"] for r in results), "total": sum(r["total"] for r in results)}


@app.orchestration_trigger(context_name="context")
def fan_out_partition(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    numbers = range(spec["start"], spec["start"] + spec["size"])
    tasks = [context.call_activity("square", {"n": n, "delay": spec["delay"]}) for n in numbers]
    squares = yield context.task_all(tasks)
    return {"count": len(squares), "total": sum(squares)}


@app.activity_trigger(input_name="item")
def square(item: dict) -> int:
    if item.get("delay"):
        started = time.time()
        time.sleep(item["delay"])
        if "ACTIVITY_LOG" in os.environ:
            _append("ACTIVITY_LOG", f"{item['n']} {started} {time.time()}")
    return item["n"] ** 2


@app.activity_trigger(input_name="n")
def cube(n: int) -> int:
    return n**3


_replays = itertools.count()


@app.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    # Wrong on purpose: the first episode schedules `square`, a replay schedules `cube`.
    first = yield context.call_activity("square" if next(_replays) == 0 else "cube", {"n": 2})
    second = yield context.call_activity("cube", 3)
    return first + second


@app.activity_trigger(input_name="spec")
def flaky(spec: dict) -> str:
    """Fails until it has been called `failures` times (counted in a file)."""
    counter = Path(spec["counter"])
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= spec["failures"]:
        raise ConnectionError(f"transient failure {calls}")
    return f"ok after {calls} calls"


@app.orchestration_trigger(context_name="context")
def with_retry(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    retry = df.RetryOptions(
        first_retry_interval_in_milliseconds=200, max_number_of_attempts=spec["attempts"]
    )
    before = yield context.call_activity("cube", 2)
    try:
        result = yield context.call_activity_with_retry("flaky", retry, spec)
    except Exception as exc:
        result = f"gave up: {exc}"
    after = yield context.call_activity("cube", 3)
    return {"before": before, "result": result, "after": after}


@app.orchestration_trigger(context_name="context")
def timer_then_activity(context: df.DurableOrchestrationContext):
    yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=300))
    value = yield context.call_activity("cube", 4)
    return value


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("cube", 1)
    raise ValueError("orchestrator gave up")


@app.orchestration_trigger(context_name="context")
def countdown(context: df.DurableOrchestrationContext):
    state = context.get_input()
    if state["n"] == 0:
        return state["cubes"]
    cube_of_n = yield context.call_activity("cube", state["n"])
    context.continue_as_new({"n": state["n"] - 1, "cubes": state["cubes"] + [cube_of_n]})
    return None


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    decision = yield context.wait_for_external_event("decision")
    checked = yield context.call_activity("cube", decision["level"])
    return {"approved_by": decision["by"], "cubed": checked}


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    result = yield context.call_activity("flaky", context.get_input())
    return result


@app.orchestration_trigger(context_name="context")
def with_sub_retry(context: df.DurableOrchestrationContext):
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=200, max_number_of_attempts=3)
    result = yield context.call_sub_orchestrator_with_retry(
        "flaky_child", retry, context.get_input(), instance_id=f"{context.instance_id}-child"
    )
    return result


@app.orchestration_trigger(context_name="context")
def catches_failed_child(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("failing", None, f"{context.instance_id}-child")
        caught = None
    except Exception as exc:
        caught = str(exc)
    after = yield context.call_activity("cube", 3)
    return {"caught": caught, "after": after}
