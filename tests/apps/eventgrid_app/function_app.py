"""A function app with one Event Grid triggered function that records what it receives.

Azurite is shared by the whole test session, so the function records only events of
containers whose name starts with EVENT_CONTAINER_PREFIX, one JSON line per call in EVENT_LOG.
Events of a container ending in "-fail" are recorded and then fail the function.
"""

import json
import os

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp()


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def record_event(event: func.EventGridEvent, client) -> None:
    container = event.subject.split("/")[4]
    if not container.startswith(os.environ["EVENT_CONTAINER_PREFIX"]):
        return
    record = {
        "python_type": type(event).__name__,
        "client_type": type(client).__name__,
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "dataVersion": event.data_version,
        "data": event.get_json(),
    }
    with open(os.environ["EVENT_LOG"], "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    if container.endswith("-fail"):
        raise RuntimeError(f"cannot handle {event.subject}")
