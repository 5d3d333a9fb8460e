"""App settings and host.json, read the way the Functions host reads them."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


def load_local_settings(script_root: Path) -> dict[str, str]:
    """Values of local.settings.json; variables already in the environment win, as with func."""
    path = script_root / "local.settings.json"
    if not path.exists():
        return {}
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    applied = {}
    for key, value in values.items():
        if key not in os.environ:
            os.environ[key] = str(value)
            applied[key] = str(value)
    return applied


def local_host_settings(script_root: Path) -> dict[str, Any]:
    """The "Host" section of local.settings.json (LocalHttpPort, CORS, CORSCredentials)."""
    path = script_root / "local.settings.json"
    if not path.exists():
        return {}
    section = json.loads(path.read_text(encoding="utf-8")).get("Host") or {}
    return dict(section) if isinstance(section, dict) else {}


def resolve_setting_references(text: str) -> str:
    """Replace `%NAME%` with the app setting NAME, as binding expressions do."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"app setting {name!r} referenced by {text!r} is not set")
        return os.environ[name]

    return _SETTING_REFERENCE.sub(lookup, text)


DEFAULT_REQUEST_BODY_LIMIT = 100 * 1024 * 1024


@dataclass(frozen=True)
class HostOptions:
    task_hub: str
    max_concurrent_activities: int
    max_concurrent_orchestrations: int
    route_prefix: str
    # FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, as the Functions host reads it (default 100 MB).
    request_body_limit: int = DEFAULT_REQUEST_BODY_LIMIT

    @classmethod
    def from_host_json(cls, script_root: Path) -> HostOptions:
        path = script_root / "host.json"
        host: dict[str, Any] = json.loads(path.read_text("utf-8")) if path.exists() else {}
        durable = host.get("extensions", {}).get("durableTask", {})
        cores = os.cpu_count() or 1
        # Defaults of the Durable extension: 10 activities and 10 orchestrators per core.
        route_prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
        return cls(
            route_prefix=str(route_prefix).strip("/"),
            task_hub=str(durable.get("hubName", "TestHubName")),
            max_concurrent_activities=int(
                durable.get("maxConcurrentActivityFunctions", 10 * cores)
            ),
            max_concurrent_orchestrations=int(
                durable.get("maxConcurrentOrchestratorFunctions", 10 * cores)
            ),
            request_body_limit=int(
                os.environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT") or DEFAULT_REQUEST_BODY_LIMIT
            ),
        )
