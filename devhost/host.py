"""The offline host: HTTP functions, blob and Event Grid triggers, Durable orchestrations."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from azure.durable_functions.models.utils.http_utils import (
    _close_session as close_durable_client_session,  # the SDK keeps one aiohttp session
)

from . import cors
from .blob_triggers import BlobTriggerWatcher
from .durable.engine import DurableEngine
from .durable.http_api import client_binding, durable_routes
from .durable.store import DurableStore
from .event_grid import EventGridWatcher
from .functions import Invoker, load_function_app
from .http_functions import http_routes, http_streams_enabled, make_handler
from .settings import HostOptions, load_local_settings, local_host_settings

log = logging.getLogger("devhost")


class DevHost:
    def __init__(
        self,
        *,
        script_root: Path,
        host: str,
        port: int,
        state_dir: Path,
        blob_poll_interval: float,
    ) -> None:
        self._script_root = script_root.resolve()
        self._host = host
        self._port = port
        self._state_dir = state_dir
        self._blob_poll_interval = blob_poll_interval
        self._runner: web.AppRunner | None = None
        self._engine: DurableEngine | None = None
        self._watcher_tasks: list[asyncio.Task[None]] = []
        self._store: DurableStore | None = None

    async def start(self) -> None:
        load_local_settings(self._script_root)
        options = HostOptions.from_host_json(self._script_root)
        index = load_function_app(self._script_root)
        loop = asyncio.get_running_loop()
        threads = int(os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "0")) or None
        invoker = Invoker(loop=loop, sync_pool=ThreadPoolExecutor(max_workers=threads))
        self._store = DurableStore(self._state_dir / f"{options.task_hub}.sqlite")
        self._engine = DurableEngine(
            index=index, store=self._store, invoker=invoker, options=options
        )
        base_url = f"http://127.0.0.1:{self._port}"

        def binding() -> str:
            return client_binding(base_url, options.task_hub)

        watcher = BlobTriggerWatcher(
            index=index,
            store=self._store,
            invoker=invoker,
            client_binding=binding,
            interval=self._blob_poll_interval,
        )
        event_grid = EventGridWatcher(
            index=index,
            store=self._store,
            invoker=invoker,
            client_binding=binding,
            interval=self._blob_poll_interval,
        )
        routes = http_routes(index)
        cors_policy = cors.CorsPolicy.from_host_settings(local_host_settings(self._script_root))
        app = web.Application(client_max_size=options.request_body_limit)
        if cors_policy is not None:
            cors.install(app, cors_policy)
        app.router.add_routes(durable_routes(self._engine))
        app.router.add_get("/admin/host/status", _host_status)
        app.router.add_route(
            "*",
            f"/{options.route_prefix}/{{tail:.*}}",
            make_handler(routes, invoker, binding, streams=http_streams_enabled()),
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

        print("\nFunctions:\n", flush=True)
        for route in routes:
            methods = ",".join(sorted(route.methods)) if route.methods else "*"
            print(
                f"    {route.info.name}: [{methods}] "
                f"http://{self._host}:{self._port}/{options.route_prefix}/{route.template}"
                f"  (authLevel {route.auth_level}; keys are not checked locally)"
            )
        for line in [*watcher.describe(), *event_grid.describe()]:
            print(f"    {line}")
        for kind in ("orchestrationTrigger", "activityTrigger"):
            for info in index.of_trigger(kind):
                print(f"    {info.name}: {kind}")
        if cors_policy is not None:
            print(f"\n    {cors_policy.describe()}")
        playground = next((r for r in routes if r.template.startswith("playground")), None)
        if playground is not None:
            print(
                f"\nPlayground: http://{self._host}:{self._port}/{options.route_prefix}/playground/"
            )
        print(flush=True)

        self._engine.recover()
        self._watcher_tasks = [
            asyncio.create_task(watcher.run()),
            asyncio.create_task(event_grid.run()),
        ]
        log.info(
            "Host started on http://%s:%d (task hub %s, state in %s)",
            self._host,
            self._port,
            options.task_hub,
            self._state_dir,
        )

    async def stop(self) -> None:
        for task in self._watcher_tasks:
            task.cancel()
        if self._runner:
            await self._runner.cleanup()
        if self._engine:
            await self._engine.shutdown()
        await close_durable_client_session()
        if self._store:
            self._store.close()


async def _host_status(request: web.Request) -> web.Response:
    return web.json_response({"state": "Running", "version": "devhost"})
