"""The local index's neighbour graph: it proposes the candidates of unfiltered vector searches
once an index is large enough. Driven through the ImageIndex port with real pictures vectorized
by the local model, among random non-negative unit vectors (pooled CNN features are
non-negative), and checked against exact search over the same vectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vector_corpus import corpus, cosine, document, exact_top, load, picture_vectors

from imagerag import config
from imagerag.adapters import local_neighbours
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.ports import ModelInfo

APPROXIMATE_FROM = 100
GRAPH_FILE = Path("images-v.ann") / "image_vector.1280.hnsw"
WAIT_S = 120


@pytest.fixture(scope="module")
def pictures() -> tuple[ModelInfo, list[list[float]], list[list[float]]]:
    return picture_vectors()


def handle(directory: Path) -> LocalImageIndex:
    return LocalImageIndex(directory=directory, name="images-v", approximate_from=APPROXIMATE_FROM)


@pytest.fixture
def graph_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How many searches the graph answered and how many rows were put into it."""
    calls = {"search": 0, "put": 0}
    graph = local_neighbours.NeighbourGraph
    search, put = graph.search, graph.put

    def counted_search(self: Any, query: Any, count: int) -> Any:
        calls["search"] += 1
        return search(self, query, count)

    def counted_put(self: Any, keys: Any, vectors: Any) -> None:
        calls["put"] += int(keys.size)
        put(self, keys, vectors)

    monkeypatch.setattr(graph, "search", counted_search)
    monkeypatch.setattr(graph, "put", counted_put)
    yield calls


@pytest.fixture
def built(
    tmp_path: Path, pictures: tuple[ModelInfo, list[list[float]], list[list[float]]]
) -> tuple[LocalImageIndex, dict[str, list[float]], list[list[float]]]:
    """An index whose graph holds every row and is saved."""
    model, indexed, queries = pictures
    vectors = corpus(model, indexed)
    index = handle(tmp_path)
    load(index, vectors, model)
    index.vector_search(queries[0], top=1)  # the first read builds the graph
    assert index.wait_for_graphs(WAIT_S)
    assert (tmp_path / GRAPH_FILE).is_file()
    return index, vectors, queries


def test_graph_search_finds_the_same_pictures_as_exact_search(
    built: tuple[LocalImageIndex, dict[str, list[float]], list[list[float]]],
    graph_calls: dict[str, int],
) -> None:
    index, vectors, queries = built
    for query in queries:
        hits = index.vector_search(query, top=10)
        assert [hit.id for hit in hits] == exact_top(vectors, query, 10)
        assert hits[0].score == pytest.approx(cosine(vectors, hits[0].id, query), abs=1e-4)
    assert graph_calls["search"] == len(queries)


def test_graph_survives_a_restart_without_being_rebuilt(
    built: tuple[LocalImageIndex, dict[str, list[float]], list[list[float]]],
    tmp_path: Path,
    graph_calls: dict[str, int],
) -> None:
    _, vectors, queries = built
    reopened = handle(tmp_path)
    # Until the loaded graph's vectors are checked against the rows, search is exact.
    assert reopened.vector_search(queries[0], top=1)[0].id == exact_top(vectors, queries[0], 1)[0]
    assert reopened.wait_for_graphs(WAIT_S)
    for query in queries:
        assert reopened.vector_search(query, top=1)[0].id == exact_top(vectors, query, 1)[0]
    assert graph_calls["put"] == 0  # every row was found in the saved graph
    assert graph_calls["search"] >= len(queries)


def test_graph_answers_reflect_deletes_and_updates_at_once(
    built: tuple[LocalImageIndex, dict[str, list[float]], list[list[float]]],
    pictures: tuple[ModelInfo, list[list[float]], list[list[float]]],
    graph_calls: dict[str, int],
) -> None:
    index, vectors, queries = built
    model = pictures[0]
    deleted = exact_top(vectors, queries[0], 1)[0]
    index.delete([deleted])
    del vectors[deleted]
    # doc-0001 now holds the second query's own picture: it must come first at once.
    index.upsert([document(1, queries[1], model)])
    vectors["doc-0001"] = queries[1]
    # Asked at once (the graph's thread may not have taken the changes yet), then again
    # once it has.
    for settled in (False, True):
        first = index.vector_search(queries[0], top=10)
        assert deleted not in {hit.id for hit in first}
        assert [hit.id for hit in first] == exact_top(vectors, queries[0], 10)
        updated = index.vector_search(queries[1], top=1)[0]
        assert (updated.id, round(updated.score, 4)) == ("doc-0001", 1.0)
        if not settled:
            assert index.wait_for_graphs(WAIT_S)
    assert graph_calls["put"] == 1 and graph_calls["search"] == 4


def test_an_unreadable_graph_file_is_rebuilt(
    built: tuple[LocalImageIndex, dict[str, list[float]], list[list[float]]],
    tmp_path: Path,
    graph_calls: dict[str, int],
) -> None:
    _, vectors, queries = built
    (tmp_path / GRAPH_FILE).write_bytes(b"not a graph" * 100)
    reopened = handle(tmp_path)
    assert reopened.vector_search(queries[2], top=1)[0].id == exact_top(vectors, queries[2], 1)[0]
    assert reopened.wait_for_graphs(WAIT_S)
    assert graph_calls["put"] == len(vectors)
    assert reopened.vector_search(queries[3], top=1)[0].id == exact_top(vectors, queries[3], 1)[0]


def test_filtered_searches_and_small_indexes_stay_exact(
    built: tuple[LocalImageIndex, dict[str, list[float]], list[list[float]]],
    graph_calls: dict[str, int],
) -> None:
    index, vectors, queries = built
    wanted = exact_top(vectors, queries[4], 1)[0]
    hits = index.vector_search(queries[4], top=3, filter=f"id eq '{wanted}'")
    assert [hit.id for hit in hits] == [wanted]
    assert graph_calls["search"] == 0


@pytest.mark.parametrize(("setting", "graph"), [(None, False), ("100", True)])
def test_the_app_keeps_a_graph_only_when_the_setting_asks(
    tmp_path: Path,
    pictures: tuple[ModelInfo, list[list[float]], list[list[float]]],
    setting: str | None,
    graph: bool,
) -> None:
    environ = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "LOCAL_DATA_DIR": str(tmp_path)}
    if setting is not None:
        environ["LOCAL_INDEX_GRAPH_FROM_ROWS"] = setting
    model, indexed, queries = pictures
    vectors = corpus(model, indexed)
    index = config.image_index(config.Settings.from_env(environ), "images-v")
    load(index, vectors, model)
    assert index.vector_search(queries[5], top=1)[0].id == exact_top(vectors, queries[5], 1)[0]
    assert isinstance(index, LocalImageIndex) and index.wait_for_graphs(WAIT_S)
    assert (tmp_path / "index" / GRAPH_FILE).is_file() == graph
