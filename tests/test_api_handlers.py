"""The api/ handlers called in-process, as the worker calls them: a blob ``InputStream``, an
``EventGridEvent`` or a FastAPI ``Request`` in, a stand-in Durable client that keeps
instances in a dict, and the session's Azurite for the app's own state blobs (no devhost).
The same rules are driven end to end through devhost in test_ingestion_e2e.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import azure.functions as func
import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.functions.blob import InputStream
from fastapi_request import fastapi_request

from api import ingestion as api
from imagerag import config, naming
from imagerag.ingestion import runs, sync_state
from imagerag.ports import InvalidBlobNameError
from orchestrations.ingest import SYNC_ORCHESTRATOR

CREATED = "2026-12-01T10:00:00Z"
FILE = b'[{"image_blob_path": "a.jpg", "description": "a"}]'


class FakeDurableClient:
    """The DurableOrchestrationClient methods the handlers use, over a dict of instances."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.started: list[tuple[str, str, Any]] = []
        self.on_status: list[str] = []  # statuses to report next (a completing instance)

    def add(self, instance_id: str, name: str, status: str, **fields: Any) -> None:
        self.instances[instance_id] = {
            "name": name,
            "instanceId": instance_id,
            "createdTime": CREATED,
            "lastUpdatedTime": CREATED,
            "runtimeStatus": status,
            **fields,
        }

    async def get_status(self, instance_id: str, **_: Any) -> DurableOrchestrationStatus:
        record = self.instances.get(instance_id)
        if record is not None and self.on_status:
            record["runtimeStatus"] = self.on_status.pop(0)
        return DurableOrchestrationStatus(**record) if record else DurableOrchestrationStatus()

    async def start_new(self, name: str, instance_id: str, client_input: Any) -> str:
        existing = self.instances.get(instance_id)
        if existing and existing["runtimeStatus"] in ("Pending", "Running"):
            raise RuntimeError("an instance with this id is already running")
        self.started.append((name, instance_id, json.loads(json.dumps(client_input))))
        self.add(instance_id, name, "Running", input=client_input)
        return instance_id


@pytest.fixture
def app_settings(azurite, monkeypatch) -> config.Settings:
    container = f"h{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("IMAGES_CONTAINER", container)
    monkeypatch.setenv("WORK_CONTAINER", f"{container}-work")
    config.settings.cache_clear()
    yield config.settings()
    config.settings.cache_clear()


def drop(client: FakeDurableClient, name: str, data: bytes) -> None:
    trigger = api.ingest_metadata_trigger.build().get_user_function().client_function
    asyncio.run(trigger(InputStream(data=data, name=name), client))


def deliver(client: FakeDurableClient, event_type: str, container: str, blob: str) -> None:
    event = func.EventGridEvent(
        id=str(uuid.uuid4()),
        data={"url": f"http://127.0.0.1/devstoreaccount1/{container}/{blob}"},
        topic="/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/z",
        subject=f"/blobServices/default/containers/{container}/blobs/{blob}",
        event_type=event_type,
        event_time=None,
        data_version="",
    )
    handler = api.metadata_events.build().get_user_function().client_function
    asyncio.run(handler(event, client))


def state(settings: config.Settings) -> dict[str, Any]:
    store = config.blob_store(settings)
    return sync_state.read_state(store, settings.work_container, settings.images_container)


def sync_id(settings: config.Settings) -> str:
    return naming.sync_instance_id(settings.images_container)


# --------------------------------------------------------------------------- triggers


