"""A seeded random walk of a person's actions on one container, and the model of what the index
must then hold: shared by tests/test_ingestion_model.py and bench/lifecycle_walk.py.

Actions: write, rewrite or delete metadata files whose entries overlap; drop a file again
with the same bytes; upload, replace or delete images; restart devhost. At a checkpoint the
walk drops one metadata file again (runs read images only when a metadata event starts them),
waits until the app is idle, and compares the index with the model: the ids, descriptions and
sources that the metadata files present and the images present call for, and no duplicate.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingestion_driver import Driver
from sample_images import picture_bytes

FILES = ("metadata.json", "metadata-a.json", "metadata-b.json")
IMAGES = tuple(f"img/{i}.jpg" for i in range(8))


@dataclass
class Model:
    """What the person did, and therefore what the index must hold."""

    files: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)  # path -> picture seed

    def expected(self, container: str) -> dict[str, tuple[str, str]]:
        """path -> (description, source): the first file by name that lists a present image
        wins; within one file the last entry for a path wins."""
        wanted: dict[str, tuple[str, str]] = {}
        for name in sorted(self.files):
            listed = {e["image_blob_path"]: e["description"] for e in self.files[name]}
            for path, description in listed.items():
                if path in self.images and path not in wanted:
                    wanted[path] = (description, f"{container}/{name}")
        return wanted


@dataclass
class Walk:
    driver: Driver
    restart: Callable[[], Driver]
    rng: random.Random
    model: Model = field(default_factory=Model)
    log: list[str] = field(default_factory=list)

    def step(self) -> None:
        choices: list[tuple[int, Callable[[], None]]] = [
            (4, self.write_file),
            (1, self.delete_file),
            (2, self.drop_again),
            (3, self.put_image),
            (1, self.delete_image),
            (1, self.restart_host),
        ]
        weights = [w for w, _ in choices]
        [action] = self.rng.choices([a for _, a in choices], weights=weights)
        action()

    def write_file(self) -> None:
        name = self.rng.choice(FILES)
        paths = self.rng.sample(IMAGES, self.rng.randint(1, 5))
        entries = [
            {"image_blob_path": p, "description": f"{p} in {name} #{self.rng.randint(0, 9)}"}
            for p in paths
        ]
        if self.rng.random() < 0.2:  # the same image twice in one file: the last one counts
            entries.append({"image_blob_path": paths[0], "description": "listed again"})
        self.model.files[name] = entries
        self.log.append(f"write {name}: {[e['image_blob_path'] for e in entries]}")
        self.driver.put_metadata(name, json.dumps(entries).encode())

    def delete_file(self) -> None:
        if not self.model.files:
            return self.write_file()
        name = self.rng.choice(sorted(self.model.files))
        del self.model.files[name]
        self.log.append(f"delete {name}")
        self.driver.delete_metadata(name)
        return None

    def drop_again(self) -> None:
        if not self.model.files:
            return self.write_file()
        name = self.rng.choice(sorted(self.model.files))
        self.log.append(f"drop again {name}")
        self.driver.put_metadata(name, json.dumps(self.model.files[name]).encode())
        return None

    def put_image(self) -> None:
        path = self.rng.choice(IMAGES)
        seed = self.rng.randint(0, 40)
        self.model.images[path] = seed
        self.log.append(f"image {path} <- picture {seed}")
        self.driver.put_image(path, picture_bytes(seed, size=(64, 48)))

    def delete_image(self) -> None:
        if not self.model.images:
            return self.put_image()
        path = self.rng.choice(sorted(self.model.images))
        del self.model.images[path]
        self.log.append(f"delete image {path}")
        self.driver.delete_image(path)
        return None

    def restart_host(self) -> None:
        self.log.append("restart devhost")
        self.driver = self.restart()

    def checkpoint(self) -> dict[str, Any]:
        """Drop a file again (or write one), wait until idle, compare with the model."""
        self.drop_again()
        self.driver.wait_idle(timeout=300)
        documents = self.driver.documents()
        actual = {state.id: (state.description, state.source) for state in documents.values()}
        wanted = {
            self.driver.doc_id(path): value
            for path, value in self.model.expected(self.driver.name).items()
        }
        return {"actual": actual, "wanted": wanted, "log": list(self.log)}
