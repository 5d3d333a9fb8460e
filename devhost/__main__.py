"""`python -m devhost`: run function_app.py offline, as `func start` would."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from .host import DevHost


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
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await host.start()
    try:
        await stop.wait()
    finally:
        await host.stop()


def main() -> None:
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
