"""The ImageIndex port: one behavioural suite for both adapters, then adapter-specific checks.

Local runs on a tmp directory (LanceDB); Azure runs azure-search-documents against
fakes.search_service (real HTTPS, contract-checking).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from azure.core.credentials import AzureKeyCredential
from fakes.search_service import FakeSearchService

from imagerag.adapters import group_commit, local_index, local_states
from imagerag.adapters.azure_search import AzureSearchImageIndex
from imagerag.adapters.azure_search_schema import profile_name
from imagerag.adapters.azure_search_wire import cosine_from_score
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.ports import (
    FieldMapping,
    ImageIndex,
    ImageIndexError,
    IndexDocument,
    IndexModelMismatchError,
    IndexNotFoundError,
    InvalidFilterError,
    MetadataPatch,
    ModelInfo,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "test-search-key"
DIMS = 16
MODEL = ModelInfo(
    name="efficientnet-lite0", version="2023-11-01", dimensions=DIMS, supports_text=False
)
WORDS = ["cat", "dog", "bird", "tree", "car", "boat", "house", "flower"]

IndexFactory = Callable[..., Any]


def make_doc(
    i: int, *, source: str = "images/metadata.json", model: ModelInfo = MODEL
) -> IndexDocument:
    rng = np.random.default_rng(i)
    vector = rng.standard_normal(model.dimensions)
    vector /= np.linalg.norm(vector)
    return IndexDocument(
        id=f"doc-{i:04d}",
        description=f"a photo of a {WORDS[i % len(WORDS)]} number {i}",
        image_vector=vector.tolist(),
        filepath=f"set/{i:04d}.jpg",
        url=f"https://account.blob.core.windows.net/images/set/{i:04d}.jpg",
        title=f"{i:04d}.jpg",
        source=source,
        model_name=model.name,
        model_version=model.version,
        content_hash=f"{i:064x}",
    )


@pytest.fixture
def search_service() -> Iterator[FakeSearchService]:
    with FakeSearchService(api_key=KEY) as service:
        yield service
        assert service.violations == []


def azure_index(service: FakeSearchService, name: str, **kwargs: Any) -> AzureSearchImageIndex:
    options: dict[str, Any] = {"retry_backoff_factor": 0.01, "connection_verify": service.ca_file}
    options.update(kwargs)
    return AzureSearchImageIndex(
        endpoint=service.endpoint, name=name, credential=AzureKeyCredential(KEY), **options
    )


@pytest.fixture(params=["local", "azure"])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> IndexFactory:
    if request.param == "local":
        return lambda name="images-v": LocalImageIndex(directory=tmp_path / "index", name=name)
    service = request.getfixturevalue("search_service")
    return lambda name="images-v": azure_index(service, name)


@pytest.fixture
def index(make_index: IndexFactory) -> ImageIndex:
    created: ImageIndex = make_index()
    created.ensure(MODEL)
    return created


# ---------------------------------------------------------------------- both adapters


def test_model_is_none_before_ensure_and_recorded_after(make_index: IndexFactory) -> None:
    fresh = make_index()
    assert fresh.model() is None
    fresh.ensure(MODEL)
    assert fresh.model() == MODEL
    assert make_index().model() == MODEL  # read back by another handle


@pytest.mark.parametrize(
    "other",
    [
        ModelInfo(MODEL.name, "2099-01-01", DIMS, False),
        ModelInfo(MODEL.name, MODEL.version, DIMS * 2, False),
        ModelInfo("azure-ai-vision", MODEL.version, DIMS, True),
    ],
    ids=["version", "dimensions", "name"],
)
def test_ensure_with_another_model_raises(
    index: ImageIndex, make_index: IndexFactory, other: ModelInfo
) -> None:
    with pytest.raises(IndexModelMismatchError) as caught:
        make_index().ensure(other)
    message = str(caught.value)
    assert MODEL.name in message and other.name in message
    assert "new index name" in message and "delete" in message


def test_ensure_is_idempotent_under_16_threads(make_index: IndexFactory) -> None:
    handles = [make_index() for _ in range(4)]
    errors: list[BaseException] = []

    def ensure(i: int) -> None:
        try:
            handles[i % 4].ensure(MODEL)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ensure, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert make_index().model() == MODEL


def test_operations_on_a_missing_index_raise_not_found(make_index: IndexFactory) -> None:
    missing = make_index("never-created")
    with pytest.raises(IndexNotFoundError):
        missing.upsert([make_doc(1)])
    with pytest.raises(IndexNotFoundError):
        missing.vector_search(make_doc(1).image_vector, top=3)
    with pytest.raises(IndexNotFoundError):
        missing.ids_from_source("images/metadata.json")


def test_upsert_then_get_states_and_reupsert_does_not_duplicate(index: ImageIndex) -> None:
    docs = [make_doc(i) for i in range(10)]
    index.upsert(docs)
    index.upsert(docs[:5])
    states = index.get_states([d.id for d in docs] + ["doc-missing"])
    assert set(states) == {d.id for d in docs}
    assert states["doc-0003"].content_hash == docs[3].content_hash
    assert states["doc-0003"].model_version == MODEL.version
    assert len(index.ids_from_source("images/metadata.json")) == 10
    assert len(index.vector_search(docs[0].image_vector, top=100)) == 10


def test_upsert_replaces_the_whole_document(index: ImageIndex) -> None:
    index.upsert([make_doc(1)])
    changed = make_doc(2)
    replacement = IndexDocument(**{**_fields(changed), "id": "doc-0001"})
    index.upsert([replacement])
    hit = index.vector_search(changed.image_vector, top=1)[0]
    assert hit.id == "doc-0001" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert index.get_states(["doc-0001"])["doc-0001"].description == changed.description


def test_merge_metadata_keeps_the_vector(index: ImageIndex) -> None:
    docs = [make_doc(i) for i in range(5)]
    index.upsert(docs)
    index.merge_metadata(
        [MetadataPatch(id="doc-0002", description="a zebra", source="images/other.json")]
    )
    state = index.get_states(["doc-0002"])["doc-0002"]
    assert (state.description, state.source) == ("a zebra", "images/other.json")
    hit = index.vector_search(docs[2].image_vector, top=1)[0]
    assert hit.id == "doc-0002" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert hit.content == "a zebra"
    assert [h.id for h in index.text_search("zebra", top=5)] == ["doc-0002"]


def test_merge_metadata_of_a_missing_id_is_ignored(index: ImageIndex) -> None:
    index.upsert([make_doc(1)])
    index.merge_metadata([MetadataPatch(id="doc-9999", description="x", source="y")])
    assert set(index.get_states(["doc-9999", "doc-0001"])) == {"doc-0001"}


def test_ids_from_source_and_delete(index: ImageIndex) -> None:
    index.upsert([make_doc(i, source="c/a.json") for i in range(6)])
    index.upsert([make_doc(i, source="c/b.json") for i in range(6, 9)])
    assert index.ids_from_source("c/b.json") == {"doc-0006", "doc-0007", "doc-0008"}
    index.delete(["doc-0006", "doc-0007", "doc-does-not-exist"])
    assert index.ids_from_source("c/b.json") == {"doc-0008"}
    assert index.ids_from_source("c/none.json") == set()
    assert "doc-0006" not in {h.id for h in index.text_search("bird", top=10)}


def test_ids_from_source_with_a_quote(index: ImageIndex) -> None:
    index.upsert([make_doc(1, source="c/o'brien.json"), make_doc(2)])
    assert index.ids_from_source("c/o'brien.json") == {"doc-0001"}


def test_vector_search_finds_the_document_itself_first(index: ImageIndex) -> None:
    docs = [make_doc(i) for i in range(30)]
    index.upsert(docs)
    for doc in docs[:5]:
        hits = index.vector_search(doc.image_vector, top=5)
        assert hits[0].id == doc.id
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert (hits[0].title, hits[0].url, hits[0].filepath) == (doc.title, doc.url, doc.filepath)
        assert hits[0].content == doc.description


def test_vector_scores_are_cosine_similarities(index: ImageIndex) -> None:
    docs = [make_doc(i) for i in range(8)]
    index.upsert(docs)
    query = np.asarray(docs[0].image_vector) + np.asarray(docs[1].image_vector)
    hits = index.vector_search((query * 3.0).tolist(), top=8)  # length does not matter
    expected = {d.id: float(np.dot(query / np.linalg.norm(query), d.image_vector)) for d in docs}
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], abs=1e-4)


def test_text_search_finds_by_description_words(index: ImageIndex) -> None:
    index.upsert([make_doc(i) for i in range(16)])
    hits = index.text_search("boat", top=10)
    assert {h.id for h in hits} == {"doc-0005", "doc-0013"}
    assert all(h.score > 0 for h in hits)
    assert index.text_search("submarine", top=10) == []
    assert index.text_search("   ", top=10) == []


def test_text_search_sees_writes_at_once(index: ImageIndex) -> None:
    index.upsert([make_doc(i) for i in range(4)])
    assert index.text_search("giraffe", top=5) == []
    index.upsert([IndexDocument(**{**_fields(make_doc(9)), "description": "a tall giraffe"})])
    assert [h.id for h in index.text_search("giraffe", top=5)] == ["doc-0009"]
    index.delete(["doc-0009"])
    assert index.text_search("giraffe", top=5) == []


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("source eq 'c/b.json'", {"doc-0004", "doc-0005"}),
        ("source ne 'c/b.json'", {"doc-0000", "doc-0001", "doc-0002", "doc-0003"}),
        ("not (source eq 'c/b.json') and id ge 'doc-0002'", {"doc-0002", "doc-0003"}),
        ("search.in(id, 'doc-0001,doc-0004')", {"doc-0001", "doc-0004"}),
        (
            "search.in(id, 'doc-0001|doc-0005', '|') or id lt 'doc-0001'",
            {"doc-0000", "doc-0001", "doc-0005"},
        ),
        ("(source eq 'c/a.json' and id gt 'doc-0002')", {"doc-0003"}),
    ],
)
def test_filters(index: ImageIndex, expression: str, expected: set[str]) -> None:
    index.upsert([make_doc(i, source="c/a.json") for i in range(4)])
    index.upsert([make_doc(i, source="c/b.json") for i in range(4, 6)])
    hits = index.vector_search(make_doc(0).image_vector, top=10, filter=expression)
    assert {h.id for h in hits} == expected
    text_hits = index.text_search("photo", top=10, filter=expression)
    assert {h.id for h in text_hits} == expected


def test_invalid_filter_raises(index: ImageIndex) -> None:
    index.upsert([make_doc(1)])
    with pytest.raises(InvalidFilterError):
        index.vector_search(make_doc(1).image_vector, top=3, filter="source eq")


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("rating gt 3", "'3'"),
        ("tags/any(t: t eq 'x')", "/any"),
        ("search.ismatch('cat')", "search.ismatch"),
        ("nosuchfield eq 'x'", "nosuchfield"),
        ("source eq 'unterminated", "position"),
    ],
)
def test_local_filter_outside_the_subset_names_the_problem(
    tmp_path: Path, expression: str, named: str
) -> None:
    local = LocalImageIndex(directory=tmp_path, name="images-v")
    local.ensure(MODEL)
    local.upsert([make_doc(1)])
    with pytest.raises(InvalidFilterError, match=named.replace("(", r"\(")):
        local.vector_search(make_doc(1).image_vector, top=3, filter=expression)
    with pytest.raises(InvalidFilterError):
        local.text_search("photo", top=3, filter=expression)


def test_upsert_with_the_wrong_dimensions_raises(index: ImageIndex) -> None:
    wrong = make_doc(1, model=ModelInfo(MODEL.name, MODEL.version, DIMS + 1, False))
    with pytest.raises(ImageIndexError, match="doc-0001"):
        index.upsert([wrong])


def test_upsert_of_another_models_vectors_raises(index: ImageIndex) -> None:
    other = make_doc(1, model=ModelInfo(MODEL.name, "2099-01-01", DIMS, False))
    with pytest.raises(IndexModelMismatchError, match="2099-01-01"):
        index.upsert([other])
    assert index.get_states(["doc-0001"]) == {}


# ---------------------------------------------------------------------- field mapping


MAPPING = FieldMapping(
    image_vector_fields=("embedding",),
    content_fields=("caption", "notes"),
    title_field="name",
    url_field=None,
    filepath_field="path",
)


def _mapped_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(6):
        vector = make_doc(i).image_vector
        rows.append(
            {
                "key": f"k{i}",
                "caption": f"caption about {WORDS[i]}",
                "notes": f"note {i}",
                "name": f"name {i}",
                "path": f"p/{i}",
                "embedding": vector,
            }
        )
    return rows


def _check_mapped(index: ImageIndex, key: str = "k") -> None:
    assert index.model() is None
    hits = index.vector_search(make_doc(2).image_vector, top=2, fields=MAPPING)
    assert hits[0].id == f"{key}2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert (hits[0].content, hits[0].title, hits[0].url, hits[0].filepath) == (
        "caption about bird\nnote 2",
        "name 2",
        None,
        "p/2",
    )
    text = index.text_search("tree", top=3, fields=MAPPING)
    assert [h.id for h in text] == [f"{key}3"]


def test_local_field_mapping_for_a_table_made_elsewhere(tmp_path: Path) -> None:
    rows = _mapped_rows()
    for row in rows:
        row["id"] = row.pop("key")
    schema = pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("caption", pa.string()),
            pa.field("notes", pa.string()),
            pa.field("name", pa.string()),
            pa.field("path", pa.string()),
            pa.field("embedding", pa.list_(pa.float32(), DIMS)),
        ]
    )
    lancedb.connect(tmp_path).create_table("external", data=pa.Table.from_pylist(rows, schema))
    local = LocalImageIndex(directory=tmp_path, name="external")
    _check_mapped(local)
    with pytest.raises(IndexModelMismatchError):
        local.ensure(MODEL)


def test_azure_field_mapping_for_an_index_made_elsewhere(search_service: FakeSearchService) -> None:
    from azure.search.documents import SearchClient
    from azure.search.documents.indexes import SearchIndexClient
    from azure.search.documents.indexes.models import (
        HnswAlgorithmConfiguration,
        SearchField,
        SearchFieldDataType,
        SearchIndex,
        VectorSearch,
        VectorSearchProfile,
    )

    string = SearchFieldDataType.String
    definition = SearchIndex(
        name="external",
        fields=[
            SearchField(name="key", type=string, key=True, filterable=True),
            SearchField(name="caption", type=string, searchable=True),
            SearchField(name="notes", type=string, searchable=True),
            SearchField(name="name", type=string),
            SearchField(name="path", type=string),
            SearchField(
                name="embedding",
                type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                searchable=True,
                vector_search_dimensions=DIMS,
                vector_search_profile_name="default",
            ),
        ],
        vector_search=VectorSearch(
            algorithms=[HnswAlgorithmConfiguration(name="hnsw")],
            profiles=[VectorSearchProfile(name="default", algorithm_configuration_name="hnsw")],
        ),
    )
    client = SearchIndexClient(
        search_service.endpoint, AzureKeyCredential(KEY), connection_verify=search_service.ca_file
    )
    client.create_index(definition)
    documents = SearchClient(
        search_service.endpoint,
        "external",
        AzureKeyCredential(KEY),
        connection_verify=search_service.ca_file,
    )
    documents.upload_documents(_mapped_rows())
    _check_mapped(azure_index(search_service, "external"))


# ---------------------------------------------------------------------- local only


@pytest.fixture
def local(tmp_path: Path) -> LocalImageIndex:
    created = LocalImageIndex(directory=tmp_path / "index", name="images-v")
    created.ensure(MODEL)
    return created


def test_local_persists_across_a_reopen(local: LocalImageIndex, tmp_path: Path) -> None:
    local.upsert([make_doc(i) for i in range(5)])
    reopened = LocalImageIndex(directory=tmp_path / "index", name="images-v")
    assert reopened.model() == MODEL
    assert reopened.vector_search(make_doc(3).image_vector, top=1)[0].id == "doc-0003"
    assert [h.id for h in reopened.text_search("house", top=3)] == []
    assert len(reopened.ids_from_source("images/metadata.json")) == 5


def test_local_image_hits_carry_their_thumbnails_through_writes(
    local: LocalImageIndex, tmp_path: Path
) -> None:
    docs = [replace(make_doc(i), thumbnail=bytes((1, 2, i, i + 1))) for i in range(4)]
    local.upsert(docs)
    hit = local.vector_search(docs[2].image_vector, top=1)[0]
    assert (hit.id, hit.thumbnail) == ("doc-0002", bytes((1, 2, 2, 3)))
    local.upsert([replace(docs[2], thumbnail=bytes((1, 2, 9, 9)))])  # the image changed
    local.merge_metadata([MetadataPatch("doc-0002", "new words", "images/metadata.json")])
    assert local.vector_search(docs[2].image_vector, top=1)[0].thumbnail == bytes((1, 2, 9, 9))
    reopened = LocalImageIndex(directory=tmp_path / "index", name="images-v")
    assert reopened.vector_search(docs[1].image_vector, top=1)[0].thumbnail == bytes((1, 2, 1, 2))
    # Description hits are not images: they carry none.
    assert all(h.thumbnail is None for h in local.text_search("photo", top=4))


def test_local_writes_are_visible_to_another_handle_at_once(
    local: LocalImageIndex, tmp_path: Path
) -> None:
    reader = LocalImageIndex(directory=tmp_path / "index", name="images-v")
    local.upsert([make_doc(1)])
    assert reader.vector_search(make_doc(1).image_vector, top=5)[0].id == "doc-0001"
    local.upsert([make_doc(i) for i in range(2, 8)])
    local.delete(["doc-0001"])
    assert len(reader.vector_search(make_doc(1).image_vector, top=50)) == 6
    assert {h.id for h in reader.text_search("house", top=5)} == {"doc-0006"}


def _run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_local_is_shared_with_another_process(local: LocalImageIndex, tmp_path: Path) -> None:
    local.upsert([make_doc(i) for i in range(3)])
    assert local.vector_search(make_doc(0).image_vector, top=10)  # cache built before the write
    directory = tmp_path / "index"
    output = _run_python(
        f"""
        import sys
        sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / "tests")!r}]
        from pathlib import Path
        from imagerag.adapters.local_index import LocalImageIndex
        from imagerag.ports import IndexDocument
        index = LocalImageIndex(directory=Path({str(directory)!r}), name="images-v")
        print(sorted(index.ids_from_source("images/metadata.json")))
        index.upsert([IndexDocument(
            id="from-child", description="a child's kite", image_vector=[1.0] + [0.0] * 15,
            filepath="k.jpg", url="u", title="k.jpg", source="images/metadata.json",
            model_name={MODEL.name!r}, model_version={MODEL.version!r}, content_hash="0")])
        """
    )
    assert output == "['doc-0000', 'doc-0001', 'doc-0002']"
    hits = local.vector_search([1.0] + [0.0] * (DIMS - 1), top=1)
    assert hits[0].id == "from-child" and hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert [h.id for h in local.text_search("kite", top=3)] == ["from-child"]


def test_local_group_commit_coalesces_concurrent_upserts(local: LocalImageIndex) -> None:
    table = lancedb.connect(local._directory).open_table("images-v")
    versions_before = len(table.list_versions())
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            for i in range(20):
                local.upsert([make_doc(thread * 100 + i)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(local.ids_from_source("images/metadata.json")) == 320
    assert len(local.vector_search(make_doc(0).image_vector, top=1000)) == 320
    writes = len(table.list_versions()) - versions_before
    assert writes < 320


def test_local_group_commit_leader_takes_the_writers_that_queue_while_it_gathers(
    local: LocalImageIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = lancedb.connect(local._directory).open_table("images-v")
    versions_before = len(table.list_versions())
    gathered: list[float] = []

    def gather(seconds: float) -> None:  # returns once all 8 writers have queued
        gathered.append(seconds)
        for _ in range(3000):
            if len(local._writer._queue) == 8:
                return
            threading.Event().wait(0.005)
        raise AssertionError("the writers did not queue in 15 s")

    monkeypatch.setattr(group_commit, "sleep", gather)
    threads = [threading.Thread(target=local.upsert, args=([make_doc(i)],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(local.get_states([f"doc-{i:04d}" for i in range(8)])) == 8
    assert len(table.list_versions()) - versions_before == 1  # one write for all eight
    assert gathered == [local_index.WRITE_GATHER_S]


def test_local_group_commit_reports_failures_to_their_callers(local: LocalImageIndex) -> None:
    def fail(kind: str, ops: list[Any]) -> None:
        raise OSError("disk full")

    local._writer._apply = fail
    with pytest.raises(ImageIndexError, match="disk full"):
        local.upsert([make_doc(1)])


def test_local_optimize_keeps_data_and_drops_versions(tmp_path: Path) -> None:
    local = LocalImageIndex(
        directory=tmp_path, name="images-v", keep_versions_for=timedelta(seconds=0)
    )
    local.ensure(MODEL)
    for i in range(12):
        local.upsert([make_doc(i)])
    local.delete(["doc-0000"])
    assert local.vector_search(make_doc(5).image_vector, top=1)[0].id == "doc-0005"
    table = lancedb.connect(tmp_path).open_table("images-v")
    before = len(table.list_versions())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "removes every version": intended here
        local.optimize()
    assert len(table.list_versions()) < before
    assert local.model() == MODEL
    assert local.vector_search(make_doc(5).image_vector, top=1)[0].id == "doc-0005"
    assert len(local.vector_search(make_doc(5).image_vector, top=100)) == 11
    assert {h.id for h in local.text_search("boat", top=5)} == {"doc-0005"}
    local.upsert([make_doc(13)])
    assert {h.id for h in local.text_search("boat", top=5)} == {"doc-0005", "doc-0013"}


def test_local_long_runs_of_writes_are_compacted_as_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_index, "COMPACT_AFTER_WRITES", 4)
    monkeypatch.setattr(local_index, "COMPACT_TARGET_ROWS", 8)
    monkeypatch.setattr(local_index, "FOLD_TEXT_INDEX_AFTER", 2)
    local = LocalImageIndex(
        directory=tmp_path, name="images-v", keep_versions_for=timedelta(seconds=0)
    )
    local.ensure(MODEL)
    table = lancedb.connect(tmp_path, read_consistency_interval=timedelta(0)).open_table("images-v")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "removes every version": intended here
        local.upsert([make_doc(i) for i in range(20)])  # one fragment above the target
        (large,) = table.to_lance().get_fragments()
        for i in range(20, 32):
            local.upsert([make_doc(i)])  # one write each: without compaction, 12 fragments
            hits = local.text_search(f"number {i}", top=1)
            assert [h.id for h in hits] == [f"doc-{i:04d}"]  # found before and after folding
    fragments = {f.fragment_id: f.count_rows() for f in table.to_lance().get_fragments()}
    assert fragments[large.fragment_id] == 20  # left as it was, not rewritten
    assert len(fragments) <= 5
    assert table.count_rows() == 32
    assert len(local.vector_search(make_doc(0).image_vector, top=100)) == 32
    (text_index,) = [c for c in table.list_indices() if c.index_type == "FTS"]
    assert text_index.num_unindexed_rows < 12  # folded in on the second compaction


def test_local_caches_stay_bounded_over_many_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each write makes a table version whose manifest LanceDB caches; uncapped, 120 writes
    # left ~5 MB in the session, and 15,000 writes grew a process by ~13 KB each.
    monkeypatch.setattr(local_index, "METADATA_CACHE_BYTES", 512 * 1024)
    local_index.lance_session.cache_clear()
    try:
        local = LocalImageIndex(directory=tmp_path, name="images-v")
        local.ensure(MODEL)
        for i in range(120):
            local.upsert([make_doc(i)])
            assert local.get_states([f"doc-{i:04d}"])
        assert local_index.lance_session().size_bytes < 2 * 2**20
        assert len(local.get_states([f"doc-{i:04d}" for i in range(120)])) == 120
    finally:
        local_index.lance_session.cache_clear()  # later tests get the process's own


def test_local_lookups_by_id_use_a_btree_that_sees_every_write(tmp_path: Path) -> None:
    local = LocalImageIndex(
        directory=tmp_path, name="images-v", keep_versions_for=timedelta(seconds=0)
    )
    local.ensure(MODEL)
    table = lancedb.connect(tmp_path, read_consistency_interval=timedelta(0)).open_table("images-v")
    table.drop_index("id_idx")  # as in a table made before the index existed
    again = LocalImageIndex(directory=tmp_path, name="images-v")
    again.ensure(MODEL)
    assert [c.index_type for c in table.list_indices() if c.columns == ["id"]] == ["BTree"]
    again.upsert([make_doc(i) for i in range(20)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "removes every version": intended here
        again.optimize()
    assert "ScalarIndexQuery" in table.search().where("id IN ('doc-0002')").explain_plan()
    again.upsert([make_doc(20)])  # written after the b-tree was last brought up to date
    again.delete(["doc-0003"])
    again.merge_metadata([MetadataPatch("doc-0004", "a red kite", "images/metadata-b.json")])
    states = again.get_states(["doc-0002", "doc-0003", "doc-0004", "doc-0020", "doc-0099"])
    assert set(states) == {"doc-0002", "doc-0004", "doc-0020"}
    assert states["doc-0004"].description == "a red kite"


def test_local_states_follow_this_handles_writes_without_reading_the_table_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    read = local_states.KnownStates._read

    def counted(self: local_states.KnownStates, table: Any, version: int) -> None:
        nonlocal reads
        reads += 1
        read(self, table, version)

    monkeypatch.setattr(local_states.KnownStates, "_read", counted)
    local = LocalImageIndex(directory=tmp_path, name="images-v")
    local.ensure(MODEL)
    local.upsert([make_doc(i) for i in range(10)])
    assert len(local.get_states([f"doc-{i:04d}" for i in range(10)])) == 10
    local.upsert([replace(make_doc(3), content_hash="f" * 64), make_doc(10)])
    local.delete(["doc-0004"])
    local.merge_metadata([MetadataPatch("doc-0005", "a red kite", "images/metadata-b.json")])
    states = local.get_states(["doc-0003", "doc-0004", "doc-0005", "doc-0010", "doc-0099"])
    assert set(states) == {"doc-0003", "doc-0005", "doc-0010"}
    assert states["doc-0003"].content_hash == "f" * 64
    assert (states["doc-0005"].description, states["doc-0005"].source) == (
        "a red kite",
        "images/metadata-b.json",
    )
    assert reads == 1


def test_local_states_see_another_handles_writes_at_once(tmp_path: Path) -> None:
    ours = LocalImageIndex(directory=tmp_path, name="images-v")
    ours.ensure(MODEL)
    ours.upsert([make_doc(i) for i in range(10)])
    assert len(ours.get_states([f"doc-{i:04d}" for i in range(10)])) == 10
    theirs = LocalImageIndex(directory=tmp_path, name="images-v")  # another process, say
    theirs.upsert([make_doc(10)])
    theirs.delete(["doc-0001"])
    theirs.merge_metadata([MetadataPatch("doc-0002", "a red kite", "images/metadata.json")])
    states = ours.get_states(["doc-0001", "doc-0002", "doc-0010"])
    assert set(states) == {"doc-0002", "doc-0010"}
    assert states["doc-0002"].description == "a red kite"
    # Their write between two of ours: ours cannot simply be applied on top.
    ours.upsert([make_doc(11)])
    theirs.upsert([replace(make_doc(12), content_hash="e" * 64)])
    ours.upsert([make_doc(13)])
    states = ours.get_states(["doc-0011", "doc-0012", "doc-0013"])
    assert set(states) == {"doc-0011", "doc-0012", "doc-0013"}
    assert states["doc-0012"].content_hash == "e" * 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours.optimize()
    theirs.delete(["doc-0013"])
    assert set(ours.get_states(["doc-0011", "doc-0012", "doc-0013"])) == {"doc-0011", "doc-0012"}


def test_local_lookups_and_upserts_ask_lancedb_for_no_version_or_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read of a LanceDB table's version or schema is a round trip through LanceDB's
    event-loop thread; ingestion makes a lookup and an upsert per image."""
    local = LocalImageIndex(directory=tmp_path, name="images-v")
    local.ensure(MODEL)
    local.upsert([make_doc(0)])
    local.get_states(["doc-0000"])
    asked: list[str] = []
    for name in ("version", "schema"):
        read = getattr(lancedb.table.LanceTable, name).fget

        def counted(table: Any, read: Any = read, name: str = name) -> Any:
            asked.append(name)
            return read(table)

        monkeypatch.setattr(lancedb.table.LanceTable, name, property(counted))
    for i in range(1, 6):
        assert local.get_states([f"doc-{i - 1:04d}", f"doc-{i:04d}"]).keys() == {f"doc-{i - 1:04d}"}
        local.upsert([make_doc(i)])
    local.merge_metadata([MetadataPatch("doc-0001", "a red kite", "images/metadata.json")])
    local.delete(["doc-0002"])
    assert local.get_states(["doc-0001", "doc-0002"]).keys() == {"doc-0001"}
    assert asked == []


