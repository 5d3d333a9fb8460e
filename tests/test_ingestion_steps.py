"""The ingestion steps (what the activities run) over a real Azurite."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from sample_images import picture_bytes

from imagerag import naming
from imagerag.adapters.blob import AzureBlobStore
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.adapters.local_vectorizer import LocalVectorizer
from imagerag.ingestion import contract, finish, image
from imagerag.ingestion import plan as planning
from imagerag.ports import ModelInfo


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

    def vectorize_image(self, data: bytes) -> list[float]:
        self.images += 1
        return super().vectorize_image(data)


def _ingest(
    store: AzureBlobStore,
    vectorizer: LocalVectorizer,
    index: LocalImageIndex,
    container: str,
    items: list[object],
    *,
    partition_size: int = 2,
) -> tuple[dict, dict]:
    """Run every step of one ingestion as the orchestrators do; return (report ref, report)."""
    sha = _upload_metadata(store, container, items)
    work_container = f"{container}-work"
    instance_id = naming.ingestion_instance_id(container, "metadata.json", sha)
    plan = _plan(
        store,
        container,
        sha,
        work_container=work_container,
        instance_id=instance_id,
        partition_size=partition_size,
    )
    assert planning.ensure_index(index, vectorizer.model)["index"] == index.name
    work = plan["work"]
    target: contract.Target = {
        "index": index.name,
        "source": plan["metadata"],
        "etag": plan["metadata_etag"],
    }
    sizes = contract.partition_counts(plan["entries"], plan["partition_size"])
    for i, size in enumerate(sizes):
        results = [
            image.ingest_image(
                store, vectorizer, index, work=work, partition=i, slot=slot, target=target
            )
            for slot in range(size)
        ]
        finish.write_partition_report(store, work=work, partition=i, results=results)
    sync = finish.sync_deletions(
        store, index, work=work, partitions=len(sizes), metadata=plan["metadata"], sha256=sha
    )
    ref = finish.write_report(
        store,
        work=work,
        metadata=plan["metadata"],
        sha256=sha,
        partitions=len(sizes),
        index=index.name,
        deleted=sync["deleted"],
    )
    report = json.loads(store.read(work_container, ref["report"]["path"]))
    return {**ref["counts"], "deleted": ref["deleted"]}, report


def _statuses(report: dict) -> list[tuple[str | None, str, str | None]]:
    return [(r["image_blob_path"], r["status"], r.get("code")) for r in report["results"]]


def _upload_metadata(store: AzureBlobStore, container: str, items: list[object]) -> str:
    data = json.dumps(items).encode()
    store.write(container, "metadata.json", data, content_type="application/json")
    return hashlib.sha256(data).hexdigest()


def _plan(
    store: AzureBlobStore,
    container: str,
    sha256: str,
    *,
    work_container: str = "unused-work",
    instance_id: str = "ingest-" + "0" * 32,
    partition_size: int = 100,
) -> contract.Plan | contract.PlanRejected:
    """Plan the ingestion of ``<container>/metadata.json``."""
    return planning.plan_ingestion(
        store,
        metadata=contract.blob_ref(container, "metadata.json"),
        sha256=sha256,
        instance_id=instance_id,
        work_container=work_container,
        partition_size=partition_size,
        containers={container},
    )


def test_ingestion_steps_index_good_images_and_report_bad_ones(
    store: AzureBlobStore, vectorizer: CountingVectorizer, unique_container: str, tmp_path: Path
) -> None:
    index = LocalImageIndex(directory=tmp_path, name=f"{unique_container}-v")
    store.write(unique_container, "a.png", picture_bytes(1, "PNG"), content_type="image/png")
    store.write(unique_container, "d/b.jpg", picture_bytes(2), content_type="image/jpeg")
    store.write(unique_container, "t.jpg", b"text, not a picture", content_type="image/jpeg")
    items: list[object] = [
        {"image_blob_path": "a.png", "description": "first"},
        {"image_blob_path": "d/b.jpg", "description": "second"},
        {"image_blob_path": "gone.png", "description": "missing"},
        {"image_blob_path": 7, "description": "bad"},
        {"image_blob_path": "t.jpg", "description": "renamed text"},
        {"image_blob_path": "a.png", "description": "first again"},
    ]
    ref, report = _ingest(store, vectorizer, index, unique_container, items)
    assert ref["entries"] == 6
    assert (ref["indexed"], ref["skipped"], ref["failed"], ref["deleted"]) == (2, 4, 0, 0)
    assert _statuses(report) == [
        ("a.png", "skipped", "duplicate"),
        ("d/b.jpg", "indexed", None),
        ("gone.png", "skipped", "missing_blob"),
        (None, "skipped", "wrong_type"),
        ("t.jpg", "skipped", "unsupported_type"),
        ("a.png", "indexed", None),
    ]
    a_id = naming.document_id(unique_container, "a.png")
    state = index.get_states([a_id])[a_id]
    assert (state.description, state.source) == ("first again", f"{unique_container}/metadata.json")
    [top, *_] = index.vector_search(vectorizer.vectorize_image(picture_bytes(1, "PNG")), top=2)
    assert (top.id, top.filepath, top.title) == (a_id, "a.png", "a.png")


def test_reingest_skips_the_vectorizer_and_syncs_deletions(
    store: AzureBlobStore, vectorizer: CountingVectorizer, unique_container: str, tmp_path: Path
) -> None:
    index = LocalImageIndex(directory=tmp_path, name=f"{unique_container}-v")
    for seed, path in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        store.write(unique_container, path, picture_bytes(seed), content_type="image/jpeg")
    items = [{"image_blob_path": p, "description": p} for p in ["a.jpg", "b.jpg", "c.jpg"]]
    _ingest(store, vectorizer, index, unique_container, items)
    source = f"{unique_container}/metadata.json"
    assert len(index.ids_from_source(source)) == 3

    # c removed, b re-described, a's picture replaced: only a is vectorized again.
    store.write(unique_container, "a.jpg", picture_bytes(10), content_type="image/jpeg")
    before = vectorizer.images
    items = [
        {"image_blob_path": "a.jpg", "description": "a.jpg"},
        {"image_blob_path": "b.jpg", "description": "b, described anew"},
    ]
    ref, report = _ingest(store, vectorizer, index, unique_container, items)
    assert vectorizer.images - before == 1
    assert _statuses(report) == [("a.jpg", "indexed", None), ("b.jpg", "updated", None)]
    assert ref["deleted"] == 1
    assert index.ids_from_source(source) == {
        naming.document_id(unique_container, p) for p in ["a.jpg", "b.jpg"]
    }

    # Dropped again unchanged: nothing is vectorized or written.
    before = vectorizer.images
    ref, report = _ingest(store, vectorizer, index, unique_container, items)
    assert vectorizer.images == before
    assert [r["status"] for r in report["results"]] == ["unchanged", "unchanged"]
    assert ref["deleted"] == 0


def test_a_listed_image_that_turned_bad_keeps_its_document(
    store: AzureBlobStore, vectorizer: CountingVectorizer, unique_container: str, tmp_path: Path
) -> None:
    index = LocalImageIndex(directory=tmp_path, name=f"{unique_container}-v")
    store.write(unique_container, "a.jpg", picture_bytes(3), content_type="image/jpeg")
    items = [{"image_blob_path": "a.jpg", "description": "a"}]
    _ingest(store, vectorizer, index, unique_container, items)
    store.write(unique_container, "a.jpg", b"overwritten by mistake", content_type="image/jpeg")
    ref, report = _ingest(
        store,
        vectorizer,
        index,
        unique_container,
        [*items, {"image_blob_path": "x.jpg", "description": "new, missing"}],
    )
    assert _statuses(report)[0] == ("a.jpg", "skipped", "unsupported_type")
    assert ref["deleted"] == 0
    assert len(index.ids_from_source(f"{unique_container}/metadata.json")) == 1


def test_sync_leaves_deletions_to_a_newer_version(
    store: AzureBlobStore, vectorizer: CountingVectorizer, unique_container: str, tmp_path: Path
) -> None:
    index = LocalImageIndex(directory=tmp_path, name=f"{unique_container}-v")
    store.write(unique_container, "a.jpg", picture_bytes(3), content_type="image/jpeg")
    _ingest(
        store,
        vectorizer,
        index,
        unique_container,
        [{"image_blob_path": "a.jpg", "description": ""}],
    )
    sha = _upload_metadata(store, unique_container, [])
    plan = _plan(store, unique_container, sha, work_container=f"{unique_container}-w")
    _upload_metadata(store, unique_container, [{"image_blob_path": "b.jpg", "description": ""}])
    sync = finish.sync_deletions(
        store, index, work=plan["work"], partitions=0, metadata=plan["metadata"], sha256=sha
    )
    assert sync == {"deleted": 0, "superseded": True}
    assert len(index.ids_from_source(contract.ref_text(plan["metadata"]))) == 1


def test_ensure_index_reports_a_model_mismatch(tmp_path: Path) -> None:
    index = LocalImageIndex(directory=tmp_path, name="photos-v")
    assert "error" not in planning.ensure_index(index, ModelInfo("m", "1", 16, False))
    result = planning.ensure_index(index, ModelInfo("m", "2", 16, False))
    assert result["error"]["code"] == "IndexModelMismatch"
    assert "2" in result["error"]["message"]


def test_plan_rejects_a_changed_file(store: AzureBlobStore, unique_container: str) -> None:
    sha = _upload_metadata(store, unique_container, [])
    _upload_metadata(store, unique_container, [{"image_blob_path": "a", "description": ""}])
    plan = _plan(store, unique_container, sha)
    assert plan["error"]["code"] == "MetadataChanged"
    assert plan["error"]["message"] == "metadata changed while ingesting"
    assert "partitions" not in plan


def test_plan_rejects_an_invalid_file(store: AzureBlobStore, unique_container: str) -> None:
    data = b'{"image_blob_path": "a.png"}'
    store.write(unique_container, "metadata.json", data, content_type="application/json")
    plan = _plan(store, unique_container, hashlib.sha256(data).hexdigest())
    assert plan["error"]["code"] == "InvalidManifest"
    assert plan["error"]["rule"] == "shape"
    assert "JSON array" in plan["error"]["message"]


def test_plan_refuses_a_container_the_app_does_not_ingest(
    store: AzureBlobStore, unique_container: str
) -> None:
    sha = _upload_metadata(store, unique_container, [])
    plan = planning.plan_ingestion(
        store,
        metadata=contract.blob_ref(unique_container, "metadata.json"),
        sha256=sha,
        instance_id="ingest-" + "2" * 32,
        work_container=f"{unique_container}-w",
        partition_size=100,
        containers={"images"},
    )
    assert plan["error"]["code"] == "ContainerNotAllowed"
    assert unique_container in plan["error"]["message"]


def test_plan_reports_a_deleted_file(store: AzureBlobStore, unique_container: str) -> None:
    plan = _plan(store, unique_container, "0" * 64)
    assert plan["error"]["code"] == "MetadataNotFound"


def test_empty_file_plans_no_partitions(store: AzureBlobStore, unique_container: str) -> None:
    sha = _upload_metadata(store, unique_container, [])
    work_container = f"w{uuid.uuid4().hex[:12]}"
    plan = _plan(
        store,
        unique_container,
        sha,
        work_container=work_container,
        instance_id="ingest-" + "1" * 32,
    )
    assert (plan["entries"], plan["partitions"]) == (0, 0)
    report = finish.write_report(
        store,
        work=plan["work"],
        metadata=plan["metadata"],
        sha256=sha,
        partitions=0,
        index="unused-v",
        deleted=0,
    )
    assert report["counts"]["entries"] == 0


def test_rejected_file_gets_a_report(store: AzureBlobStore, unique_container: str) -> None:
    data = b"[1, 2"
    store.write(unique_container, "metadata.json", data, content_type="application/json")
    work_container = f"w{uuid.uuid4().hex[:12]}"
    plan = _plan(
        store, unique_container, hashlib.sha256(data).hexdigest(), work_container=work_container
    )
    report = json.loads(store.read(plan["report"]["container"], plan["report"]["path"]))
    assert report["error"] == plan["error"]
    assert report["error"]["rule"] == "json"


def test_an_image_of_a_superseded_version_is_not_written(
    store: AzureBlobStore, vectorizer: CountingVectorizer, unique_container: str, tmp_path: Path
) -> None:
    index = LocalImageIndex(directory=tmp_path, name=f"{unique_container}-v")
    store.write(unique_container, "a.jpg", picture_bytes(3), content_type="image/jpeg")
    sha = _upload_metadata(
        store, unique_container, [{"image_blob_path": "a.jpg", "description": ""}]
    )
    plan = _plan(store, unique_container, sha, work_container=f"{unique_container}-w")
    planning.ensure_index(index, vectorizer.model)
    # The file is replaced after planning: the older ingestion's image must not be written.
    _upload_metadata(store, unique_container, [])
    target: contract.Target = {
        "index": index.name,
        "source": plan["metadata"],
        "etag": plan["metadata_etag"],
    }
    result = image.ingest_image(
        store, vectorizer, index, work=plan["work"], partition=0, slot=0, target=target
    )
    assert (result["status"], result.get("code")) == ("skipped", "superseded")
    assert index.ids_from_source(contract.ref_text(plan["metadata"])) == set()
