"""devhost emulates the storage account's Event Grid system topic for eventGridTrigger functions.

The app (tests/apps/eventgrid_app) records each event it receives, as the Python worker hands it
over, for the containers of one test (a fresh name prefix per test).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobPrefix, BlobServiceClient

from devhost.event_grid import _top_level_json_blobs

APP = Path(__file__).parent / "apps" / "eventgrid_app"
CREATED = "Microsoft.Storage.BlobCreated"
DELETED = "Microsoft.Storage.BlobDeleted"
MAX_ATTEMPTS = 5  # devhost/blob_triggers.py, shared by both triggers
SCANS = 1.5  # several scans at the fixture's 0.2 s interval


@pytest.fixture
def prefix() -> str:
    return f"eg{uuid.uuid4().hex[:10]}"


@pytest.fixture
def app_env(tmp_path: Path, prefix: str) -> dict[str, str]:
    return {"EVENT_CONTAINER_PREFIX": prefix, "EVENT_LOG": str(tmp_path / "events.jsonl")}


def received(app_env: dict[str, str]) -> list[dict[str, Any]]:
    log = Path(app_env["EVENT_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(event type, container/name) of each event, in arrival order."""
    prefix = "/blobServices/default/containers/"
    return [
        (e["eventType"], e["subject"].removeprefix(prefix).replace("/blobs/", "/", 1))
        for e in events
    ]


def make_containers(blob_service: BlobServiceClient, prefix: str, *suffixes: str) -> list[Any]:
    return [blob_service.create_container(f"{prefix}-{suffix}") for suffix in suffixes]


def test_created_overwritten_deleted_across_containers(
    devhost, app_env, prefix, blob_service, azurite, wait_for
):
    first, second = make_containers(blob_service, prefix, "a", "b")
    host = devhost(APP, env=app_env)
    assert "record_event: [eventGridTrigger]" in host.log_text()

    upload = first.upload_blob("metadata.json", b"[1]")
    second.upload_blob("other.json", b"[2, 3]", content_type="application/json")
    wait_for(lambda: len(received(app_env)) == 2, timeout=30, message="two BlobCreated")
    events = {e["subject"]: e for e in received(app_env)}
    a, b = first.container_name, second.container_name

    created = events[f"/blobServices/default/containers/{a}/blobs/metadata.json"]
    assert created["python_type"] == "EventGridEvent"
    assert created["client_type"] == "DurableOrchestrationClient"
    assert created["eventType"] == CREATED
    assert created["topic"].endswith(
        "/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
    )
    assert created["topic"].startswith("/subscriptions/")
    assert created["dataVersion"] == ""
    assert created["eventTime"]
    data = created["data"]
    assert data["api"] == "PutBlob"
    assert data["eTag"] == upload.get_blob_properties().etag
    assert data["contentLength"] == 3
    assert data["blobType"] == "BlockBlob"
    assert data["url"] == f"{azurite.blob_endpoint}/{a}/metadata.json"
    assert set(data) == {
        "api",
        "clientRequestId",
        "requestId",
        "eTag",
        "contentType",
        "contentLength",
        "blobType",
        "url",
        "sequencer",
        "storageDiagnostics",
    }
    other = events[f"/blobServices/default/containers/{b}/blobs/other.json"]
    assert other["data"]["contentType"] == "application/json"
    assert other["data"]["contentLength"] == 6

    # Overwrite: a new ETag is a second BlobCreated; an unchanged blob publishes nothing.
    time.sleep(SCANS)
    assert len(received(app_env)) == 2
    rewritten = first.upload_blob("metadata.json", b"[1, 2, 3, 4]", overwrite=True)
    wait_for(lambda: len(received(app_env)) == 3, timeout=30, message="the second BlobCreated")
    again = received(app_env)[2]
    assert summary([again]) == [(CREATED, f"{a}/metadata.json")]
    assert again["data"]["eTag"] == rewritten.get_blob_properties().etag != data["eTag"]
    assert again["data"]["contentLength"] == 12
    assert again["id"] != created["id"]

    first.delete_blob("metadata.json")
    wait_for(lambda: len(received(app_env)) == 4, timeout=30, message="BlobDeleted")
    deleted = received(app_env)[3]
    assert summary([deleted]) == [(DELETED, f"{a}/metadata.json")]
    assert deleted["data"]["api"] == "DeleteBlob"
    assert deleted["data"]["url"] == data["url"]
    assert "eTag" not in deleted["data"] and "contentLength" not in deleted["data"]
    # Per blob, the sequencer orders events by plain string comparison.
    sequencers = [e["data"]["sequencer"] for e in (created, again, deleted)]
    assert sequencers == sorted(sequencers) and len(set(sequencers)) == 3


