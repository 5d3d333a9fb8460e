"""End-to-end ingestion through devhost: does the rate hold over the run, and does memory?

    .venv/bin/python bench/ingest.py [--images 2000] [--cloud-images 0]

Starts its own Azurite and devhost on free ports (bench/stack.py), uploads ``--images``
distinct procedural 320x240 JPEGs (tests/sample_images.py), or with ``--photos`` distinct
crops of real photographs, 640 to 1600 px wide (photo_bytes), and one metadata.json, and follows
the run as a person would: one status request for the run (``GET /api/ingestions/{id}``) and
one list request (``GET /api/ingestions``) per second, no more, so it measures the pipeline and
not its own polling. From the counts the status route reports it prints the images/s of each
tenth of the run, devhost's resident memory at each tenth and its peak, and how long the two
routes took while the run was going on, and the number of events in the largest Durable
history the run left (``largest_history_events``). ``seconds`` ends when the run's record says
it finished (its ``updated`` time, to the millisecond); ``polled_seconds`` when the poll that saw
it came back, up to a second later, which is how every figure before it was taken.

With ``--seeded-docs N`` it runs the same ``--images`` again into an index that already holds N
documents (random vectors, seeded straight into the embedded index before devhost starts):
seeded_ratio = images/s into the seeded index / images/s into the empty one.

After the local run, the model's own throughput on the same pictures is measured in this
process (decoded and preprocessed beforehand; the median of 3 rounds), two ways: forward passes
of 16 split over all cores (raw_model_images_per_s: the reference of every earlier figure), and
passes of 2 on one core each, one per core side by side, as the vectorizer runs them on the CPU
(raw_side_by_side_images_per_s, 1.6-1.9x the first on 2 cores). local_ratio = ingestion images/s /
raw_model_images_per_s; local_ratio_side_by_side = ingestion images/s /
raw_side_by_side_images_per_s. steal_pct and raw_steal_pct are the share of the machine's CPU
time taken by the hypervisor during the run and during the model's own measurement
(bench/stack.py CpuSteal): on a shared VM they differ between the two, and a ratio taken while
they differ by much does not compare like with like.

devhost scans storage for new metadata files every ``--poll-interval`` seconds (default 1.0,
devhost's own default): each scan lists every container, which on Azurite costs CPU in
proportion to the blobs it holds (600 pictures at 0.2 s, the bench's interval before: about
3% of 2 cores during the run); the wait for the first scan after the upload is part of
``seconds``.

With ``--cloud-images N`` it also runs N images through the Azure AI Vision adapter against a
local stand-in (20 requests/s, 100 ms latency): cloud_ratio = achieved images/s / 20.

Last line: ``RESULT images=... seconds=... polled_seconds=... images_per_s=...
raw_model_images_per_s=... local_ratio=... raw_rounds=r1/r2/r3 raw_side_by_side_images_per_s=...
local_ratio_side_by_side=...
tenth_rates=r1,...,r10 last_over_first=... peak_rss_mb=... rss_tenths_mb=...
status_p95_ms=... list_p95_ms=... largest_history_events=... steal_pct=... raw_steal_pct=...
poll_interval_s=... [seeded_docs=... seeded_images_per_s=... seeded_tenth_rates=...
seeded_peak_rss_mb=... seeded_ratio=...] [cloud_images_per_s=... cloud_ratio=...
cloud_tenth_rates=... cloud_steal_pct=...]``
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from fakes.vision_service import FakeVisionService  # noqa: E402
from hardening import seed_document  # noqa: E402
from retrieval_quality import PHOTOS, photo_file  # noqa: E402
from sample_images import picture_bytes  # noqa: E402
from stack import CpuSteal, PeakRss, Stack, rss_mb  # noqa: E402
from vectorizer import side_by_side_rate  # noqa: E402

from imagerag import naming  # noqa: E402
from imagerag.adapters.local_index import LocalImageIndex  # noqa: E402
from imagerag.adapters.local_text_embedder import MODEL as TEXT_MODEL  # noqa: E402
from imagerag.adapters.local_vectorizer import (  # noqa: E402
    DEFAULT_MAX_BATCH,
    LocalVectorizer,
    cpu_count,
    embed_batch,
    load_model,
    preprocess,
)
from imagerag.ports import ModelInfo  # noqa: E402

FINISHED = ("completed", "superseded", "rejected", "failed")
RAW_ROUNDS = 3
POLL_S = 1.0


@dataclass
class Watch:
    """What the polling client saw: (seconds since upload, done) and route latencies."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    status_ms: list[float] = field(default_factory=list)
    list_ms: list[float] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    polled_end: float = 0.0  # when the poll that saw the run finished came back


