"""The local index's 4-bit first pass: from quantised_from rows on it chooses the candidates
that vector search scores exactly. Driven through the ImageIndex port with real pictures
among random rows (vector_corpus.py), and checked against exact search over the same
vectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vector_corpus import corpus, cosine, document, exact_top, load, picture_vectors

from imagerag.adapters import local_quantised
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.ports import ModelInfo

QUANTISED_FROM = 100
Pictures = tuple[ModelInfo, list[list[float]], list[list[float]]]


@pytest.fixture(scope="module")
def pictures() -> Pictures:
    return picture_vectors()


def handle(directory: Path, quantised_from: int = QUANTISED_FROM) -> LocalImageIndex:
    return LocalImageIndex(directory=directory, name="images-v", quantised_from=quantised_from)


@pytest.fixture
def first_passes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The row count of each 4-bit first pass that chose candidates."""
    passes: list[int] = []
    scores = local_quantised.QuantisedRows.scores

    def counted(self: Any, query: Any, size: int) -> Any:
        found = scores(self, query, size)
        if found is not None:
            passes.append(size)
        return found

    monkeypatch.setattr(local_quantised.QuantisedRows, "scores", counted)
    yield passes


@pytest.fixture
def loaded(tmp_path: Path, pictures: Pictures) -> tuple[LocalImageIndex, dict[str, list[float]]]:
    model, indexed, _ = pictures
    vectors = corpus(model, indexed)
    index = handle(tmp_path)
    load(index, vectors, model)
    return index, vectors


def test_first_pass_finds_the_same_top_ten_as_exact_search(
    loaded: tuple[LocalImageIndex, dict[str, list[float]]],
    pictures: Pictures,
    first_passes: list[int],
) -> None:
    index, vectors = loaded
    queries = pictures[2]
    for n, query in enumerate(queries):
        hits = index.vector_search(query, top=10)
        assert [hit.id for hit in hits] == exact_top(vectors, query, 10)
        assert hits[0].id == f"doc-{n * 31:04d}"  # the picture the query was altered from
        for hit in hits:  # the candidates' scores are exact cosines
            assert hit.score == pytest.approx(cosine(vectors, hit.id, query), abs=1e-5)
    assert first_passes == [len(vectors)] * len(queries)


def test_filtered_search_is_exact_among_the_matches(
    loaded: tuple[LocalImageIndex, dict[str, list[float]]],
    pictures: Pictures,
    first_passes: list[int],
) -> None:
    index, vectors = loaded
    odd = {i: v for i, v in vectors.items() if int(i[4:]) % 2}
    for query in pictures[2][:5]:
        hits = index.vector_search(query, top=10, filter="source eq 'images/metadata-odd.json'")
        assert [hit.id for hit in hits] == exact_top(odd, query, 10)
    assert len(first_passes) == 5


def test_deletes_and_updates_are_searched_at_once_and_after_a_restart(
    loaded: tuple[LocalImageIndex, dict[str, list[float]]],
    pictures: Pictures,
    tmp_path: Path,
    first_passes: list[int],
) -> None:
    index, vectors = loaded
    model, _, queries = pictures
    index.vector_search(queries[0], top=1)  # the rows are in memory before the writes
    deleted = exact_top(vectors, queries[0], 1)[0]
    index.delete([deleted])
    del vectors[deleted]
    # doc-0001 now holds the second query's own vector: it must come first.
    index.upsert([document(1, queries[1], model)])
    vectors["doc-0001"] = queries[1]
    for searched in (index, handle(tmp_path)):  # this handle, then one as after a restart
        first = searched.vector_search(queries[0], top=10)
        assert deleted not in {hit.id for hit in first}
        assert [hit.id for hit in first] == exact_top(vectors, queries[0], 10)
        updated = searched.vector_search(queries[1], top=1)[0]
        assert (updated.id, round(updated.score, 4)) == ("doc-0001", 1.0)
    assert len(first_passes) == 5


