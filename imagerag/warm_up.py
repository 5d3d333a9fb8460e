"""Offline start-up: the first chat query or ingestion after a start should not wait for the
embedded indexes' rows to be read (~2 s at 100,000 documents) or the local models to load
(~4 s on 2 cores, most of it importing torch). A daemon thread does that as the app starts;
a query or a run arriving meanwhile waits only for what is still loading. With Azure AI
Search there is nothing local to load."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from imagerag import config
from imagerag.ports import ImageIndex

logger = logging.getLogger(__name__)


def start(settings_of: Callable[[], config.Settings] = config.settings) -> threading.Thread:
    thread = threading.Thread(target=warm, args=(settings_of,), name="warm-up", daemon=True)
    thread.start()
    return thread


def warm(settings_of: Callable[[], config.Settings] = config.settings) -> list[str]:
    """Loads the local image and text models and, meanwhile, every embedded index of this
    process's data folder; returns the names of the indexes loaded."""
    try:
        settings = settings_of()
        if settings.search_endpoint is not None:
            return []
        from imagerag.adapters.local_index import index_names

        started = time.perf_counter()
        models = _start_loading_models(settings)
        names = index_names(settings.local_data_dir / "index")
        loaded = [name for name in names if _warm_index(config.image_index(settings, name))]
        for thread in models:
            thread.join()
        logger.info(
            "warm-up: %d local indexes and the models loaded in %.1f s",
            len(loaded),
            time.perf_counter() - started,
        )
        return loaded
    except Exception:  # the first queries load what they need instead
        logger.exception("warm-up failed")
        return []


def _warm_index(index: ImageIndex) -> bool:
    from imagerag.adapters.local_index import LocalImageIndex

    if not isinstance(index, LocalImageIndex):
        return False
    try:
        index.warm()
        return True
    except Exception as exc:  # e.g. an existing index with other field names: the others go on
        logger.warning("warm-up: index %s not loaded: %s", index.name, exc)
        return False


_models_lock = threading.Lock()
_models_loading: list[threading.Thread] = []


def models_for_ingestion(settings: config.Settings) -> list[threading.Thread]:
    """An ingestion run is about to fan out: load the local image and text models, side by
    side, and return once both are loaded (the threads that loaded them; once per process,
    none with Azure AI Vision and Search). The warm-up at start has usually loaded them
    already. Its first images would wait for them anyway, and a model loaded beside 16 busy
    activities waits for the GIL: loaded that way, the text model took 8-15 s of a run's first
    seconds (2 cores)."""
    loading = _start_loading_models(settings)
    for thread in loading:
        thread.join()
    return loading


def _start_loading_models(settings: config.Settings) -> list[threading.Thread]:
    """The threads loading the local models (started at the first call of the process)."""
    with _models_lock:
        if not _models_loading:
            from imagerag.adapters.local_text_embedder import LocalTextEmbedder
            from imagerag.adapters.local_vectorizer import LocalVectorizer

            loads: list[Callable[[], object]] = []
            vectorizer = config.vectorizer(settings)
            if isinstance(vectorizer, LocalVectorizer):
                loads.append(vectorizer.warm)
            embedder = config.text_embedder() if settings.search_endpoint is None else None
            if isinstance(embedder, LocalTextEmbedder):
                loads.append(embedder.warm)
            for load in loads:
                thread = threading.Thread(target=_logged, args=(load,), name="warm-models")
                thread.start()
                _models_loading.append(thread)
        return list(_models_loading)


def _logged(load: Callable[[], object]) -> None:
    try:
        load()
    except Exception:  # the activities load what they need themselves
        logger.exception("loading a model ahead of ingestion failed")
