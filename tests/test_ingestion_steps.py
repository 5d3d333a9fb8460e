"""The ingestion steps (what the activities run) over a real Azurite: a run in-process."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from sample_images import picture_bytes

from imagerag import images, naming
from imagerag.adapters.blob import AzureBlobStore
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.adapters.local_vectorizer import LocalVectorizer
from imagerag.ingestion import contract, finish, image, runs, sync_state
from imagerag.ingestion import plan as planning
from imagerag.ports import ImageEmbedding, ModelInfo


@pytest.fixture
def store(blob_service: BlobServiceClient) -> AzureBlobStore:
    return AzureBlobStore(service=blob_service)


@pytest.fixture(scope="module")
def vectorizer() -> CountingVectorizer:
    return CountingVectorizer()


class CountingVectorizer(LocalVectorizer):
    """The real local model, counting the images it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        self.images += 1
        return super().embed_image(data, interactive=interactive)


class Container:
    """One images container, its work container and its index, and runs over them."""

    def __init__(self, store: AzureBlobStore, name: str, tmp_path: Path) -> None:
        self.store = store
        self.name = name
        self.work = f"{name}-work"
        self.index = LocalImageIndex(directory=tmp_path, name=f"{name}-v")

    def image(self, path: str, seed: int, fmt: str = "JPEG") -> None:
        self.store.write(self.name, path, picture_bytes(seed, fmt), content_type="image/jpeg")

    def metadata(self, name: str, items: list[object]) -> None:
        data = json.dumps(items).encode()
        self.store.write(self.name, name, data, content_type="application/json")

    def request(self) -> None:
        sync_state.request_run(self.store, self.work, self.name, reason={"event": "test"})

    def run(self, vectorizer: LocalVectorizer, partition_size: int = 2) -> dict:
        """Every step of one run, as the orchestrators call them; returns the report."""
        self.request()
        start = sync_state.begin_run(self.store, self.work, self.name)
        run: contract.RunRef = {
            "id": naming.run_id(self.name, start.number),
            "number": start.number,
            "requested": start.requested,
            "changes": start.changes,
        }
        plan = self.plan(run, partition_size)
        assert "error" not in plan, plan
        assert planning.ensure_index(self.index, vectorizer.model)["index"] == self.index.name
        work, target = plan["work"], self.target(run)
        sizes = contract.partition_counts(plan["items"], plan["partition_size"])
        for i, size in enumerate(sizes):
            results = [
                image.ingest_image(
                    self.store,
                    vectorizer,
                    self.index,
                    work=work,
                    partition=i,
                    slot=slot,
                    target=target,
                )
                for slot in range(size)
            ]
            finish.write_partition_report(self.store, work=work, partition=i, results=results)
        stale = finish.delete_stale(self.store, self.index, work=work, target=target)
        result = finish.write_report(
            self.store,
            work=work,
            container=self.name,
            index=self.index.name,
            run=run,
            partitions=len(sizes),
            deleted=stale["deleted"],
            superseded=stale["superseded"],
        )
        return json.loads(self.store.read(self.work, result["report"]["path"]))

    def plan(self, run: contract.RunRef, partition_size: int = 100) -> contract.Plan:
        return planning.plan_run(  # type: ignore[return-value]
            self.store,
            self.index,
            container=self.name,
            index_name=self.index.name,
            run=run,
            work_container=self.work,
            partition_size=partition_size,
            containers={self.name},
        )

    def target(self, run: contract.RunRef) -> contract.Target:
        return {"container": self.name, "index": self.index.name, "changes": run["changes"]}

    def documents(self) -> dict[str, tuple[str, str]]:
        return {s.id: (s.description, s.source) for s in self.index.all_states()}

    def doc(self, path: str) -> str:
        return naming.document_id(self.name, path)


@pytest.fixture
def box(store: AzureBlobStore, unique_container: str, tmp_path: Path) -> Container:
    return Container(store, unique_container, tmp_path)


def statuses(report: dict) -> list[tuple[str | None, str, str | None]]:
    return [(r["image_blob_path"], r["status"], r.get("code")) for r in report["results"]]


