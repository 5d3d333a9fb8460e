"""The api/ handlers called in-process, as the worker calls them: ``func.HttpRequest`` or a blob
``InputStream`` in, a stand-in Durable client that keeps instances in a dict (no host, no
storage). The same rules are driven end to end through devhost in test_ingestion_e2e.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import azure.functions as func
import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.functions.blob import InputStream

from api import ingestion as api
from imagerag import naming
from orchestrations.ingest import INGEST_ORCHESTRATOR, INGEST_PARTITION

CREATED = "2026-12-01T10:00:00Z"


class FakeDurableClient:
    """The DurableOrchestrationClient methods the handlers use, over a dict of instances."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.started: list[tuple[str, str, Any]] = []
        self.terminated: list[str] = []
        self.refuse_start = False

    def add(self, instance_id: str, name: str, status: str, **fields: Any) -> None:
        self.instances[instance_id] = {
            "name": name,
            "instanceId": instance_id,
            "createdTime": fields.pop("createdTime", CREATED),
            "lastUpdatedTime": CREATED,
            "runtimeStatus": status,
            **fields,
        }

    def _status(self, record: dict[str, Any]) -> DurableOrchestrationStatus:
        return DurableOrchestrationStatus(**record)

    async def get_status(self, instance_id: str, **_: Any) -> DurableOrchestrationStatus:
        record = self.instances.get(instance_id)
        return self._status(record) if record else DurableOrchestrationStatus()

    async def get_status_by(self, instance_id_prefix: str, **_: Any) -> list[Any]:
        return [
            self._status(r) for i, r in self.instances.items() if i.startswith(instance_id_prefix)
        ]

    async def get_status_all(self) -> list[Any]:
        return [self._status(r) for r in self.instances.values()]

    async def start_new(self, name: str, instance_id: str, client_input: Any) -> str:
        if self.refuse_start:
            raise RuntimeError("an instance with this id is already running")
        self.started.append((name, instance_id, json.loads(json.dumps(client_input))))
        self.add(instance_id, name, "Pending", input=client_input)
        return instance_id

    async def terminate(self, instance_id: str, reason: str) -> None:
        self.terminated.append(instance_id)
        self.instances[instance_id]["runtimeStatus"] = "Terminated"


def drop(client: FakeDurableClient, name: str, data: bytes) -> None:
    trigger = api.ingest_metadata_trigger.build().get_user_function().client_function
    asyncio.run(trigger(InputStream(data=data, name=name), client))


def call(handler: Any, client: FakeDurableClient, **route: str) -> tuple[int, Any]:
    request = func.HttpRequest("GET", "http://app/api/ingestions", body=b"", route_params=route)
    response = asyncio.run(handler.build().get_user_function().client_function(request, client))
    return response.status_code, json.loads(response.get_body())


def ingestion_id(data: bytes, path: str = "metadata.json") -> str:
    return naming.ingestion_instance_id("images", path, hashlib.sha256(data).hexdigest())


FILE = b'[{"image_blob_path": "a.jpg", "description": "a"}]'
EDITED = b'[{"image_blob_path": "b.jpg", "description": "b"}]'


# --------------------------------------------------------------------------- blob trigger


def test_a_new_metadata_file_starts_its_ingestion() -> None:
    client = FakeDurableClient()
    drop(client, "images/metadata.json", FILE)
    assert client.started == [
        (
            INGEST_ORCHESTRATOR,
            ingestion_id(FILE),
            {
                "metadata": {"container": "images", "path": "metadata.json"},
                "sha256": hashlib.sha256(FILE).hexdigest(),
            },
        )
    ]


@pytest.mark.parametrize("name", ["images/metadata-old/photo.json", "images/sub/other.json"])
def test_names_that_are_not_metadata_files_start_nothing(name: str) -> None:
    client = FakeDurableClient()
    drop(client, name, FILE)
    assert client.started == []


@pytest.mark.parametrize("status", ["Running", "Pending", "Completed"])
def test_the_same_content_again_starts_nothing(status: str) -> None:
    client = FakeDurableClient()
    client.add(ingestion_id(FILE), INGEST_ORCHESTRATOR, status, output={"failed": 0})
    drop(client, "images/metadata.json", FILE)
    assert client.started == [] and client.terminated == []


@pytest.mark.parametrize(
    ("status", "output"),
    [("Completed", {"failed": 2}), ("Failed", None), ("Terminated", None)],
)
def test_the_same_content_is_ingested_again_after_failures(status: str, output: Any) -> None:
    client = FakeDurableClient()
    client.add(ingestion_id(FILE), INGEST_ORCHESTRATOR, status, output=output)
    drop(client, "images/metadata.json", FILE)
    assert [instance for _, instance, _ in client.started] == [ingestion_id(FILE)]


