"""Offline start-up warm-up (imagerag/warm_up.py, started by function_app.py): the first
queries and the first ingestion after a start find the embedded indexes' rows and the models
loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from vector_corpus import document

from imagerag import config, warm_up
from imagerag.adapters.local_index import LocalImageIndex
from imagerag.adapters.local_text_embedder import LocalTextEmbedder
from imagerag.adapters.local_vectorizer import LocalVectorizer
from imagerag.adapters.local_vectors import VectorCache


def settings_for(tmp_path: Path, **extra: str) -> config.Settings:
    environ = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "LOCAL_DATA_DIR": str(tmp_path)}
    return config.Settings.from_env({**environ, **extra})


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often rows were read into memory and the image model was warmed."""
    counts = {"rows": 0, "model": 0}
    refresh, model_warm = VectorCache._refresh, LocalVectorizer.warm

    def counted_refresh(self: VectorCache, table: Any) -> bool:
        counts["rows"] += 1
        return refresh(self, table)

    def counted_warm(self: LocalVectorizer) -> None:
        counts["model"] += 1
        model_warm(self)

    monkeypatch.setattr(VectorCache, "_refresh", counted_refresh)
    monkeypatch.setattr(LocalVectorizer, "warm", counted_warm)
    monkeypatch.setattr(warm_up, "_models_loading", [])  # as in a process that loaded none
    return counts


def test_warm_up_loads_each_index_so_the_first_queries_read_nothing(
    tmp_path: Path, loads: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    model = LocalVectorizer().model
    rng = np.random.default_rng(3)
    vectors = np.abs(rng.standard_normal((40, model.dimensions)))
    # Written by an earlier run of the app (another handle): this process has read nothing.
    earlier = LocalImageIndex(
        directory=tmp_path / "index", name="photos-v", text_embedder=LocalTextEmbedder()
    )
    earlier.ensure(model)
    earlier.upsert([document(i, v.tolist(), model) for i, v in enumerate(vectors)])
    # A table this app cannot search (no id field): left out, the others still load.
    foreign = pa.schema([("image_vector", pa.list_(pa.float32(), 4))])
    lancedb.connect(tmp_path / "index").create_table("foreign-v", schema=foreign)
    settings = settings_for(tmp_path)

    assert warm_up.warm(lambda: settings) == ["photos-v"]
    assert loads == {"rows": 2, "model": 1}  # image and description vectors; the model
    assert "index foreign-v not loaded" in caplog.text

    index = config.image_index(settings, "photos-v")
    image_hits = index.vector_search(vectors[7].tolist(), top=3)
    description_hits = index.description_search("picture number 12", top=3)
    text_hits = index.text_search("number 25", top=3)
    assert image_hits[0].id == "doc-0007"
    assert description_hits and description_hits[0].id == "doc-0012"
    assert text_hits and text_hits[0].id == "doc-0025"
    assert loads == {"rows": 2, "model": 1}  # the queries read no rows again


def test_warm_up_without_an_index_loads_the_models_for_the_first_run(
    tmp_path: Path, loads: dict[str, int]
) -> None:
    assert warm_up.warm(lambda: settings_for(tmp_path)) == []
    assert loads == {"rows": 0, "model": 1}
    # The first ingestion finds them loaded: it loads nothing again.
    warm_up.models_for_ingestion(settings_for(tmp_path))
    assert loads == {"rows": 0, "model": 1}


def test_warm_up_loads_nothing_with_azure_search(tmp_path: Path, loads: dict[str, int]) -> None:
    LocalImageIndex(directory=tmp_path / "index", name="photos-v").ensure(LocalVectorizer().model)
    azure = settings_for(tmp_path, AZURE_SEARCH_ENDPOINT="https://search.example.net")
    assert warm_up.warm(lambda: azure) == []
    assert loads == {"rows": 0, "model": 0}


def test_a_failing_warm_up_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> config.Settings:
        raise ValueError("bad setting")

    assert warm_up.warm(broken) == []
    assert "warm-up failed" in caplog.text


@pytest.fixture
def models_loaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which local models were loaded ahead of ingestion, in a process that loaded none yet."""
    loaded: list[str] = []
    monkeypatch.setattr(LocalVectorizer, "warm", lambda self: loaded.append("image"))
    monkeypatch.setattr(LocalTextEmbedder, "warm", lambda self: loaded.append("text"))
    monkeypatch.setattr(warm_up, "_models_loading", [])
    return loaded


def test_an_ingestion_run_loads_both_local_models_side_by_side_once(
    tmp_path: Path, models_loaded: list[str]
) -> None:
    threads = warm_up.models_for_ingestion(settings_for(tmp_path))
    assert sorted(models_loaded) == ["image", "text"] and len(threads) == 2  # loaded on return
    assert warm_up.models_for_ingestion(settings_for(tmp_path)) == threads  # once per process
    assert sorted(models_loaded) == ["image", "text"]


def test_an_ingestion_run_loads_no_local_model_with_azure_vision_and_search(
    tmp_path: Path, models_loaded: list[str]
) -> None:
    azure = settings_for(
        tmp_path,
        AZURE_VISION_ENDPOINT="https://vision.example.net",
        AZURE_SEARCH_ENDPOINT="https://search.example.net",
    )
    assert warm_up.models_for_ingestion(azure) == []
    assert models_loaded == []
