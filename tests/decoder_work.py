"""Work for tests/test_local_decoders.py's worker processes (importable by name there)."""

from __future__ import annotations

import os


def pid_and_length(data: bytes) -> tuple[int, int]:
    """The worker's process id and the item's length; ValueError for b"bad"."""
    if data == b"bad":
        raise ValueError("bad item")
    return os.getpid(), len(data)


def dies_on_die(data: bytes) -> int:
    """Ends its worker process at once for b"die" (as a kill for memory would)."""
    if data == b"die":
        os._exit(1)
    return len(data)