def test_small_indexes_are_scanned_exactly(
    tmp_path: Path, pictures: Pictures, first_passes: list[int]
) -> None:
    model, indexed, queries = pictures
    vectors = corpus(model, indexed)
    index = handle(tmp_path, quantised_from=len(vectors) + 1)
    load(index, vectors, model)
    assert [hit.id for hit in index.vector_search(queries[3], top=10)] == exact_top(
        vectors, queries[3], 10
    )
    assert first_passes == []


def test_an_index_that_grows_past_the_threshold_gets_the_first_pass(
    tmp_path: Path, pictures: Pictures, first_passes: list[int]
) -> None:
    model, indexed, queries = pictures
    vectors = corpus(model, indexed)
    index = handle(tmp_path, quantised_from=len(vectors) - 10)
    ids = list(vectors)
    load(index, {i: vectors[i] for i in ids[:-20]}, model)
    assert index.vector_search(queries[2], top=1)[0].id == "doc-0062"
    assert first_passes == []  # below the threshold: scanned exactly
    index.upsert([document(int(i[4:]), vectors[i], model) for i in ids[-20:]])
    for query in queries[:5]:  # the copies are made now, of every row, old and new
        assert [hit.id for hit in index.vector_search(query, top=10)] == exact_top(
            vectors, query, 10
        )
    assert first_passes == [len(vectors)] * 5


@pytest.mark.parametrize("dims", [7, 24, 384, 1000, 1280])
@pytest.mark.parametrize("rows", [1, 2, 3, 6, 41])
def test_rows_of_any_length_and_count_are_scored(dims: int, rows: int) -> None:
    # Padded to the kernel's groups of columns and blocks of rows (local_quantised.py).
    rng = np.random.default_rng(dims * rows)
    matrix = rng.standard_normal((rows, dims)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    quantised = local_quantised.QuantisedRows(dims)
    quantised.set(np.arange(rows), matrix)
    query = matrix[-1]
    scores = quantised.scores(query, rows)
    assert scores is not None and scores.shape == (rows,)
    # Each value is within half a level of its group (padding zeros count in the group's
    # range), plus bfloat16 rounding.
    group = local_quantised.GROUP
    padded = np.zeros((rows, -(-dims // group) * group), dtype=np.float32)
    padded[:, :dims] = matrix
    grouped = padded.reshape(rows, -1, group)
    half_levels = np.repeat((grouped.max(axis=2) - grouped.min(axis=2)) / 30, group, axis=1)
    bound = half_levels[:, :dims] @ np.abs(query) + 0.01
    assert np.all(np.abs(scores - matrix @ query) <= bound)
    assert np.abs(scores - matrix @ query).max() < 0.1


def positive_unit_rows(seed: int, rows: int, dims: int) -> np.ndarray:
    matrix = np.abs(np.random.default_rng(seed).standard_normal((rows, dims))).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_a_rewritten_row_is_coded_as_if_all_were_coded_afresh() -> None:
    # The packed layout interleaves blocks of rows: one write re-codes its whole block.
    matrix = positive_unit_rows(3, 300, 384)
    kept = local_quantised.QuantisedRows(384)
    kept.set(np.arange(300), matrix)
    matrix[[37, 200]] = matrix[[5, 6]]
    kept.set(np.array([37, 200]), matrix)
    fresh = local_quantised.QuantisedRows(384)
    fresh.set(np.arange(300), matrix)
    for query in matrix[[5, 6, 150]]:
        np.testing.assert_array_equal(kept.scores(query, 300), fresh.scores(query, 300))
    assert np.argsort(-kept.scores(matrix[5], 300))[:2].tolist() in ([5, 37], [37, 5])


def test_a_large_write_is_coded_in_pieces_as_one_would_be() -> None:
    # Over 128 blocks at once, set() codes them a piece at a time (to bound its copies).
    matrix = positive_unit_rows(4, 9000, 16)
    whole = local_quantised.QuantisedRows(16)
    whole.set(np.arange(9000), matrix)
    halves = local_quantised.QuantisedRows(16)
    halves.set(np.arange(4480), matrix)
    halves.set(np.arange(4480, 9000), matrix)
    for query in matrix[[0, 4479, 8999]]:
        np.testing.assert_array_equal(whole.scores(query, 9000), halves.scores(query, 9000))
    assert int(np.argmax(whole.scores(matrix[8999], 9000))) == 8999
