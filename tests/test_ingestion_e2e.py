"""A user drops metadata files and images into Blob storage and follows the ingestion over HTTP.

Runs the real function_app.py under devhost against Azurite. The index must always end as a
function of the metadata files present in the container, whatever the order of events.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from ingestion_driver import Driver, metadata, wait
from PIL import Image
from sample_images import encode, picture_bytes
from storage_gate import StorageGate

from imagerag.adapters.local_vectorizer import LocalVectorizer
from imagerag.ingestion import image

REPO = Path(__file__).resolve().parent.parent
# Azurite's published development account (the key opens only the local emulator).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def start(devhost, blob_service, container: str, tmp_path: Path, **env: str) -> Driver:
    work = f"{container}-work"
    host = devhost(
        REPO,
        env={
            "IMAGES_CONTAINER": container,
            "WORK_CONTAINER": work,
            "LOCAL_DATA_DIR": str(tmp_path / "data"),
            # Small partitions: several sub-orchestrations even for these short files.
            "INGEST_PARTITION_SIZE": "3",
            **env,
        },
        state_dir=tmp_path / "state",
    )
    return Driver(host, blob_service, container, work, tmp_path / "data")


@pytest.fixture
def app(devhost, blob_service, unique_container, tmp_path) -> Driver:
    return start(devhost, blob_service, unique_container, tmp_path)


@pytest.fixture
def gated(devhost, azurite, blob_service, unique_container, tmp_path):
    """Like ``app``, but devhost reaches Azurite through a gate that can hold requests."""
    gate = StorageGate(azurite.port)
    storage = gate.connection_string(AZURITE_ACCOUNT, AZURITE_KEY)
    driver = start(devhost, blob_service, unique_container, tmp_path, AzureWebJobsStorage=storage)
    try:
        yield driver, gate
    finally:
        gate.close()


@pytest.fixture(scope="module")
def vectorizer():
    return LocalVectorizer()


def hold_images(gate: StorageGate, container: str, *, but: tuple[str, ...] = ()) -> None:
    """Every image read (GET) of ``container`` waits at the gate, but those listed."""
    kept = tuple(f"/{container}/{path}" for path in but)

    def held(method: str, path: str) -> bool:
        name = path.split("?")[0]
        return method == "GET" and f"/{container}/set/" in name and not name.endswith(kept)

    gate.hold(held)


def pictures(driver: Driver, count: int, prefix: str = "set") -> list[str]:
    paths = [f"{prefix}/{i:03d}.jpg" for i in range(count)]
    for seed, path in enumerate(paths):
        driver.put_image(path, picture_bytes(seed, size=(64, 48)))
    return paths


# --------------------------------------------------------------------------- one file


def test_good_images_are_searchable_and_bad_ones_reported(app: Driver, vectorizer) -> None:
    good = {"cats/tabby.jpg": 1, "dogs/corgi.png": 2, "birds/owl.gif": 3, "scans/page.tiff": 4}
    formats = {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF", ".tiff": "TIFF"}
    for path, seed in good.items():
        app.put_image(path, picture_bytes(seed, formats[Path(path).suffix]))
    corrupt = picture_bytes(5, "JPEG")
    app.put_image("bad/corrupt.jpg", corrupt[: len(corrupt) // 2])
    app.put_image("bad/notes.jpg", b"meeting notes, not a picture\n")
    app.put_image("bad/tiny.png", encode(Image.new("RGB", (9, 9)), "PNG"))
    listed = [*good, "bad/corrupt.jpg", "bad/notes.jpg", "bad/gone.jpg", "bad/tiny.png"]
    listed += ["../other/secret.jpg", "cats/tabby.jpg"]  # traversal, duplicate
    app.put_metadata("metadata.json", metadata(*listed))
    app.wait_idle()

    [run] = app.runs()
    record = app.record(run["instanceId"])
    assert (record["phase"], record["index"], record["total"], record["done"]) == (
        "completed",
        f"{app.name}-v",
        10,  # 8 images to bring in line + 2 broken entries
        10,
    )
    assert record["byStatus"] == {
        "indexed": 4,
        "updated": 0,
        "unchanged": 0,
        "skipped": 6,
        "failed": 0,
    }
    assert record["files"] == [
        {"metadata": f"{app.name}/metadata.json", "sha256": record["files"][0]["sha256"]}
        | {"entries": 10}
    ]
    report = app.report(run["instanceId"])
    rows = [
        (r["index"], r["image_blob_path"], r["status"], r.get("code")) for r in report["results"]
    ]
    assert rows == [
        (0, "cats/tabby.jpg", "skipped", "duplicate"),
        (1, "dogs/corgi.png", "indexed", None),
        (2, "birds/owl.gif", "indexed", None),
        (3, "scans/page.tiff", "indexed", None),
        (4, "bad/corrupt.jpg", "skipped", "corrupt"),
        (5, "bad/notes.jpg", "skipped", "unsupported_type"),
        (6, "bad/gone.jpg", "skipped", "missing_blob"),
        (7, "bad/tiny.png", "skipped", "too_small"),
        (8, "../other/secret.jpg", "skipped", "invalid_path"),
        (9, "cats/tabby.jpg", "indexed", None),
    ]
    assert all(r["reason"] for r in report["results"] if r["status"] == "skipped")

    # Each good image finds itself first, searched by its own picture.
    index = app.index()
    for path, seed in good.items():
        query = vectorizer.vectorize_image(picture_bytes(seed, formats[Path(path).suffix]))
        [top, *_] = index.vector_search(query, top=3)
        assert top.filepath == path
        assert top.content == f"a photo of {path}"
        assert top.url.endswith(f"/{app.name}/{path}")
    assert set(app.documents()) == {app.doc_id(p) for p in good}


def test_an_edited_file_updates_descriptions_and_deletes_removed_entries(app: Driver) -> None:
    formats = {"jpg": "JPEG", "png": "PNG", "bmp": "BMP"}
    for seed, path in enumerate(["a.jpg", "b.png", "c.bmp"]):
        app.put_image(path, picture_bytes(seed, formats[path[-3:]]))
    app.put_metadata("metadata.json", metadata("a.jpg", "b.png", "c.bmp"))
    app.wait_idle()
    before = app.documents()
    assert len(before) == 3

    # c.bmp removed, b.png described anew: one deletion, one metadata update, no vectorizing.
    edited = metadata("a.jpg", "b.png", descriptions={"b.png": "a new caption"})
    app.put_metadata("metadata.json", edited)
    app.wait_idle()
    latest = app.latest()
    assert latest["byStatus"]["unchanged"] == 1 and latest["byStatus"]["updated"] == 1
    assert latest["byStatus"]["indexed"] == 0 and latest["deleted"] == 1
    after = app.documents()
    b_id = app.doc_id("b.png")
    assert set(after) == {app.doc_id("a.jpg"), b_id}
    assert after[b_id].description == "a new caption"
    assert after[b_id].content_hash == before[b_id].content_hash
    [hit, *_] = app.index().text_search("new caption", top=1)
    assert hit.id == b_id


def test_a_file_that_cannot_be_read_lists_nothing_but_keeps_what_it_indexed(app: Driver) -> None:
    app.put_image("kept.jpg", picture_bytes(1))
    app.put_metadata("metadata.json", metadata("kept.jpg"))
    app.wait_idle()
    # A broken edit (not JSON) and an oversize file: both rejected whole, with the reason.
    app.put_metadata("metadata.json", b"{ this is not json")
    app.put_metadata("metadata-big.json", metadata(*[f"img{i}.jpg" for i in range(10_001)]))
    app.wait_idle()
    errors = {f["metadata"].split("/")[-1]: f["error"] for f in app.latest()["files"]}
    assert errors["metadata.json"]["rule"] == "json"
    assert errors["metadata-big.json"]["rule"] == "too_many_entries"
    assert "10,001" in errors["metadata-big.json"]["message"]
    # Bad input never removes what was indexed.
    assert set(app.documents()) == {app.doc_id("kept.jpg")}


def test_status_route_validates_the_instance_id(app: Driver) -> None:
    base = app.host.base_url
    bad = requests.get(f"{base}/api/ingestions/not-an-id", timeout=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "instanceId"
    unknown = f"ingest-{'0' * 16}-{'1' * 8}"
    for path, status in (
        (unknown, 404),
        ("not-an-id/report", 400),
        (f"{unknown}/report", 404),
    ):
        response = requests.get(f"{base}/api/ingestions/{path}", timeout=10)
        assert response.status_code == status
        assert response.json()["error"]["code"] in ("InvalidInstanceId", "NotFound")


# --------------------------------------------------------------------------- issue sequences


def test_deleting_a_metadata_file_removes_its_documents(app: Driver) -> None:
    paths = pictures(app, 6)
    app.put_metadata("metadata-a.json", metadata(*paths[:4]))
    app.put_metadata("metadata-b.json", metadata(*paths[4:]))
    app.wait_idle()
    assert len(app.documents()) == 6
    app.delete_metadata("metadata-b.json")
    app.wait_idle()
    assert set(app.documents()) == {app.doc_id(p) for p in paths[:4]}
    assert app.latest()["deleted"] == 2


def test_a_document_stays_while_any_file_lists_it(app: Driver) -> None:
    own = [f"own/img{i:02d}.jpg" for i in range(10)]
    for seed, path in enumerate(own):
        app.put_image(path, picture_bytes(seed, size=(64, 48)))
    a = {p: f"A says {p}" for p in own}
    b = {p: f"B says {p}" for p in own[5:]}
    app.put_metadata("metadata-a.json", metadata(*own, descriptions=a))
    app.put_metadata("metadata-b.json", metadata(*own[5:], descriptions=b))
    app.wait_idle()
    app.put_metadata("metadata-b.json", metadata(own[9], descriptions=b))
    app.wait_idle()
    documents = app.documents()
    assert set(documents) == {app.doc_id(p) for p in own}
    # Files disagree: the file whose name sorts first wins ("metadata-a.json").
    assert {d.description for d in documents.values()} == set(a.values())
    assert {d.source for d in documents.values()} == {f"{app.name}/metadata-a.json"}

    # A gone: what B lists stays, now with B's words; the rest goes.
    app.delete_metadata("metadata-a.json")
    app.wait_idle()
    documents = app.documents()
    assert set(documents) == {app.doc_id(own[9])}
    assert documents[app.doc_id(own[9])].description == b[own[9]]


def test_an_identical_reupload_during_a_run_loses_nothing(gated) -> None:
    app, gate = gated
    paths = pictures(app, 30)
    hold_images(gate, app.name)
    app.put_metadata("metadata.json", metadata(*paths))
    wait(lambda: gate.waiting > 0, 60, "the run to read images")
    app.put_metadata("metadata.json", metadata(*paths))  # the same bytes: a new ETag
    gate.release()
    app.wait_idle()
    assert set(app.documents()) == {app.doc_id(p) for p in paths}
    first, second = sorted(app.runs(), key=lambda r: r["instanceId"])
    # The run in progress was not stopped; the next one found everything done.
    assert app.record(first["instanceId"])["byStatus"]["indexed"] == 30
    assert app.record(second["instanceId"])["byStatus"]["unchanged"] == 30
    # A third drop runs again, and again loses nothing.
    app.put_metadata("metadata.json", metadata(*paths))
    app.wait_idle()
    assert app.latest()["byStatus"]["unchanged"] == 30


def test_dropping_the_same_file_again_retries_what_was_missing(app: Driver) -> None:
    app.put_image("here.jpg", picture_bytes(1))
    app.put_metadata("metadata.json", metadata("here.jpg", "later.jpg"))
    app.wait_idle()
    codes = [r.get("code") for r in app.report(app.latest()["id"])["results"]]
    assert codes == [None, "missing_blob"]
    app.put_image("later.jpg", picture_bytes(2))  # the person fixes it ...
    app.put_metadata("metadata.json", metadata("here.jpg", "later.jpg"))  # ... and drops again
    app.wait_idle()
    assert app.latest()["byStatus"] == {
        "indexed": 1,
        "updated": 0,
        "unchanged": 1,
        "skipped": 0,
        "failed": 0,
    }
    assert set(app.documents()) == {app.doc_id("here.jpg"), app.doc_id("later.jpg")}


def test_a_superseded_run_ends_with_a_report_and_stops_its_queued_work(gated) -> None:
    app, gate = gated
    paths = pictures(app, 90)
    hold_images(gate, app.name, but=tuple(paths[:3]))
    app.put_metadata("metadata.json", metadata(*paths))
    wait(lambda: gate.waiting > 0, 60, "the first run to read images")
    app.put_metadata("metadata.json", metadata(*paths[:3]))  # a new version: 3 entries
    # The change is recorded (put_metadata waited for it), but an activity reuses the answer
    # of its last check for CURRENT_CHECK_S: once that has passed, every check sees it.
    time.sleep(image.CURRENT_CHECK_S + 0.1)
    gate.release()
    app.wait_idle()

    first, second = sorted(app.runs(), key=lambda r: r["instanceId"])
    stopped = app.record(first["instanceId"])
    assert stopped["phase"] == "superseded"
    report = app.report(first["instanceId"])
    assert report["phase"] == "superseded"
    superseded = [r for r in report["results"] if r.get("code") == "superseded"]
    # Its queued work stopped without reading images: at most one batch of held reads ran.
    assert len(superseded) >= 90 - 16 - 3
    assert app.record(second["instanceId"])["phase"] == "completed"
    assert set(app.documents()) == {app.doc_id(p) for p in paths[:3]}


def test_near_miss_names_get_a_notice_and_only_top_level_files_are_read(app: Driver) -> None:
    app.put_image("a.jpg", picture_bytes(1))
    app.container.upload_blob("Metadata.json", metadata("a.jpg"))
    app.container.upload_blob("metadata-dir/metadata-sub.json", metadata("a.jpg"))

    def notices() -> dict[str, str] | None:
        found = {
            n["instanceId"]: app.record(n["instanceId"])
            for n in app.listed()
            if n["kind"] == "notice"
        }
        named = {r["metadata"].split("/", 1)[1]: r["rule"] for r in found.values()}
        return named if len(named) == 2 else None

    named = wait(notices, 60, "two notices")
    assert "starts with 'metadata'" in named["Metadata.json"]
    assert "out of the folder 'metadata-dir'" in named["metadata-dir/metadata-sub.json"]
    assert "ignoring" in app.host.log_text()
    assert app.runs() == [] and app.documents() == {}