def test_a_metadata_file_starts_the_containers_sync(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    drop(client, f"{container}/metadata.json", FILE)
    assert client.started == [
        (
            SYNC_ORCHESTRATOR,
            sync_id(app_settings),
            {"container": container, "index": f"{container}-v", "epoch": 1},
        )
    ]
    found = state(app_settings)
    assert (found["requested"], found["changes"], found["running"]) == (1, 1, True)
    assert found["reasons"][-1]["metadata"] == f"{container}/metadata.json"


def test_more_files_while_the_sync_runs_start_nothing_more(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    drop(client, f"{container}/metadata.json", FILE)
    drop(client, f"{container}/metadata-2.json", FILE)
    assert len(client.started) == 1
    assert state(app_settings)["requested"] == 2


def test_a_sync_that_failed_is_started_again_by_the_next_request(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    drop(client, f"{container}/metadata.json", FILE)
    client.instances[sync_id(app_settings)]["runtimeStatus"] = "Failed"  # running flag left on
    drop(client, f"{container}/metadata-2.json", FILE)
    assert [instance for _, instance, _ in client.started] == [sync_id(app_settings)] * 2


def test_the_caller_that_turns_the_sync_on_waits_for_the_last_one_to_complete(
    app_settings,
) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    drop(client, f"{container}/metadata.json", FILE)
    store = config.blob_store(app_settings)
    sync_state.begin_run(store, app_settings.work_container, container)
    assert not sync_state.end_run(store, app_settings.work_container, container, epoch=1)
    # The old orchestration has decided to end but still reports Running for two polls.
    client.on_status = ["Running", "Running", "Completed"]
    drop(client, f"{container}/metadata-2.json", FILE)
    assert [payload["epoch"] for _, _, payload in client.started] == [1, 2]


def test_an_identical_reupload_asks_for_a_run_without_a_content_change(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    store = config.blob_store(app_settings)
    drop(client, f"{container}/metadata.json", FILE)
    sha256 = hashlib.sha256(FILE).hexdigest()
    sync_state.record_planned_files(
        store, app_settings.work_container, container, {"metadata.json": sha256}
    )
    drop(client, f"{container}/metadata.json", FILE)
    found = state(app_settings)
    assert (found["requested"], found["changes"]) == (2, 1)


@pytest.mark.parametrize(
    ("name", "rule"),
    [("metadata-dir/metadata-sub.json", "out of the folder"), ("metadata-x/metadata.json", "x'")],
)
def test_a_nested_metadata_name_gets_a_notice_not_a_run(app_settings, name, rule) -> None:
    # The trigger's path "metadata{name}.json" also matches across folders.
    client = FakeDurableClient()
    container = app_settings.images_container
    drop(client, f"{container}/{name}", FILE)
    assert client.started == []
    notice = runs.read_record(
        config.blob_store(app_settings),
        app_settings.work_container,
        naming.notice_id(container, name),
    )
    assert notice is not None and rule in notice["rule"] and notice["phase"] == "ignored"


def test_a_folder_named_like_a_metadata_file_is_ignored_quietly(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    drop(client, f"{container}/metadata-old/photo.json", FILE)
    assert client.started == []
    store = config.blob_store(app_settings)
    assert runs.list_records(store, app_settings.work_container) == []


def test_deleting_a_metadata_file_asks_for_a_run(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    deliver(client, api.BLOB_DELETED, container, "metadata.json")
    assert len(client.started) == 1
    assert state(app_settings)["reasons"][-1]["event"] == "deleted"


def test_events_of_other_containers_and_other_files_start_nothing(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    deliver(client, api.BLOB_DELETED, "somebody-else", "metadata.json")
    deliver(client, api.BLOB_DELETED, container, "notes.json")
    deliver(client, api.BLOB_CREATED, container, "metadata.json")  # the blob trigger's job
    assert client.started == []
    assert state(app_settings)["requested"] == 0


def test_a_near_miss_name_created_gets_a_notice(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    deliver(client, api.BLOB_CREATED, container, "Metadata.json")
    status, body = call(api.list_ingestions, client)
    assert status == 200
    [notice] = body["value"]
    assert (notice["kind"], notice["phase"]) == ("notice", "ignored")
    status, record = call(api.get_ingestion, client, instanceId=notice["instanceId"])
    assert "starts with 'metadata'" in record["rule"]


# --------------------------------------------------------------------------- status routes


def call(
    handler: Any, client: FakeDurableClient, url: str = "http://app/api/ingestions", **route: str
) -> tuple[int, Any]:
    request = fastapi_request("GET", url, route_params=route)
    user = handler.build().get_user_function()
    function = getattr(user, "client_function", user)
    args = (request, client) if function is not user else (request,)
    response = asyncio.run(function(*args))
    return response.status_code, json.loads(response.body)


def record(settings: config.Settings, number: int, **fields: Any) -> str:
    run_id = naming.run_id(settings.images_container, number)
    runs.update_record(
        config.blob_store(settings),
        settings.work_container,
        run_id,
        container=settings.images_container,
        **fields,
    )
    return run_id


def test_the_list_shows_runs_newest_first(app_settings) -> None:
    first = record(app_settings, 1, phase="completed", total=3, done=3)
    second = record(app_settings, 2, phase="ingesting", total=5, done=1)
    status, body = call(api.list_ingestions, FakeDurableClient())
    assert status == 200
    assert [(i["instanceId"], i["phase"], i["done"]) for i in body["value"]] == [
        (second, "ingesting", 1),
        (first, "completed", 3),
    ]


def pages(url: str) -> list[list[str]]:
    """The ids of each page, following nextLink to the end."""
    found: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        status, body = call(api.list_ingestions, FakeDurableClient(), next_url)
        assert status == 200, body
        found.append([item["instanceId"] for item in body["value"]])
        next_url = body.get("nextLink")
    return found


def test_the_list_pages_newest_first_with_next_links(app_settings) -> None:
    ids = [record(app_settings, n, phase="completed", total=1, done=1) for n in range(1, 8)]
    newest_first = ids[::-1]
    assert pages("http://app/api/ingestions?top=3") == [
        newest_first[0:3],
        newest_first[3:6],
        newest_first[6:7],
    ]
    assert pages("http://app/api/ingestions") == [newest_first]  # default page size: 20
    status, body = call(api.list_ingestions, FakeDurableClient(), "http://app/api/ingestions?top=7")
    assert status == 200 and "nextLink" not in body and len(body["value"]) == 7


def test_the_next_link_keeps_the_query_and_runs_added_meanwhile_wait_for_page_one(
    app_settings,
) -> None:
    ids = [record(app_settings, n, phase="completed") for n in range(1, 6)]
    status, first = call(
        api.list_ingestions, FakeDurableClient(), "http://app/api/ingestions?top=2&code=k"
    )
    assert [i["instanceId"] for i in first["value"]] == [ids[4], ids[3]]
    link = first["nextLink"]
    assert link.startswith("http://app/api/ingestions?") and "code=k" in link and "top=2" in link
    # runs created and updated between two pages: neither repeated nor skipped
    added = [record(app_settings, n, phase="planning") for n in (6, 7)]
    record(app_settings, 3, phase="completed", done=1)
    rest = pages(link)
    assert sum(rest, []) == [ids[2], ids[1], ids[0]]
    assert pages("http://app/api/ingestions?top=100") == [[*added[::-1], *ids[::-1]]]


@pytest.mark.parametrize("top", ["0", "101", "x", "-1", "2.5"])
def test_a_bad_top_is_a_400_naming_the_field(app_settings, top: str) -> None:
    url = f"http://app/api/ingestions?top={top}"
    status, body = call(api.list_ingestions, FakeDurableClient(), url)
    assert status == 400 and body["error"]["field"] == "top"


def test_a_notice_written_again_moves_to_the_top_once(app_settings) -> None:
    client = FakeDurableClient()
    container = app_settings.images_container
    deliver(client, api.BLOB_CREATED, container, "Metadata.json")
    run = record(app_settings, 1, phase="completed")
    deliver(client, api.BLOB_CREATED, container, "Metadata.json")
    [[notice, first]] = pages("http://app/api/ingestions")
    assert first == run and notice == naming.notice_id(container, "Metadata.json")


@pytest.mark.parametrize("handler", [api.get_ingestion, api.get_ingestion_report])
def test_a_malformed_id_is_a_400_naming_the_field(app_settings, handler: Any) -> None:
    status, body = call(handler, FakeDurableClient(), instanceId="../etc")
    assert status == 400
    assert body["error"]["code"] == "InvalidInstanceId"
    assert body["error"]["field"] == "instanceId"
    assert naming.INSTANCE_ID_PATTERN in body["error"]["message"]


@pytest.mark.parametrize("handler", [api.get_ingestion, api.get_ingestion_report])
def test_an_unknown_run_is_a_404(app_settings, handler: Any) -> None:
    status, body = call(handler, FakeDurableClient(), instanceId=naming.run_id("x", 7))
    assert (status, body["error"]["code"]) == (404, "NotFound")


def test_the_report_of_a_running_ingestion_is_not_ready(app_settings) -> None:
    run_id = record(app_settings, 1, phase="ingesting")
    status, body = call(api.get_ingestion_report, FakeDurableClient(), instanceId=run_id)
    assert (status, body["error"]["code"]) == (404, "ReportNotReady")
    assert "ingesting" in body["error"]["message"]


def test_a_run_whose_orchestration_failed_says_so_without_a_traceback(app_settings) -> None:
    run_id = record(app_settings, 1, phase="ingesting", done=3)
    store = config.blob_store(app_settings)
    assert runs.fail_run(store, app_settings.work_container, run_id) is True
    assert runs.fail_run(store, app_settings.work_container, run_id) is False  # once
    client = FakeDurableClient()  # the record says it all: the instance store is not asked
    status, body = call(api.get_ingestion, client, instanceId=run_id)
    assert status == 200
    assert body["phase"] == "failed" and body["error"]["code"] == "IngestionFailed"
    assert body["done"] == 3 and "Traceback" not in json.dumps(body)
    [listed] = call(api.list_ingestions, client)[1]["value"]
    assert listed["phase"] == "failed"


def test_a_run_that_ended_is_not_failed_afterwards(app_settings) -> None:
    run_id = record(app_settings, 1, phase="completed")
    store = config.blob_store(app_settings)
    assert runs.fail_run(store, app_settings.work_container, run_id) is False
    assert call(api.get_ingestion, FakeDurableClient(), instanceId=run_id)[1]["phase"] == (
        "completed"
    )


def test_a_continuation_token_storage_rejects_is_a_400(app_settings, monkeypatch) -> None:
    def rejected(*args: Any, **kwargs: Any) -> Any:
        raise InvalidBlobNameError("storage rejected the name: OutOfRangeInput")

    monkeypatch.setattr(runs, "list_page", rejected)
    url = "http://app/api/ingestions?continuationToken=not-a-token"
    status, body = call(api.list_ingestions, FakeDurableClient(), url)
    assert status == 400 and body["error"]["field"] == "continuationToken"
