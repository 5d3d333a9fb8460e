"""Load a Python v2 function app and call its functions the way the Python worker does."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

HTTP_TRIGGER = "httpTrigger"
BLOB_TRIGGER = "blobTrigger"
EVENT_GRID_TRIGGER = "eventGridTrigger"
ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
ENTITY_TRIGGER = "entityTrigger"
DURABLE_CLIENT = "durableClient"


class UnsupportedBindingError(RuntimeError):
    pass


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    user_function: Callable[..., Any]
    parameters: frozenset[str] = field(default_factory=frozenset)

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)

    def binding_of_type(self, binding_type: str) -> dict[str, Any] | None:
        return next((b for b in self.bindings if b["type"] == binding_type), None)


@dataclass(frozen=True)
class InvocationContext:
    """What `context: func.Context` gives a function in the real worker."""

    invocation_id: str
    function_name: str
    function_directory: str
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: Any = None


class FunctionIndex:
    def __init__(self, functions: list[FunctionInfo], script_root: Path) -> None:
        self.script_root = script_root
        self.by_name = {f.name: f for f in functions}

    def of_trigger(self, trigger_type: str) -> list[FunctionInfo]:
        return [f for f in self.by_name.values() if f.trigger_type == trigger_type]

    def find(self, name: str, trigger_type: str) -> FunctionInfo | None:
        info = self.by_name.get(name)
        return info if info is not None and info.trigger_type == trigger_type else None


def load_function_app(script_root: Path, module_name: str = "function_app") -> FunctionIndex:
    """Import `function_app.py` from script_root and index its functions (worker indexing)."""
    root = str(script_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(module_name)
    registers = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(registers) != 1:
        raise RuntimeError(
            f"{module_name}.py must define exactly one FunctionApp/DFApp, found {len(registers)}"
        )
    functions = []
    for fn in registers[0].get_functions():
        bindings = json.loads(fn.get_function_json())["bindings"]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        user_function = fn.get_user_function()
        functions.append(
            FunctionInfo(
                name=str(fn.get_function_name()),
                trigger=trigger,
                bindings=bindings,
                user_function=user_function,
                parameters=frozenset(inspect.signature(user_function).parameters),
            )
        )
    return FunctionIndex(functions, script_root)


class Invoker:
    """Calls user functions: async ones on the event loop, sync ones on a thread pool."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, sync_pool: Executor) -> None:
        self._loop = loop
        self._sync_pool = sync_pool

    async def call(
        self,
        info: FunctionInfo,
        trigger_value: Any,
        *,
        durable_client: str | None = None,
        pool: Executor | None = None,
    ) -> Any:
        kwargs = self._arguments(info, trigger_value, durable_client)
        if info.is_async:
            return await info.user_function(**kwargs)
        return await self._loop.run_in_executor(
            pool or self._sync_pool, lambda: info.user_function(**kwargs)
        )

    @staticmethod
    def _arguments(
        info: FunctionInfo, trigger_value: Any, durable_client: str | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for binding in info.bindings:
            if binding["direction"] == "OUT":
                if binding["name"] != "$return":
                    raise UnsupportedBindingError(
                        f"{info.name}: output binding {binding['type']!r} is not supported "
                        "by devhost; return values only"
                    )
                continue
            if binding is info.trigger or binding["type"] == info.trigger_type:
                kwargs[binding["name"]] = trigger_value
            elif binding["type"] == DURABLE_CLIENT:
                kwargs[binding["name"]] = durable_client
            else:
                raise UnsupportedBindingError(
                    f"{info.name}: input binding {binding['type']!r} is not supported by devhost"
                )
        if "context" in info.parameters and "context" not in kwargs:
            kwargs["context"] = InvocationContext(
                invocation_id=str(uuid.uuid4()),
                function_name=info.name,
                function_directory=str(info_dir(info)),
            )
        return kwargs


def info_dir(info: FunctionInfo) -> Path:
    module = sys.modules.get(getattr(info.user_function, "__module__", ""), None)
    return Path(getattr(module, "__file__", ".") or ".").resolve().parent
