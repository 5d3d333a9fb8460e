"""Work for tests/test_local_decoders.py's worker processes (importable by name there)."""

from __future__ import annotations

import os

import numpy as np

SHAPE = (2, 3)  # the pixel arrays these functions make


def pid_and_length(data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    """(pixels all equal to the item's length, (the worker's process id, the item's length));
    ValueError for b"bad"."""
    if data == b"bad":
        raise ValueError("bad item")
    return np.full(SHAPE, len(data), dtype=np.uint8), (os.getpid(), len(data))


def dies_on_die(data: bytes) -> tuple[np.ndarray, int]:
    """Ends its worker process at once for b"die" (as a kill for memory would)."""
    if data == b"die":
        os._exit(1)
    return np.full(SHAPE, len(data), dtype=np.uint8), len(data)
