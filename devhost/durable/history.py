"""History events in the shape the Durable Python SDK reads."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from dateutil.parser import parse as dateutil_parse
from dateutil.tz import tzutc

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class EventType(IntEnum):
    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_CREATED = 7
    SUB_ORCHESTRATION_COMPLETED = 8
    SUB_ORCHESTRATION_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_RAISED = 15


class ActionType(IntEnum):
    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CALL_SUB_ORCHESTRATOR = 2
    CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WAIT_FOR_EXTERNAL_EVENT = 6
    CALL_ENTITY = 7
    CALL_HTTP = 8
    SIGNAL_ENTITY = 9
    WHEN_ANY = 11
    WHEN_ALL = 12


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def read_timestamp(text: str) -> datetime:
    """A history event's Timestamp as the SDK reads it with dateutil (the same instant, in
    UTC), ~1 µs instead of ~45 for the format devhost writes; any other text goes to dateutil."""
    if text.endswith("Z"):
        try:
            return datetime.fromisoformat(text).replace(tzinfo=tzutc())
        except ValueError:
            pass
    return dateutil_parse(text)


def speed_up_sdk_timestamps() -> None:
    """Has the SDK read history timestamps with :func:`read_timestamp`.

    The SDK parses every event's Timestamp with dateutil's general parser on every replay, and
    a fan-out replays its history many times: in a 600-image ingestion, ~70 parses per image,
    a quarter of devhost's Python time. Only the speed changes: the values are the same.
    """
    module = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    vars(module)["dt_parse"] = read_timestamp  # the name HistoryEvent.__init__ calls


def parse_time(text: str) -> datetime:
    text = text.rstrip("Z")
    if "." in text:
        head, fraction = text.split(".", 1)
        text = f"{head}.{fraction[:6].ljust(6, '0')}"
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def event(event_type: EventType, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {
        "EventType": int(event_type),
        "EventId": event_id,
        "IsPlayed": False,
        "Timestamp": format_time(utc_now()),
        **fields,
    }


def orchestrator_started() -> dict[str, Any]:
    return event(EventType.ORCHESTRATOR_STARTED)


def orchestrator_completed() -> dict[str, Any]:
    return event(EventType.ORCHESTRATOR_COMPLETED)


def execution_started(
    name: str, instance_id: str, execution_id: str, input_json: str | None, parent: Any
) -> dict[str, Any]:
    return event(
        EventType.EXECUTION_STARTED,
        Name=name,
        Version="",
        Input=input_json,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent,
    )


def task_completed(task_id: int, result_json: str | None) -> dict[str, Any]:
    return event(EventType.TASK_COMPLETED, TaskScheduledId=task_id, Result=result_json)


def task_failed(task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(EventType.TASK_FAILED, TaskScheduledId=task_id, Reason=reason, Details=details)


def sub_orchestration_completed(task_id: int, result_json: str | None) -> dict[str, Any]:
    return event(EventType.SUB_ORCHESTRATION_COMPLETED, TaskScheduledId=task_id, Result=result_json)


def sub_orchestration_failed(task_id: int, reason: str, details: str) -> dict[str, Any]:
    return event(
        EventType.SUB_ORCHESTRATION_FAILED, TaskScheduledId=task_id, Reason=reason, Details=details
    )


def timer_fired(timer_id: int, fire_at: str) -> dict[str, Any]:
    return event(EventType.TIMER_FIRED, TimerId=timer_id, FireAt=fire_at)


def event_raised(name: str, input_json: str | None) -> dict[str, Any]:
    return event(EventType.EVENT_RAISED, Name=name, Input=input_json)
