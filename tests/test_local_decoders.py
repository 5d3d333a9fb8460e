"""Decoding in worker processes (imagerag/adapters/local_decoders.py), as the local vectorizer
uses it on a GPU: results reach the right callers from many threads, each item's error reaches
its own caller, a dead process fails only its own chunk, and the vectors are those of decoding
in the callers' threads."""

from __future__ import annotations

import os
import threading
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import pytest
from decoder_work import SHAPE, dies_on_die, pid_and_length
from sample_images import picture_bytes

from imagerag.adapters import local_vectorizer
from imagerag.adapters.local_decoders import DecoderProcesses, Handoff
from imagerag.adapters.local_vectorizer import LocalVectorizer
from imagerag.ports import VectorizerError, VectorizerInputError


@pytest.fixture
def decoders() -> Iterator[DecoderProcesses[tuple[int, int]]]:
    processes = DecoderProcesses(pid_and_length, 2, SHAPE, chunk=4)
    yield processes
    processes.close()


def test_each_caller_gets_its_own_result_from_a_worker_process(
    decoders: DecoderProcesses[tuple[int, int]],
) -> None:
    items = [bytes(length) for length in range(1, 121)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(decoders.run, items))
    assert [length for _, (_, length) in results] == list(range(1, 121))
    # The pixels came through the chunks' shared memory blocks, each to its own caller.
    assert [pixels.tolist() for pixels, _ in results] == [
        np.full(SHAPE, length).tolist() for length in range(1, 121)
    ]
    assert os.getpid() not in {pid for _, (pid, _) in results}


def test_an_items_error_reaches_its_caller_alone(
    decoders: DecoderProcesses[tuple[int, int]],
) -> None:
    items = [b"a", b"bad", b"ccc", b"bad", b"eeeee"] * 8

    def outcome(item: bytes) -> int | str:
        try:
            return decoders.run(item)[1][1]
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(10) as pool:
        assert list(pool.map(outcome, items)) == [1, "bad item", 3, "bad item", 5] * 8


def test_a_dead_process_fails_its_chunk_and_new_processes_take_over() -> None:
    decoders = DecoderProcesses(dies_on_die, 1, SHAPE, chunk=1)
    try:
        assert decoders.run(b"four")[1] == 4
        with pytest.raises(VectorizerError, match="worker process"):
            decoders.run(b"die")
        assert [decoders.run(bytes(n))[1] for n in (1, 2, 3)] == [1, 2, 3]
    finally:
        decoders.close()


def test_closed_decoders_refuse_work(decoders: DecoderProcesses[tuple[int, int]]) -> None:
    assert decoders.run(b"xy")[1][1] == 2
    decoders.close()
    with pytest.raises(VectorizerError, match="shut down"):
        decoders.run(b"xy")


def test_close_removes_the_shared_memory_blocks() -> None:
    decoders = DecoderProcesses(pid_and_length, 1, SHAPE, chunk=2)
    names = [block.name for block in decoders._blocks]
    assert len(names) == 2 and decoders.run(b"abc")[0].tolist() == np.full(SHAPE, 3).tolist()
    decoders.close()
    decoders.close()  # twice is harmless
    for name in names:
        with pytest.raises(FileNotFoundError):
            SharedMemory(name)


def test_a_sink_that_fails_does_not_keep_the_rest_of_its_chunk_waiting() -> None:
    class Broken:
        def set_result(self, value: object) -> None:
            raise RuntimeError("a sink that fails")

        def set_exception(self, error: BaseException) -> None:
            raise RuntimeError("a sink that fails")

    decoders = DecoderProcesses(pid_and_length, 1, SHAPE, chunk=4)
    try:
        before: Handoff[tuple[np.ndarray, tuple[int, int]]] = Handoff()
        after: Handoff[tuple[np.ndarray, tuple[int, int]]] = Handoff()
        with decoders._ready:  # all three wait until the dispatcher takes them: one chunk
            decoders.submit(b"a", before)
            decoders.submit(b"bb", Broken())
            decoders.submit(b"ccc", after)
        assert before.result(timeout=60)[1][1] == 1 and after.result(timeout=60)[1][1] == 3
    finally:
        decoders.close()


def test_a_handoff_gives_its_waiter_the_value_or_the_error() -> None:
    value: Handoff[int] = Handoff()
    assert not value.done()
    threading.Timer(0.05, value.set_result, args=(7,)).start()
    assert value.result() == 7 and value.result() == 7 and value.done()
    error: Handoff[int] = Handoff()
    error.set_exception(ValueError("no"))
    with pytest.raises(ValueError, match="no"):
        error.result()
    with pytest.raises(RuntimeError):  # one result per handoff
        error.set_result(1)
    with pytest.raises(TimeoutError):
        Handoff[int]().result(timeout=0.01)


def test_vectorizer_decoding_in_processes_gives_the_vectors_and_thumbnails_of_threads() -> None:
    images = [picture_bytes(seed, fmt) for seed in range(40, 52) for fmt in ("JPEG", "PNG")]
    in_threads = LocalVectorizer(decoder_processes=0)
    in_processes = LocalVectorizer(decoder_processes=2)
    try:
        with ThreadPoolExecutor(8) as pool:
            expected = list(pool.map(in_threads.embed_image, images))
            got = list(pool.map(in_processes.embed_image, images))
        with pytest.raises(VectorizerInputError, match="could not be decoded"):
            in_processes.vectorize_image(b"GIF89a but not really an image")
    finally:
        in_processes.close()
    assert [e.thumbnail for e in got] == [e.thumbnail for e in expected]
    # The same crops; batches may differ in size, which moves the last bit of a float.
    cosines = (np.array([e.vector for e in got]) * np.array([e.vector for e in expected])).sum(1)
    assert cosines.min() > 0.999999


@pytest.mark.parametrize(("device", "cores", "expected"), [("cuda", 16, 15), ("cuda", 2, 0)])
def test_decoder_processes_on_a_gpu_take_all_cores_but_one(
    monkeypatch: pytest.MonkeyPatch, device: str, cores: int, expected: int
) -> None:
    monkeypatch.setattr(local_vectorizer, "cpu_count", lambda: cores)
    monkeypatch.setattr(local_vectorizer, "shared_memory_free", lambda: 1 << 30)
    weight = types.SimpleNamespace(device=types.SimpleNamespace(type=device))
    model = types.SimpleNamespace(parameters=lambda: iter([weight]))
    assert local_vectorizer.decoder_processes(model) == expected  # type: ignore[arg-type]


def test_decoder_processes_need_room_in_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # 15 processes, 2 chunks of 16 crops each: 72 MB of blocks; a 64 MB /dev/shm is too small.
    monkeypatch.setattr(local_vectorizer, "cpu_count", lambda: 16)
    monkeypatch.setattr(local_vectorizer, "runs_on_gpu", lambda model: True)
    monkeypatch.setattr(local_vectorizer, "shared_memory_free", lambda: 64 << 20)
    assert local_vectorizer.decoder_processes(None) == 0  # type: ignore[arg-type]
    monkeypatch.setattr(local_vectorizer, "shared_memory_free", lambda: 1 << 30)
    assert local_vectorizer.decoder_processes(None) == 15  # type: ignore[arg-type]


def test_decoder_processes_on_the_cpu_are_none() -> None:
    assert local_vectorizer.decoder_processes(local_vectorizer.load_model()) == 0
