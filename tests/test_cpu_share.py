"""The local models' bulk (ingestion) work yields the CPU to chat queries, across models."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from imagerag.adapters.local_text_embedder import LocalTextEmbedder
from imagerag.cpu_share import CpuShare


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class HeldBulkWork:
    """Bulk work (e.g. the vectorizer decoding an image) that stays admitted until left."""

    def __init__(self, share: CpuShare, pool: ThreadPoolExecutor) -> None:
        self.entered, self._leave = threading.Event(), threading.Event()
        self._done = pool.submit(self._work, share)

    def _work(self, share: CpuShare) -> None:
        with share.bulk():
            self.entered.set()
            assert self._leave.wait(30)

    def leave(self) -> None:
        self._leave.set()
        self._done.result(30)


def test_bulk_work_runs_side_by_side_without_queries() -> None:
    share = CpuShare(clock=Clock())
    with ThreadPoolExecutor(3) as pool:
        held = [HeldBulkWork(share, pool) for _ in range(3)]
        assert all(work.entered.wait(5) for work in held)
        for work in held:
            work.leave()


def test_near_a_query_bulk_work_enters_one_at_a_time_then_freely_once_quiet() -> None:
    clock = Clock()
    share = CpuShare(interactive_recent_s=5.0, bulk_in_flight_near_interactive=1, clock=clock)
    share.note_interactive()
    assert share.interactive_recently()
    with ThreadPoolExecutor(3) as pool:
        first = HeldBulkWork(share, pool)
        assert first.entered.wait(5)
        second = HeldBulkWork(share, pool)
        assert not second.entered.wait(0.3)
        first.leave()  # the one in flight leaves: the next enters
        assert second.entered.wait(5)
        third = HeldBulkWork(share, pool)
        assert not third.entered.wait(0.3)
        clock.now += 5.0  # the query is no longer recent: no limit
        assert not share.interactive_recently()
        assert third.entered.wait(5)
        second.leave()
        third.leave()


@pytest.fixture
def recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[LocalTextEmbedder, CpuShare, list[list[str]]]:
    """A text embedder whose forward passes are recorded (the scheduling is under test)."""
    passes: list[list[str]] = []

    def record(self: LocalTextEmbedder, texts: list[str]) -> list[list[float]]:
        passes.append(texts)
        return [[float(len(text))] for text in texts]

    monkeypatch.setattr(LocalTextEmbedder, "_embed", record)
    share = CpuShare(interactive_recent_s=5.0, clock=Clock())
    return LocalTextEmbedder(share=share), share, passes


def test_text_embedder_bulk_calls_wait_for_the_share_queries_do_not(
    recorded: tuple[LocalTextEmbedder, CpuShare, list[list[str]]],
) -> None:
    embedder, share, passes = recorded
    share.note_interactive()
    with ThreadPoolExecutor(3) as pool:
        image_work = HeldBulkWork(share, pool)
        assert image_work.entered.wait(5)
        description = pool.submit(embedder.embed, ["a description being indexed"])
        assert embedder.embed(["a chat question"], interactive=True) == [[15.0]]
        with pytest.raises(TimeoutError):
            description.result(0.3)
        image_work.leave()
        assert description.result(5) == [[27.0]]
    assert passes == [["a chat question"], ["a description being indexed"]]


def test_text_embedder_gathers_waiting_descriptions_into_one_pass(
    recorded: tuple[LocalTextEmbedder, CpuShare, list[list[str]]],
) -> None:
    embedder, share, passes = recorded
    share.note_interactive()
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    with ThreadPoolExecutor(8) as pool:
        image_work = HeldBulkWork(share, pool)
        assert image_work.entered.wait(5)
        first = pool.submit(embedder.embed, texts[:1])
        # The worker took it and waits for admission.
        until(lambda: embedder.bulk.started and embedder.bulk.waiting == 0)
        calls = [first] + [pool.submit(embedder.embed, [text]) for text in texts[1:]]
        until(lambda: embedder.bulk.waiting == len(texts) - 1)
        image_work.leave()
        results = [call.result(5) for call in calls]
    assert results == [[[float(len(text))]] for text in texts]  # each caller its own vector
    assert passes == [texts[:1], texts[1:]]
    assert embedder.bulk.passes == 2


def until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        threading.Event().wait(0.005)
    raise AssertionError("condition not reached in 15 s")


def test_rejects_limits_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CpuShare(bulk_in_flight_near_interactive=0)
    with pytest.raises(ValueError, match="negative"):
        CpuShare(interactive_recent_s=-1)