def test_a_new_version_stops_the_running_one_and_its_partitions() -> None:
    client = FakeDurableClient()
    older = ingestion_id(FILE)
    client.add(older, INGEST_ORCHESTRATOR, "Running")
    client.add(naming.partition_instance_id(older, 0), INGEST_PARTITION, "Completed")
    client.add(naming.partition_instance_id(older, 1), INGEST_PARTITION, "Running")
    drop(client, "images/metadata.json", EDITED)
    assert client.terminated == [older, naming.partition_instance_id(older, 1)]
    assert [instance for _, instance, _ in client.started] == [ingestion_id(EDITED)]


def test_a_concurrent_start_of_the_same_id_is_not_an_error() -> None:
    client = FakeDurableClient()
    client.refuse_start = True

    async def running(instance_id: str, **_: Any) -> DurableOrchestrationStatus:
        return DurableOrchestrationStatus(
            name=INGEST_ORCHESTRATOR, instanceId=instance_id, runtimeStatus="Running"
        )

    client.get_status = running  # type: ignore[method-assign]
    drop(client, "images/metadata.json", FILE)  # the loser of the race returns quietly

    async def failed(instance_id: str, **_: Any) -> DurableOrchestrationStatus:
        return DurableOrchestrationStatus(
            name=INGEST_ORCHESTRATOR, instanceId=instance_id, runtimeStatus="Failed"
        )

    client.get_status = failed  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="already running"):
        drop(client, "images/metadata.json", FILE)


# --------------------------------------------------------------------------- status routes


def test_the_list_shows_ingestions_newest_first_without_partitions() -> None:
    client = FakeDurableClient()
    first, second = ingestion_id(FILE), ingestion_id(EDITED, "metadata-2.json")
    request = {"metadata": {"container": "images", "path": "metadata.json"}, "sha256": "x"}
    client.add(first, INGEST_ORCHESTRATOR, "Completed", input=request)
    client.add(second, INGEST_ORCHESTRATOR, "Running", createdTime="2026-12-01T11:00:00Z")
    client.add(naming.partition_instance_id(first, 0), INGEST_PARTITION, "Completed")
    status, body = call(api.list_ingestions, client)
    assert status == 200
    assert [(i["instanceId"], i["runtimeStatus"]) for i in body["value"]] == [
        (second, "Running"),
        (first, "Completed"),
    ]
    assert body["value"][1]["metadata"] == "images/metadata.json"


@pytest.mark.parametrize("handler", [api.get_ingestion, api.get_ingestion_report])
def test_a_malformed_id_is_a_400_naming_the_field(handler: Any) -> None:
    status, body = call(handler, FakeDurableClient(), instanceId="../etc")
    assert status == 400
    assert body["error"]["code"] == "InvalidInstanceId"
    assert body["error"]["field"] == "instanceId"
    assert naming.INSTANCE_ID_PATTERN in body["error"]["message"]


@pytest.mark.parametrize("handler", [api.get_ingestion, api.get_ingestion_report])
def test_an_unknown_or_foreign_id_is_a_404(handler: Any) -> None:
    client = FakeDurableClient()
    status, body = call(handler, client, instanceId=ingestion_id(FILE))
    assert (status, body["error"]["code"]) == (404, "NotFound")
    # An instance of another orchestrator is not an ingestion.
    client.add(ingestion_id(FILE), "some_other_orchestrator", "Completed")
    status, body = call(handler, client, instanceId=ingestion_id(FILE))
    assert (status, body["error"]["code"]) == (404, "NotFound")


def test_the_report_of_a_running_ingestion_is_not_ready() -> None:
    client = FakeDurableClient()
    client.add(ingestion_id(FILE), INGEST_ORCHESTRATOR, "Running")
    status, body = call(api.get_ingestion_report, client, instanceId=ingestion_id(FILE))
    assert (status, body["error"]["code"]) == (404, "ReportNotReady")
    assert "Running" in body["error"]["message"]


def test_one_ingestion_shows_its_input_progress_and_output() -> None:
    client = FakeDurableClient()
    progress = {"phase": "ingesting", "total": 3, "done": 1}
    client.add(ingestion_id(FILE), INGEST_ORCHESTRATOR, "Running", customStatus=progress)
    status, body = call(api.get_ingestion, client, instanceId=ingestion_id(FILE))
    assert status == 200
    assert body["runtimeStatus"] == "Running"
    assert body["customStatus"] == progress
    assert body["createdTime"] == CREATED
