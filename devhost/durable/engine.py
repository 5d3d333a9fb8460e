"""Runs Durable orchestrations by driving the real Python SDK, as the Durable extension does.

The SDK replays the orchestrator over the history we send and answers with its cumulative
actions; this engine is the other half of that protocol: it records what the orchestrator
scheduled, runs activities, timers and sub-orchestrations, and appends their outcomes to the
history for the next episode. Replay itself is left to the SDK.

Sequence numbers. The SDK numbers every task it schedules (0, 1, 2, ...) in the order it meets
them while replaying. New actions take the next numbers in the order they appear in the
flattened action list. A failed attempt of a with-retry task also takes a number (its retry
timer) and so does each new attempt; to keep the order of numbering the same on both sides,
an episode that delivers such a retry event delivers it alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from ..functions import ACTIVITY_TRIGGER, ORCHESTRATION_TRIGGER, FunctionIndex, Invoker
from ..settings import HostOptions
from . import history as h
from .history import ActionType, EventType
from .store import ACTIVE_STATUSES, DurableStore, InstanceRecord

log = logging.getLogger("devhost.durable")

OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"
TERMINAL_STATUSES = ("Completed", "Failed", "Terminated")
_SCHEDULING_ACTIONS = {
    ActionType.CALL_ACTIVITY,
    ActionType.CALL_ACTIVITY_WITH_RETRY,
    ActionType.CALL_SUB_ORCHESTRATOR,
    ActionType.CALL_SUB_ORCHESTRATOR_WITH_RETRY,
    ActionType.CREATE_TIMER,
}
_NON_SCHEDULING_ACTIONS = {ActionType.WAIT_FOR_EXTERNAL_EVENT, ActionType.CONTINUE_AS_NEW}


class InstanceExistsError(RuntimeError):
    pass


class UnknownOrchestratorError(LookupError):
    pass


class NonDeterminismError(RuntimeError):
    pass


def flatten_actions(actions: list[Any]) -> list[dict[str, Any]]:
    """Cumulative actions in scheduling order: compound actions (task_all/any) inline."""
    flat: list[dict[str, Any]] = []
    for item in actions:
        if isinstance(item, list):
            flat.extend(flatten_actions(item))
        elif item["actionType"] in (ActionType.WHEN_ALL, ActionType.WHEN_ANY):
            flat.extend(flatten_actions(item["compoundActions"]))
        else:
            flat.append(item)
    return flat


def action_signature(action: dict[str, Any]) -> list[Any]:
    """What must not change between replays: the kind of action, its target and its input."""
    kind = ActionType(action["actionType"])
    if kind == ActionType.CREATE_TIMER:
        return [int(kind), action.get("fireAt")]
    if kind == ActionType.WAIT_FOR_EXTERNAL_EVENT:
        return [int(kind), action.get("externalEventName")]
    return [int(kind), action.get("functionName"), action.get("input"), action.get("instanceId")]


def new_book() -> dict[str, Any]:
    """Host bookkeeping of one execution: action signatures, sequence numbers, retry groups."""
    return {"actions": [], "next_seq": 0, "tasks": {}, "groups": {}}


def call_orchestrator(handle: Any, context_json: str) -> tuple[dict[str, Any] | None, str | None]:
    """Run one episode through the SDK. Returns (state, error message)."""
    try:
        return json.loads(handle(func.OrchestrationContext(context_json))), None
    except Exception as exc:  # the SDK reports orchestrator failures as exceptions
        text = str(exc)
        if OUT_OF_PROC_MARKER in text:
            message, state = text.split(OUT_OF_PROC_MARKER, 1)
            return json.loads(state), message
        return None, "".join(traceback.format_exception(exc))


# Replays shorter than this run at once; longer ones are paced (DurableEngine._pace).
_PACE_FROM_S = 0.02
_PACE_AT_MOST_S = 1.0


def context_json(history: list[str], fields: dict[str, Any]) -> str:
    """The orchestrator's context: ``fields`` and the history, whose events are JSON texts."""
    return '{"history":[' + ",".join(history) + "]," + json.dumps(fields)[1:]


def pause_before_replay(last_replay_s: float) -> float:
    """Seconds a running instance waits for more events before its next replay: as long as
    its last replay took, when that was long enough to matter, and at most a second."""
    return 0.0 if last_replay_s < _PACE_FROM_S else min(last_replay_s, _PACE_AT_MOST_S)


