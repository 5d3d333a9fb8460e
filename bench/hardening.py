"""What hostile but valid-looking input costs devhost: memory and time, measured from outside.

    .venv/bin/python bench/hardening.py [--docs 2000]

Starts Azurite + devhost, seeds an index of ``--docs`` documents whose descriptions share
words with the long queries, then measures devhost's RSS (sampled every 20 ms) and wall time:

- long_1mb: one chat request whose text is 1 MB of a word the descriptions contain;
- long_worst: the same with 25 MB (3.6 million words), which used to abort the process;
- png_ingest: a metadata file listing eight 7999x7999 RGBA PNGs (a few hundred KB each);
- png_chat: four concurrent chat requests, each with such a PNG as a data URL.

Prints a table, then one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from stack import PeakRss, Stack, wait_until  # noqa: E402

from imagerag import config  # noqa: E402
from imagerag.adapters.local_vectorizer import DIMENSIONS, LocalVectorizer  # noqa: E402
from imagerag.ports import IndexDocument, ModelInfo  # noqa: E402

CONTAINER = "images"
WORDS = ["colour", "red", "boat", "harbour", "lighthouse", "forest", "street", "night", "sky"]


def seed_document(
    number: int, vector: list[float], description: str, container: str, model: ModelInfo
) -> IndexDocument:
    """Seeded document ``number`` of ``container``'s index (its image blob does not exist)."""
    return IndexDocument(
        id=f"{number:064x}",
        description=description,
        image_vector=vector,
        filepath=f"seed/{number}.jpg",
        url=f"http://127.0.0.1:1/devstoreaccount1/{container}/seed/{number}.jpg",
        title=f"{number}.jpg",
        source=f"{container}/metadata-seed.json",
        model_name=model.name,
        model_version=model.version,
        content_hash=f"{number:064x}",
    )


def seed(data_dir: Path, docs: int) -> None:
    settings = config.Settings(local_data_dir=data_dir)
    index = config.image_index(settings, f"{CONTAINER}-v")
    model = LocalVectorizer().model
    index.ensure(model)
    rng = random.Random(7)
    documents = []
    for i in range(docs):
        vector = [rng.random() for _ in range(DIMENSIONS)]
        words = " ".join(rng.choice(WORDS) for _ in range(12))
        documents.append(seed_document(i, vector, f"picture {i}: {words}", CONTAINER, model))
    index.upsert(documents)
    index.optimize()


def big_png(seed_value: int) -> bytes:
    """A 7999x7999 RGBA PNG that compresses to a few hundred KB."""
    image = Image.new("RGBA", (7999, 7999), (seed_value * 30 % 255, 90, 160, 255))
    draw = ImageDraw.Draw(image)
    for k in range(40):
        x = (k * 197 + seed_value * 13) % 7800
        draw.ellipse((x, x // 2, x + 180, x // 2 + 180), fill=(255, k * 6, 0, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def chat(base: str, content: object, timeout: float = 600) -> tuple[int, float]:
    body = {"messages": [{"role": "user", "content": content}]}
    started = time.perf_counter()
    response = requests.post(f"{base}/api/chat/completions", json=body, timeout=timeout)
    return response.status_code, time.perf_counter() - started


def measure_chat(stack: Stack, content: object) -> dict[str, object]:
    with PeakRss(stack.devhost_pid) as rss:
        try:
            status, seconds = chat(stack.base_url, content)
        except requests.RequestException as exc:
            status, seconds = type(exc).__name__, float("nan")
    return {"status": status, "s": seconds, "rss_delta_mb": rss.delta_mb, "alive": stack.alive()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        seed(scratch / "data", args.docs)
        with Stack(scratch, env={"IMAGES_CONTAINER": CONTAINER}) as stack:
            images = stack.blob_service.get_container_client(CONTAINER)
            images.create_container()
            chat(stack.base_url, "warm up the model and the index")

            results["long_1mb"] = measure_chat(stack, "colour " * 150_000)
            pngs = [big_png(i) for i in range(8)]
            for i, data in enumerate(pngs):
                images.upload_blob(f"big/{i}.png", data)
            entries = [{"image_blob_path": f"big/{i}.png", "description": "big"} for i in range(8)]
            with PeakRss(stack.devhost_pid) as rss:
                started = time.perf_counter()
                images.upload_blob("metadata-big.json", json.dumps(entries).encode())

                def finished() -> bool:
                    found = requests.get(f"{stack.base_url}/api/ingestions", timeout=30).json()
                    runs = [r for r in found["value"] if r["kind"] == "run"]
                    return bool(runs) and runs[0]["phase"] in ("completed", "rejected")

                wait_until(finished, 900, interval=1.0)
            results["png_ingest"] = {
                "status": "done",
                "s": time.perf_counter() - started,
                "rss_delta_mb": rss.delta_mb,
                "peak_mb": rss.peak_mb,
                "alive": stack.alive(),
            }
            url = "data:image/png;base64," + base64.b64encode(pngs[0]).decode()
            content = [{"type": "text", "text": "what is this?"}]
            content.append({"type": "image_url", "image_url": {"url": url}})
            with PeakRss(stack.devhost_pid) as rss, ThreadPoolExecutor(4) as pool:
                started = time.perf_counter()
                statuses = list(pool.map(lambda _: chat(stack.base_url, content)[0], range(4)))
            results["png_chat"] = {
                "status": ",".join(map(str, statuses)),
                "s": time.perf_counter() - started,
                "rss_delta_mb": rss.delta_mb,
                "alive": stack.alive(),
            }
            # Last: before the query cap this one aborted the process.
            results["long_worst"] = measure_chat(stack, "colour " * 3_600_000)
            results["long_worst"]["after"] = measure_chat(stack, "red boat")["status"]

    print(f"{'case':<12} {'status':<16} {'seconds':>8} {'RSS +MB':>8} alive")
    for name, r in results.items():
        print(
            f"{name:<12} {r['status']!s:<16} {r['s']:>8.2f} {r['rss_delta_mb']:>8.0f} {r['alive']}"
        )
    print(
        "RESULT "
        f"long_1mb_s={results['long_1mb']['s']:.2f} "
        f"long_1mb_rss_mb={results['long_1mb']['rss_delta_mb']:.0f} "
        f"long_worst_status={results['long_worst']['status']} "
        f"long_worst_rss_mb={results['long_worst']['rss_delta_mb']:.0f} "
        f"alive_after_worst={results['long_worst']['alive']} "
        f"status_after_worst={results['long_worst']['after']} "
        f"png_ingest_peak_rss_mb={results['png_ingest']['peak_mb']:.0f} "
        f"png_ingest_rss_mb={results['png_ingest']['rss_delta_mb']:.0f} "
        f"png_chat4_rss_mb={results['png_chat']['rss_delta_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
