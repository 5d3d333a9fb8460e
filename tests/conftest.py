"""Shared fixtures: a real Azurite Blob emulator per session and devhost processes per test.

tests/ has no __init__.py and pytest runs with --import-mode=importlib (the
azure-functions-durable wheel ships a top-level ``tests`` package), so test modules cannot
import this file: helpers are exposed as fixtures (``wait_for``, ``devhost``, ...).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from azure.storage.blob import BlobServiceClient

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

# Azurite's well-known development account. This key is public (it is published with the
# storage emulator and hard-coded in Azurite); it opens only the local emulator, never Azure.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

AZURITE_START_TIMEOUT_S = 30.0
DEVHOST_START_TIMEOUT_S = 60.0
DEVHOST_STOP_TIMEOUT_S = 10.0
DEVHOST_BLOB_POLL_INTERVAL_S = 0.2

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


class WaitTimeout(AssertionError):
    """Raised by :func:`wait_for` when the condition does not hold in time."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 60,
    interval: float = 0.1,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Exceptions raised by ``predicate`` count as "not yet" (e.g. connection refused while a
    server starts); the last one is shown if the timeout expires.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except Exception as exc:  # retried; the last one is reported on timeout
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error is not None else ""
            raise WaitTimeout(
                f"timed out after {timeout:g} s waiting for {message or predicate!r}{detail}"
            ) from last_error
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "<no log file>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


def _stop_process(process: subprocess.Popen[Any], timeout: float) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


# --------------------------------------------------------------------------- Azurite


@dataclass(frozen=True)
class Azurite:
    port: int
    location: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )


def _start_azurite(location: Path, log_path: Path) -> Azurite:
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                str(AZURITE_BLOB),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(location),
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--disableTelemetry",
            ],
            cwd=location,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches pytest only; teardown stops Azurite
        )
    return Azurite(port=port, location=location, log_path=log_path, process=process)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A fresh Azurite Blob emulator on a free port, empty storage, for the whole session."""
    if not os.access(AZURITE_BLOB, os.X_OK):
        pytest.fail(
            f"{AZURITE_BLOB} not found: run `npm ci` in {REPO_ROOT} (./scripts/test.sh does it)",
            pytrace=False,
        )
    location = tmp_path_factory.mktemp("azurite")
    log_path = location / "azurite.log"
    server: Azurite | None = None
    for _attempt in range(3):  # the free port may be taken before Azurite binds it
        server = _start_azurite(location, log_path)
        deadline = time.monotonic() + AZURITE_START_TIMEOUT_S
        while server.process.poll() is None and time.monotonic() < deadline:
            if port_accepts(server.port):
                break
            time.sleep(0.1)
        if server.process.poll() is None and port_accepts(server.port):
            break
        _stop_process(server.process, 5)
        server = None
    if server is None:
        pytest.fail(
            f"Azurite did not accept connections within {AZURITE_START_TIMEOUT_S:g} s.\n"
            f"--- {log_path} ---\n{tail(log_path)}",
            pytrace=False,
        )
    try:
        yield server
    finally:
        _stop_process(server.process, 10)


@pytest.fixture(scope="session")
def blob_service(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def unique_container(blob_service: BlobServiceClient) -> str:
    """Name of a new, empty container (left in place; Azurite's storage is per session)."""
    name = f"t{uuid.uuid4().hex[:12]}"
    blob_service.create_container(name)
    return name


# --------------------------------------------------------------------------- devhost


@dataclass
class DevhostProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = DEVHOST_STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit code."""
        return _stop_process(self.process, timeout)

    def kill(self) -> int:
        """SIGKILL (simulates a crash). Returns the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()


DevhostFactory = Callable[..., DevhostProcess]


@pytest.fixture
def devhost(azurite: Azurite, tmp_path: Path) -> Iterator[DevhostFactory]:
    """Factory: ``start(script_root, env=None, state_dir=None) -> DevhostProcess``.

    Runs ``python -m devhost`` from the repository root against the session's Azurite, waits
    until GET /admin/host/status answers 200, and stops every started host at teardown.
    ``env`` is added to os.environ (a value of None removes the variable). Without
    ``state_dir`` all hosts of one test share ``tmp_path / "state"`` (restart scenarios).
    """
    yield from _devhosts(azurite, tmp_path)


@pytest.fixture(scope="module")
def devhost_module(
    azurite: Azurite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevhostFactory]:
    """``devhost`` for a whole test module: one host serves many tests (fuzz, load)."""
    yield from _devhosts(azurite, tmp_path_factory.mktemp("devhost"))


def _devhosts(azurite: Azurite, base: Path) -> Iterator[DevhostFactory]:
    started: list[DevhostProcess] = []
    counter = itertools.count(1)

    def start(
        script_root: Path,
        env: dict[str, str | None] | None = None,
        state_dir: Path | None = None,
    ) -> DevhostProcess:
        port = free_port()
        state = Path(state_dir) if state_dir is not None else base / "state"
        state.mkdir(parents=True, exist_ok=True)
        log_path = base / f"devhost-{next(counter)}.log"

        child_env = dict(os.environ)
        child_env["AzureWebJobsStorage"] = azurite.connection_string
        child_env["PYTHONUNBUFFERED"] = "1"
        for key, value in (env or {}).items():
            if value is None:
                child_env.pop(key, None)
            else:
                child_env[key] = str(value)
        # The emulated Event Grid subscription covers the test's own container (the session's
        # Azurite holds every test's containers; scanning them all would cost each host).
        if "IMAGES_CONTAINER" in child_env:
            child_env.setdefault("DEVHOST_EVENT_GRID_CONTAINERS", child_env["IMAGES_CONTAINER"])

        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devhost",
                    "--script-root",
                    str(script_root),
                    "--port",
                    str(port),
                    "--state-dir",
                    str(state),
                    "--blob-poll-interval",
                    str(DEVHOST_BLOB_POLL_INTERVAL_S),
                ],
                cwd=REPO_ROOT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host = DevhostProcess(process=process, port=port, log_path=log_path)
        started.append(host)

        status_url = f"{host.base_url}/admin/host/status"
        deadline = time.monotonic() + DEVHOST_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"devhost exited with code {process.returncode} before answering "
                    f"{status_url}\n--- {log_path} ---\n{tail(log_path)}",
                    pytrace=False,
                )
            try:
                if requests.get(status_url, timeout=2).status_code == 200:
                    return host
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                host.kill()
                pytest.fail(
                    f"devhost did not answer 200 on {status_url} within "
                    f"{DEVHOST_START_TIMEOUT_S:g} s\n--- {log_path} ---\n{tail(log_path)}",
                    pytrace=False,
                )
            time.sleep(0.1)

    yield start

    for host in started:
        host.stop()
    # Shown by pytest only when the test failed ("Captured stdout teardown").
    for host in started:
        print(f"--- {host.log_path} (last lines) ---\n{tail(host.log_path, 200)}")


# --------------------------------------------------------------------------- misc


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=60, interval=0.1, message="")``: see :func:`wait_for`."""
    return wait_for


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