def record_time(record: dict, wall_start: float) -> float:
    """Seconds from ``wall_start`` (time.time()) to the run record's last write (its
    ``updated``, in ms): when the run finished, to within a millisecond rather than a poll."""
    updated = datetime.fromisoformat(str(record["updated"]).replace("Z", "+00:00"))
    return updated.timestamp() - wall_start


def timed_get(session: requests.Session, url: str, into: list[float]) -> requests.Response:
    started = time.perf_counter()
    response = session.get(url, timeout=60)
    into.append((time.perf_counter() - started) * 1000)
    return response


def follow(
    base: str, run_id: str, pid: int, started: float, wall_start: float, timeout: float
) -> Watch:
    """Poll the run's status route and the list route once per second until the run ends.
    The last sample is placed when the record says the run finished, not when a poll saw it."""
    watch = Watch()
    session = requests.Session()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick = time.monotonic()
        timed_get(session, f"{base}/api/ingestions", watch.list_ms)
        response = timed_get(session, f"{base}/api/ingestions/{run_id}", watch.status_ms)
        now = time.monotonic() - started
        watch.rss.append((now, rss_mb(pid)))
        if response.status_code == 200:
            record = response.json()
            watch.samples.append((now, int(record.get("done") or 0)))
            if len(watch.samples) % 30 == 0:
                print(f"  {now:7.1f} s: {watch.samples[-1][1]} done", flush=True)
            if record.get("phase") in FINISHED:
                watch.final, watch.polled_end = record, now
                previous = watch.samples[-2][0] if len(watch.samples) > 1 else 0.0
                ended = min(now, max(previous, record_time(record, wall_start)))
                watch.samples[-1] = (ended, watch.samples[-1][1])
                return watch
        time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
    raise SystemExit(f"run {run_id} did not finish in {timeout:.0f} s")


def crossing(samples: list[tuple[float, int]], count: float) -> float:
    """When ``done`` reached ``count``, interpolated between the two polls around it."""
    previous = (0.0, 0)
    for t, done in samples:
        if done >= count:
            (t0, d0), (t1, d1) = previous, (t, done)
            return t0 + (t1 - t0) * (count - d0) / max(d1 - d0, 1)
        previous = (t, done)
    return samples[-1][0]


def tenths(watch: Watch, total: int) -> tuple[list[float], list[float]]:
    """Images/s of each tenth of the run, and devhost's RSS when each tenth ended."""
    times = [0.0] + [crossing(watch.samples, total * k / 10) for k in range(1, 11)]
    rates = [(total / 10) / max(b - a, 1e-9) for a, b in zip(times, times[1:], strict=False)]
    rss = []
    for t in times[1:]:
        at = [mb for when, mb in watch.rss if when <= t + 1e-9]
        rss.append(at[-1] if at else watch.rss[0][1])
    return rates, rss


@functools.cache
def source_photos() -> list[Image.Image]:
    """The scikit-image photographs bench/retrieval_quality.py uses, decoded once."""
    return [
        Image.open(photo_file(photo)).convert("RGB")
        for photo in PHOTOS
        if photo.path.startswith("skimage/")
    ]


def photo_bytes(seed: int) -> bytes:
    """A distinct photograph: a random crop (half to all of each side) of one of
    source_photos(), mirrored or not, with its own brightness and colour, 640 to 1600 px on
    the long side, JPEG quality 85."""
    rng = random.Random(seed)
    photos = source_photos()
    source = photos[seed % len(photos)]
    width, height = source.size
    crop_w, crop_h = round(width * rng.uniform(0.5, 1)), round(height * rng.uniform(0.5, 1))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    picture = source.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    picture = ImageEnhance.Brightness(picture).enhance(rng.uniform(0.8, 1.2))
    picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.7, 1.3))
    scale = rng.randint(640, 1600) / max(crop_w, crop_h)
    picture = picture.resize(
        (round(crop_w * scale), round(crop_h * scale)), Image.Resampling.BICUBIC
    )
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()


def upload_pictures(
    stack: Stack, container: str, count: int, picture: Callable[[int], bytes]
) -> list[str]:
    client = stack.blob_service.get_container_client(container)
    client.create_container()
    paths = [f"set/{i:05d}.jpg" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ip: client.upload_blob(ip[1], picture(ip[0])), enumerate(paths)))
    return paths


