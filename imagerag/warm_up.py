"""Offline start-up: the first chat query after a start should not wait for the embedded
indexes' rows to be read (~2 s at 100,000 documents) or the local models to load. A daemon
thread does that as the app starts; a query arriving meanwhile waits only for what is still
loading. With Azure AI Search there is nothing local to load."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from imagerag import config

logger = logging.getLogger(__name__)


def start(settings_of: Callable[[], config.Settings] = config.settings) -> threading.Thread:
    thread = threading.Thread(target=warm, args=(settings_of,), name="warm-up", daemon=True)
    thread.start()
    return thread


def warm(settings_of: Callable[[], config.Settings] = config.settings) -> list[str]:
    """Loads every embedded index of this process's data folder, then the image model;
    returns the names of the indexes loaded (none: nothing is loaded)."""
    try:
        settings = settings_of()
        if settings.search_endpoint is not None:
            return []
        from imagerag.adapters.local_index import LocalImageIndex, index_names
        from imagerag.adapters.local_vectorizer import LocalVectorizer

        # No index yet: nothing to chat over, and ingestion loads the model itself.
        names = index_names(settings.local_data_dir / "index")
        started = time.perf_counter()
        for name in names:
            index = config.image_index(settings, name)
            if isinstance(index, LocalImageIndex):
                index.warm()
        vectorizer = config.vectorizer(settings)
        if names and isinstance(vectorizer, LocalVectorizer):
            vectorizer.warm()
        if names:
            logger.info(
                "warm-up: %d local indexes and the models loaded in %.1f s",
                len(names),
                time.perf_counter() - started,
            )
        return names
    except Exception:  # the first queries load what they need instead
        logger.exception("warm-up failed")
        return []
