"""Chat under load: N clients sending questions back to back for a fixed time.

    .venv/bin/python bench/chat_load.py [--clients 32] [--seconds 60] [--docs 2000]

Starts Azurite + devhost with an index of ``--docs`` seeded documents, then each client loops:
half of the requests ask with a picture (a data URL), half with text only. Prints latency
percentiles and the error count (any status other than 200, or a failed connection), then one
``RESULT`` line.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

from hardening import CONTAINER, seed  # noqa: E402
from sample_images import picture_bytes  # noqa: E402
from stack import PeakRss, Stack  # noqa: E402

QUESTIONS = ["a red boat in the harbour", "lighthouse at night", "forest street", "sky colour"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args()
    pictures = [
        "data:image/jpeg;base64," + base64.b64encode(picture_bytes(i)).decode() for i in range(8)
    ]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        seed(scratch / "data", args.docs)
        with Stack(scratch, env={"IMAGES_CONTAINER": CONTAINER}) as stack:
            url = f"{stack.base_url}/api/chat/completions"
            requests.post(url, json={"messages": [{"role": "user", "content": "warm"}]}, timeout=60)
            deadline = time.monotonic() + args.seconds

            def client(number: int) -> None:
                session = requests.Session()
                sent = 0
                while time.monotonic() < deadline:
                    content: object = QUESTIONS[(number + sent) % len(QUESTIONS)]
                    if (number + sent) % 2:
                        picture = {"url": pictures[(number + sent) % len(pictures)]}
                        content = [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": picture},
                        ]
                    body = {"messages": [{"role": "user", "content": content}]}
                    started = time.perf_counter()
                    try:
                        status = session.post(url, json=body, timeout=120).status_code
                    except requests.RequestException as exc:
                        status = type(exc).__name__
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        if status != 200:
                            errors.append(str(status))
                    sent += 1

            with PeakRss(stack.devhost_pid) as rss:
                threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
    ms = [s * 1000 for s in latencies]
    print(f"requests {len(ms)} in {args.seconds:.0f} s with {args.clients} clients")
    print(f"p50 {percentile(ms, 0.5):.0f} ms  p95 {percentile(ms, 0.95):.0f} ms  ", end="")
    print(f"p99 {percentile(ms, 0.99):.0f} ms  mean {statistics.mean(ms):.0f} ms")
    print(f"errors {len(errors)} {sorted(set(errors))}  devhost peak RSS {rss.peak_mb:.0f} MB")
    print(
        f"RESULT clients={args.clients} seconds={args.seconds:.0f} requests={len(ms)} "
        f"rps={len(ms) / args.seconds:.1f} p50_ms={percentile(ms, 0.5):.0f} "
        f"p95_ms={percentile(ms, 0.95):.0f} p99_ms={percentile(ms, 0.99):.0f} "
        f"errors={len(errors)} peak_rss_mb={rss.peak_mb:.0f}"
    )


if __name__ == "__main__":
    main()
