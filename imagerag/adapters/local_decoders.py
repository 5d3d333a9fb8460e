"""Image decoding in worker processes, for a local model that outruns the GIL (a GPU).

On an H200 the vectorizer's model embeds 6,000-6,700 images/s (batches of 256), but decoding
in the callers' threads topped out at ~1,000-1,200 images/s on 16 cores: each picture's
Python steps take the GIL, and the model's worker thread waited behind them for each step of
its own pass (the vectorizer ran at 80 images/s, bench/vectorizer_device.py). Worker
processes decode in parallel; the parent only hands bytes over and gets pixels back.

What the parent still does per image is the limit then (15 processes decode 5,500 images/s
when they send nothing back), so it is kept small:

- Pixels come back through shared memory, not the result pipe: each chunk in flight has its
  own block, reused, where the process writes the chunk's pixel arrays. Pickled through the
  pipe, a 150 KB crop cost the parent ~175 us (copies, and a 64 KB pipe read per wake-up);
  from shared memory it is one copy.
- Requests go in chunks of what is waiting, shared out between the processes (a hand-over
  through ``ProcessPoolExecutor`` costs the parent ~1 ms); each process has at most two
  chunks in flight, so that the next is ready when it finishes one.
- :meth:`DecoderProcesses.submit` delivers to a sink (:class:`Sink`), so a caller can have
  the result handed on (the vectorizer queues it for the model) without a thread of its own
  waking for it; and results are handed over by :class:`Handoff`, not
  ``concurrent.futures.Future``, whose condition variables cost ~10 lock operations a result.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import multiprocessing
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.shared_memory import SharedMemory
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from imagerag.ports import VectorizerError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    PixelArray = npt.NDArray[np.uint8]

logger = logging.getLogger(__name__)

Extra = TypeVar("Extra")
Value = TypeVar("Value")
Value_contra = TypeVar("Value_contra", contravariant=True)

DEFAULT_CHUNK = 16
CHUNKS_IN_FLIGHT_PER_PROCESS = 2


class Sink(Protocol[Value_contra]):
    """Where one result goes: exactly one of the two calls is made, once."""

    def set_result(self, value: Value_contra) -> None: ...

    def set_exception(self, error: BaseException) -> None: ...


class Handoff(Generic[Value]):
    """One value (or error) handed from one thread (the one setter) to the threads waiting.

    A lock taken at creation and released by the setter: a waiter's acquire is the wait, the
    cheapest a CPython thread has. Setting twice raises RuntimeError.
    """

    __slots__ = ("_pending", "_set", "_value", "_error")

    def __init__(self) -> None:
        self._pending = threading.Lock()
        self._pending.acquire()
        self._set = False  # not the lock's state: a waiter holds the lock for a moment
        self._value: Value | None = None
        self._error: BaseException | None = None

    def set_result(self, value: Value) -> None:
        self._settle()
        self._value = value
        self._pending.release()

    def set_exception(self, error: BaseException) -> None:
        self._settle()
        self._error = error
        self._pending.release()

    def done(self) -> bool:
        return self._set

    def result(self, timeout: float | None = None) -> Value:
        """The value once set (waiting for it, at most ``timeout`` s), or its error raised."""
        if not self._pending.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"no result within {timeout} s")
        self._pending.release()
        if self._error is not None:
            raise self._error
        return cast("Value", self._value)

    def _settle(self) -> None:
        if self._set:
            raise RuntimeError("a handoff is set once")
        self._set = True


# A worker process's view of the parent's blocks, by name: attached once, reused.
_attached: dict[str, SharedMemory] = {}


def shared_memory_free() -> int:
    """Bytes free for shared memory blocks (/dev/shm on Linux; a container may cap it at
    64 MB); a large number where the OS keeps them elsewhere."""
    try:
        # Only its free space is read; nothing is written to a path here.
        return shutil.disk_usage("/dev/shm").free  # nosec B108
    except OSError:
        return 1 << 62


def _each(
    function: Callable[[bytes], tuple[PixelArray, Any]],
    items: list[bytes],
    block: str,
    shape: tuple[int, ...],
) -> list[tuple[bool, Any]]:
    """In a worker process: ``function`` of each item, its pixels written to row i of the
    block; (True, extra) per item, or (False, its error): the others still count."""
    import numpy as np

    memory = _attached.get(block)
    if memory is None:
        memory = _attached[block] = SharedMemory(block)
    rows = np.ndarray((len(items), *shape), dtype=np.uint8, buffer=memory.buf)
    results: list[tuple[bool, Any]] = []
    for row, item in enumerate(items):
        try:
            pixels, extra = function(item)
            rows[row] = pixels
            results.append((True, extra))
        except Exception as exc:  # the caller of that item gets it (VectorizerInputError, ...)
            results.append((False, exc))
    return results


class DecoderProcesses(Generic[Extra]):
    """``function(data)`` -> (uint8 pixels of ``shape``, extra), in ``processes`` worker
    processes, for callers in many threads.

    ``function`` must be importable by name (a module-level function), as must its module:
    the processes are spawned, never forked, since the parent runs threads and maybe CUDA.
    """

    def __init__(
        self,
        function: Callable[[bytes], tuple[PixelArray, Extra]],
        processes: int,
        shape: tuple[int, ...],
        *,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        if processes < 1 or chunk < 1:
            raise ValueError("processes and chunk must be at least 1")
        self._function = function
        self._processes = processes
        self._shape = shape
        self._chunk = chunk
        self._pool = self._new_pool()
        in_flight = CHUNKS_IN_FLIGHT_PER_PROCESS * processes
        self._blocks = [
            SharedMemory(create=True, size=_block_bytes(shape, chunk)) for _ in range(in_flight)
        ]
        self._free_blocks = collections.deque(self._blocks)
        self._slots = threading.Semaphore(in_flight)
        self._waiting: collections.deque[tuple[bytes, Sink[tuple[PixelArray, Extra]]]] = (
            collections.deque()
        )
        self._ready = threading.Condition()
        self._closed = False
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="local-decoder-dispatch", daemon=True
        )
        self._dispatcher.start()

    @staticmethod
    def shared_memory_needed(
        processes: int, shape: tuple[int, ...], chunk: int = DEFAULT_CHUNK
    ) -> int:
        """Bytes of shared memory the blocks of ``processes`` take."""
        return CHUNKS_IN_FLIGHT_PER_PROCESS * processes * _block_bytes(shape, chunk)

    def submit(self, data: bytes, sink: Sink[tuple[PixelArray, Extra]]) -> None:
        """``function(data)``, to be computed in a worker process and delivered to ``sink``
        (from the pool's result thread)."""
        with self._ready:
            if self._closed:
                raise VectorizerError("the decoder processes are shut down")
            self._waiting.append((data, sink))
            self._ready.notify()

    def run(self, data: bytes) -> tuple[PixelArray, Extra]:
        """``function(data)``, computed in a worker process; its error is raised here."""
        result: Handoff[tuple[PixelArray, Extra]] = Handoff()
        self.submit(data, result)
        return result.result()

    def close(self) -> None:
        """Stops the processes once the work handed over is done; later runs are refused."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._dispatcher.join()
        self._pool.shutdown(wait=True)
        blocks, self._blocks = self._blocks, []
        for block in blocks:
            block.close()
            block.unlink()

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
                block = self._free_blocks.popleft()  # one per slot: never short
            self._submit(chunk, block)

    def _submit(
        self, chunk: list[tuple[bytes, Sink[tuple[PixelArray, Extra]]]], block: SharedMemory
    ) -> None:
        items = [data for data, _ in chunk]
        task = functools.partial(_each, self._function, items, block.name, self._shape)
        try:
            try:
                done = self._pool.submit(task)
            except BrokenProcessPool:
                # A process died (killed for memory, say): the pool refuses all work from then
                # on, so a new one takes over, once.
                logger.warning("a decoder process died; starting new decoder processes")
                self._pool.shutdown(wait=False)
                self._pool = self._new_pool()
                done = self._pool.submit(task)
        except Exception as exc:  # the new pool refused it too: this chunk's callers learn
            done = _failed(exc)
        done.add_done_callback(functools.partial(self._deliver, chunk, block))

    def _deliver(
        self,
        chunk: list[tuple[bytes, Sink[tuple[PixelArray, Extra]]]],
        block: SharedMemory,
        done: Future[list[tuple[bool, Any]]],
    ) -> None:
        try:
            results = done.result()
        except Exception as exc:  # the chunk's process died mid-way: each of its callers learns
            self._release(block)
            error = VectorizerError(f"decoding in a worker process failed: {exc!r}")
            for _, sink in chunk:
                sink.set_exception(error)
            return
        import numpy as np  # imported by then: the vectorizer loaded its model

        rows = np.ndarray((len(chunk), *self._shape), dtype=np.uint8, buffer=block.buf)
        # Copied out before the block goes back for another chunk.
        pixels = [row.copy() for row in rows]
        del rows  # the block's buffer must have no views left when it is closed
        self._release(block)
        for (_, sink), (ok, extra), row in zip(chunk, results, pixels, strict=True):
            try:
                if ok:
                    sink.set_result((row, extra))
                else:
                    sink.set_exception(extra)
            except Exception:  # a failing sink must not keep the chunk's other callers waiting
                logger.exception("delivering a decoded image failed")

    def _release(self, block: SharedMemory) -> None:
        with self._ready:
            self._free_blocks.append(block)
        self._slots.release()


def _block_bytes(shape: tuple[int, ...], chunk: int) -> int:
    """A chunk's shared memory block: ``chunk`` uint8 pixel arrays of ``shape``."""
    return chunk * math.prod(shape)


def _failed(exc: BaseException) -> Future[list[Any]]:
    future: Future[list[Any]] = Future()
    future.set_exception(exc)
    return future
