"""Model-based test of the index invariant: after any sequence of a person's actions (metadata
files written, rewritten, deleted and dropped again with overlapping entries; images uploaded,
replaced, deleted; devhost restarted), once the app is idle the index holds exactly what the
metadata files present and the images present call for. A seeded random walk with a bounded
number of steps; bench/lifecycle_walk.py runs longer walks with other seeds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ingestion_driver import Driver
from ingestion_walk import Walk

REPO = Path(__file__).resolve().parent.parent
SEED = 20261201
STEPS = 24
CHECK_EVERY = 6


@pytest.mark.slow
def test_the_index_follows_the_files_whatever_the_order_of_events(
    devhost, blob_service, unique_container, tmp_path
) -> None:
    work = f"{unique_container}-work"
    env = {
        "IMAGES_CONTAINER": unique_container,
        "WORK_CONTAINER": work,
        "LOCAL_DATA_DIR": str(tmp_path / "data"),
        "INGEST_PARTITION_SIZE": "3",
    }

    def start() -> Driver:
        host = devhost(REPO, env=env, state_dir=tmp_path / "state")
        return Driver(host, blob_service, unique_container, work, tmp_path / "data")

    walk = Walk(driver=start(), restart=lambda: _restarted(walk, start), rng=random.Random(SEED))
    for step in range(1, STEPS + 1):
        walk.step()
        if step % CHECK_EVERY == 0:
            found = walk.checkpoint()
            assert found["actual"] == found["wanted"], "\n".join(found["log"])


def _restarted(walk: Walk, start) -> Driver:
    requests = walk.driver.requests
    walk.driver.host.stop()
    driver = start()
    driver.requests = requests
    return driver
