"""Streamed answers leave as the model writes them: the openai SDK against devhost (HTTP
streams, chunked transfer), answered by the contract-checking Azure OpenAI stand-in set to
write slowly (20 deltas, 100 ms apart). The stand-in holds its last delta until the test lets
it go, so "the first delta arrived before the model finished" is a fact, not a timing."""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from app_functions import app_functions
from chat_seed import Seeded, path_of, seed_chat_index
from fakes.openai_service import THROTTLED, FakeOpenAIService
from openapi_contract import assert_chunk, assert_error

from imagerag.chat.endpoint import sse_events
from imagerag.chat.errors import ChatError, unavailable
from imagerag.chat.response import chunk_bodies

API_VERSION = "2024-10-21"
DELTAS = 20
QUESTION = [{"role": "user", "content": "a lighthouse on a rocky coast"}]


@pytest.fixture(scope="module")
def seeded(azurite, tmp_path_factory) -> Seeded:
    return seed_chat_index(azurite.connection_string, tmp_path_factory.mktemp("stream-data"))


@pytest.fixture
def model() -> Iterator[FakeOpenAIService]:
    service = FakeOpenAIService(
        stream_deltas=DELTAS, delta_interval_s=0.1, release=threading.Event(), retry_after_s=1
    ).start()
    yield service
    assert service.release is not None
    service.release.set()
    service.stop()


def model_env(seeded: Seeded, model: FakeOpenAIService, deployment: str) -> dict[str, Any]:
    return seeded.env() | {
        "AZURE_OPENAI_ENDPOINT": model.endpoint,
        "AZURE_OPENAI_KEY": "test-key",
        "AZURE_OPENAI_CHAT_DEPLOYMENT": deployment,
        "AZURE_OPENAI_API_VERSION": API_VERSION,
    }


def body(seeded: Seeded) -> dict[str, Any]:
    return {"data_sources": [{"type": "azure_search", "parameters": {"index_name": seeded.index}}]}


def azure_sdk(base_url: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{base_url}/api",
        api_key="unused",
        api_version=API_VERSION,
        max_retries=0,
    )


def test_the_first_delta_reaches_the_sdk_before_the_model_has_finished(
    devhost, repo_root, seeded, model
):
    host = devhost(repo_root, env=model_env(seeded, model, "gpt-4o"))
    stream = azure_sdk(host.base_url).chat.completions.create(
        model="gpt-4o",
        messages=QUESTION,  # type: ignore[arg-type]
        extra_body=body(seeded),
        stream=True,
    )
    chunks = iter(stream)
    context = next(chunks).choices[0].delta
    assert context.role == "assistant"
    assert context.model_extra is not None
    assert context.model_extra["context"]["citations"][0]["filepath"] == path_of(1)
    first = next(chunks)
    assert first.choices[0].delta.content
    # The stand-in still holds its last delta: the answer is being relayed, not buffered.
    assert not model.stream_finished.is_set()

    assert model.release is not None
    model.release.set()
    rest = list(chunks)
    assert model.stream_finished.is_set()
    contents = [first.choices[0].delta.content, *(c.choices[0].delta.content for c in rest[:-1])]
    assert len(contents) == DELTAS
    assert "".join(c or "" for c in contents).startswith("I was given")
    assert "[doc1]" in "".join(c or "" for c in contents)
    assert rest[-1].choices[0].finish_reason == "stop"
    # What reached the model: the stand-in checked path, api-version, key and body shape.
    seen = model.requests[-1]
    assert (seen.deployment, seen.api_version, seen.auth) == ("gpt-4o", API_VERSION, "api-key")
    assert seen.body["stream"] is True


def test_the_raw_stream_is_chunked_server_sent_events_of_the_spec(
    devhost, repo_root, seeded, model
):
    assert model.release is not None
    model.release.set()
    host = devhost(repo_root, env=model_env(seeded, model, "gpt-4o"))
    response = requests.post(
        f"{host.base_url}/api/openai/deployments/gpt-4o/chat/completions",
        params={"api-version": API_VERSION},
        json={"messages": QUESTION, "stream": True, **body(seeded)},
        stream=True,
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.headers
    events = [line for line in response.iter_lines() if line]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(line.removeprefix(b"data: ")) for line in events[:-1]]
    for chunk in chunks:
        assert_chunk(chunk)
    assert "context" in chunks[0]["choices"][0]["delta"]
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == DELTAS


