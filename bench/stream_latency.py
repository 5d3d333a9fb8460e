"""Streamed chat latency: how soon the openai SDK sees the answer while a slow model writes it.

    .venv/bin/python bench/stream_latency.py [--runs 5] [--deltas 20] [--interval-ms 100]

Starts Azurite and devhost with a seeded chat index, answered by the contract-checking Azure
OpenAI stand-in set to write ``--deltas`` deltas ``--interval-ms`` apart. Each run sends one
streamed question with the ``AzureOpenAI`` client and times, from the request: the first event
(the context with the citations: time to first byte), the first content delta, and the end of
the stream (time to last byte); and, on the stand-in, from receiving its request to writing its
last byte. Prints each run, then the medians as one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

from chat_seed import seed_chat_index  # noqa: E402
from fakes.openai_service import FakeOpenAIService  # noqa: E402
from stack import Stack  # noqa: E402

API_VERSION = "2024-10-21"
QUESTION = [{"role": "user", "content": "a lighthouse on a rocky coast"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--interval-ms", type=float, default=100)
    args = parser.parse_args()
    model = FakeOpenAIService(
        stream_deltas=args.deltas, delta_interval_s=args.interval_ms / 1000
    ).start()
    env = {
        "AZURE_OPENAI_ENDPOINT": model.endpoint,
        "AZURE_OPENAI_KEY": "test-key",
        "AZURE_OPENAI_CHAT_DEPLOYMENT": "gpt-4o",
        "AZURE_OPENAI_API_VERSION": API_VERSION,
        "IMAGES_CONTAINER": "images",  # until the seeded container exists
    }
    rows: list[tuple[float, float, float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), env=env) as stack:
            seeded = seed_chat_index(stack.connection, Path(tmp) / "data")
            stack.env.update(IMAGES_CONTAINER=seeded.container, LOCAL_DATA_DIR=str(seeded.data_dir))
            stack.restart_devhost()
            client = openai.AzureOpenAI(
                azure_endpoint=f"{stack.base_url}/api",
                api_key="unused",
                api_version=API_VERSION,
                max_retries=0,
            )
            extra = {
                "data_sources": [
                    {"type": "azure_search", "parameters": {"index_name": seeded.index}}
                ]
            }
            for run in range(args.runs + 1):  # the first run warms the vectorizer: not counted
                started = time.perf_counter()
                stream = client.chat.completions.create(
                    model="gpt-4o",
                    messages=QUESTION,  # type: ignore[arg-type]
                    extra_body=extra,
                    stream=True,
                )
                first_event = first_delta = 0.0
                deltas = 0
                for chunk in stream:
                    now = time.perf_counter() - started
                    first_event = first_event or now
                    if chunk.choices and chunk.choices[0].delta.content:
                        deltas += 1
                        first_delta = first_delta or now
                last = time.perf_counter() - started
                received, finished = model.stream_times[-1]
                standin = finished - received
                if deltas != args.deltas:
                    raise SystemExit(f"run {run}: {deltas} deltas, expected {args.deltas}")
                if run == 0:
                    continue
                rows.append((first_event, first_delta, last, standin))
                print(
                    f"run {run}: first byte {first_event * 1000:.0f} ms, first delta "
                    f"{first_delta * 1000:.0f} ms, last byte {last * 1000:.0f} ms, "
                    f"stand-in {standin * 1000:.0f} ms",
                    flush=True,
                )
    finally:
        model.stop()
    ttfb, first_delta, ttlb, standin = (
        statistics.median(column) * 1000 for column in zip(*rows, strict=True)
    )
    print(f"median first content delta: {first_delta:.0f} ms")
    print(f"RESULT ttfb_ms={ttfb:.0f} ttlb_ms={ttlb:.0f} standin_total_ms={standin:.0f}")


if __name__ == "__main__":
    main()
