"""Blob events in the shape Azure Storage publishes to its Event Grid system topic.

Shape (Event Grid schema) from "Azure Blob Storage as an Event Grid source"
(learn.microsoft.com/azure/event-grid/event-schema-blob-storage): BlobDeleted carries neither
eTag nor contentLength. The function receives the event through the worker's own converter.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.functions import EventGridEvent, meta
from azure.functions.eventgrid import EventGridEventInConverter

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"

# There is no Azure subscription behind Azurite; the topic keeps Azure's ARM id shape.
DEVHOST_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEVHOST_RESOURCE_GROUP = "devhost"


def storage_topic(account: str) -> str:
    return (
        f"/subscriptions/{DEVHOST_SUBSCRIPTION}/resourceGroups/{DEVHOST_RESOURCE_GROUP}"
        f"/providers/Microsoft.Storage/storageAccounts/{account}"
    )


def blob_subject(container: str, name: str) -> str:
    return f"/blobServices/default/containers/{container}/blobs/{name}"


def event_time(now: datetime | None = None) -> str:
    # Azure writes 7 fractional digits (.NET ticks); the worker's converter trims them.
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def sequencer(seq: int) -> str:
    # Opaque, but ordered by plain string comparison per blob name, as Azure documents.
    return f"{seq:032X}"


def blob_event(
    *,
    event_type: str,
    account: str,
    container: str,
    name: str,
    url: str,
    content_type: str,
    blob_type: str,
    seq: int,
    etag: str | None = None,
    content_length: int | None = None,
) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    data: dict[str, Any] = {
        "api": "PutBlob" if event_type == BLOB_CREATED else "DeleteBlob",
        "clientRequestId": str(uuid.uuid4()),
        "requestId": request_id,
    }
    if event_type == BLOB_CREATED:
        data |= {"eTag": etag, "contentType": content_type, "contentLength": content_length}
    else:
        data["contentType"] = content_type
    data |= {
        "blobType": blob_type,
        "url": url,
        "sequencer": sequencer(seq),
        "storageDiagnostics": {"batchId": str(uuid.uuid4())},
    }
    return {
        "topic": storage_topic(account),
        "subject": blob_subject(container, name),
        "eventType": event_type,
        "eventTime": event_time(),
        "id": request_id,
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


def to_function_argument(event: dict[str, Any]) -> EventGridEvent:
    """What the Python worker hands an eventGridTrigger function for this event."""
    datum = meta.Datum(type="json", value=json.dumps(event))
    decoded = EventGridEventInConverter.decode(datum, trigger_metadata=None)
    assert isinstance(decoded, EventGridEvent)
    return decoded