_DEVHOST_DIR = str(Path(__file__).resolve().parent.parent)


def user_traceback(exc: BaseException) -> str:
    """The traceback from the user's code on, without the host's frames that called it."""
    start = node = exc.__traceback__
    while node is not None:
        if node.tb_frame.f_code.co_filename.startswith(_DEVHOST_DIR):
            start = node.tb_next
        node = node.tb_next
    return "".join(traceback.format_exception(type(exc), exc, start))


class DurableEngine:
    def __init__(
        self,
        *,
        index: FunctionIndex,
        store: DurableStore,
        invoker: Invoker,
        options: HostOptions,
    ) -> None:
        self._index = index
        self._store = store
        self._invoker = invoker
        self._options = options
        h.speed_up_sdk_timestamps()
        self._activity_pool = ThreadPoolExecutor(
            max_workers=options.max_concurrent_activities, thread_name_prefix="activity"
        )
        self._activity_slots = asyncio.Semaphore(options.max_concurrent_activities)
        # Replays are CPU-bound Python: more threads than cores only add contention.
        self._orchestrator_pool = ThreadPoolExecutor(
            max_workers=max(1, min(options.max_concurrent_orchestrations, 2)),
            thread_name_prefix="orchestrator",
        )
        # Each active instance's history as the JSON texts of its events: a replay sends the
        # whole history, and encodes only the events it adds.
        self._histories: dict[str, list[str]] = {}
        self._replay_s: dict[str, float] = {}  # each instance's last episode, wall seconds
        self._driving: set[str] = set()
        self._in_flight: set[tuple[str, str, int]] = set()
        self._timers: dict[tuple[str, str, int], asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------------ client API

    def start_new(self, name: str, instance_id: str | None, input_json: str | None) -> str:
        if self._index.find(name, ORCHESTRATION_TRIGGER) is None:
            raise UnknownOrchestratorError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                "function."
            )
        instance_id = instance_id or uuid.uuid4().hex
        existing = self._store.get(instance_id)
        if existing is not None and existing.is_active:
            raise InstanceExistsError(
                f"An instance with ID '{instance_id}' already exists and is "
                f"{existing.runtime_status}."
            )
        with self._store.transaction():
            self._create_instance(name, instance_id, input_json)
        log.info("Started orchestration %s (%s)", name, instance_id)
        self.wake(instance_id)
        return instance_id

    def get(self, instance_id: str) -> InstanceRecord | None:
        return self._store.get(instance_id)

    def history_of(self, instance_id: str) -> list[dict[str, Any]]:
        return self._store.history(instance_id)

    def query(self, **filters: Any) -> list[InstanceRecord]:
        return self._store.query(**filters)

    def terminate(self, instance_id: str, reason: str) -> bool | None:
        """True when terminated, False when it had already finished, None when unknown."""
        record = self._store.get(instance_id)
        if record is None or not record.is_active:
            return None if record is None else False
        with self._store.transaction():
            self._finish(record, "Terminated", json.dumps(reason), failure=f"Terminated: {reason}")
        log.info("Terminated %s: %s", instance_id, reason)
        return True

    def purge(self, instance_id: str) -> bool:
        record = self._store.get(instance_id)
        if record is None:
            return False
        self._forget(record)
        self._store.delete(instance_id)
        return True

    def raise_event(self, instance_id: str, name: str, input_json: str | None) -> bool:
        record = self._store.get(instance_id)
        if record is None or not record.is_active:
            return False
        self._store.add_to_inbox(instance_id, record.execution_id, h.event_raised(name, input_json))
        self.wake(instance_id)
        return True

    # -------------------------------------------------------------------------- lifecycle

    def recover(self) -> None:
        """After a (re)start: re-dispatch everything scheduled but not finished, at least once."""
        unfinished = self._store.query(statuses=["Pending", "Running"])
        for record in unfinished:
            done = {
                e.get("TaskScheduledId", e.get("TimerId"))
                for e in [json.loads(text) for text in self._history(record)]
                + [e for _, e in self._store.inbox(record.instance_id, record.execution_id)]
                if e["EventType"]
                in (
                    EventType.TASK_COMPLETED,
                    EventType.TASK_FAILED,
                    EventType.TIMER_FIRED,
                    EventType.SUB_ORCHESTRATION_COMPLETED,
                    EventType.SUB_ORCHESTRATION_FAILED,
                )
            }
            for seq_text, task in record.book.get("tasks", {}).items():
                if int(seq_text) not in done and task["kind"] != "suborchestration":
                    self._dispatch(record, int(seq_text), task)
            self.wake(record.instance_id)
        if unfinished:
            log.info("Resumed %d unfinished orchestration instance(s)", len(unfinished))

    async def shutdown(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in list(self._background):
            task.cancel()
        self._activity_pool.shutdown(wait=False, cancel_futures=True)
        self._orchestrator_pool.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------------------- episodes

    def wake(self, instance_id: str) -> None:
        if instance_id not in self._driving:
            self._driving.add(instance_id)
            self._spawn(self._drive(instance_id))

    async def _drive(self, instance_id: str) -> None:
        try:
            paced = False
            while True:
                status = self._store.status(instance_id)
                if status is None or status[1] not in ACTIVE_STATUSES:
                    return
                execution_id, runtime_status = status
                inbox = self._store.inbox(instance_id, execution_id)
                if runtime_status == "Running" and not inbox:
                    return
                if not paced and await self._pace(instance_id, runtime_status):
                    paced = True
                    continue  # read again what arrived (or changed) meanwhile
                paced = False
                record = self._store.get(instance_id)
                assert record is not None, "status() found it and nothing awaited since"
                started = time.perf_counter()
                await self._episode(record, self._next_batch(record, inbox))
                self._replay_s[instance_id] = time.perf_counter() - started
        except Exception as exc:  # a host bug: fail the instance visibly rather than hang it
            log.exception("Orchestration instance %s could not be advanced", instance_id)
            record = self._store.get(instance_id)
            if record is not None and record.is_active:
                message = f"devhost could not advance the instance: {exc!r}"
                with self._store.transaction():
                    self._finish(record, "Failed", json.dumps(message), failure=message)
        finally:
            self._driving.discard(instance_id)

    async def _pace(self, instance_id: str, runtime_status: str) -> bool:
        """Let events gather before replaying a busy instance: a replay re-reads the whole
        history, so a fan-out that replayed on every completion would cost O(n²). Waiting as
        long as the last replay took keeps replays at most half of the instance's time, and
        costs nothing to short histories (a replay of a few events takes a few ms). Azure's
        dispatcher batches the messages that queued while a replay ran in the same way."""
        pause = pause_before_replay(self._replay_s.get(instance_id, 0.0))
        if runtime_status != "Running" or pause == 0:
            return False
        await asyncio.sleep(pause)
        return True

    def _next_batch(
        self, record: InstanceRecord, inbox: list[tuple[int, dict[str, Any]]]
    ) -> list[tuple[int, dict[str, Any]]]:
        if record.runtime_status == "Pending":
            return []
        batch: list[tuple[int, dict[str, Any]]] = []
        for row in inbox:
            if self._retry_group_of(record, row[1]) is not None:
                return batch or [row]
            batch.append(row)
        return batch

    async def _episode(
        self, record: InstanceRecord, batch: list[tuple[int, dict[str, Any]]]
    ) -> None:
        info = self._index.find(record.name, ORCHESTRATION_TRIGGER)
        past = self._history(record)
        new_events = [h.orchestrator_started()]
        if record.runtime_status == "Pending":
            parent = (
                {"OrchestrationInstance": {"InstanceId": record.parent_instance_id}}
                if record.parent_instance_id
                else None
            )
            new_events.append(
                h.execution_started(
                    record.name, record.instance_id, record.execution_id, record.input, parent
                )
            )
        new_events.extend(event for _, event in batch)
        state: dict[str, Any] | None
        error: str | None
        if info is None:
            state, error = None, f"The orchestrator function '{record.name}' does not exist."
        else:
            context = context_json(
                past + [json.dumps(event) for event in new_events],
                {
                    "input": record.input,
                    "instanceId": record.instance_id,
                    "isReplaying": bool(past),
                    "parentInstanceId": record.parent_instance_id,
                    "upperSchemaVersion": 1,
                    "upperSchemaVersionNew": 2,
                },
            )
            loop = asyncio.get_running_loop()
            state, error = await loop.run_in_executor(
                self._orchestrator_pool, call_orchestrator, info.user_function, context
            )
        # Only this drive writes the instance while it is active, so ``record`` is current
        # unless the instance was terminated, purged or restarted while the episode ran.
        if self._store.active_execution(record.instance_id) != record.execution_id:
            return
        self._apply(record, new_events, batch, state, error)

    def _apply(
        self,
        record: InstanceRecord,
        new_events: list[dict[str, Any]],
        batch: list[tuple[int, dict[str, Any]]],
        state: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        book = record.book
        scheduled: list[dict[str, Any]] = []
        work: list[tuple[int, dict[str, Any]]] = []
        children: list[InstanceRecord] = []
        try:
            if state is None:
                raise _OrchestratorFailed(error or "orchestrator returned no state")
            actions = flatten_actions(state.get("actions", []))
            self._check_determinism(book["actions"], actions)
            if batch:
                self._react_to_retry_event(record, batch[0][1], scheduled, work)
            for action in actions[len(book["actions"]) :]:
                book["actions"].append(action_signature(action))
                self._schedule(record, action, scheduled, work)
        except NonDeterminismError as exc:
            log.error("Instance %s failed: %s", record.instance_id, exc)
            state, error = None, f"Non-deterministic workflow detected: {exc}"
        except _OrchestratorFailed as exc:
            state, error = None, str(exc)

        record.runtime_status = "Running"
        record.last_updated_time = h.format_time(h.utc_now())
        if state is not None and state.get("customStatus") is not None:
            record.custom_status = json.dumps(state["customStatus"])
        past = self._history(record)
        committed = [dict(e, IsPlayed=True) for e in new_events + scheduled]
        committed.append(dict(h.orchestrator_completed(), IsPlayed=True))
        texts = [json.dumps(event) for event in committed]

        with self._store.transaction():
            self._store.append_history(record.instance_id, len(past), texts)
            self._store.remove_from_inbox([row_id for row_id, _ in batch])
            past.extend(texts)
            if error is not None:
                message = f"Orchestrator function '{record.name}' failed: {error.strip()}"
                log.error("%s (instance %s)", message, record.instance_id)
                self._finish(record, "Failed", json.dumps(message), failure=message)
            elif state is not None and state.get("isDone"):
                continued = [
                    a
                    for a in flatten_actions(state.get("actions", []))
                    if a["actionType"] == ActionType.CONTINUE_AS_NEW
                ]
                if continued:
                    work = []  # the new execution starts from an empty history
                    self._continue_as_new(record, continued[-1].get("input"))
                else:
                    self._finish(record, "Completed", json.dumps(state.get("output")))
            else:
                self._store.put(record)
                children = self._create_children(record, work)
        if record.is_active:
            for seq, task in work:
                self._dispatch(record, seq, task)
        for child in children:
            self.wake(child.instance_id)

    def _check_determinism(self, known: list[Any], actions: list[dict[str, Any]]) -> None:
        for position, (before, action) in enumerate(zip(known, actions, strict=False)):
            now = action_signature(action)
            if before != now:
                raise NonDeterminismError(
                    f"action {position} was {before} in an earlier episode and is {now} on replay"
                )
        if len(actions) < len(known):
            raise NonDeterminismError(
                f"{len(known)} actions were scheduled before, only {len(actions)} on replay"
            )

    def _allocate(self, record: InstanceRecord) -> int:
        seq = int(record.book["next_seq"])
        record.book["next_seq"] = seq + 1
        return seq

    def _schedule(
        self,
        record: InstanceRecord,
        action: dict[str, Any],
        scheduled: list[dict[str, Any]],
        work: list[tuple[int, dict[str, Any]]],
    ) -> None:
        kind = ActionType(action["actionType"])
        if kind in _NON_SCHEDULING_ACTIONS:
            return
        if kind not in _SCHEDULING_ACTIONS:
            raise _OrchestratorFailed(f"action {kind.name} is not supported by devhost")
        seq = self._allocate(record)
        if kind == ActionType.CREATE_TIMER:
            task = {"kind": "timer", "fire_at": action["fireAt"]}
        else:
            is_activity = kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY)
            task = {
                "kind": "activity" if is_activity else "suborchestration",
                "name": action["functionName"],
                "input": action.get("input"),
            }
            if not is_activity:
                task["instance_id"] = action.get("instanceId") or f"{record.instance_id}:{seq:04d}"
            if "retryOptions" in action:
                options = action["retryOptions"]
                task["group"] = seq
                record.book["groups"][str(seq)] = dict(
                    task,
                    attempts=1,
                    max_attempts=int(options["maxNumberOfAttempts"]),
                    interval_ms=int(options["firstRetryIntervalInMilliseconds"]),
                )
        record.book["tasks"][str(seq)] = task
        scheduled.append(self._scheduled_event(seq, task))
        work.append((seq, task))

    @staticmethod
    def _scheduled_event(seq: int, task: dict[str, Any]) -> dict[str, Any]:
        if task["kind"] == "timer":
            return h.event(EventType.TIMER_CREATED, seq, FireAt=task["fire_at"])
        if task["kind"] == "activity":
            return h.event(EventType.TASK_SCHEDULED, seq, Name=task["name"], Input=task["input"])
        return h.event(
            EventType.SUB_ORCHESTRATION_CREATED,
            seq,
            Name=task["name"],
            InstanceId=task["instance_id"],
            Input=task["input"],
        )

    def _retry_group_of(self, record: InstanceRecord, event: dict[str, Any]) -> str | None:
        """The retry group a failure or retry-timer event belongs to, if any."""
        kind = event["EventType"]
        if kind in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED):
            seq = event["TaskScheduledId"]
        elif kind == EventType.TIMER_FIRED:
            seq = event["TimerId"]
        else:
            return None
        group = record.book["tasks"].get(str(seq), {}).get("group")
        return None if group is None else str(group)

    def _react_to_retry_event(
        self,
        record: InstanceRecord,
        event: dict[str, Any],
        scheduled: list[dict[str, Any]],
        work: list[tuple[int, dict[str, Any]]],
    ) -> None:
        """Mirror of the SDK's RetryAbleTask: a failure starts a timer, the timer a new attempt."""
        group_key = self._retry_group_of(record, event)
        if group_key is None:
            return
        group = record.book["groups"][group_key]
        if event["EventType"] == EventType.TIMER_FIRED:
            if group["attempts"] >= group["max_attempts"]:
                return  # the SDK now fails the task with the last error
            group["attempts"] += 1
            task = {k: group[k] for k in ("kind", "name", "input", "instance_id") if k in group}
            task["group"] = int(group_key)
        else:
            fire_at = h.utc_now() + timedelta(milliseconds=group["interval_ms"])
            task = {"kind": "timer", "fire_at": h.format_time(fire_at), "group": int(group_key)}
        seq = self._allocate(record)
        record.book["tasks"][str(seq)] = task
        scheduled.append(self._scheduled_event(seq, task))
        work.append((seq, task))

    # --------------------------------------------------------------- instance transitions

    def _create_instance(
        self,
        name: str,
        instance_id: str,
        input_json: str | None,
        parent: InstanceRecord | None = None,
        parent_task_id: int | None = None,
    ) -> InstanceRecord:
        now = h.format_time(h.utc_now())
        previous = self._store.get(instance_id)
        if previous is not None:
            self._forget(previous)
        self._store.clear_history(instance_id)
        record = InstanceRecord(
            instance_id=instance_id,
            name=name,
            execution_id=uuid.uuid4().hex,
            runtime_status="Pending",
            input=input_json,
            created_time=now,
            last_updated_time=now,
            parent_instance_id=parent.instance_id if parent else None,
            parent_task_id=parent_task_id,
            book=new_book(),
        )
        self._store.put(record)
        self._histories[instance_id] = []
        return record

    def _create_children(
        self, parent: InstanceRecord, work: list[tuple[int, dict[str, Any]]]
    ) -> list[InstanceRecord]:
        children = []
        for seq, task in work:
            if task["kind"] != "suborchestration":
                continue
            existing = self._store.get(task["instance_id"])
            if self._index.find(task["name"], ORCHESTRATION_TRIGGER) is None:
                reason = f"The orchestrator function '{task['name']}' does not exist."
            elif existing is not None and existing.is_active:
                reason = f"An instance with ID '{task['instance_id']}' is already running."
            else:
                children.append(
                    self._create_instance(
                        task["name"], task["instance_id"], task["input"], parent, seq
                    )
                )
                continue
            self._store.add_to_inbox(
                parent.instance_id, parent.execution_id, h.sub_orchestration_failed(seq, reason, "")
            )
            self.wake(parent.instance_id)
        return children

    def _finish(
        self, record: InstanceRecord, status: str, output_json: str, *, failure: str = ""
    ) -> None:
        record.runtime_status = status
        record.output = output_json
        record.last_updated_time = h.format_time(h.utc_now())
        self._store.put(record)
        self._store.clear_inbox(record.instance_id)
        self._notify_parent(record, failure if status != "Completed" else None)
        self._forget(record)
        log.info("Orchestration %s (%s) %s", record.name, record.instance_id, status)

    def _continue_as_new(self, record: InstanceRecord, input_json: str | None) -> None:
        self._forget(record)
        self._store.clear_history(record.instance_id)
        record.execution_id = uuid.uuid4().hex
        record.runtime_status = "Pending"
        record.input = input_json
        record.book = new_book()
        self._store.put(record)
        self._histories[record.instance_id] = []
        self.wake(record.instance_id)

    def _notify_parent(self, record: InstanceRecord, failure: str | None) -> None:
        if not record.parent_instance_id or record.parent_task_id is None:
            return
        parent = self._store.get(record.parent_instance_id)
        if parent is None or not parent.is_active:
            return
        if failure is None:
            event = h.sub_orchestration_completed(record.parent_task_id, record.output)
        else:
            event = h.sub_orchestration_failed(record.parent_task_id, failure, "")
        self._store.add_to_inbox(parent.instance_id, parent.execution_id, event)
        self.wake(parent.instance_id)

    def _forget(self, record: InstanceRecord) -> None:
        self._histories.pop(record.instance_id, None)
        self._replay_s.pop(record.instance_id, None)
        for key in [k for k in self._timers if k[0] == record.instance_id]:
            self._timers.pop(key).cancel()

    def _history(self, record: InstanceRecord) -> list[str]:
        cached = self._histories.get(record.instance_id)
        if cached is None:
            texts = self._store.history_texts(record.instance_id)
            cached = self._histories[record.instance_id] = texts
        return cached

    # ------------------------------------------------------------------- scheduled work

    def _dispatch(self, record: InstanceRecord, seq: int, task: dict[str, Any]) -> None:
        key = (record.instance_id, record.execution_id, seq)
        if task["kind"] == "activity":
            if key not in self._in_flight:
                self._in_flight.add(key)
                self._spawn(self._run_activity(key, task["name"], task["input"]))
        elif task["kind"] == "timer" and key not in self._timers:
            delay = (h.parse_time(task["fire_at"]) - h.utc_now()).total_seconds()
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(max(0.0, delay), self._fire_timer, key, task)

    def _fire_timer(self, key: tuple[str, str, int], task: dict[str, Any]) -> None:
        self._timers.pop(key, None)
        self._deliver(key, h.timer_fired(key[2], task["fire_at"]))

    def _deliver(self, key: tuple[str, str, int], event: dict[str, Any]) -> None:
        instance_id, execution_id, _ = key
        # Not get(): it decodes the instance's bookkeeping, which grows with its fan-out.
        if self._store.active_execution(instance_id) != execution_id:
            return  # the instance ended or restarted: this result has no one to go to
        self._store.add_to_inbox(instance_id, execution_id, event)
        self.wake(instance_id)

    async def _run_activity(
        self, key: tuple[str, str, int], name: str, input_json: str | None
    ) -> None:
        seq = key[2]
        try:
            async with self._activity_slots:
                event = await self._activity_outcome(seq, name, input_json)
        finally:
            self._in_flight.discard(key)
        self._deliver(key, event)

    async def _activity_outcome(
        self, seq: int, name: str, input_json: str | None
    ) -> dict[str, Any]:
        info = self._index.find(name, ACTIVITY_TRIGGER)
        if info is None:
            reason = f"The activity function '{name}' doesn't exist or is not an activity function."
            return h.task_failed(seq, reason, "")
        try:
            value = ActivityTriggerConverter.decode(
                meta.Datum(type="string", value=input_json if input_json is not None else "null"),
                trigger_metadata=None,
            )
            result = await self._invoker.call(info, value, pool=self._activity_pool)
            encoded = ActivityTriggerConverter.encode(result, expected_type=None)
            return h.task_completed(seq, encoded.value)
        except Exception as exc:
            log.error("Activity %s failed: %s", name, exc, exc_info=exc)
            details = user_traceback(exc)
            return h.task_failed(seq, f"Activity function '{name}' failed: {exc}", details)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _OrchestratorFailed(Exception):
    pass