def test_local_upsert_checks_against_a_schema_another_handle_changed(tmp_path: Path) -> None:
    ours = LocalImageIndex(directory=tmp_path, name="images-v")
    ours.ensure(MODEL)
    for i in range(6):  # versions past those of the table that replaces it
        ours.upsert([make_doc(i)])
    wider = ModelInfo(MODEL.name, MODEL.version, DIMS * 2, False)
    theirs = LocalImageIndex(directory=tmp_path, name="images-v")  # another process, say
    theirs.drop()
    theirs.ensure(wider)
    with pytest.raises(ImageIndexError, match="holds 32 dimensions"):
        ours.upsert([make_doc(6)])
    theirs.upsert([make_doc(7, model=wider)])
    assert theirs.get_states(["doc-0006", "doc-0007"]).keys() == {"doc-0007"}


def test_local_new_ids_appended_while_another_handle_adds_them_are_kept_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # New ids are appended (no join on the key). Here another handle (another process, say)
    # adds the same id after ours found it absent and before our append commits: the later
    # write, ours, must be the one row left, as a merge would have left it.
    ours = LocalImageIndex(directory=tmp_path, name="images-v")
    ours.ensure(MODEL)
    ours.upsert([make_doc(1)])
    theirs = LocalImageIndex(directory=tmp_path, name="images-v")
    table = ours._require()
    append = table.add

    appends: list[Any] = []

    def add_after_theirs(rows: Any, *args: Any, **kwargs: Any) -> Any:
        appends.append(rows)
        if len(appends) == 1:  # theirs comes in before our first append only
            theirs.upsert([replace(make_doc(2), content_hash="e" * 64)])
        return append(rows, *args, **kwargs)

    monkeypatch.setattr(ours, "_require", lambda: table)
    monkeypatch.setattr(table, "add", add_after_theirs)
    ours.upsert([make_doc(2), make_doc(3)])
    monkeypatch.undo()
    rows = table.search().select(["id", "content_hash"]).limit(None).to_arrow().to_pylist()
    assert sorted(row["id"] for row in rows) == ["doc-0001", "doc-0002", "doc-0003"]
    assert ours.get_states(["doc-0002"])["doc-0002"].content_hash == make_doc(2).content_hash
    assert theirs.get_states(["doc-0002"])["doc-0002"].content_hash == make_doc(2).content_hash


