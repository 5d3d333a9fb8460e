"""Drive an orchestrator generator in-process with a scripted Durable context.

The Durable samples' pattern: take the generator from ``fn.build().get_user_function()
.orchestrator_function`` and answer each task it yields from Python functions standing in for
the activities and sub-orchestrators. What the real host would refuse is refused here too:
a name that function_app.py does not register, a payload that is not JSON, and an
orchestrator that schedules something else when replayed with the same results.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[Any], Any]


@dataclass
class Call:
    """One task the orchestrator scheduled (what the host would record as TaskScheduled)."""

    kind: str  # "activity" | "sub_orchestrator"
    name: str
    payload: Any
    instance_id: str | None = None
    retry: Any = None
    result: Any = None
    error: str | None = None  # it failed: the orchestrator gets TaskFailed at its yield


class TaskFailed(Exception):
    """What the SDK raises at the yield of a failed activity or sub-orchestration."""


@dataclass
class _All:
    tasks: list[Call]


@dataclass
class _Any:
    tasks: list[Call]


@dataclass
class ScriptedContext:
    """The parts of DurableOrchestrationContext the orchestrators use."""

    input: Any
    instance_id: str
    calls: list[Call] = field(default_factory=list)
    statuses: list[Any] = field(default_factory=list)
    continued_with: Any = None

    def get_input(self) -> Any:
        return copy.deepcopy(self.input)

    def call_activity(self, name: str, payload: Any) -> Call:
        return self._schedule(Call("activity", name, _json(payload)))

    def call_activity_with_retry(self, name: str, retry: Any, payload: Any) -> Call:
        return self._schedule(Call("activity", name, _json(payload), retry=retry))

    def call_sub_orchestrator(
        self, name: str, payload: Any = None, instance_id: str | None = None
    ) -> Call:
        return self._schedule(Call("sub_orchestrator", name, _json(payload), instance_id))

    def task_all(self, tasks: list[Call]) -> _All:
        return _All(list(tasks))

    def task_any(self, tasks: list[Call]) -> _Any:
        return _Any(list(tasks))

    def set_custom_status(self, status: Any) -> None:
        self.statuses.append(_json(status))

    def continue_as_new(self, input_: Any) -> None:
        self.continued_with = _json(input_)

    def _schedule(self, call: Call) -> Call:
        self.calls.append(call)
        return call


class Script:
    """Runs orchestrators against handlers; ``registered`` names what function_app defines."""

    def __init__(
        self,
        *,
        activities: dict[str, Handler],
        orchestrators: dict[str, Callable[..., Iterator[Any]]],
        registered: dict[str, str],
        any_order: Callable[[list[Call]], Call] | None = None,
    ) -> None:
        self.activities = activities
        self.orchestrators = orchestrators
        self.registered = registered  # function name -> trigger type
        self.any_order = any_order or (lambda tasks: tasks[0])
        self.children: dict[str, ScriptedContext] = {}

    def run(self, name: str, payload: Any, instance_id: str) -> tuple[Any, ScriptedContext]:
        """Run orchestrator ``name`` to completion; returns (output, its context). The run is
        then replayed with the recorded results and must schedule exactly the same tasks."""
        self._check(name, "orchestrationTrigger")
        context = ScriptedContext(input=_json(payload), instance_id=instance_id)
        output = self._drive(self.orchestrators[name], context, None)
        replay = ScriptedContext(input=_json(payload), instance_id=instance_id)
        self._drive(self.orchestrators[name], replay, list(context.calls))
        assert [(c.kind, c.name, c.payload, c.instance_id) for c in replay.calls] == [
            (c.kind, c.name, c.payload, c.instance_id) for c in context.calls
        ], f"{name} is not deterministic: it scheduled other tasks on replay"
        return output, context

    def _drive(
        self,
        orchestrator: Callable[..., Iterator[Any]],
        context: ScriptedContext,
        recorded: list[Call] | None,
    ) -> Any:
        generator = orchestrator(context)
        try:
            task = generator.send(None)
            while True:
                try:
                    value = self._resolve(task, recorded)
                except TaskFailed as failed:
                    task = generator.throw(failed)
                else:
                    task = generator.send(value)
        except StopIteration as stop:
            return _json(stop.value)

    def _resolve(self, task: Any, recorded: list[Call] | None) -> Any:
        if isinstance(task, _All):
            return [self._complete(t, recorded) for t in task.tasks]
        if isinstance(task, _Any):
            pending = [t for t in task.tasks]
            chosen = self.any_order(pending)
            self._complete(chosen, recorded)
            return chosen
        if isinstance(task, Call):
            return self._complete(task, recorded)
        raise AssertionError(f"the orchestrator yielded {task!r}, not a Durable task")

    def _complete(self, call: Call, recorded: list[Call] | None) -> Any:
        if recorded is not None:  # replay: the result the first run recorded for this task
            found = _find(recorded, call)
            call.result, call.error = found.result, found.error
            if call.error is not None:
                raise TaskFailed(call.error)
            return call.result
        try:
            if call.kind == "activity":
                self._check(call.name, "activityTrigger")
                call.result = _json(self.activities[call.name](copy.deepcopy(call.payload)))
            else:
                self._check(call.name, "orchestrationTrigger")
                assert call.instance_id, "sub-orchestrations need deterministic instance ids"
                child = ScriptedContext(input=call.payload, instance_id=call.instance_id)
                self.children[call.instance_id] = child
                call.result = self._drive(self.orchestrators[call.name], child, None)
        except AssertionError:
            raise  # a broken test or contract, not a failed task
        except Exception as exc:  # the task failed: the host tells the orchestrator so
            call.error = f"{call.name} failed: {exc}"
            raise TaskFailed(call.error) from exc
        return call.result

    def _check(self, name: str, trigger: str) -> None:
        assert self.registered.get(name) == trigger, f"{name!r} is not a registered {trigger}"


def _find(recorded: list[Call], call: Call) -> Call:
    """The first unused recorded task with the same name and payload (taken out of the list)."""
    for i, candidate in enumerate(recorded):
        if (candidate.kind, candidate.name, candidate.payload) == (
            call.kind,
            call.name,
            call.payload,
        ):
            return recorded.pop(i)
    raise AssertionError(f"replay scheduled {call.name} {call.payload!r}, never seen before")


def _json(value: Any) -> Any:
    """What crosses the Durable history: JSON text, read back."""
    return json.loads(json.dumps(value))
