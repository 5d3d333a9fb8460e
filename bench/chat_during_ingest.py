"""Chat latency while an ingestion runs, and what the chat traffic costs the ingestion.

    .venv/bin/python bench/chat_during_ingest.py [--clients 16] [--seconds 30] [--images 200]

Starts Azurite + devhost (local vectorizer, embedded index seeded with ``--docs`` documents),
then measures in one run:

a. ``--clients`` chat clients alone for ``--seconds``: latency p50/p95;
b. an ingestion of ``--images`` pictures alone: seconds from the upload of its metadata file
   until every document is in the index;
c. the same clients while a second, different ingestion of ``--images`` pictures runs: chat
   latency p50/p95 over the requests sent and answered inside the ingestion's window, and the
   ingestion's seconds.

Chat requests are as in chat_load.py: half ask with a picture (a data URL), half with text.
Pictures are procedural JPEGs (tests/sample_images.py), all different. The images are uploaded
before the clock starts; completion is detected by reading the index from this process every
``--poll`` seconds (not through the ingestion API), so it measures documents searchable.

Prints a table, then one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from azure.storage.blob import ContainerClient

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

from chat_load import QUESTIONS, percentile  # noqa: E402
from hardening import CONTAINER, seed  # noqa: E402
from sample_images import picture_bytes  # noqa: E402
from stack import PeakRss, Stack  # noqa: E402

from imagerag import config  # noqa: E402
from imagerag.naming import document_id  # noqa: E402


@dataclass
class Sample:
    started: float
    ended: float
    status: str


@dataclass
class ChatLoad:
    """``clients`` threads sending chat requests back to back until ``stop`` is set."""

    url: str
    clients: int
    pictures: list[str]
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> ChatLoad:
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, number: int) -> None:
        session = requests.Session()
        sent = 0
        while not self.stop.is_set():
            turn = number + sent
            content: object = QUESTIONS[turn % len(QUESTIONS)]
            if turn % 2:
                content = [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": self.pictures[turn % 8]}},
                ]
            body = {"messages": [{"role": "user", "content": content}]}
            started = time.perf_counter()
            try:
                status = str(session.post(self.url, json=body, timeout=120).status_code)
            except requests.RequestException as exc:
                status = type(exc).__name__
            with self._lock:
                self.samples.append(Sample(started, time.perf_counter(), status))
            sent += 1

    def window(self, start: float, end: float) -> list[Sample]:
        """Requests sent at or after ``start`` and answered by ``end``."""
        with self._lock:
            return [s for s in self.samples if s.started >= start and s.ended <= end]


def latency_row(samples: list[Sample]) -> dict[str, float]:
    ms = [(s.ended - s.started) * 1000 for s in samples]
    if not ms:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "mean": float("nan"), "err": 0}
    span = max(s.ended for s in samples) - min(s.started for s in samples)
    return {
        "n": len(ms),
        "rps": len(ms) / span if span > 0 else float("nan"),
        "p50": percentile(ms, 0.5),
        "p95": percentile(ms, 0.95),
        "mean": statistics.mean(ms),
        "err": sum(1 for s in samples if s.status != "200"),
    }


def windows(samples: list[Sample], start: float, width: float) -> list[str]:
    """p95 of the requests sent in each ``width``-second window after ``start``: where in the
    ingestion the tail comes from."""
    rows = []
    last = max((s.started for s in samples), default=start)
    for n in range(int((last - start) // width) + 1):
        inside = [s for s in samples if start + n * width <= s.started < start + (n + 1) * width]
        if inside:
            ms = [(s.ended - s.started) * 1000 for s in inside]
            p95 = percentile(ms, 0.95)
            rows.append(f"{n * width:>4.0f}-{(n + 1) * width:<4.0f}s n={len(ms):<4} p95={p95:.0f}")
    return rows


def upload_images(images: ContainerClient, prefix: str, seeds: range) -> list[str]:
    paths = [f"{prefix}/{n}.jpg" for n in seeds]

    def put(pair: tuple[str, int]) -> None:
        images.upload_blob(pair[0], picture_bytes(pair[1]), overwrite=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, zip(paths, seeds, strict=True)))
    return paths


def ingest(
    images: ContainerClient, data_dir: Path, name: str, paths: list[str], poll_s: float
) -> float:
    """Seconds from the metadata upload until every listed image is in the index."""
    entries = [{"image_blob_path": p, "description": f"{name} picture {p}"} for p in paths]
    ids = [document_id(CONTAINER, p) for p in paths]
    settings = config.Settings(local_data_dir=data_dir)
    started = time.perf_counter()
    images.upload_blob(f"metadata-{name}.json", json.dumps(entries).encode(), overwrite=True)
    deadline = started + 900
    while time.perf_counter() < deadline:
        time.sleep(poll_s)
        # A fresh handle each time: it sees the devhost process's latest commit.
        index = config.image_index(settings, f"{CONTAINER}-v")
        if len(index.get_states(ids)) == len(ids):
            return time.perf_counter() - started
    raise TimeoutError(f"ingestion {name} did not finish in 900 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per row of p95s")
    parser.add_argument("--devhost-log", type=Path, help="keep devhost's log here")
    args = parser.parse_args()
    pictures = [
        "data:image/jpeg;base64," + base64.b64encode(picture_bytes(i)).decode() for i in range(8)
    ]
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        data_dir = scratch / "data"
        seed(data_dir, args.docs)
        env = {"IMAGES_CONTAINER": CONTAINER, "LOCAL_DATA_DIR": str(data_dir)}
        with Stack(scratch, env=env) as stack:
            images = stack.blob_service.get_container_client(CONTAINER)
            images.create_container()
            url = f"{stack.base_url}/api/chat/completions"
            for content in (
                "warm",
                [{"type": "image_url", "image_url": {"url": pictures[0]}}],
            ):
                body = {"messages": [{"role": "user", "content": content}]}
                requests.post(url, json=body, timeout=120).raise_for_status()

            # a. chat alone
            with PeakRss(stack.devhost_pid) as rss, ChatLoad(url, args.clients, pictures) as load:
                start = time.perf_counter()
                time.sleep(args.seconds)
                end = time.perf_counter()
            rows["chat alone"] = latency_row(load.window(start, end))
            rows["chat alone"]["rss"] = rss.peak_mb

            # b. ingestion alone
            first = upload_images(images, "first", range(10_000, 10_000 + args.images))
            with PeakRss(stack.devhost_pid) as rss:
                ingest_alone = ingest(images, data_dir, "first", first, args.poll)
            rows["ingest alone"] = {"s": ingest_alone, "rss": rss.peak_mb}

            # c. chat during a second, different ingestion
            second = upload_images(images, "second", range(20_000, 20_000 + args.images))
            with PeakRss(stack.devhost_pid) as rss, ChatLoad(url, args.clients, pictures) as load:
                time.sleep(2.0)  # the clients are in their steady state before the drop
                start, start_wall = time.perf_counter(), time.strftime("%H:%M:%S")
                ingest_with_chat = ingest(images, data_dir, "second", second, args.poll)
                end = time.perf_counter()
            rows["chat during ingest"] = latency_row(load.window(start, end))
            by_window = windows(load.window(start, end), start, args.window)
            rows["chat during ingest"]["rss"] = rss.peak_mb
            rows["ingest with chat"] = {"s": ingest_with_chat, "rss": rss.peak_mb}
            alive = stack.alive()
            if args.devhost_log:
                args.devhost_log.write_bytes((scratch / "devhost.log").read_bytes())

    print(f"{args.clients} chat clients, {args.images}-image ingestions, {args.docs} seeded docs")
    header = f"{'phase':<20}{'requests':>9}{'req/s':>7}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}"
    print(f"{header}{'errors':>8}{'ingest s':>10}{'peak RSS MB':>13}")
    for name, row in rows.items():
        chat_cols = " " * 51
        if "n" in row:
            chat_cols = f"{row['n']:>9.0f}{row.get('rps', 0):>7.1f}{row['p50']:>9.0f}"
            chat_cols += f"{row['p95']:>9.0f}{row['mean']:>9.0f}{row['err']:>8.0f}"
        ingest_col = f"{row['s']:>10.1f}" if "s" in row else " " * 10
        print(f"{name:<20}{chat_cols}{ingest_col}{row['rss']:>13.0f}")
    print(f"devhost alive at the end: {alive}")
    print(f"chat p95 during the ingestion, by when the request was sent (drop at {start_wall}):")
    print("\n".join(by_window))
    alone, during = rows["chat alone"]["p95"], rows["chat during ingest"]["p95"]
    print(
        f"RESULT chat_p95_alone_ms={alone:.0f} chat_p95_during_ms={during:.0f} "
        f"chat_p95_ratio={during / alone:.2f} ingest_s_alone={ingest_alone:.1f} "
        f"ingest_s_with_chat={ingest_with_chat:.1f}"
    )


if __name__ == "__main__":
    main()
