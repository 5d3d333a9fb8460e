"""One process's CPU shared between chat requests (interactive) and ingestion (bulk) work.

Chat requests and ingestion activities run in the same app process, on the same few cores
and under one GIL. While a chat request came within the last ``interactive_recent_s`` seconds,
ingestion yields at two levels, each counted apart:

- ``bulk_step()``: whole ingestion steps (one image's activity: blob reads, checks, embedding,
  index write). At most ``bulk_in_flight_near_interactive`` run at once, and each is followed
  by a rest of ``step_rest_ratio`` times its own duration. Without the cap, a dozen activity
  threads in azure-core and the index writer take turns on the GIL with the chat's threads;
  without the rest, one step after another still takes a third of the CPU that the chat's
  requests queue for (bench/chat_during_ingest.py).
- ``bulk()``: pieces of bulk CPU work (an image's decode check, its decode + embedding, a pass
  of descriptions' embeddings), which may run on the models' own worker threads; the same cap,
  no rest.

Ingestion never stops: it slows while chat requests keep coming, and runs freely once they stop.
A chat request never waits for admission: it only marks the time.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

DEFAULT_INTERACTIVE_RECENT_S = 5.0
DEFAULT_BULK_IN_FLIGHT_NEAR_INTERACTIVE = 1
# 0.6: ingestion keeps about 60% of one thread's time while chat requests keep coming.
DEFAULT_STEP_REST_RATIO = 0.6


class CpuShare:
    def __init__(
        self,
        *,
        interactive_recent_s: float = DEFAULT_INTERACTIVE_RECENT_S,
        bulk_in_flight_near_interactive: int = DEFAULT_BULK_IN_FLIGHT_NEAR_INTERACTIVE,
        step_rest_ratio: float = DEFAULT_STEP_REST_RATIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interactive_recent_s < 0:
            raise ValueError("interactive_recent_s must not be negative")
        if bulk_in_flight_near_interactive < 1:
            raise ValueError("bulk_in_flight_near_interactive must be at least 1")
        if step_rest_ratio < 0:
            raise ValueError("step_rest_ratio must not be negative")
        self.recent_s = interactive_recent_s
        self.clock = clock
        self._last_interactive = -math.inf
        self._steps = _Admission(self, bulk_in_flight_near_interactive, step_rest_ratio)
        self._pieces = _Admission(self, bulk_in_flight_near_interactive, rest_ratio=0.0)

    def note_interactive(self) -> None:
        """A query is being served: bulk work yields from now on."""
        self._last_interactive = self.clock()

    def quiet_for(self, now: float) -> float:
        """Seconds since the last query, at ``now``."""
        return now - self._last_interactive

    def interactive_recently(self) -> bool:
        return self.quiet_for(self.clock()) < self.recent_s

    def bulk_step(self) -> AbstractContextManager[None]:
        """Admits one whole step of ingestion for the ``with`` block."""
        return self._steps.admit()

    def bulk(self) -> AbstractContextManager[None]:
        """Admits one piece of bulk CPU work for the ``with`` block."""
        return self._pieces.admit()


class _Admission:
    """Counts one kind of bulk work in flight. While queries are recent, admits work when
    fewer than ``near_limit`` are in flight and the rest after the last one is over."""

    def __init__(self, share: CpuShare, near_limit: int, rest_ratio: float) -> None:
        self._share = share
        self._near_limit = near_limit
        self._rest_ratio = rest_ratio
        self._condition = threading.Condition()
        self._in_flight = 0
        self._rested_at = -math.inf

    @contextmanager
    def admit(self) -> Iterator[None]:
        share = self._share
        with self._condition:
            while True:
                now = share.clock()
                recent_for = share.recent_s - share.quiet_for(now)
                if recent_for <= 0:
                    break
                if self._in_flight < self._near_limit and now >= self._rested_at:
                    break
                # Woken by finished work, or re-checked when the quiet period or the rest ends.
                wake_in = min(recent_for, max(self._rested_at - now, 0.0))
                self._condition.wait(min(0.1, max(wake_in, 0.001)))
            self._in_flight += 1
        entered = share.clock()
        try:
            yield
        finally:
            with self._condition:
                self._in_flight -= 1
                left = share.clock()
                if share.quiet_for(left) < share.recent_s:
                    self._rested_at = left + (left - entered) * self._rest_ratio
                self._condition.notify()


@functools.lru_cache(maxsize=1)
def process_share() -> CpuShare:
    """The process's share: chat notes its requests, ingestion and the local models ask it."""
    return CpuShare()
