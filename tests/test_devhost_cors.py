"""devhost honours local.settings.json's "Host": {"CORS", "CORSCredentials"} as `func start`
does: preflights answered by the host, the allow-origin header on every response to an
allowed origin, nothing for other origins or without CORS configured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from devhost.cors import CorsPolicy

APP = Path(__file__).parent / "apps" / "durable_app"
ALLOWED = "http://localhost:3000"
OTHER = "http://evil.example"


def app_with_host_settings(tmp_path: Path, host: dict | None) -> Path:
    """A copy of the test app whose local.settings.json holds ``host`` as its "Host"."""
    root = tmp_path / "app"
    shutil.copytree(APP, root)
    settings: dict = {"IsEncrypted": False, "Values": {}}
    if host is not None:
        settings["Host"] = host
    (root / "local.settings.json").write_text(json.dumps(settings))
    return root


@pytest.fixture
def start(devhost, tmp_path: Path, unique_container: str):
    """Starts the test app with the given "Host" section (None: no CORS settings)."""

    def started(host_settings: dict | None):
        env = {
            "WATCHED_CONTAINER": unique_container,
            "TRIGGER_LOG": str(tmp_path / "triggers.log"),
            "ACTIVITY_LOG": str(tmp_path / "activities.log"),
        }
        return devhost(app_with_host_settings(tmp_path, host_settings), env=env)

    return started


def preflight(host, origin: str, method: str = "POST") -> requests.Response:
    return requests.options(
        f"{host.base_url}/api/echo/1",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type,x-functions-key",
        },
        timeout=10,
    )


# ------------------------------------------------------------------------- the policy


def test_policy_reads_origins_and_credentials_as_core_tools_does() -> None:
    assert CorsPolicy.from_host_settings({}) is None
    assert CorsPolicy.from_host_settings({"CORS": " , "}) is None
    policy = CorsPolicy.from_host_settings(
        {"CORS": "http://localhost:3000, https://Example.org/", "CORSCredentials": "true"}
    )
    assert policy is not None and policy.credentials
    assert policy.allowed_origin("http://localhost:3000") == "http://localhost:3000"
    assert policy.allowed_origin("https://example.org") == "https://example.org"
    assert policy.allowed_origin("http://localhost:3001") is None
    anyone = CorsPolicy.from_host_settings({"CORS": "*", "CORSCredentials": False})
    assert anyone is not None and anyone.allowed_origin(OTHER) == "*"


def test_a_wildcard_with_credentials_is_refused_naming_the_settings() -> None:
    with pytest.raises(ValueError, match="CORSCredentials"):
        CorsPolicy.from_host_settings({"CORS": "*", "CORSCredentials": True})


# ------------------------------------------------------------------------- through devhost


def test_listed_origins_get_preflights_and_headers_others_nothing(start) -> None:
    host = start({"CORS": f"{ALLOWED},https://app.example", "CORSCredentials": True})
    assert f"CORS: {ALLOWED}, https://app.example (with credentials)" in host.log_text()

    allowed = preflight(host, ALLOWED)
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert allowed.headers["Access-Control-Allow-Methods"] == "POST"
    assert allowed.headers["Access-Control-Allow-Headers"] == "content-type,x-functions-key"
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in allowed.headers["Vary"]

    refused = preflight(host, OTHER)
    assert refused.status_code == 204  # answered by the host; the browser then refuses
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Access-Control-Allow-Methods" not in refused.headers

    echoed = requests.post(
        f"{host.base_url}/api/echo/1", headers={"Origin": ALLOWED}, data=b"x", timeout=10
    )
    assert echoed.status_code == 200 and echoed.json()["body_length"] == 1
    assert echoed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert echoed.headers["Access-Control-Allow-Credentials"] == "true"
    # Errors too, or the browser could not read them.
    missing = requests.get(
        f"{host.base_url}/api/nothing-here", headers={"Origin": ALLOWED}, timeout=10
    )
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == ALLOWED
    for headers in ({"Origin": OTHER}, {}):
        plain = requests.get(f"{host.base_url}/api/echo/1", headers=headers, timeout=10)
        assert plain.status_code == 200
        assert "Access-Control-Allow-Origin" not in plain.headers


def test_a_wildcard_allows_any_origin_without_credentials(start) -> None:
    host = start({"CORS": "*"})
    allowed = preflight(host, OTHER, method="PUT")
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "*"
    assert allowed.headers["Access-Control-Allow-Methods"] == "PUT"
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    echoed = requests.get(f"{host.base_url}/api/echo/1", headers={"Origin": OTHER}, timeout=10)
    assert echoed.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in echoed.headers


def test_without_cors_settings_nothing_changes(start) -> None:
    host = start(None)
    assert "CORS:" not in host.log_text()
    # No preflight handling: OPTIONS reaches the routes, which do not take it.
    assert preflight(host, ALLOWED).status_code == 404
    echoed = requests.get(f"{host.base_url}/api/echo/1", headers={"Origin": ALLOWED}, timeout=10)
    assert echoed.status_code == 200
    assert "Access-Control-Allow-Origin" not in echoed.headers
