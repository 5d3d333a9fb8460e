"""torch's thread settings for the local models (image and text), made once per process before
either model runs a pass.

On the CPU each forward pass runs on one thread, and the models run passes side by side, one
per core (:class:`~imagerag.adapters.local_vectorizer.LocalVectorizer` has a worker per core;
the text embedder's interactive and bulk lanes are a worker each). On 2 cores EfficientNet-Lite0
did 85-88 images/s as two single-thread passes of 2 images at a time, against 46 as passes of 16
split over both cores: its small ops split poorly, and each waits for the slower core (which, in
the app, is often busy with something else). Beside a CUDA GPU, where the CPU runs little of a
pass, torch keeps all the cores.

Why one place: torch applies its thread count to each thread at that thread's first pass, so the
count must be set before any model's worker starts, whichever model loads first.

torch is imported inside the function: importing this module costs nothing.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_threads: int | None = None


def cpu_count() -> int:
    """Cores this process may use (respects affinity/cgroup pinning where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on every OS
        return os.cpu_count() or 1


def use_torch_threads() -> int:
    """Sets torch's threads for this process on the first call; returns the threads one pass
    runs on (1 on the CPU, all cores beside a GPU)."""
    global _threads
    with _lock:
        if _threads is None:
            import torch

            _threads = cpu_count() if torch.cuda.is_available() else 1
            torch.set_num_threads(_threads)
            try:
                torch.set_num_interop_threads(1)  # nothing here runs ops in parallel
            except RuntimeError:  # only settable before the first parallel op of the process
                pass
        return _threads