# ---------------------------------------------------------------------- Azure only


def test_azure_index_definition_as_sent(search_service: FakeSearchService) -> None:
    azure_index(search_service, "images-v").ensure(MODEL)
    (create,) = [r for r in search_service.requests if r.path == "/indexes"]
    body = create.body
    assert body is not None
    fields = {f["name"]: f for f in body["fields"]}
    assert fields["id"]["key"] is True
    assert fields["image_vector"]["dimensions"] == DIMS
    assert fields["image_vector"]["vectorSearchProfile"] == profile_name(MODEL)
    assert fields["description"]["searchable"] is True
    assert all(fields[n]["filterable"] for n in ("source", "model_name", "model_version"))
    (algorithm,) = body["vectorSearch"]["algorithms"]
    assert algorithm["kind"] == "hnsw"
    assert algorithm["hnswParameters"] == {
        "m": 4,
        "efConstruction": 400,
        "efSearch": 500,
        "metric": "cosine",
    }


def test_azure_model_round_trips_through_the_profile_name(
    search_service: FakeSearchService,
) -> None:
    odd = ModelInfo(name="my_model v2.1/ü", version="2024__x", dimensions=8, supports_text=True)
    index = azure_index(search_service, "odd-v")
    index.ensure(odd)
    assert azure_index(search_service, "odd-v").model() == odd