def run(stack: Stack, container: str, paths: list[str], timeout: float) -> tuple[Watch, float]:
    """Drop metadata.json and follow the run; (what was seen, peak RSS in MB)."""
    manifest = [{"image_blob_path": p, "description": f"photo {p}"} for p in paths]
    run_id = naming.run_id(container, 1)  # the first run of a fresh container
    with PeakRss(stack.devhost_pid, interval=0.2) as peak:
        started, wall_start = time.monotonic(), time.time()
        client = stack.blob_service.get_container_client(container)
        client.upload_blob("metadata.json", json.dumps(manifest).encode())
        watch = follow(stack.base_url, run_id, stack.devhost_pid, started, wall_start, timeout)
    counts = watch.final.get("byStatus", {})
    if watch.final.get("phase") != "completed" or counts.get("indexed") != len(paths):
        raise SystemExit(f"the run did not index every image: {watch.final}")
    return watch, peak.peak_mb


class RandomTextEmbedder:
    """Random unit vectors for the seeded descriptions: the real model would take ~8 minutes
    for 90,000 of them, and what is measured is the ingestion into a large index."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(7)

    @property
    def model(self) -> ModelInfo:
        return TEXT_MODEL

    def embed(self, texts: list[str], *, interactive: bool = False) -> list[list[float]]:
        vectors = self.rng.standard_normal((len(texts), TEXT_MODEL.dimensions))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()


def seed_index(data_dir: Path, container: str, docs: int) -> None:
    """``docs`` documents straight into the embedded index devhost will open."""
    index = LocalImageIndex(
        directory=data_dir / "index",
        name=naming.index_name_for(container),
        text_embedder=RandomTextEmbedder(),
    )
    model = LocalVectorizer().model
    index.ensure(model)
    rng = np.random.default_rng(11)
    for start in range(0, docs, 5000):
        numbers = range(start, min(docs, start + 5000))
        vectors = rng.random((len(numbers), model.dimensions), dtype=np.float32)
        index.upsert(
            [
                seed_document(i, vector.tolist(), f"seeded picture {i}", container, model)
                for i, vector in zip(numbers, vectors, strict=True)
            ]
        )
    index.optimize()


def raw_model_rates(
    count: int, picture: Callable[[int], bytes], rounds: int = RAW_ROUNDS
) -> tuple[list[float], list[float]]:
    """Images/s of the model's forward passes alone on the bench's pictures, preprocessed
    beforehand, each in ``rounds`` rounds (on this VM one round of passes of 16 varied from 41
    to 59 images/s between runs): (passes of DEFAULT_MAX_BATCH split over all cores, the
    reference of every earlier figure; passes of CPU_MAX_BATCH, each on one core, one per core
    side by side, as the vectorizer runs them on the CPU)."""
    import torch

    pixels = np.stack([preprocess(picture(i)) for i in range(count)])
    model = load_model()
    embed_batch(model, pixels[:DEFAULT_MAX_BATCH])  # warm-up (traces the model)
    all_cores: list[float] = []
    one_per_core: list[float] = []
    with ThreadPoolExecutor(cpu_count()) as pool:
        for _ in range(rounds):
            torch.set_num_threads(cpu_count())  # this thread's passes on all cores
            embed_batch(model, pixels[:DEFAULT_MAX_BATCH])
            started = time.perf_counter()
            for start in range(0, count, DEFAULT_MAX_BATCH):
                embed_batch(model, pixels[start : start + DEFAULT_MAX_BATCH])
            all_cores.append(count / (time.perf_counter() - started))
            torch.set_num_threads(1)  # for the pool's threads, which keep the count they first meet
            one_per_core.append(side_by_side_rate(model, pixels, pool))
    return all_cores, one_per_core


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 2 else values[0]


def largest_history(state_dir: Path) -> tuple[int, str]:
    """Events in the largest Durable history devhost kept, and its instance (a finished
    orchestration's history stays in devhost's store)."""
    query = "SELECT instance_id, COUNT(*) FROM history GROUP BY instance_id ORDER BY 2 DESC"
    largest = (0, "")
    for db in state_dir.glob("*.sqlite"):
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            row = connection.execute(f"{query} LIMIT 1").fetchone()
        if row is not None and int(row[1]) > largest[0]:
            largest = (int(row[1]), str(row[0]))
    return largest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400, help="pictures in the local run")
    parser.add_argument("--cloud-images", type=int, default=0, help="pictures, cloud run")
    parser.add_argument("--seeded-docs", type=int, default=0, help="a second run, seeded index")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds for one run")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between devhost's scans of storage (devhost's default: 1.0)",
    )
    parser.add_argument(
        "--photos",
        action="store_true",
        help="crops of real photographs (photo_bytes) instead of procedural pictures",
    )
    args = parser.parse_args()
    picture = photo_bytes if args.photos else picture_bytes
    if args.images < 10:
        raise SystemExit("--images must be at least 10 (the run is cut in tenths)")

    scratch = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    env = {"IMAGES_CONTAINER": "images", "WORK_CONTAINER": "images-work"}
    poll = args.poll_interval
    with Stack(scratch, env=env, blob_poll_interval=poll) as stack:
        paths = upload_pictures(stack, "images", args.images, picture)
        with CpuSteal() as steal:
            watch, peak = run(stack, "images", paths, args.timeout)
    seconds = crossing(watch.samples, args.images)
    rates, rss = tenths(watch, args.images)
    history_events, history_instance = largest_history(scratch / "state")
    with CpuSteal() as raw_steal:
        raw_rounds, side_by_side_rounds = raw_model_rates(min(args.images, 400), picture)
    raw_rate, side_by_side_rate = map(statistics.median, (raw_rounds, side_by_side_rounds))

    seeded = ""
    if args.seeded_docs:
        seeded_scratch = scratch / "seeded"
        seed_index(seeded_scratch / "data", "images", args.seeded_docs)
        with Stack(seeded_scratch, env=env, blob_poll_interval=poll) as stack:
            paths = upload_pictures(stack, "images", args.images, picture)
            seeded_watch, seeded_peak = run(stack, "images", paths, args.timeout)
        seeded_seconds = crossing(seeded_watch.samples, args.images)
        seeded_rates, _ = tenths(seeded_watch, args.images)
        seeded = (
            f" seeded_docs={args.seeded_docs} "
            f"seeded_images_per_s={args.images / seeded_seconds:.2f} "
            f"seeded_tenth_rates={','.join(f'{r:.2f}' for r in seeded_rates)} "
            f"seeded_peak_rss_mb={seeded_peak:.0f} "
            f"seeded_ratio={seconds / seeded_seconds:.2f}"
        )

    cloud = ""
    if args.cloud_images:
        with FakeVisionService(key="bench-key", rate_limit_tps=20, latency_s=0.1) as vision:
            cloud_env = env | {"AZURE_VISION_ENDPOINT": vision.endpoint}
            cloud_env["AZURE_VISION_KEY"] = "bench-key"
            with Stack(scratch / "cloud", env=cloud_env, blob_poll_interval=poll) as stack:
                cloud_paths = upload_pictures(stack, "images", args.cloud_images, picture)
                with CpuSteal() as cloud_steal:
                    cloud_watch, _ = run(stack, "images", cloud_paths, args.timeout)
            cloud_rate = args.cloud_images / crossing(cloud_watch.samples, args.cloud_images)
            cloud_tenths, _ = tenths(cloud_watch, args.cloud_images)
            cloud = (
                f" cloud_images_per_s={cloud_rate:.2f} cloud_ratio={cloud_rate / 20:.2f}"
                f" cloud_tenth_rates={','.join(f'{r:.2f}' for r in cloud_tenths)}"
                f" cloud_steal_pct={100 * cloud_steal.share:.0f}"
            )
            print(f"stand-in: {vision.count(429)} x 429, {len(vision.violations)} violations")

    print(f"cores: {os.cpu_count()}   devhost log: {scratch}/devhost.log")
    print(f"{'tenth':>5} {'images/s':>9} {'RSS MB':>8}")
    for k, (rate, mb) in enumerate(zip(rates, rss, strict=True), start=1):
        print(f"{k:>5} {rate:>9.2f} {mb:>8.0f}")
    print(
        f"status route {len(watch.status_ms)} calls p95 {p95(watch.status_ms):.1f} ms; "
        f"list route {len(watch.list_ms)} calls p95 {p95(watch.list_ms):.1f} ms"
    )
    print(f"largest Durable history: {history_events} events ({history_instance})")
    print(
        f"RESULT images={args.images} seconds={seconds:.2f} polled_seconds={watch.polled_end:.1f} "
        f"images_per_s={args.images / seconds:.2f} raw_model_images_per_s={raw_rate:.2f} "
        f"local_ratio={args.images / seconds / raw_rate:.2f} "
        f"raw_rounds={'/'.join(f'{r:.1f}' for r in raw_rounds)} "
        f"raw_side_by_side_images_per_s={side_by_side_rate:.2f} "
        f"local_ratio_side_by_side={args.images / seconds / side_by_side_rate:.2f} "
        f"tenth_rates={','.join(f'{r:.2f}' for r in rates)} "
        f"last_over_first={rates[-1] / rates[0]:.2f} peak_rss_mb={peak:.0f} "
        f"rss_tenths_mb={','.join(f'{mb:.0f}' for mb in rss)} "
        f"status_p95_ms={p95(watch.status_ms):.1f} list_p95_ms={p95(watch.list_ms):.1f} "
        f"largest_history_events={history_events} steal_pct={100 * steal.share:.0f} "
        f"raw_steal_pct={100 * raw_steal.share:.0f} poll_interval_s={poll}{seeded}{cloud}"
    )


if __name__ == "__main__":
    main()
