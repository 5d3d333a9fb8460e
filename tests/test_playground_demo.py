"""The demo command: scripts/demo.py loads a dozen real photos (scikit-image's samples, installed
by scripts/setup.sh into .venv/demo-photos) as an upload data source, waits until it is ready
and prints the playground's URL; chat then finds a photo from a cropped copy of it."""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from sample_images import altered_copy

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import demo  # noqa: E402

PHOTOS = REPO / ".venv" / "demo-photos" / "skimage" / "data"


@pytest.fixture
def photos() -> Path:
    if not all((PHOTOS / name).is_file() for name in demo.PHOTOS):
        pytest.fail(
            f"the demo photos are not in {PHOTOS}: run ./scripts/test.sh or ./scripts/demo.sh "
            "(both install them: ensure_demo_photos in scripts/setup.sh)",
            pytrace=False,
        )
    return PHOTOS


def test_the_demo_photos_are_a_dozen_described_images(photos: Path) -> None:
    assert len(demo.PHOTOS) == 12
    for name, description in demo.PHOTOS.items():
        assert (photos / name).stat().st_size > 1000, name
        assert 40 <= len(description) <= 300, name
    assert demo.photos_dir(None) == photos


def test_one_command_loads_the_demo_and_chat_finds_a_photo(
    devhost, unique_container, tmp_path, photos: Path
) -> None:
    container = f"d{uuid.uuid4().hex[:12]}"
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": unique_container,
            "WORK_CONTAINER": f"{unique_container}-work",
            "LOCAL_DATA_DIR": str(tmp_path / "data"),
            "DEVHOST_EVENT_GRID_CONTAINERS": f"{unique_container},{container}",
        },
    )
    command = [sys.executable, str(REPO / "scripts" / "demo.py"), "--url", host.base_url]
    run = subprocess.run(
        [*command, "--container", container, "--timeout", "300"],
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ready: index demo-v (12 indexed)" in run.stdout, run.stdout
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == f"Playground: {host.base_url}/api/playground/?source=demo"

    coffee = altered_copy((photos / "coffee.png").read_bytes())
    url = "data:image/jpeg;base64," + base64.b64encode(coffee).decode()
    answer = requests.post(
        f"{host.base_url}/api/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in my cup?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            "data_sources": [{"type": "azure_search", "parameters": {"index_name": "demo-v"}}],
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    citations = answer.json()["choices"][0]["message"]["context"]["citations"]
    assert citations[0]["filepath"] == "coffee.png"

    # Again: the same files change nothing.
    again = subprocess.run(
        [*command, "--container", container], capture_output=True, text=True, timeout=360
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "exists: sending the photos again" in again.stdout
