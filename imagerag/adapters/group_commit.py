"""Group commit: serialises writes to one table and coalesces those that queue up meanwhile."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from time import sleep

import pyarrow as pa

from imagerag.ports import ImageIndexError

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Op:
    kind: str  # upsert | merge | delete | optimize
    rows: pa.Table | None = None
    ids: list[str] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None


class GroupCommit:
    """Serialises writes and coalesces the ones that queue up while a write runs.

    The first caller to find no write running becomes the leader: it waits ``gather_s`` for
    others to queue, takes everything queued (its own op included), applies consecutive ops of
    one kind as one write, and wakes the others. Every caller returns once its own op is
    committed, or raises its group's error.
    """

    def __init__(self, apply: Callable[[str, list[Op]], None], *, gather_s: float = 0.0) -> None:
        self._apply = apply
        self._gather_s = gather_s
        self._cond = threading.Condition()
        self._queue: list[Op] = []
        self._writing = False

    def submit(self, op: Op) -> None:
        with self._cond:
            self._queue.append(op)
            while self._writing and not op.done:
                self._cond.wait()
            leader = not op.done
            if leader:
                self._writing = True
        if leader:
            if self._gather_s:  # writers released together arrive a few ms apart
                sleep(self._gather_s)
            with self._cond:
                batch, self._queue = self._queue, []
            try:
                self._run(batch)
            finally:
                with self._cond:
                    for queued in batch:
                        queued.done = True
                    self._writing = False
                    self._cond.notify_all()
        if op.error is not None:
            if isinstance(op.error, ImageIndexError):
                raise op.error
            raise ImageIndexError(f"{op.kind} failed: {op.error}") from op.error

    def _run(self, batch: list[Op]) -> None:
        for kind, group in _runs(batch):
            try:
                self._apply(kind, group)
            except Exception as exc:  # handed to every caller of this group
                logger.warning("%s of %d queued writes failed: %s", kind, len(group), exc)
                for op in group:
                    op.error = exc


def _runs(batch: list[Op]) -> Iterator[tuple[str, list[Op]]]:
    """Consecutive ops of the same kind (order between kinds is kept)."""
    group: list[Op] = []
    for op in batch:
        if group and (op.kind != group[0].kind or op.kind == "optimize"):
            yield group[0].kind, group
            group = []
        group.append(op)
    if group:
        yield group[0].kind, group