def test_throttling_after_the_first_byte_is_an_error_event(devhost, repo_root, seeded, model):
    host = devhost(repo_root, env=model_env(seeded, model, THROTTLED))

    # The openai SDK raises the error event as APIError, after the context chunk.
    stream = azure_sdk(host.base_url).chat.completions.create(
        model=THROTTLED,
        messages=QUESTION,  # type: ignore[arg-type]
        extra_body=body(seeded),
        stream=True,
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 1 and received[0].choices[0].delta.role == "assistant"
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "rate_limit_exceeded"

    # On the wire: status 200 (already sent), the context event, one error event, no [DONE].
    response = requests.post(
        f"{host.base_url}/api/chat/completions",
        json={"messages": QUESTION, "stream": True, **body(seeded)},
        timeout=60,
    )
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert len(events) == 2
    error = json.loads(events[1].removeprefix("data: "))
    assert_error(error)
    assert error["error"]["type"] == "rate_limit_error"
    assert "retry after" in error["error"]["message"].lower()

    # Without streaming the same throttling is the HTTP status, with Retry-After.
    plain = requests.post(
        f"{host.base_url}/api/chat/completions",
        json={"messages": QUESTION, **body(seeded)},
        timeout=60,
    )
    assert plain.status_code == 429
    assert plain.headers["Retry-After"] == "1"


def test_the_model_throttling_inside_its_own_stream_ends_ours_with_an_error_event(
    devhost, repo_root, seeded
):
    # The stand-in answers 200, writes 5 deltas, then a 429 error event (its status is out).
    model = FakeOpenAIService(stream_deltas=DELTAS, throttle_after=5, retry_after_s=3).start()
    try:
        host = devhost(repo_root, env=model_env(seeded, model, "gpt-4o"))
        stream = azure_sdk(host.base_url).chat.completions.create(
            model="gpt-4o",
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body=body(seeded),
            stream=True,
        )
        received = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                received.append(chunk)
    finally:
        model.stop()
    assert [bool(c.choices[0].delta.content) for c in received] == [False] + [True] * 5
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["code"] == "rate_limit_exceeded"
    assert raised.value.message.endswith("Please retry after 3 seconds.")


# ------------------------------------------------------------------ the event stream itself


def events_of(deltas: Iterator[str]) -> list[Any]:
    chunks = chunk_bodies(
        completion_id="chatcmpl-1", created=1, model="m", context={"citations": []}, deltas=deltas
    )
    out = []
    for event in sse_events(chunks):
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        data = event[len(b"data: ") : -2]
        out.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return out


def test_each_delta_is_an_event_as_soon_as_it_is_written():
    written: list[str] = []

    def model() -> Iterator[str]:
        for piece in ("a", "b", "c"):
            written.append(piece)
            yield piece

    stream = sse_events(
        chunk_bodies(completion_id="c", created=1, model="m", context={}, deltas=model())
    )
    next(stream)  # the context: nothing written yet
    assert written == []
    next(stream)
    assert written == ["a"]
    events = events_of(iter("xyz"))
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["delta"].get("content") for e in events[1:-2]] == ["x", "y", "z"]
    for chunk in events[:-1]:
        assert_chunk(chunk)


def test_a_failure_after_the_first_byte_ends_the_stream_with_one_error_event():
    def throttled() -> Iterator[str]:
        yield "partial "
        raise unavailable("the answering model", 429, 7.2)

    events = events_of(throttled())
    assert [e["choices"][0]["delta"].get("content") for e in events[:2]] == [None, "partial "]
    assert events[2]["error"]["code"] == "rate_limit_exceeded"
    assert events[2]["error"]["message"].endswith("Please retry after 8 seconds.")
    assert_error(events[2])
    assert len(events) == 3  # no [DONE] after an error

    def broken() -> Iterator[str]:
        raise RuntimeError("a bug")
        yield ""

    events = events_of(broken())
    assert events[1]["error"]["type"] == "server_error"
    assert "a bug" not in events[1]["error"]["message"]

    def refused() -> Iterator[str]:
        raise ChatError(502, "the answering model refused the request", code="upstream_error")
        yield ""

    assert events_of(refused())[1]["error"]["code"] == "upstream_error"


# ------------------------------------------------------------- the app on HTTP streams


def test_every_http_function_speaks_fastapi_as_http_streams_require():
    """With the extension imported the worker checks each HTTP function's annotations against
    FastAPI's types (a classic HttpRequest function would fail indexing), Durable-client
    functions included: their wrapper keeps the user's signature."""
    from fastapi import Request, Response

    checked = []
    for function in app_functions():
        bindings = json.loads(function.get_function_json())["bindings"]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        if trigger["type"] != "httpTrigger":
            continue
        user = function.get_user_function()
        hints = typing.get_type_hints(user)
        assert issubclass(hints[trigger["name"]], Request), function.get_function_name()
        assert issubclass(hints["return"], Response), function.get_function_name()
        if any(b["type"] == "durableClient" for b in bindings):
            checked.append(function.get_function_name())
    assert {"create_datasource", "upload_datasource_files"} <= set(checked)


def test_the_host_is_set_up_for_http_streams(repo_root: Path):
    bicep = (repo_root / "infra" / "app" / "api.bicep").read_text()
    assert "PYTHON_ENABLE_INIT_INDEXING: '1'" in bicep
    local = json.loads((repo_root / "local.settings.example.json").read_text())
    assert local["Values"]["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    requirements = (repo_root / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("azurefunctions-extensions-http-fastapi==") for r in requirements)