def test_azure_ensure_reads_an_existing_index_once_created(
    search_service: FakeSearchService,
) -> None:
    first = azure_index(search_service, "images-v")
    first.ensure(MODEL)
    first.ensure(MODEL)
    assert len([r for r in search_service.requests if r.path == "/indexes"]) == 1


def test_azure_splits_batches_at_1000_actions(search_service: FakeSearchService) -> None:
    index = azure_index(search_service, "images-v")
    index.ensure(MODEL)
    index.upsert([make_doc(i) for i in range(2500)])
    batches = [r.actions for r in search_service.requests_to("/docs/search.index")]
    assert batches == [1000, 1000, 500]
    assert len(index.ids_from_source("images/metadata.json")) == 2500


def test_azure_splits_batches_by_size(
    search_service: FakeSearchService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imagerag.adapters.azure_search_wire as module

    monkeypatch.setattr(module, "MAX_BATCH_BYTES", 4096)
    index = azure_index(search_service, "images-v")
    index.ensure(MODEL)
    index.upsert([make_doc(i) for i in range(40)])
    requests = search_service.requests_to("/docs/search.index")
    assert len(requests) > 1
    assert sum(r.actions for r in requests) == 40
    assert all(r.body_bytes <= 4096 for r in requests)  # sized from the bytes sent


def test_azure_retries_429_then_succeeds(search_service: FakeSearchService) -> None:
    index = azure_index(search_service, "images-v")
    index.ensure(MODEL)
    index.upsert([make_doc(0)])  # reads the index definition once
    search_service.fail_next(2, status=429, retry_after="0")
    index.upsert([make_doc(1)])
    statuses = [r.status for r in search_service.requests_to("/docs/search.index")]
    assert statuses == [200, 429, 429, 200]
    search_service.fail_next(1, status=503, retry_after=None)
    assert index.ids_from_source("images/metadata.json") == {"doc-0000", "doc-0001"}


def test_azure_gives_up_after_retry_total(search_service: FakeSearchService) -> None:
    index = azure_index(search_service, "images-v", retry_total=2)
    index.ensure(MODEL)
    index.upsert([make_doc(0)])
    search_service.fail_next(5, status=503, retry_after=None)
    with pytest.raises(ImageIndexError):
        index.upsert([make_doc(1)])
    assert len(search_service.requests_to("/docs/search.index")) == 1 + 3  # first try + 2


def test_azure_per_document_failure_names_the_key(search_service: FakeSearchService) -> None:
    index = azure_index(search_service, "images-v")
    index.ensure(MODEL)
    search_service.failing_keys["doc-0002"] = 503
    with pytest.raises(ImageIndexError, match="doc-0002") as caught:
        index.upsert([make_doc(i) for i in range(4)])
    assert "doc-0001" not in str(caught.value)
    assert search_service.requests_to("/docs/search.index")[-1].status == 207
    assert set(index.get_states(["doc-0001", "doc-0002", "doc-0003"])) == {"doc-0001", "doc-0003"}


def test_azure_404_on_the_index_is_index_not_found(search_service: FakeSearchService) -> None:
    index = azure_index(search_service, "images-v")
    assert index.model() is None
    with pytest.raises(IndexNotFoundError):
        index.get_states(["doc-0001"])
    with pytest.raises(IndexNotFoundError):
        index.delete(["doc-0001"])
    with pytest.raises(IndexNotFoundError):
        index.text_search("cat", top=3)


def test_azure_ids_from_source_pages_beyond_one_page(search_service: FakeSearchService) -> None:
    index = azure_index(search_service, "images-v", page_size=7)
    index.ensure(MODEL)
    index.upsert([make_doc(i, source="c/a.json") for i in range(30)])
    index.upsert([make_doc(i, source="c/b.json") for i in range(30, 35)])
    assert index.ids_from_source("c/a.json") == {f"doc-{i:04d}" for i in range(30)}
    pages = [r.body for r in search_service.requests_to("/docs/search.post.search")]
    assert len(pages) == 5  # 7 + 7 + 7 + 7 + 2
    assert all(p is not None and p["orderby"] == "id asc" for p in pages)
    assert all(p is not None and "skip" not in p for p in pages)


def test_azure_vector_score_convention() -> None:
    for cosine in (-0.5, 0.0, 0.3, 1.0):
        assert cosine_from_score(1.0 / (2.0 - cosine)) == pytest.approx(cosine)


def test_azure_wrong_key_is_refused(search_service: FakeSearchService) -> None:
    index = AzureSearchImageIndex(
        endpoint=search_service.endpoint,
        name="images-v",
        credential=AzureKeyCredential("wrong"),
        connection_verify=search_service.ca_file,
    )
    with pytest.raises(Exception, match="401|api-key"):
        index.model()
    search_service.violations.clear()  # the refusal was the point


def _fields(doc: IndexDocument) -> dict[str, Any]:
    return {name: getattr(doc, name) for name in IndexDocument.__slots__}
