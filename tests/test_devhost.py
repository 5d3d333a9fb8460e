"""devhost runs a function app the way the Functions host does: HTTP, blob triggers, Durable."""

from __future__ import annotations

import importlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from devhost.durable import history as h
from devhost.durable.engine import context_json, pause_before_replay

APP = Path(__file__).parent / "apps" / "durable_app"


@pytest.fixture
def app_env(tmp_path: Path, unique_container: str) -> dict[str, str]:
    return {
        "WATCHED_CONTAINER": unique_container,
        "TRIGGER_LOG": str(tmp_path / "triggers.log"),
        "ACTIVITY_LOG": str(tmp_path / "activities.log"),
    }


def start_orchestration(host, name: str, payload, instance_id: str | None = None) -> dict:
    """Starts through an HTTP function that uses the real DurableOrchestrationClient."""
    params = {"id": instance_id} if instance_id else {}
    response = requests.post(
        f"{host.base_url}/api/orchestrators/{name}", params=params, json=payload, timeout=30
    )
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == response.json()["statusQueryGetUri"]
    return response.json()


def wait_done(wait_for, management: dict, timeout: float = 120, history: bool = False) -> dict:
    url = management["statusQueryGetUri"] + ("&showHistory=true" if history else "")

    def finished():
        status = requests.get(url, timeout=10).json()
        return status if status["runtimeStatus"] not in ("Pending", "Running") else None

    return wait_for(finished, timeout=timeout, interval=0.2, message=f"{url} to finish")


def lines(path: str) -> list[str]:
    file = Path(path)
    return file.read_text().splitlines() if file.exists() else []


# ------------------------------------------------------------------------------ HTTP


def test_http_request_and_response_are_converted_faithfully(devhost, app_env):
    host = devhost(APP, env=app_env)

    echoed = requests.post(
        f"{host.base_url}/api/echo/42/extra?color=blue",
        headers={"x-test-header": "hello"},
        data=b"12345",
        timeout=10,
    )
    assert echoed.status_code == 200
    assert echoed.headers["x-echo"] == "yes"
    assert echoed.headers["Content-Type"].startswith("application/json")
    body = echoed.json()
    assert body["method"] == "POST"
    assert body["route_params"] == {"id": "42", "rest": "extra"}
    assert body["params"] == {"color": "blue"}
    assert body["header"] == "hello"
    assert body["body_length"] == 5
    assert body["url"].endswith("/api/echo/42/extra?color=blue")

    optional_missing = requests.get(f"{host.base_url}/api/echo/7", timeout=10).json()
    assert optional_missing["route_params"] == {"id": "7"}

    every_byte = bytes(range(256)) * 64
    reversed_ = requests.post(f"{host.base_url}/api/bytes", data=every_byte, timeout=10)
    assert reversed_.status_code == 200
    assert reversed_.headers["Content-Type"] == "application/octet-stream"
    assert reversed_.content == every_byte[::-1]

    # A route constraint or a method the function does not accept: no function runs.
    assert requests.get(f"{host.base_url}/api/echo/abc", timeout=10).status_code == 404
    assert requests.delete(f"{host.base_url}/api/echo/1", timeout=10).status_code == 404
    assert requests.get(f"{host.base_url}/api/bytes", timeout=10).status_code == 404


