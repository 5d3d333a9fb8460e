"""Throughput of Durable fan-outs under devhost (no storage needed: activities only compute).

    .venv/bin/python bench/devhost_fanout.py

Prints, per shape, wall time from start to Completed, activities per second, and the
devhost's peak resident memory. Compares one orchestrator holding every activity with the
same work partitioned into sub-orchestrations of 100, in one run on one machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "tests" / "apps" / "durable_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(base: str, orchestrator: str, payload: dict, instance_id: str) -> float:
    started = time.perf_counter()
    response = requests.post(
        f"{base}/runtime/webhooks/durabletask/orchestrators/{orchestrator}/{instance_id}",
        json=json.dumps(payload),
        timeout=30,
    )
    response.raise_for_status()
    while True:
        status = requests.get(
            f"{base}/runtime/webhooks/durabletask/instances/{instance_id}", timeout=30
        ).json()
        if status["runtimeStatus"] not in ("Pending", "Running"):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    assert status["runtimeStatus"] == "Completed", status
    return elapsed


def main() -> None:
    port = free_port()
    state = tempfile.mkdtemp(prefix="devhost-bench-")
    env = dict(
        os.environ, WATCHED_CONTAINER="bench", AzureWebJobsStorage="UseDevelopmentStorage=true"
    )
    log = open(Path(state) / "devhost.log", "wb")  # noqa: SIM115 - lives as long as the host
    host = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devhost",
            "--script-root",
            str(APP),
            "--port",
            str(port),
            "--state-dir",
            state,
            "--blob-poll-interval",
            "60",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/admin/host/status", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        shapes = [
            (
                "one orchestrator x 1,000 activities",
                "fan_out_partition",
                {"start": 0, "size": 1000, "delay": 0},
                1000,
            ),
            ("10 sub-orchestrations x 100", "fan_out", {"partitions": 10, "size": 100}, 1000),
            (
                "one orchestrator x 3,000 activities",
                "fan_out_partition",
                {"start": 0, "size": 3000, "delay": 0},
                3000,
            ),
            ("30 sub-orchestrations x 100", "fan_out", {"partitions": 30, "size": 100}, 3000),
            ("100 sub-orchestrations x 100", "fan_out", {"partitions": 100, "size": 100}, 10000),
        ]
        print(f"{'shape':40} {'activities':>10} {'seconds':>8} {'act/s':>8}")
        for i, (label, name, payload, count) in enumerate(shapes):
            seconds = run(base, name, payload, f"bench-{i}")
            print(f"{label:40} {count:>10,} {seconds:>8.2f} {count / seconds:>8.0f}")
        print(f"devhost peak RSS: {peak_rss_mb(host.pid):.0f} MB, cores: {os.cpu_count()}")
    finally:
        host.terminate()
        host.wait(10)


if __name__ == "__main__":
    main()
