"""The offline stack for benchmarks: Azurite and devhost on free ports, and an RSS sampler.

with Stack(scratch, env={...}) as stack:
    stack.blob_service ...   stack.base_url ...   stack.devhost_pid
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from azure.storage.blob import BlobServiceClient

REPO = Path(__file__).resolve().parent.parent
# Azurite's public development key (not a secret: it opens only the local emulator).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # not up yet
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s")
        time.sleep(interval)


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


class Stack:
    """Azurite + devhost (unless ``devhost=False``) for one benchmark run; stopped on exit."""

    def __init__(
        self,
        scratch: Path,
        env: dict[str, str] | None = None,
        blob_poll_interval: float = 0.2,
        *,
        devhost: bool = True,
    ) -> None:
        self.scratch = scratch
        self.devhost = devhost
        self.env = env or {}
        # 0.2 s (devhost's default is 1 s): runs start sooner after an upload.
        self.blob_poll_interval = blob_poll_interval
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Stack:
        azurite_port = free_port()
        self._start(
            [str(REPO / "node_modules/.bin/azurite-blob"), "--blobHost", "127.0.0.1"]
            + ["--blobPort", str(azurite_port), "--location", str(self.scratch / "azurite")]
            + ["--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"],
            "azurite.log",
            os.environ,
        )
        self.connection = connection_string(azurite_port)
        self.blob_service = BlobServiceClient.from_connection_string(self.connection)
        wait_until(lambda: list(self.blob_service.list_containers()) is not None, 30)
        return self.restart_devhost() if self.devhost else self

    def restart_devhost(self) -> Stack:
        """Start devhost (stopping the running one first; state and Azurite are kept)."""
        self.stop_devhost()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, AzureWebJobsStorage=self.connection, **self.env)
        env.setdefault("LOCAL_DATA_DIR", str(self.scratch / "data"))
        self._devhost = self._start(
            [sys.executable, "-m", "devhost", "--port", str(self.port)]
            + [
                "--state-dir",
                str(self.scratch / "state"),
                "--blob-poll-interval",
                str(self.blob_poll_interval),
            ],
            "devhost.log",
            env,
        )
        self.devhost_pid = self._devhost.pid
        wait_until(lambda: requests.get(f"{self.base_url}/admin/host/status", timeout=1).ok, 90)
        return self

    def stop_devhost(self) -> None:
        devhost = getattr(self, "_devhost", None)
        if devhost is not None and devhost.poll() is None:
            devhost.terminate()
            try:
                devhost.wait(30)
            except subprocess.TimeoutExpired:
                devhost.kill()
                devhost.wait()

    def _start(self, command: list[str], log: str, env: Any) -> subprocess.Popen[bytes]:
        (self.scratch / "azurite").mkdir(parents=True, exist_ok=True)
        with open(self.scratch / log, "ab") as out:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self._processes.append(process)
        return process

    def alive(self) -> bool:
        return all(p.poll() is None for p in self._processes)

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


def rss_mb(pid: int) -> float:
    """Resident set size of a process now, in MB (Linux /proc); 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakRss:
    """Samples a process's RSS every ``interval`` seconds while the block runs."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = rss_mb(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak_mb = max(self.peak_mb, rss_mb(self.pid))
            except OSError:  # the process died
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb


class CpuSteal:
    """The share of the machine's CPU time the hypervisor gave to others while the block ran
    (the ``steal`` column of /proc/stat; 0 where there is none). On a shared VM it moves
    throughput by tens of percent between runs, so benches print it beside their figures."""

    def __enter__(self) -> CpuSteal:
        self._start = _cpu_times()
        self.share = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_times()
        total = sum(end) - sum(self._start)
        if total > 0 and len(end) > 7:
            self.share = (end[7] - self._start[7]) / total


def _cpu_times() -> list[int]:
    """user nice system idle iowait irq softirq steal ... (ticks, all CPUs)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            return [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return []