def test_function_errors_reach_the_caller_and_the_host_keeps_serving(devhost, app_env):
    host = devhost(APP, env=app_env)

    bad = requests.get(f"{host.base_url}/api/square", params={"n": "seven"}, timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "n"

    crashed = requests.get(f"{host.base_url}/api/boom", timeout=10)
    assert crashed.status_code == 500
    assert "boom from the function" not in crashed.text  # no internals to the caller
    assert "RuntimeError: boom from the function" in host.log_text()
    assert "Executed 'Functions.boom' (Failed)" in host.log_text()

    fine = requests.get(f"{host.base_url}/api/square", params={"n": "7"}, timeout=10)
    assert fine.json() == {"square": 49}
    assert host.process.poll() is None


# ------------------------------------------------------------------------ blob triggers


def test_blob_trigger_fires_once_per_etag_also_across_restarts(
    devhost, app_env, blob_service, unique_container, wait_for, tmp_path
):
    container = blob_service.get_container_client(unique_container)
    host = devhost(APP, env=app_env)
    log = app_env["TRIGGER_LOG"]

    container.upload_blob("in/notes.txt", b"first")
    container.upload_blob("elsewhere/notes.txt", b"not watched")
    wait_for(lambda: len(lines(log)) == 1, timeout=30, message="the trigger")
    assert lines(log) == [f"{unique_container}/in/notes.txt 5 first"]

    time.sleep(1.5)  # several scans: an unchanged blob does not fire again
    assert len(lines(log)) == 1

    container.upload_blob("in/notes.txt", b"second!", overwrite=True)
    wait_for(lambda: len(lines(log)) == 2, timeout=30, message="the re-trigger")
    assert lines(log)[1] == f"{unique_container}/in/notes.txt 7 second!"

    host.stop()
    devhost(APP, env=app_env)  # same state dir: receipts survive
    time.sleep(1.5)
    assert len(lines(log)) == 2


# ----------------------------------------------------------------------------- durable


def test_ten_thousand_activities_partitioned_into_sub_orchestrations(devhost, app_env, wait_for):
    host = devhost(APP, env=app_env)
    management = start_orchestration(host, "fan_out", {"partitions": 100, "size": 100})

    status = wait_done(wait_for, management, timeout=600)

    assert status["runtimeStatus"] == "Completed", status
    n = 10_000
    assert status["output"] == {"count": n, "total": (n - 1) * n * (2 * n - 1) // 6}
    assert status["customStatus"] == {"phase": "done"}
    partition = requests.get(
        f"{host.base_url}/runtime/webhooks/durabletask/instances/{management['id']}-p042",
        params={"showHistory": "true"},
        timeout=10,
    ).json()
    assert partition["runtimeStatus"] == "Completed"
    scheduled = [e for e in partition["historyEvents"] if e["EventType"] == 4]
    assert len(scheduled) == 100


def test_orchestrator_that_changes_its_actions_is_failed_as_non_deterministic(
    devhost, app_env, wait_for
):
    host = devhost(APP, env=app_env)
    status = wait_done(wait_for, start_orchestration(host, "nondeterministic", None))
    assert status["runtimeStatus"] == "Failed"
    assert "Non-deterministic workflow detected" in status["output"]
    assert "'square'" in status["output"] and "'cube'" in status["output"]


def test_retry_policy_retries_after_timers_then_gives_up(devhost, app_env, wait_for, tmp_path):
    host = devhost(APP, env=app_env)

    spec = {"attempts": 3, "failures": 2, "counter": str(tmp_path / "recovering")}
    recovered = wait_done(wait_for, start_orchestration(host, "with_retry", spec), history=True)
    assert recovered["runtimeStatus"] == "Completed", recovered
    assert recovered["output"] == {"before": 8, "result": "ok after 3 calls", "after": 27}
    kinds = [e["EventType"] for e in recovered["historyEvents"]]
    assert kinds.count(10) == 2 and kinds.count(11) == 2  # a timer before each new attempt
    assert kinds.count(6) == 2  # two failed attempts

    spec = {"attempts": 2, "failures": 9, "counter": str(tmp_path / "failing")}
    exhausted = wait_done(wait_for, start_orchestration(host, "with_retry", spec))
    assert exhausted["runtimeStatus"] == "Completed"
    assert exhausted["output"]["result"].startswith(
        "gave up: Activity function 'flaky' failed: transient failure 2"
    )
    assert exhausted["output"]["after"] == 27
    # The failure details show the activity's own frames, not the host's.
    assert 'function_app.py", line' in exhausted["output"]["result"]
    assert "devhost" not in exhausted["output"]["result"]
    assert Path(spec["counter"]).read_text() == "2"


def test_sub_orchestration_retry_starts_the_child_again(devhost, app_env, wait_for, tmp_path):
    host = devhost(APP, env=app_env)
    spec = {"failures": 1, "counter": str(tmp_path / "child")}
    management = start_orchestration(host, "with_sub_retry", spec)
    status = wait_done(wait_for, management)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == "ok after 2 calls"
    child = requests.get(
        f"{host.base_url}/runtime/webhooks/durabletask/instances/{management['id']}-child",
        timeout=10,
    ).json()
    assert child["runtimeStatus"] == "Completed"


def test_a_failed_sub_orchestration_can_be_caught_by_its_parent(devhost, app_env, wait_for):
    host = devhost(APP, env=app_env)
    status = wait_done(wait_for, start_orchestration(host, "catches_failed_child", None))
    assert status["runtimeStatus"] == "Completed", status
    assert "orchestrator gave up" in status["output"]["caught"]
    assert status["output"]["after"] == 27


def test_durable_timer_and_orchestrator_failure(devhost, app_env, wait_for):
    host = devhost(APP, env=app_env)
    started = time.monotonic()
    timed = wait_done(wait_for, start_orchestration(host, "timer_then_activity", None))
    assert timed["runtimeStatus"] == "Completed" and timed["output"] == 64
    assert time.monotonic() - started >= 0.3

    failed = wait_done(wait_for, start_orchestration(host, "failing", None))
    assert failed["runtimeStatus"] == "Failed"
    assert "orchestrator gave up" in failed["output"]


def test_killed_host_resumes_unfinished_instance_without_losing_results(devhost, app_env, wait_for):
    host = devhost(APP, env=app_env)
    spec = {"partitions": 4, "size": 12, "delay": 0.25}
    management = start_orchestration(host, "fan_out", spec, instance_id="survivor")
    log = app_env["ACTIVITY_LOG"]
    wait_for(lambda: len(lines(log)) >= 12, timeout=60, message="some activities to finish")

    host.kill()
    done_before_kill = len(lines(log))
    assert done_before_kill < 48

    restarted = devhost(APP, env=app_env)
    status_url = management["statusQueryGetUri"].replace(f":{host.port}/", f":{restarted.port}/")
    status = wait_done(wait_for, {"statusQueryGetUri": status_url}, timeout=120)

    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == {"count": 48, "total": sum(n * n for n in range(48))}
    executed = [int(line.split()[0]) for line in lines(log)]
    assert set(executed) == set(range(48))
    # Results recorded before the kill were kept: only unfinished activities ran again.
    assert len(executed) < 48 + done_before_kill
    assert "Resumed" in restarted.log_text()


def test_activities_run_concurrently_within_the_host_json_bound(devhost, app_env, wait_for):
    host = devhost(APP, env=app_env)  # host.json: maxConcurrentActivityFunctions = 8
    spec = {"partitions": 3, "size": 10, "delay": 0.3}
    status = wait_done(wait_for, start_orchestration(host, "fan_out", spec))
    assert status["runtimeStatus"] == "Completed"

    spans = [tuple(map(float, line.split()[1:])) for line in lines(app_env["ACTIVITY_LOG"])]
    assert len(spans) == 30
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running, most = 0, 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert 4 <= most <= 8


def test_continue_as_new_and_external_events(devhost, app_env, wait_for):
    host = devhost(APP, env=app_env)
    countdown = wait_done(wait_for, start_orchestration(host, "countdown", {"n": 3, "cubes": []}))
    assert countdown["runtimeStatus"] == "Completed"
    assert countdown["output"] == [27, 8, 1]

    management = start_orchestration(host, "approval", None)
    time.sleep(0.5)
    waiting = requests.get(management["statusQueryGetUri"], timeout=10).json()
    assert waiting["runtimeStatus"] == "Running"
    send = management["sendEventPostUri"].replace("{eventName}", "decision")
    assert requests.post(send, json={"by": "ana", "level": 2}, timeout=10).status_code == 202
    approved = wait_done(wait_for, management)
    assert approved["output"] == {"approved_by": "ana", "cubed": 8}


def test_durable_http_api_terminate_and_purge(devhost, app_env, wait_for):
    host = devhost(APP, env=app_env)
    spec = {"partitions": 1, "size": 40, "delay": 0.2}
    management = start_orchestration(host, "fan_out", spec, instance_id="to-stop")

    again = requests.post(
        f"{host.base_url}/runtime/webhooks/durabletask/orchestrators/fan_out/to-stop",
        data=json.dumps(json.dumps(spec)),
        timeout=10,
    )
    assert again.status_code == 409  # a running instance id cannot be started twice

    terminate = management["terminatePostUri"].replace("{text}", "enough")
    assert requests.post(terminate, timeout=10).status_code == 202
    status = wait_done(wait_for, management)
    assert status["runtimeStatus"] == "Terminated"
    assert status["output"] == "enough"
    assert requests.post(terminate, timeout=10).status_code == 410

    assert requests.delete(management["purgeHistoryDeleteUri"], timeout=10).json() == {
        "instancesDeleted": 1
    }
    assert requests.get(management["statusQueryGetUri"], timeout=10).status_code == 404
    via_function = requests.get(f"{host.base_url}/api/status/to-stop", timeout=10)
    assert via_function.status_code == 404


def test_a_busy_instance_lets_events_gather_before_replaying() -> None:
    # A replay re-reads the whole history: one that took long waits as long before the next
    # (capped), so the completions arriving meanwhile share it; short replays never wait.
    assert pause_before_replay(0.005) == 0
    assert pause_before_replay(0.25) == 0.25
    assert pause_before_replay(7.0) == 1.0


def test_the_context_of_a_replay_is_the_json_of_its_history_and_fields() -> None:
    # Stored events are JSON texts already: a replay's context joins them, not re-encodes them.
    events = [h.orchestrator_started(), h.task_completed(3, json.dumps({"ok": "é\\n"}))]
    fields = {"input": None, "instanceId": "i", "isReplaying": True, "upperSchemaVersion": 1}
    text = context_json([json.dumps(e) for e in events], fields)
    assert json.loads(text) == {"history": events, **fields}
    assert json.loads(context_json([], fields)) == {"history": [], **fields}


@pytest.mark.parametrize(
    "text",
    ["2026-12-04T20:51:34.110000Z", "2026-12-04T20:51:34Z", "2026-02-28T23:59:59.999999Z"],
)
def test_history_timestamps_read_to_the_instant_dateutil_gives(text: str) -> None:
    from dateutil.parser import parse

    read = h.read_timestamp(text)
    assert read == parse(text) and read.utcoffset() == timedelta(0)
    assert h.read_timestamp(h.format_time(read)) == read  # what devhost writes reads back


def test_the_sdk_reads_history_timestamps_through_devhost_once_sped_up() -> None:
    # devhost installs it as it starts (the hosts of the tests above ran with it).
    from azure.durable_functions.models.history.HistoryEvent import HistoryEvent

    sdk_module = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    h.speed_up_sdk_timestamps()
    assert vars(sdk_module)["dt_parse"] is h.read_timestamp
    event = HistoryEvent(
        EventType=12, EventId=-1, IsPlayed=False, Timestamp="2026-12-04T20:51:34.5Z"
    )
    assert event.timestamp == datetime(2026, 12, 4, 20, 51, 34, 500000, tzinfo=UTC)
    # Text in another form still reads as dateutil reads it.
    other = HistoryEvent(
        EventType=12, EventId=-1, IsPlayed=False, Timestamp="2026-12-04 21:51:34+01:00"
    )
    assert other.timestamp == datetime(2026, 12, 4, 20, 51, 34, tzinfo=UTC)
