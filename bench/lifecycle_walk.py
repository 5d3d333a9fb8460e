"""Longer random walks of the index invariant (tests/test_ingestion_model.py runs a short one).

    .venv/bin/python bench/lifecycle_walk.py [--seeds 5] [--steps 60] [--check-every 6]

For each seed: a fresh Azurite + devhost, a random walk of a person's actions on one container
(metadata files with overlapping entries written, rewritten, deleted, dropped again; images
uploaded, replaced, deleted; devhost restarted), and at each checkpoint a comparison of the
index with the model. Prints each seed's outcome (and the actions that led to a mismatch),
then one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

from ingestion_driver import Driver  # noqa: E402
from ingestion_walk import Walk  # noqa: E402
from stack import Stack  # noqa: E402

CONTAINER = "walk"


def run_seed(seed: int, steps: int, check_every: int) -> tuple[int, int, float, list[str]]:
    """(checkpoints passed, checkpoints, seconds, log of the first mismatch)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        env = {
            "IMAGES_CONTAINER": CONTAINER,
            "WORK_CONTAINER": f"{CONTAINER}-work",
            "INGEST_PARTITION_SIZE": "3",
        }
        stacks: list[Stack] = []

        def start() -> Driver:
            if stacks:
                stacks[-1].stop_devhost()
                stack = stacks[-1].restart_devhost()
            else:
                stack = Stack(scratch, env=env).__enter__()
                stack.blob_service.create_container(CONTAINER)
            stacks.append(stack)
            host = SimpleNamespace(base_url=stack.base_url)
            driver = Driver(
                host, stack.blob_service, CONTAINER, f"{CONTAINER}-work", scratch / "data"
            )
            return driver

        def restart() -> Driver:
            requests = walk.driver.requests
            driver = start()
            driver.requests = requests
            return driver

        walk = Walk(driver=start(), restart=restart, rng=random.Random(seed))
        passed = checks = 0
        mismatch: list[str] = []
        try:
            for step in range(1, steps + 1):
                walk.step()
                if step % check_every == 0 or step == steps:
                    found = walk.checkpoint()
                    checks += 1
                    if found["actual"] == found["wanted"]:
                        passed += 1
                    elif not mismatch:
                        mismatch = found["log"] + [
                            f"wanted {found['wanted']}",
                            f"actual {found['actual']}",
                        ]
        finally:
            stacks[-1].__exit__(None, None, None)
    return passed, checks, time.perf_counter() - started, mismatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--check-every", type=int, default=6)
    args = parser.parse_args()
    total_passed = total_checks = 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        passed, checks, seconds, mismatch = run_seed(seed, args.steps, args.check_every)
        total_passed += passed
        total_checks += checks
        print(f"seed {seed}: {passed}/{checks} checkpoints in {seconds:.0f} s", flush=True)
        for line in mismatch:
            print(f"    {line}")
    print(
        f"RESULT seeds={args.seeds} steps={args.steps} checkpoints={total_checks} "
        f"passed={total_passed} failed={total_checks - total_passed}"
    )


if __name__ == "__main__":
    main()