def test_a_run_indexes_good_images_and_reports_bad_ones(box: Container, vectorizer) -> None:
    box.image("a.png", 1, "PNG")
    box.image("d/b.jpg", 2)
    box.store.write(box.name, "t.jpg", b"text, not a picture", content_type="image/jpeg")
    box.store.write(box.name, "empty.png", b"", content_type="image/png")
    big = picture_bytes(3, "PNG").ljust(images.MAX_BYTES, b"\0")  # a PNG with 20 MB of trailer
    box.store.write(box.name, "big.png", big, content_type="image/png")
    box.metadata(
        "metadata.json",
        [
            {"image_blob_path": "a.png", "description": "first"},
            {"image_blob_path": "d/b.jpg", "description": "second"},
            {"image_blob_path": "gone.png", "description": "missing"},
            {"image_blob_path": 7, "description": "bad"},
            {"image_blob_path": "t.jpg", "description": "renamed text"},
            {"image_blob_path": "empty.png", "description": "empty"},
            {"image_blob_path": "big.png", "description": "too large"},
            {"image_blob_path": "a.png", "description": "first again"},
        ],
    )
    report = box.run(vectorizer)
    assert (report["entries"], report["indexed"], report["skipped"], report["deleted"]) == (
        8,
        2,
        6,
        0,
    )
    assert statuses(report) == [
        ("a.png", "skipped", "duplicate"),
        ("d/b.jpg", "indexed", None),
        ("gone.png", "skipped", "missing_blob"),
        (None, "skipped", "wrong_type"),
        ("t.jpg", "skipped", "unsupported_type"),
        ("empty.png", "skipped", images.EMPTY),
        ("big.png", "skipped", images.TOO_LARGE),
        ("a.png", "indexed", None),
    ]
    assert box.documents()[box.doc("a.png")] == ("first again", f"{box.name}/metadata.json")
    [top, *_] = box.index.vector_search(vectorizer.vectorize_image(picture_bytes(1, "PNG")), top=2)
    assert (top.id, top.filepath, top.title) == (box.doc("a.png"), "a.png", "a.png")


def test_a_second_run_skips_the_vectorizer_and_deletes_what_is_unlisted(
    box: Container, vectorizer
) -> None:
    for seed, path in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        box.image(path, seed)
    box.metadata(
        "metadata.json", [{"image_blob_path": f"{p}.jpg", "description": p} for p in "abc"]
    )
    box.run(vectorizer)
    assert len(box.documents()) == 3

    # c removed, b re-described, a's picture replaced: only a is vectorized again.
    box.image("a.jpg", 10)
    before = vectorizer.images
    box.metadata(
        "metadata.json",
        [
            {"image_blob_path": "a.jpg", "description": "a"},
            {"image_blob_path": "b.jpg", "description": "b, described anew"},
        ],
    )
    report = box.run(vectorizer)
    assert vectorizer.images - before == 1
    assert statuses(report) == [("a.jpg", "indexed", None), ("b.jpg", "updated", None)]
    assert report["deleted"] == 1
    assert set(box.documents()) == {box.doc("a.jpg"), box.doc("b.jpg")}

    # Run again unchanged: nothing is vectorized or written.
    before = vectorizer.images
    report = box.run(vectorizer)
    assert vectorizer.images == before
    assert [r["status"] for r in report["results"]] == ["unchanged", "unchanged"]
    assert report["deleted"] == 0


def test_the_first_file_by_name_wins_and_a_document_stays_while_any_file_lists_it(
    box: Container, vectorizer
) -> None:
    box.image("x.jpg", 1)
    box.image("y.jpg", 2)
    box.metadata("metadata-b.json", [{"image_blob_path": "x.jpg", "description": "from b"}])
    box.metadata(
        "metadata-a.json",
        [
            {"image_blob_path": "x.jpg", "description": "from a"},
            {"image_blob_path": "y.jpg", "description": "only a"},
        ],
    )
    report = box.run(vectorizer)
    a, b = f"{box.name}/metadata-a.json", f"{box.name}/metadata-b.json"
    assert box.documents() == {box.doc("x.jpg"): ("from a", a), box.doc("y.jpg"): ("only a", a)}
    rows = {(r["metadata"], r["image_blob_path"]): r for r in report["results"]}
    assert rows[(b, "x.jpg")]["description_from"] == a
    assert "description_from" not in rows[(a, "x.jpg")]

    box.store.delete(box.name, "metadata-a.json")
    box.run(vectorizer)
    assert box.documents() == {box.doc("x.jpg"): ("from b", b)}


