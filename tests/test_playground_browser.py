"""The playground in a real browser (Debian's chromium, driven by Playwright for Python) against
devhost + Azurite: a user uploads two pictures with descriptions, watches the ingestion finish,
asks with a cropped copy of one, opens the cited image, then removes the data source.

Never skipped: without the browser or Playwright the tests fail and say how to install them
(./scripts/test.sh installs both). Screenshots go to the test's tmp dir."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sample_images import altered_copy, picture_bytes

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
INGEST_TIMEOUT_MS = 180_000
ANSWER_TIMEOUT_MS = 60_000


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of a fresh headless chromium (its own user-data dir)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} not found: the browser tests drive Debian's chromium. Run "
            "./scripts/test.sh (it installs it) or `apt-get install -y chromium`.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: `.venv/bin/pip install -r requirements-dev.txt` "
            "(no `playwright install`: the tests use /usr/bin/chromium)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            yield page
        finally:
            context.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def app(devhost, unique_container: str, tmp_path: Path):
    uploads = f"u{uuid.uuid4().hex[:12]}"
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": unique_container,
            "WORK_CONTAINER": f"{unique_container}-work",
            "LOCAL_DATA_DIR": str(tmp_path / "data"),
            # The upload source's container is followed like any other (Event Grid emulation).
            "DEVHOST_EVENT_GRID_CONTAINERS": f"{unique_container},{uploads}",
        },
        state_dir=tmp_path / "state",
    )
    return host, uploads


def jpeg(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/jpeg", "buffer": data}


def no_horizontal_overflow(page: Any) -> bool:
    return bool(
        page.evaluate(
            "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


HAND_OVER = """([b64, name, how]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: "image/jpeg" }));
  const init = { bubbles: true, cancelable: true };
  if (how === "drop") {
    const zone = document.getElementById("composer");
    zone.dispatchEvent(new DragEvent("dragover", { ...init, dataTransfer: data }));
    zone.dispatchEvent(new DragEvent("drop", { ...init, dataTransfer: data }));
  } else {
    document.getElementById("composer-text")
      .dispatchEvent(new ClipboardEvent("paste", { ...init, clipboardData: data }));
  }
}"""


def test_upload_watch_ask_open_and_remove(app, browser_page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    host, uploads = app
    page = browser_page
    shots = tmp_path / "screenshots"
    shots.mkdir()
    red, blue = picture_bytes(41), picture_bytes(42)

    page.goto(f"{host.base_url}/api/playground")
    assert page.url == f"{host.base_url}/api/playground/"
    expect(page.get_by_label("Data source of this chat")).to_contain_text(uuid_free_builtin(app))

    # Add a data source: upload two files, a description each, as a user would.
    page.get_by_role("button", name="Add a data source").click()
    page.get_by_label("Upload files from this computer").check()
    page.get_by_label("Data source name").fill("pets")
    page.get_by_label("Container (optional)").fill(uploads)
    page.get_by_label("Images to upload").set_input_files(
        [jpeg("red.jpg", red), jpeg("blue.jpg", blue)]
    )
    page.get_by_label("Description of red.jpg").fill("A red kite over a field of poppies.")
    page.get_by_label("Description of blue.jpg").fill("A blue boat moored in a quiet harbour.")
    page.screenshot(path=shots / "1-add.png", full_page=True)
    # Every progress text the page shows, to see it move and reach the end.
    page.evaluate(
        """() => {
          window.progressSeen = [];
          new MutationObserver(() => window.progressSeen.push(
            document.getElementById("progress-text").textContent
          )).observe(document.getElementById("progress-text"), { childList: true, subtree: true });
        }"""
    )
    page.get_by_role("button", name="Add data source").click()

    # Ingestion in progress, then ready with the real counts.
    expect(page.locator("#details-title")).to_contain_text(
        'Ready: "pets"', timeout=INGEST_TIMEOUT_MS
    )
    expect(page.locator("#progress-text")).to_have_text("Ingestion done: 2 of 2 images processed.")
    seen = page.evaluate("() => window.progressSeen")
    assert any(text.startswith("Ingestion in progress") for text in seen), seen
    progress = page.locator("#ingest-progress")
    assert progress.evaluate("p => [p.value, p.max]") == [2, 2]
    facts = page.locator("#source-facts").inner_text().replace("\t", "\n")
    shown = requests.get(f"{host.base_url}/api/datasources/pets", timeout=10).json()
    counts = shown["last_ingestion"]["byStatus"]
    assert "pets-v" in facts
    for status, count in counts.items():
        assert (f"Images {status}\n{count}" in facts) == (count > 0), (status, facts)
    assert counts["indexed"] + counts["updated"] + counts["unchanged"] == 2, counts
    report = page.get_by_role("link", name="Open the ingestion report").get_attribute("href")
    assert requests.get(report or "", timeout=10).status_code == 200
    expect(page.get_by_label("Data source of this chat")).to_have_value("pets")
    page.screenshot(path=shots / "2-ready.png", full_page=True)

    # An image by drop and by paste is attached (the last one wins); then by the file picker.
    query = altered_copy(blue)
    encoded = base64.b64encode(query).decode()
    page.evaluate(HAND_OVER, [encoded, "dropped.jpg", "drop"])
    expect(page.locator("#attachment-name")).to_have_text("dropped.jpg")
    page.evaluate(HAND_OVER, [encoded, "pasted.jpg", "paste"])
    expect(page.locator("#attachment-name")).to_have_text("pasted.jpg")
    page.get_by_role("button", name="Remove image").click()
    expect(page.locator("#attachment")).to_be_hidden()
    page.get_by_label("Image to ask with").set_input_files(jpeg("query.jpg", query))
    expect(page.locator("#attachment-name")).to_have_text("query.jpg")

    # Ask: the answer streams in, the right citation comes first, [docN] links to it.
    page.get_by_label("Message", exact=True).fill("Which picture is this?")
    page.get_by_label("Message", exact=True).press("Enter")
    answer = page.locator(".message.assistant").last
    expect(answer).not_to_have_attribute("aria-busy", "true", timeout=ANSWER_TIMEOUT_MS)
    expect(page.locator("#chat-status")).to_contain_text("Answered")
    first = answer.locator(".citation").first
    expect(first.locator(".cite-title")).to_have_text("[doc1] blue.jpg")
    thumbnail = first.locator("img")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    marker = answer.locator("a.doc-ref").first
    expect(marker).to_have_attribute("href", "#cite-1-1")
    marker.click()
    expect(first.get_by_role("link")).to_be_focused()

    # The thumbnail opens the full image.
    first.get_by_role("link").click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("#viewer-title")).to_have_text("[doc1] blue.jpg")
    page.wait_for_function(
        "() => { const i = document.getElementById('viewer-image');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    assert page.locator("#viewer-image").evaluate("i => i.naturalWidth") == 320
    page.screenshot(path=shots / "3-viewer.png")
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()

    # 375 px wide (a phone): nothing scrolls sideways, with the busiest panels open.
    page.get_by_text("Chat settings").click()
    page.get_by_role("button", name="Add a data source").click()
    page.set_viewport_size({"width": 375, "height": 812})
    assert no_horizontal_overflow(page)
    page.screenshot(path=shots / "4-phone.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Cancel").click()

    # Choosing another source warns; declining keeps the chat as it was.
    page.get_by_label("Strictness (1 to 5)").fill("5")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_label("Data source of this chat").select_option(uuid_free_builtin(app))
    expect(page.get_by_label("Data source of this chat")).to_have_value("pets")
    expect(page.locator(".message")).to_have_count(2)

    # Removing it warns, then clears the chat and resets the settings.
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_label("When removing, also delete its index").check()
    page.get_by_role("button", name="Remove data source").click()
    expect(page.locator("#sources-status")).to_have_text('Removed "pets". The chat was cleared.')
    assert "clears the chat" in messages[0] and "uploaded images" in messages[0]
    expect(page.locator(".message")).to_have_count(0)
    expect(page.get_by_label("Strictness (1 to 5)")).to_have_value("3")
    expect(page.get_by_label("Data source of this chat")).to_have_value("")
    assert requests.get(f"{host.base_url}/api/datasources/pets", timeout=10).status_code == 404
    page.screenshot(path=shots / "5-removed.png", full_page=True)


def uuid_free_builtin(app) -> str:
    """The built-in source's name: the test's images container."""
    host, _ = app
    sources = requests.get(f"{host.base_url}/api/datasources", timeout=10).json()["value"]
    return str(sources[0]["name"])
