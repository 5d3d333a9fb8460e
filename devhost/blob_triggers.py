"""Blob triggers by container scan, with receipts keyed by function + blob + ETag like the host.

A blob whose ETag has a receipt never triggers again (across restarts too: receipts live in
the task hub database); a new ETag (the blob was written again) triggers once more. A function
that fails is retried on the next scans, at most MAX_ATTEMPTS times, then given up on (the real
host moves the message to a poison queue).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.functions.blob import InputStream
from azure.storage.blob import BlobServiceClient, ContainerClient

from .durable.store import DurableStore
from .functions import BLOB_TRIGGER, FunctionIndex, FunctionInfo, Invoker
from .settings import resolve_setting_references

log = logging.getLogger("devhost.blob")

MAX_ATTEMPTS = 5


def blob_service_from_setting(connection: str) -> BlobServiceClient:
    """A client for the connection setting, as the host resolves `connection` names."""
    value = os.environ.get(connection)
    if value:  # includes UseDevelopmentStorage=true, which the SDK maps to Azurite
        return BlobServiceClient.from_connection_string(value)
    uri = os.environ.get(f"{connection}__blobServiceUri") or os.environ.get(
        f"{connection}__serviceUri"
    )
    if not uri:
        raise KeyError(
            f"blob trigger connection {connection!r}: "
            f"set {connection} or {connection}__blobServiceUri"
        )
    from azure.identity import DefaultAzureCredential

    client_id = os.environ.get(f"{connection}__clientId")
    return BlobServiceClient(
        uri, credential=DefaultAzureCredential(managed_identity_client_id=client_id)
    )


def path_pattern(blob_path: str) -> tuple[str, str, re.Pattern[str]]:
    """'images/metadata{name}.json' -> ('images', 'metadata', regex for the blob name)."""
    container, _, name_pattern = blob_path.partition("/")
    prefix = name_pattern.split("{", 1)[0]
    regex = ""
    for literal, parameter in re.findall(r"([^{]*)(?:\{([^}]*)\})?", name_pattern):
        regex += re.escape(literal)
        if parameter:
            regex += f"(?P<{parameter}>.*?)"
    return container, prefix, re.compile(f"^{regex}$")


@dataclass
class _Watch:
    info: FunctionInfo
    path: str
    container: str
    prefix: str
    pattern: re.Pattern[str]
    client: ContainerClient
    last_error: str | None = None


class BlobTriggerWatcher:
    def __init__(
        self,
        *,
        index: FunctionIndex,
        store: DurableStore,
        invoker: Invoker,
        client_binding: Callable[[], str],
        interval: float,
    ) -> None:
        self._store = store
        self._invoker = invoker
        self._client_binding = client_binding
        self._interval = interval
        self._watches = []
        for info in index.of_trigger(BLOB_TRIGGER):
            path = resolve_setting_references(info.trigger["path"])
            container, prefix, pattern = path_pattern(path)
            service = blob_service_from_setting(
                info.trigger.get("connection") or "AzureWebJobsStorage"
            )
            self._watches.append(
                _Watch(
                    info, path, container, prefix, pattern, service.get_container_client(container)
                )
            )

    def describe(self) -> list[str]:
        return [f"{w.info.name}: [blobTrigger] {w.path}" for w in self._watches]

    async def run(self) -> None:
        while True:
            for watch in self._watches:
                try:
                    await self.scan(watch)
                    watch.last_error = None
                except Exception as exc:  # storage down or container missing: keep watching
                    if str(exc) != watch.last_error:
                        log.warning(
                            "Cannot scan container %r for %s: %s",
                            watch.container,
                            watch.info.name,
                            str(exc).splitlines()[0],
                        )
                        watch.last_error = str(exc)
            await asyncio.sleep(self._interval)

    async def scan(self, watch: _Watch) -> None:
        blobs = await asyncio.to_thread(
            lambda: list(
                watch.client.list_blobs(name_starts_with=watch.prefix, include=["metadata"])
            )
        )
        for blob in blobs:
            if not watch.pattern.match(blob.name):
                continue
            key = f"{watch.container}/{blob.name}"
            receipt = self._store.receipt(watch.info.name, key, blob.etag)
            if receipt and (receipt[0] == "ok" or receipt[1] >= MAX_ATTEMPTS):
                continue
            attempts = (receipt[1] if receipt else 0) + 1
            outcome = await self._trigger(watch, blob, attempts)
            if outcome is not None:
                self._store.put_receipt(watch.info.name, key, blob.etag, outcome, attempts)

    async def _trigger(self, watch: _Watch, blob: Any, attempts: int) -> str | None:
        blob_client = watch.client.get_blob_client(blob.name)
        try:
            data = await asyncio.to_thread(
                lambda: blob_client.download_blob(
                    etag=blob.etag, match_condition=_if_match()
                ).readall()
            )
        except Exception as exc:
            log.debug("Blob %s changed or vanished before it was read: %s", blob.name, exc)
            return None  # the next scan sees its new ETag
        stream = InputStream(
            data=data,
            name=f"{watch.container}/{blob.name}",
            uri=blob_client.url,
            length=len(data),
            blob_properties={"ETag": blob.etag, "Length": len(data)},
            metadata=dict(blob.metadata or {}),
        )
        durable = self._client_binding() if watch.info.binding_of_type("durableClient") else None
        log.info(
            "Executing 'Functions.%s' (Reason='New blob detected: %s/%s')",
            watch.info.name,
            watch.container,
            blob.name,
        )
        try:
            await self._invoker.call(watch.info, stream, durable_client=durable)
        except Exception:
            log.exception(
                "Executed 'Functions.%s' (Failed, attempt %d of %d)",
                watch.info.name,
                attempts,
                MAX_ATTEMPTS,
            )
            if attempts >= MAX_ATTEMPTS:
                log.error(
                    "Giving up on %s/%s after %d attempts (poison)",
                    watch.container,
                    blob.name,
                    attempts,
                )
            return "failed"
        log.info("Executed 'Functions.%s' (Succeeded)", watch.info.name)
        return "ok"


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified
