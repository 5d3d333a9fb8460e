"""`python -m devhost`: run function_app.py offline, as `func start` would."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .host import DevHost

log = logging.getLogger("devhost")

# Once asked to stop (SIGTERM, Ctrl-C), the host is gone within this many seconds whatever it
# was doing: threads stuck in I/O are not waited for. Nothing is lost by cutting them short:
# orchestration state is written in transactions, and a restart runs again every activity
# that had not reported (activities are at-least-once and idempotent), as after a crash.
STOP_GRACE_S = 8.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument(
        "--script-root",
        type=Path,
        default=Path.cwd(),
        help="folder holding function_app.py and host.json (default: cwd)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=7071, help="HTTP port, as `func start` (default: 7071)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where orchestration state and trigger receipts live "
        "(default: <script-root>/.devhost)",
    )
    parser.add_argument(
        "--blob-poll-interval",
        type=float,
        default=1.0,
        help="seconds between scans of blob trigger containers and of the storage account for "
        "Event Grid triggers (default: 1.0)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level (default: INFO)")
    return parser.parse_args()


async def serve(args: argparse.Namespace) -> None:
    host = DevHost(
        script_root=args.script_root,
        host=args.host,
        port=args.port,
        state_dir=args.state_dir or args.script_root / ".devhost",
        blob_poll_interval=args.blob_poll_interval,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():  # asked twice: go now
            _exit_now()
        stopping.set()
        threading.Thread(target=_exit_after, args=(STOP_GRACE_S,), daemon=True).start()
        loop.call_soon_threadsafe(stop.set)

    # Plain handlers, not loop.add_signal_handler: they also run while start() blocks the
    # loop (importing the function app and its models takes seconds).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    await host.start()
    try:
        await stop.wait()
    finally:
        await host.stop()


def _exit_after(seconds: float) -> None:
    """Runs on a daemon thread: ends the process if the orderly stop has not ended it."""
    threading.Event().wait(seconds)
    log.warning("still stopping after %g s (work in progress): exiting now", seconds)
    _exit_now()


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas, as MALLOC_ARENA_MAX does (a value set there wins).

    By default each thread that allocates may get its own arena (up to 8 per core), and
    memory freed by the embedded index's native worker threads stays spread over them: eight
    rebuilds of the full-text index at 90,000 rows took a process from 380 to 790 MB, and
    from 350 to 400 MB with two arenas. Must run before threads start.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no arenas to cap)
        return
    m_arena_max = -8  # from glibc's malloc.h
    libc.mallopt(m_arena_max, arenas)


def main() -> None:
    limit_malloc_arenas()
    args = parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
    )
    # The SDKs' HTTP logging would print every request to Azurite.
    logging.getLogger("azure").setLevel(logging.WARNING)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