def test_an_image_that_turned_bad_keeps_its_document_and_a_gone_one_does_not(
    box: Container, vectorizer
) -> None:
    box.image("bad.jpg", 3)
    box.image("gone.jpg", 4)
    items = [{"image_blob_path": p, "description": p} for p in ("bad.jpg", "gone.jpg")]
    box.metadata("metadata.json", items)
    box.run(vectorizer)
    box.store.write(box.name, "bad.jpg", b"overwritten by mistake", content_type="image/jpeg")
    box.store.delete(box.name, "gone.jpg")
    report = box.run(vectorizer)
    assert statuses(report) == [
        ("bad.jpg", "skipped", "unsupported_type"),
        ("gone.jpg", "skipped", "missing_blob"),
    ]
    assert report["deleted"] == 1
    assert set(box.documents()) == {box.doc("bad.jpg")}


def test_a_file_that_cannot_be_read_keeps_the_documents_it_was_the_source_of(
    box: Container, vectorizer
) -> None:
    box.image("a.jpg", 1)
    box.metadata("metadata.json", [{"image_blob_path": "a.jpg", "description": "a"}])
    box.run(vectorizer)
    box.store.write(box.name, "metadata.json", b"[1, 2", content_type="application/json")
    report = box.run(vectorizer)
    assert report["files"][0]["error"]["rule"] == "json"
    assert report["deleted"] == 0 and set(box.documents()) == {box.doc("a.jpg")}


def test_a_superseded_run_stops_its_items_and_leaves_deletions(box: Container, vectorizer) -> None:
    box.image("a.jpg", 1)
    box.metadata("metadata.json", [{"image_blob_path": "a.jpg", "description": "a"}])
    box.request()
    start = sync_state.begin_run(box.store, box.work, box.name)
    run: contract.RunRef = {
        "id": naming.run_id(box.name, start.number),
        "number": start.number,
        "requested": start.requested,
        "changes": start.changes,
    }
    plan = box.plan(run)
    planning.ensure_index(box.index, vectorizer.model)
    box.request()  # the files changed meanwhile
    result = image.ingest_image(
        box.store,
        vectorizer,
        box.index,
        work=plan["work"],
        partition=0,
        slot=0,
        target=box.target(run),
    )
    assert (result["status"], result.get("code")) == ("skipped", "superseded")
    stale = finish.delete_stale(box.store, box.index, work=plan["work"], target=box.target(run))
    assert stale == {"deleted": 0, "superseded": True}
    assert box.documents() == {}


def test_ensure_index_reports_a_model_mismatch(tmp_path: Path) -> None:
    index = LocalImageIndex(directory=tmp_path, name="photos-v")
    assert "error" not in planning.ensure_index(index, ModelInfo("m", "1", 16, False))
    result = planning.ensure_index(index, ModelInfo("m", "2", 16, False))
    assert result["error"]["code"] == "IndexModelMismatch"
    assert "2" in result["error"]["message"]


def test_a_run_refuses_a_container_the_app_does_not_ingest(box: Container) -> None:
    run: contract.RunRef = {"id": naming.run_id(box.name, 1), "number": 1}
    run |= {"requested": 1, "changes": 1}
    plan = planning.plan_run(
        box.store,
        box.index,
        container=box.name,
        index_name=box.index.name,
        run=run,
        work_container=box.work,
        partition_size=100,
        containers={"images"},
    )
    assert plan["error"]["code"] == "ContainerNotAllowed"
    assert box.name in plan["error"]["message"]


