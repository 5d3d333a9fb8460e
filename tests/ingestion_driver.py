"""Drives ingestion the way a user does (blobs dropped into a container, the status API read
back) and tells when the app has caught up, without sleeping on timing.

Every metadata file written or deleted is one request in the container's sync state (the
blob trigger and the Event Grid emulation each deliver it once); after each such change the
driver waits until the app has counted it, and ``wait_idle`` then waits until no run is left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from imagerag import config, naming
from imagerag.ports import DocumentState

T = TypeVar("T")


def wait(predicate: Callable[[], T], timeout: float, message: str) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not there yet
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}: {last!r}")
        time.sleep(0.1)


def metadata(*paths: str, descriptions: dict[str, str] | None = None) -> bytes:
    described = descriptions or {}
    entries = [
        {"image_blob_path": p, "description": described.get(p, f"a photo of {p}")} for p in paths
    ]
    return json.dumps(entries).encode()


class Driver:
    def __init__(
        self, host: Any, blob_service: BlobServiceClient, container: str, work: str, data: Path
    ) -> None:
        self.host = host
        self.blob_service = blob_service
        self.container = blob_service.get_container_client(container)
        self.name = container
        self.work = work
        self.data = data
        self.requests = 0

    # ------------------------------------------------------------------ what a user does

    def put_metadata(self, name: str, data: bytes) -> None:
        self.container.upload_blob(name, data, overwrite=True)
        self._counted()

    def delete_metadata(self, name: str) -> None:
        self.container.delete_blob(name)
        self._counted()

    def put_image(self, path: str, data: bytes) -> None:
        self.container.upload_blob(path, data, overwrite=True)

    def delete_image(self, path: str) -> None:
        self.container.delete_blob(path)

    def _counted(self, timeout: float = 60) -> None:
        self.requests += 1
        wait(
            lambda: self.state()["requested"] >= self.requests,
            timeout,
            f"request {self.requests} to be counted",
        )

    # ------------------------------------------------------------------ what the app says

    def state(self) -> dict[str, Any]:
        blob = self.blob_service.get_blob_client(self.work, f"containers/{self.name}.json")
        try:
            return dict(json.loads(blob.download_blob().readall()))
        except ResourceNotFoundError:
            return {"requested": 0, "handled": 0, "running": False}

    def wait_idle(self, timeout: float = 180) -> dict[str, Any]:
        """Every request counted so far has been run, and no run is going on."""

        def idle() -> dict[str, Any] | None:
            state = self.state()
            done = state["requested"] >= self.requests and state["handled"] == state["requested"]
            return state if done and not state["running"] else None

        return wait(idle, timeout, "the container's runs to finish")

    def listed(self) -> list[dict[str, Any]]:
        """Every run and notice, newest first (every page)."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.host.base_url}/api/ingestions?top=100"
        while url is not None:
            response = requests.get(url, timeout=30)
            assert response.status_code == 200, response.text
            found.extend(response.json()["value"])
            url = response.json().get("nextLink")
        return found

    def runs(self) -> list[dict[str, Any]]:
        return [r for r in self.listed() if r["kind"] == "run" and r["container"] == self.name]

    def record(self, record_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.host.base_url}/api/ingestions/{record_id}", timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def latest(self) -> dict[str, Any]:
        return self.record(self.runs()[0]["instanceId"])

    def report(self, record_id: str) -> dict[str, Any]:
        url = f"{self.host.base_url}/api/ingestions/{record_id}/report"
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # ------------------------------------------------------------------ the index

    def index(self) -> Any:
        return self.index_named(naming.index_name_for(self.name))

    def index_named(self, name: str) -> Any:
        return config.image_index(config.Settings(local_data_dir=self.data), name)

    def documents(self) -> dict[str, DocumentState]:
        states = self.index().all_states()
        assert len({s.id for s in states}) == len(states), "duplicate documents"
        return {s.id: s for s in states}

    def doc_id(self, path: str) -> str:
        return naming.document_id(self.name, path)
