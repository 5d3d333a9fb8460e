"""Image decoding in worker processes, for a local model that outruns the GIL (a GPU).

On an H200 the vectorizer's model embeds 6,700 images/s (batches of 256), but decoding in
the callers' threads topped out at ~1,200 images/s on 16 cores: each picture's Python steps
take the GIL, and the model's worker thread waited behind them for each step of its own pass
(the vectorizer ran at 80 images/s, bench/vectorizer_device.py). Worker processes decode in
parallel (15 processes: 2,750 images/s of 8-bit crops); the parent only hands bytes over and
gets crops back.

A hand-over through ``ProcessPoolExecutor`` costs the parent ~1 ms of its own time, so
requests go in chunks of what is waiting, shared out between the processes; each process has
at most two chunks in flight, so that the next is ready when it finishes one.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, TypeVar

from imagerag.ports import VectorizerError

logger = logging.getLogger(__name__)

Result = TypeVar("Result")

DEFAULT_CHUNK = 16
CHUNKS_IN_FLIGHT_PER_PROCESS = 2


def _each(function: Callable[[bytes], Any], items: list[bytes]) -> list[Any]:
    """``function`` of each item, in a worker process; an item that fails gives its error
    (the others still count)."""
    results: list[Any] = []
    for item in items:
        try:
            results.append(function(item))
        except Exception as exc:  # the caller of that item gets it (VectorizerInputError, ...)
            results.append(exc)
    return results


class DecoderProcesses(Generic[Result]):
    """``function(data)`` in ``processes`` worker processes, for callers in many threads.

    ``function`` must be importable by name (a module-level function), as must its module:
    the processes are spawned, never forked, since the parent runs threads and maybe CUDA.
    """

    def __init__(
        self,
        function: Callable[[bytes], Result],
        processes: int,
        *,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        if processes < 1 or chunk < 1:
            raise ValueError("processes and chunk must be at least 1")
        self._function = function
        self._processes = processes
        self._chunk = chunk
        self._pool = self._new_pool()
        self._slots = threading.Semaphore(CHUNKS_IN_FLIGHT_PER_PROCESS * processes)
        self._waiting: collections.deque[tuple[bytes, Future[Result]]] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="local-decoder-dispatch", daemon=True
        )
        self._dispatcher.start()

    def run(self, data: bytes) -> Result:
        """``function(data)``, computed in a worker process; its error is raised here."""
        future: Future[Result] = Future()
        with self._ready:
            if self._closed:
                raise VectorizerError("the decoder processes are shut down")
            self._waiting.append((data, future))
            self._ready.notify()
        return future.result()

    def close(self) -> None:
        """Stops the processes once the work handed over is done; later runs are refused."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._dispatcher.join()
        self._pool.shutdown(wait=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"))

    def _dispatch(self) -> None:
        while True:
            self._slots.acquire()
            with self._ready:
                self._ready.wait_for(lambda: self._waiting or self._closed)
                if not self._waiting:
                    return  # closed and nothing left
                # Shared out: a short queue goes to several processes, not all to one.
                size = min(self._chunk, math.ceil(len(self._waiting) / self._processes))
                chunk = [self._waiting.popleft() for _ in range(size)]
            self._submit(chunk)

    def _submit(self, chunk: list[tuple[bytes, Future[Result]]]) -> None:
        items = [data for data, _ in chunk]
        try:
            try:
                done = self._pool.submit(_each, self._function, items)
            except BrokenProcessPool:
                # A process died (killed for memory, say): the pool refuses all work from then
                # on, so a new one takes over, once.
                logger.warning("a decoder process died; starting new decoder processes")
                self._pool.shutdown(wait=False)
                self._pool = self._new_pool()
                done = self._pool.submit(_each, self._function, items)
        except Exception as exc:  # the new pool refused it too: this chunk's callers learn
            done = _failed(exc)
        done.add_done_callback(functools.partial(self._deliver, chunk))

    def _deliver(self, chunk: list[tuple[bytes, Future[Result]]], done: Future[list[Any]]) -> None:
        self._slots.release()
        try:
            results = done.result()
        except Exception as exc:  # the chunk's process died mid-way: each of its callers learns
            error = VectorizerError(f"decoding in a worker process failed: {exc!r}")
            for _, future in chunk:
                future.set_exception(error)
            return
        for (_, future), result in zip(chunk, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _failed(exc: BaseException) -> Future[list[Any]]:
    future: Future[list[Any]] = Future()
    future.set_exception(exc)
    return future