def test_near_miss_names_are_noticed_by_the_plan(box: Container, vectorizer) -> None:
    box.metadata("Metadata.json", [])
    box.metadata("metadata.JSON", [])
    report = box.run(vectorizer)
    assert sorted(n["metadata"] for n in report["notices"]) == [
        f"{box.name}/Metadata.json",
        f"{box.name}/metadata.JSON",
    ]
    assert report["files"] == []


# --------------------------------------------------------------------------- sync state


def test_requests_runs_and_their_end(store: AzureBlobStore, unique_container: str) -> None:
    work = f"{unique_container}-w"
    first = sync_state.request_run(store, work, unique_container, reason={"event": "a"})
    second = sync_state.request_run(store, work, unique_container, reason={"event": "b"})
    assert (first.start, second.start, first.epoch, second.epoch) == (True, False, 1, 1)
    run = sync_state.begin_run(store, work, unique_container)
    assert (run.number, run.requested) == (1, 2)
    assert [r["event"] for r in run.reasons] == ["a", "b"]
    sync_state.request_run(store, work, unique_container, reason={"event": "c"})
    assert sync_state.end_run(store, work, unique_container, epoch=1) is True  # c is pending
    run = sync_state.begin_run(store, work, unique_container)
    assert [r["event"] for r in run.reasons] == ["c"]
    assert sync_state.end_run(store, work, unique_container, epoch=1) is False
    third = sync_state.request_run(store, work, unique_container, reason={"event": "d"})
    assert (third.start, third.epoch) == (True, 2)


def test_concurrent_requests_are_all_counted(store: AzureBlobStore) -> None:
    container = f"c{uuid.uuid4().hex[:10]}"
    work = f"{container}-w"
    starts: list[bool] = []

    def ask() -> None:
        for _ in range(5):
            request = sync_state.request_run(store, work, container, reason={"event": "x"})
            starts.append(request.start)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sync_state.read_state(store, work, container)["requested"] == 30
    assert starts.count(True) == 1  # exactly one caller turned the sync on


def test_run_records_list_newest_first_from_one_listing(store: AzureBlobStore) -> None:
    work = f"w{uuid.uuid4().hex[:10]}"
    store.ensure_container(work)
    for number in (1, 2, 3):
        run_id = naming.run_id("images", number)
        runs.update_record(store, work, run_id, container="images", phase="completed")
    listed = runs.list_records(store, work)
    assert [r["id"] for r in listed] == [naming.run_id("images", n) for n in (3, 2, 1)]


def test_a_page_of_run_records_is_one_listing_of_that_size(store: AzureBlobStore) -> None:
    work = f"w{uuid.uuid4().hex[:10]}"
    store.ensure_container(work)
    ids = [naming.run_id("images", n) for n in range(1, 6)]
    for run_id in ids:
        runs.update_record(store, work, run_id, container="images", phase="completed")
    first, continuation = runs.list_page(store, work, size=2)
    assert [r["id"] for r in first] == [ids[4], ids[3]] and continuation is not None
    second, continuation = runs.list_page(store, work, size=2, continuation=continuation)
    third, last = runs.list_page(store, work, size=2, continuation=continuation)
    assert [r["id"] for r in second + third] == [ids[2], ids[1], ids[0]] and last is None
    assert runs.list_page(store, f"{work}-missing", size=2) == ([], None)


def test_the_listed_summary_is_the_last_write_of_concurrent_writers(
    store: AzureBlobStore,
) -> None:
    work = f"w{uuid.uuid4().hex[:10]}"
    store.ensure_container(work)
    run_id = naming.run_id("images", 1)
    runs.update_record(store, work, run_id, container="images", phase="ingesting", done=0)

    def count() -> None:
        for _ in range(5):
            runs.update_record(store, work, run_id, lambda r: r.update(done=r["done"] + 1))

    threads = [threading.Thread(target=count) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert runs.list_records(store, work)[0]["done"] == 30  # not an earlier writer's summary
    runs.update_record(store, work, run_id, phase="completed")
    [listed] = runs.list_records(store, work)
    record = runs.read_record(store, work, run_id)
    assert record is not None and record["done"] == 30 and record["revision"] == 32
    assert (listed["phase"], listed["done"], listed["updated"]) == (
        "completed",
        30,
        record["updated"],
    )
