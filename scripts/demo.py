"""Load the demo data source: a dozen of scikit-image's sample photos, each with a description,
uploaded as the `upload` data source "demo" of the running app, then wait for the ingestion.

    ./scripts/dev.sh             # in one terminal
    ./scripts/demo.sh            # in another: installs the photos if needed, runs this

The photos are files of the scikit-image wheel that scripts/setup.sh installs into
.venv/demo-photos (nothing is downloaded here); they are public domain or CC0 (see the
docstrings of skimage.data). Running it again re-sends the same files: nothing changes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
DEMO_PHOTOS = REPO / ".venv" / "demo-photos" / "skimage" / "data"

# file in skimage/data -> description (what a person would write about it)
PHOTOS: dict[str, str] = {
    "astronaut.png": "Portrait of astronaut Eileen Collins in an orange NASA flight suit, "
    "holding her helmet, with the US flag and a model of the Space Shuttle behind her.",
    "camera.png": "Black-and-white photo of a man in a dark coat looking through a camera on "
    "a tripod, standing on a lawn with buildings in the distance.",
    "chelsea.png": "Close-up of Chelsea, a tabby cat with yellow-green eyes and pink nose, "
    "looking straight at the camera.",
    "coffee.png": "A cup of espresso with golden crema on a red saucer with a spoon, on a "
    "wooden café table.",
    "coins.png": "Ancient Greek coins from Pompeii laid out in rows on a dark background, in "
    "black and white.",
    "rocket.jpg": "A SpaceX Falcon 9 rocket lit up on its launch pad at night between "
    "lightning towers, before launching the DSCOVR satellite.",
    "hubble_deep_field.jpg": "The Hubble eXtreme Deep Field: thousands of faraway galaxies, "
    "small coloured specks and spirals on the black of space.",
    "motorcycle_left.png": "A red motorcycle parked in a garage workshop, with shelves, "
    "boxes, a red chair and tools behind it.",
    "moon.png": "Grey, low-contrast close-up of the surface of the Moon with small craters.",
    "retina.jpg": "Photograph of the back of a human eye: an orange-red retina with branching "
    "blood vessels and the bright optic disc on the left.",
    "ihc.png": "Microscope image of colon tissue stained for a protein: brown-stained glands "
    "on a pale blue background (immunohistochemistry).",
    "horse.png": "Black silhouette of a horse standing, seen from the side, on a white background.",
}


def photos_dir(explicit: Path | None) -> Path:
    """Where skimage/data is: --photos, .venv/demo-photos (setup.sh), or an installed
    scikit-image (found without importing it)."""
    candidates = [explicit] if explicit else [DEMO_PHOTOS]
    if explicit is None:
        spec = importlib.util.find_spec("skimage")
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(location) / "data")
    for candidate in candidates:
        if candidate is not None and all((candidate / name).is_file() for name in PHOTOS):
            return candidate
    sys.exit(
        "error: scikit-image's sample photos are not installed. Run ./scripts/demo.sh (it "
        "installs them into .venv/demo-photos), or pass --photos <skimage/data folder>."
    )


def api(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"x-functions-key": args.key} if args.key else {}
    try:
        return requests.request(
            method, f"{args.url}/api/{path}", headers=headers, timeout=120, **kwargs
        )
    except requests.ConnectionError:
        sys.exit(f"error: nothing answers at {args.url}: start the app first (./scripts/dev.sh)")


def fail(response: requests.Response, doing: str) -> None:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    sys.exit(f"error: {doing}: {response.status_code} {message}")


def ensure_source(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "kind": "upload"}
    if args.container:
        body["container"] = args.container
    created = api(args, "POST", "datasources", json=body)
    if created.status_code == 201:
        print(f"created the upload data source {args.name!r} (index {created.json()['index']})")
        return
    if created.status_code == 409:
        existing = api(args, "GET", f"datasources/{args.name}")
        if existing.ok and existing.json().get("kind") == "upload":
            print(f"the upload data source {args.name!r} exists: sending the photos again")
            return
    fail(created, f"creating the data source {args.name!r}")


def upload(args: argparse.Namespace, folder: Path) -> str:
    """Sends the photos and their descriptions; returns the ingestion that takes them."""
    metadata = [{"image_blob_path": name, "description": text} for name, text in PHOTOS.items()]
    files: list[tuple[str, tuple[str, bytes, str]]] = [
        ("file", (name, (folder / name).read_bytes(), _type(name))) for name in PHOTOS
    ]
    files.append(("metadata", ("metadata.json", json.dumps(metadata).encode(), "application/json")))
    sent = api(args, "POST", f"datasources/{args.name}/files", files=files)
    if sent.status_code != 202:
        fail(sent, "uploading the photos")
    answer = sent.json()
    print(f"uploaded {len(answer['accepted'])} photos (ingestion {answer['ingestion']})")
    for refused in answer["refused"]:
        print(f"  refused {refused['file']}: {refused['reason']}")
    return str(answer["ingestion"])


def wait_ready(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    shown = ""
    while True:
        response = api(args, "GET", f"datasources/{args.name}")
        if not response.ok:
            fail(response, "reading the data source")
        source: dict[str, Any] = response.json()
        run = source.get("last_ingestion") or {}
        counted = f": {run['done']} of {run['total']} photos" if run.get("total") else ""
        line = f"  {source['state']}{counted}"
        if line != shown:
            print(line, flush=True)
            shown = line
        if source["state"] == "ready" and run:
            return source
        if source["state"] == "failed":
            sys.exit(f"error: the ingestion failed: {source.get('reason')}")
        if time.monotonic() > deadline:
            sys.exit(f"error: the ingestion did not finish within {args.timeout:g} s")
        time.sleep(1.0)


def _type(name: str) -> str:
    return "image/png" if name.endswith(".png") else "image/jpeg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default="http://127.0.0.1:7071", help="the app (default: %(default)s)"
    )
    parser.add_argument("--name", default="demo", help="data source name (default: demo)")
    parser.add_argument("--container", help="container for the photos (default: the name)")
    parser.add_argument(
        "--key",
        default=os.environ.get("IMAGERAG_FUNCTION_KEY", ""),
        help="function key, for an app in Azure (default: $IMAGERAG_FUNCTION_KEY)",
    )
    parser.add_argument("--photos", type=Path, help="scikit-image's data folder")
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait (default: %(default)s)"
    )
    args = parser.parse_args()
    args.url = args.url.rstrip("/")
    folder = photos_dir(args.photos)
    ensure_source(args)
    ingestion = upload(args, folder)
    source = wait_ready(args)
    run = api(args, "GET", f"ingestions/{ingestion}")
    by_status = (run.json() if run.ok else source["last_ingestion"]).get("byStatus", {})
    counts = ", ".join(f"{n} {status}" for status, n in by_status.items() if n)
    print(f"ready: index {source['index']} ({counts or 'nothing new'})")
    print(f"\nPlayground: {args.url}/api/playground/?source={args.name}")


if __name__ == "__main__":
    main()
