"""The local models' bulk (ingestion) work yields the CPU to chat queries, across models."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

import pytest

from imagerag.adapters import local_text_embedder
from imagerag.adapters.local_text_embedder import LocalTextEmbedder
from imagerag.cpu_share import CpuShare


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class HeldBulkWork:
    """Bulk work (e.g. the vectorizer decoding an image) that stays admitted until left."""

    def __init__(
        self,
        share: CpuShare,
        pool: ThreadPoolExecutor,
        kind: Callable[[CpuShare], AbstractContextManager[None]] = CpuShare.bulk,
    ) -> None:
        self.entered, self._leave = threading.Event(), threading.Event()
        self._done = pool.submit(self._work, kind(share))

    def _work(self, admission: AbstractContextManager[None]) -> None:
        with admission:
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


def test_near_a_query_ingestion_steps_enter_one_at_a_time_and_their_pieces_still_run() -> None:
    clock = Clock()
    share = CpuShare(interactive_recent_s=5.0, bulk_in_flight_near_interactive=1, clock=clock)
    share.note_interactive()
    with ThreadPoolExecutor(3) as pool:
        step = HeldBulkWork(share, pool, CpuShare.bulk_step)
        assert step.entered.wait(5)
        # The step's own CPU work (possibly on a model's worker thread) is counted apart.
        piece = HeldBulkWork(share, pool, CpuShare.bulk)
        assert piece.entered.wait(5)
        second_step = HeldBulkWork(share, pool, CpuShare.bulk_step)
        assert not second_step.entered.wait(0.3)
        piece.leave()
        assert not second_step.entered.wait(0.3)  # pieces leaving do not admit steps
        step.leave()
        assert second_step.entered.wait(5)
        second_step.leave()


def test_near_a_query_each_ingestion_step_is_followed_by_a_rest_in_proportion() -> None:
    clock = Clock()
    share = CpuShare(interactive_recent_s=100.0, step_rest_ratio=0.5, clock=clock)
    share.note_interactive()
    with ThreadPoolExecutor(2) as pool:
        step = HeldBulkWork(share, pool, CpuShare.bulk_step)
        assert step.entered.wait(5)
        clock.now += 4.0  # the step runs for 4 s: the next one rests 2 s
        step.leave()
        following = HeldBulkWork(share, pool, CpuShare.bulk_step)
        assert not following.entered.wait(0.3)
        piece = HeldBulkWork(share, pool, CpuShare.bulk)  # pieces of work do not rest
        assert piece.entered.wait(5)
        piece.leave()
        clock.now += 1.9
        assert not following.entered.wait(0.3)
        clock.now += 0.2
        assert following.entered.wait(5)
        following.leave()


def test_without_queries_ingestion_steps_do_not_rest() -> None:
    clock = Clock()
    share = CpuShare(step_rest_ratio=10.0, clock=clock)
    with ThreadPoolExecutor(1) as pool:
        step = HeldBulkWork(share, pool, CpuShare.bulk_step)
        assert step.entered.wait(5)
        clock.now += 4.0
        step.leave()
        following = HeldBulkWork(share, pool, CpuShare.bulk_step)
        assert following.entered.wait(5)
        following.leave()


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


def test_a_bulk_pass_takes_the_descriptions_that_arrive_while_it_gathers(
    recorded: tuple[LocalTextEmbedder, CpuShare, list[list[str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A forward pass of the image model releases its images together; their descriptions
    # reach the bulk lane a few ms apart and should make one pass, not "first alone + rest".
    embedder, _, passes = recorded
    texts = [f"description {i}" for i in range(6)]
    gathered: list[float] = []

    def gather(seconds: float) -> None:  # returns once every caller has queued
        gathered.append(seconds)
        until(lambda: embedder.bulk.waiting == len(texts))

    monkeypatch.setattr(local_text_embedder, "sleep", gather)
    with ThreadPoolExecutor(len(texts)) as pool:
        calls = [pool.submit(embedder.embed, [text]) for text in texts]
        results = [call.result(15) for call in calls]
    assert results == [[[float(len(text))]] for text in texts]
    assert sorted(passes[0]) == texts and len(passes) == 1
    assert gathered == [local_text_embedder.BULK_GATHER_S]


def test_text_embedder_remembers_recent_questions_not_descriptions(
    recorded: tuple[LocalTextEmbedder, CpuShare, list[list[str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedder, _, passes = recorded
    monkeypatch.setattr(local_text_embedder, "QUESTIONS_REMEMBERED", 2)
    question, other, third = "what is this?", "and this?", "third"
    assert embedder.embed([question], interactive=True) == [[13.0]]
    assert embedder.embed([other, question, other], interactive=True) == [[9.0], [13.0], [9.0]]
    assert passes == [[question], [other]]  # each new question embedded once
    assert embedder.embed([third], interactive=True) == [[5.0]]  # forgets the oldest: question
    assert embedder.embed([other, question], interactive=True) == [[9.0], [13.0]]
    assert passes[2:] == [[third], [question]]
    assert embedder.embed([question]) == [[13.0]]  # descriptions are always embedded
    assert passes[4:] == [[question]]


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
    with pytest.raises(ValueError, match="step_rest_ratio"):
        CpuShare(step_rest_ratio=-0.1)
