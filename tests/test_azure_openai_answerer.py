"""The openai-SDK answerer against a local service that checks the chat-completions contract."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fakes.openai_service import BROKEN, THROTTLED, FakeOpenAIService
from sample_images import picture_bytes

from imagerag.adapters.azure_openai import MAX_IMAGES, AzureOpenAIAnswerer, build_messages
from imagerag.chat import completion
from imagerag.ports import AnswererError, AnswerRequest, GroundingDocument

API_VERSION = "2024-10-21"


@pytest.fixture
def service() -> Iterator[FakeOpenAIService]:
    server = FakeOpenAIService().start()
    yield server
    server.stop()


def image_url(seed: int) -> str:
    return completion.grounding_data_url(picture_bytes(seed))


def request(documents: int, prompt_images: int = 1, in_scope: bool = True) -> AnswerRequest:
    parts: list[dict[str, object]] = [{"type": "text", "text": "Which of these is my photo?"}]
    parts += [
        {"type": "image_url", "image_url": {"url": image_url(100 + i)}}
        for i in range(prompt_images)
    ]
    return AnswerRequest(
        messages=[{"role": "user", "content": parts}],
        documents=[
            GroundingDocument(f"doc{i}", f"picture number {i}", f"p{i}.jpg", image_url(i))
            for i in range(1, documents + 1)
        ],
        role_information="You answer about pictures.",
        in_scope=in_scope,
    )


def azure(service: FakeOpenAIService, deployment: str = "gpt-4o", **auth: object):
    options = {"key": None, "token_provider": None, **auth}
    return AzureOpenAIAnswerer.for_azure(
        endpoint=service.endpoint,
        deployment=deployment,
        api_version=API_VERSION,
        max_retries=0,
        **options,  # type: ignore[arg-type]
    )


def test_azure_with_key_streams_an_answer_naming_the_documents(service):
    answerer = azure(service, key="test-key")
    deltas = list(answerer.stream_answer(request(documents=3)))
    assert len(deltas) > 3  # streamed word by word, as the service does
    assert "".join(deltas) == "I was given 4 images and documents [doc1] [doc2] [doc3]."
    seen = service.requests[-1]
    assert (seen.deployment, seen.api_version, seen.auth) == ("gpt-4o", API_VERSION, "api-key")
    assert seen.body["stream"] is True
    messages = seen.body["messages"]
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("You answer about pictures.")
    assert "not available in the retrieved data" in messages[0]["content"]
    # Documents come just before the question, each label followed by its image.
    documents = messages[-2]["content"]
    assert [p["type"] for p in documents[1:3]] == ["text", "image_url"]
    assert documents[1]["text"] == "doc1 (p1.jpg): picture number 1"
    assert messages[-1]["content"][0]["text"] == "Which of these is my photo?"


def test_azure_with_an_entra_token_provider(service):
    calls = []

    def token() -> str:
        calls.append(1)
        return "test-token"

    answerer = azure(service, token_provider=token)
    assert "[doc1]" in "".join(answerer.stream_answer(request(documents=1, in_scope=False)))
    assert service.requests[-1].auth == "bearer" and calls
    assert "not available" not in service.requests[-1].body["messages"][0]["content"]


def test_at_most_ten_images_reach_the_model_the_prompt_image_counted(service):
    answerer = azure(service, key="test-key")
    answer = "".join(answerer.stream_answer(request(documents=12, prompt_images=2)))
    assert service.requests[-1].image_count == MAX_IMAGES
    # Every document keeps its text label even when its image did not fit.
    assert "[doc12]" in answer
    many_prompt_images = build_messages(request(documents=1, prompt_images=12))
    parts = many_prompt_images[-1]["content"]
    assert sum(p["type"] == "image_url" for p in parts) == MAX_IMAGES
    assert parts[1] == {"type": "text", "text": "(an earlier image, omitted)"}


def test_compatible_server_by_base_url(service):
    answerer = AzureOpenAIAnswerer.for_compatible(
        base_url=f"{service.endpoint}/v1", model="gpt-4o", key="test-key", max_retries=0
    )
    assert "[doc2]" in "".join(answerer.stream_answer(request(documents=2)))
    seen = service.requests[-1]
    assert (seen.deployment, seen.api_version, seen.auth) == ("gpt-4o", None, "bearer")


def test_wrong_key_and_unknown_deployment_are_answerer_errors_with_their_status(service):
    with pytest.raises(AnswererError) as caught:
        list(azure(service, key="wrong").stream_answer(request(documents=1)))
    assert caught.value.status == 401
    with pytest.raises(AnswererError) as caught:
        list(azure(service, "nope", key="test-key").stream_answer(request(documents=1)))
    assert caught.value.status == 404


def test_throttling_is_429_with_retry_after_and_failures_503(service):
    with pytest.raises(AnswererError) as caught:
        list(azure(service, THROTTLED, key="test-key").stream_answer(request(documents=1)))
    assert (caught.value.status, caught.value.retry_after_s) == (429, 2.0)
    with pytest.raises(AnswererError) as caught:
        list(azure(service, BROKEN, key="test-key").stream_answer(request(documents=1)))
    assert caught.value.status == 503


def test_an_unreachable_endpoint_is_503():
    answerer = AzureOpenAIAnswerer.for_azure(
        endpoint="http://127.0.0.1:9",
        deployment="gpt-4o",
        api_version=API_VERSION,
        key="k",
        max_retries=0,
    )
    with pytest.raises(AnswererError) as caught:
        list(answerer.stream_answer(request(documents=1)))
    assert caught.value.status == 503


def test_the_fake_service_refuses_what_the_real_one_refuses(service):
    import requests

    url = f"{service.endpoint}/openai/deployments/gpt-4o/chat/completions"
    message = {"role": "user", "content": "hi"}
    assert (
        requests.post(
            url, json={"messages": [message]}, headers={"api-key": "test-key"}, timeout=5
        ).status_code
        == 404
    )
    ok = requests.post(
        url,
        params={"api-version": API_VERSION},
        json={"messages": [message]},
        headers={"api-key": "test-key"},
        timeout=5,
    )
    assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"
    not_image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"text").decode()},
    }
    bad = requests.post(
        url,
        params={"api-version": API_VERSION},
        json={"messages": [{"role": "user", "content": [not_image]}]},
        headers={"api-key": "test-key"},
        timeout=5,
    )
    assert bad.status_code == 400