def test_only_top_level_json_blobs_any_case(devhost, app_env, prefix, blob_service, wait_for):
    (container,) = make_containers(blob_service, prefix, "names")
    name = container.container_name
    devhost(APP, env=app_env)

    for blob in ("a/b.json", "x.jpg", "notes.jsonl", "Meta.JSON", "z.json"):
        container.upload_blob(blob, b"{}")
    wait_for(lambda: len(received(app_env)) >= 2, timeout=30, message="the .json blobs")
    time.sleep(SCANS)
    assert sorted(summary(received(app_env))) == [
        (CREATED, f"{name}/Meta.JSON"),
        (CREATED, f"{name}/z.json"),
    ]


def test_restart_neither_repeats_creations_nor_misses_deletions(
    devhost, app_env, prefix, blob_service, wait_for
):
    (container,) = make_containers(blob_service, prefix, "restart")
    name = container.container_name
    container.upload_blob("keep.json", b"[]")
    container.upload_blob("gone.json", b"[]")
    host = devhost(APP, env=app_env)  # blobs present before the first scan are created events
    wait_for(lambda: len(received(app_env)) == 2, timeout=30, message="two BlobCreated")
    host.stop()

    container.delete_blob("gone.json")  # while devhost is down
    container.upload_blob("new.json", b"[]")
    devhost(APP, env=app_env)  # same state directory
    wait_for(lambda: len(received(app_env)) == 4, timeout=30, message="the missed events")
    time.sleep(SCANS)
    assert sorted(summary(received(app_env)[2:])) == [
        (CREATED, f"{name}/new.json"),
        (DELETED, f"{name}/gone.json"),
    ]
    assert len(received(app_env)) == 4


def test_failing_function_is_retried_then_given_up(
    devhost, app_env, prefix, blob_service, wait_for
):
    failing, fine = make_containers(blob_service, prefix, "fail", "ok")
    host = devhost(APP, env=app_env)
    failing.upload_blob("bad.json", b"[]")
    fine.upload_blob("good.json", b"[]")

    def attempts() -> list[dict[str, Any]]:
        return [e for e in received(app_env) if "-fail/" in e["subject"]]

    wait_for(lambda: len(attempts()) == MAX_ATTEMPTS, timeout=30, message="five attempts")
    time.sleep(SCANS)
    assert len(attempts()) == MAX_ATTEMPTS
    assert len({e["id"] for e in attempts()}) == 1  # the same event each time, as Event Grid
    assert [e for e in received(app_env) if "-ok/" in e["subject"]]  # others are not held up
    log = host.log_text()
    assert f"Failed, attempt {MAX_ATTEMPTS} of {MAX_ATTEMPTS}" in log
    assert "RuntimeError: cannot handle" in log
    assert "after 5 attempts" in log

    host.stop()
    devhost(APP, env=app_env)  # receipts survive: a given-up event stays given up
    time.sleep(SCANS)
    assert len(attempts()) == MAX_ATTEMPTS


def test_a_scan_lists_the_top_level_json_blobs_as_the_sdk_does(
    blob_service: BlobServiceClient, unique_container: str
) -> None:
    container = blob_service.get_container_client(unique_container)
    names = ["metadata.json", "A b é.JSON", "r&d <1>.json", "photo.jpg", "dir/metadata.json"]
    for name in names:
        container.upload_blob(name, b"[]")
    expected = {
        item.name: (item.etag, item.size, item.content_settings.content_type)
        for item in container.walk_blobs(delimiter="/")
        if not isinstance(item, BlobPrefix) and item.name.lower().endswith(".json")
    }
    listed = {
        blob.findtext("Name"): (
            blob.findtext("Properties/Etag"),
            int(blob.findtext("Properties/Content-Length")),
            blob.findtext("Properties/Content-Type"),
        )
        for blob in _top_level_json_blobs(container)
    }
    assert listed == expected
    assert sorted(listed) == ["A b é.JSON", "metadata.json", "r&d <1>.json"]
