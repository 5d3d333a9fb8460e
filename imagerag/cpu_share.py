"""One process's CPU shared between chat requests (interactive) and ingestion (bulk) work.

Chat requests and ingestion activities run in the same app process, on the same few cores.
While a chat request came within the last ``interactive_recent_s`` seconds, at most
``bulk_in_flight_near_interactive`` pieces of bulk CPU work (an image's decode check, its
decode + embedding, a pass of descriptions' embeddings) run at once; otherwise bulk work runs
freely. A chat request never waits for admission: it only marks the time.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEFAULT_INTERACTIVE_RECENT_S = 5.0
# On 2 cores, 16 ingestion threads decoding and embedding otherwise take the CPU that the chat's
# own decode and embeddings need (bench/chat_during_ingest.py).
DEFAULT_BULK_IN_FLIGHT_NEAR_INTERACTIVE = 1


class CpuShare:
    def __init__(
        self,
        *,
        interactive_recent_s: float = DEFAULT_INTERACTIVE_RECENT_S,
        bulk_in_flight_near_interactive: int = DEFAULT_BULK_IN_FLIGHT_NEAR_INTERACTIVE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interactive_recent_s < 0:
            raise ValueError("interactive_recent_s must not be negative")
        if bulk_in_flight_near_interactive < 1:
            raise ValueError("bulk_in_flight_near_interactive must be at least 1")
        self._recent_s = interactive_recent_s
        self._near_limit = bulk_in_flight_near_interactive
        self._clock = clock
        self._admission = threading.Condition()
        self._last_interactive = -math.inf
        self._bulk_in_flight = 0

    def note_interactive(self) -> None:
        """A query is being served: bulk work yields from now on."""
        self._last_interactive = self._clock()

    def interactive_recently(self) -> bool:
        return self._clock() - self._last_interactive < self._recent_s

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Admits one piece of bulk work for the ``with`` block (waits while queries are
        recent and the near-interactive limit is reached)."""
        with self._admission:
            while True:
                quiet_for = self._clock() - self._last_interactive
                if quiet_for >= self._recent_s or self._bulk_in_flight < self._near_limit:
                    self._bulk_in_flight += 1
                    break
                # Woken by finished bulk work, or re-checked when the quiet period ends.
                self._admission.wait(min(0.1, self._recent_s - quiet_for))
        try:
            yield
        finally:
            with self._admission:
                self._bulk_in_flight -= 1
                self._admission.notify()


@functools.lru_cache(maxsize=1)
def process_share() -> CpuShare:
    """The process's share: chat notes its requests, ingestion and the local models ask it."""
    return CpuShare()
