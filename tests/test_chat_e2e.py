"""Grounded chat end to end: the openai SDK against devhost, Azurite, the local vectorizer and
index, and the extractive answerer. The index is seeded through the ports (not ingestion)."""

from __future__ import annotations

import base64
import io
from typing import Any

import openai
import pytest
import requests
from chat_seed import DESCRIPTIONS, Seeded, path_of, seed_chat_index
from PIL import Image
from sample_images import altered_copy

API_VERSION = "2024-10-21"
P = "data_sources[0].parameters"


@pytest.fixture(scope="module")
def seeded(azurite, tmp_path_factory) -> Seeded:
    return seed_chat_index(azurite.connection_string, tmp_path_factory.mktemp("chat-data"))


@pytest.fixture
def host(devhost, seeded, repo_root):
    return devhost(repo_root, env=seeded.env())


def data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def image_question(data: bytes, question: str = "What is this?") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": question},
                {"type": "image_url", "image_url": {"url": data_url(data)}},
            ],
        }
    ]


def source(seeded: Seeded, **parameters: Any) -> dict[str, Any]:
    return {
        "data_sources": [
            {
                "type": "azure_search",
                "parameters": {"index_name": seeded.index, **parameters},
            }
        ]
    }


def context_of(message: Any) -> dict[str, Any]:
    return dict(message.model_extra["context"])


def sdk(host) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{host.base_url}/api", api_key="unused", max_retries=0)


def azure_sdk(host) -> openai.AzureOpenAI:
    # Functions put every HTTP route under the route prefix ("api"), so the Azure-style path
    # /openai/deployments/... lives under {host}/api.
    return openai.AzureOpenAI(
        azure_endpoint=f"{host.base_url}/api",
        api_key="unused",
        api_version=API_VERSION,
        max_retries=0,
    )


def third_scale_copy(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    small = image.resize((image.width // 3, image.height // 3), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


def test_a_third_scale_copy_and_a_60_percent_crop_cite_their_original_first(host, seeded):
    client = sdk(host)
    for seed in (3, 6):
        original = seeded.originals[seed]
        for query in (third_scale_copy(original), altered_copy(original, crop=0.6)):
            completion = client.chat.completions.create(
                model="anything",
                messages=image_question(query),  # type: ignore[arg-type]
                extra_body=source(seeded),
            )
            message = completion.choices[0].message
            assert context_of(message)["citations"][0]["filepath"] == path_of(seed)
            assert "[doc1]" in (message.content or "")


def test_a_cropped_reencoded_copy_cites_its_original_first(host, seeded):
    client = sdk(host)
    for seed in (3, 6):
        query = altered_copy(seeded.originals[seed])
        completion = client.chat.completions.create(
            model="anything",
            messages=image_question(query),  # type: ignore[arg-type]
            extra_body=source(
                seeded, include_contexts=["citations", "intent", "all_retrieved_documents"]
            ),
        )
        message = completion.choices[0].message
        context = context_of(message)
        first = context["citations"][0]
        assert first["filepath"] == path_of(seed)
        assert first["content"] == DESCRIPTIONS[seed]
        assert "[doc1]" in (message.content or "")
        assert DESCRIPTIONS[seed] in (message.content or "")
        assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
        retrieved = context["all_retrieved_documents"]
        # Kept documents carry no filter_reason at all; dropped ones say why.
        assert {d.get("filter_reason", "kept") for d in retrieved} <= {"kept", "score"}
        assert retrieved[0]["filepath"] == path_of(seed)

        # The citation URL opens the image itself (served by this app from Azurite).
        image = requests.get(first["url"], timeout=30)
        assert image.status_code == 200
        assert image.headers["Content-Type"] == "image/jpeg"
        assert image.content == seeded.originals[seed]


def test_the_azure_style_path_with_the_azure_sdk(host, seeded):
    client = azure_sdk(host)
    completion = client.chat.completions.create(
        model="my-gpt-4o",
        messages=image_question(altered_copy(seeded.originals[1])),  # type: ignore[arg-type]
        extra_body=source(seeded, top_n_documents=2),
    )
    # The model that answered (offline: the extractive answerer), not the name the client sent.
    assert completion.model == "imagerag-extractive"
    citations = context_of(completion.choices[0].message)["citations"]
    assert len(citations) <= 2
    assert citations[0]["filepath"] == path_of(1)

    # An earlier turn's image is searched when the last turn has only text.
    follow_up = [
        *image_question(altered_copy(seeded.originals[5])),
        {"role": "assistant", "content": "A boat [doc1]."},
        {"role": "user", "content": "Tell me more about it."},
    ]
    completion = client.chat.completions.create(
        model="my-gpt-4o",
        messages=follow_up,
        extra_body=source(seeded),  # type: ignore[arg-type]
    )
    assert context_of(completion.choices[0].message)["citations"][0]["filepath"] == path_of(5)


def test_a_text_question_finds_images_by_description_in_the_default_index(host, seeded):
    completion = sdk(host).chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "Do I have a picture of a lighthouse?"}],
    )
    message = completion.choices[0].message
    context = context_of(message)
    assert context["citations"][0]["filepath"] == path_of(1)
    assert "lighthouse" in (message.content or "") and "[doc1]" in (message.content or "")
    assert "lighthouse" in context["intent"]

    nothing = sdk(host).chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "zeppelin"}],
        extra_body=source(seeded),
    )
    assert nothing.choices[0].message.content == (
        "The requested information is not available in the retrieved data. "
        "Please try another query or topic."
    )


def test_a_paraphrase_finds_its_picture_by_meaning(host, seeded):
    # No content word in common with "a lighthouse on a rocky coast at sunset".
    question = "a tall beacon guiding ships beside the ocean"
    assert not set(question.split()) & set(DESCRIPTIONS[1].split()) - {"a", "on", "at"}
    completion = sdk(host).chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": question}],
        extra_body=source(seeded),
    )
    message = completion.choices[0].message
    assert context_of(message)["citations"][0]["filepath"] == path_of(1)
    assert "[doc1]" in (message.content or "")
    # Full text only (query_type simple) has nothing to go on.
    simple = sdk(host).chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": question}],
        extra_body=source(seeded, query_type="simple"),
    )
    assert context_of(simple.choices[0].message)["citations"] == []


def test_streaming_yields_context_first_then_content_then_ends(host, seeded):
    stream = sdk(host).chat.completions.create(
        model="anything",
        messages=image_question(altered_copy(seeded.originals[0])),  # type: ignore[arg-type]
        extra_body=source(seeded),
        stream=True,
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.model_extra["context"]["citations"][0]["filepath"] == path_of(0)
    contents = [c.choices[0].delta.content for c in chunks[1:] if c.choices[0].delta.content]
    assert len(contents) > 1
    assert "[doc1]" in "".join(contents)
    assert chunks[-1].choices[0].finish_reason == "stop"

    raw = requests.post(
        f"{host.base_url}/api/chat/completions",
        json={"messages": [{"role": "user", "content": "lighthouse"}], "stream": True},
        timeout=60,
    )
    assert raw.headers["Content-Type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    # param and code are strings in the inference document: absent rather than null.
    assert {"message", "type"} <= set(body["error"]) <= {"message", "type", "param", "code"}
    assert None not in body["error"].values()
    return dict(body["error"])


def test_malformed_requests_get_the_documented_errors(host, seeded):
    client = sdk(host)
    question = [{"role": "user", "content": "lighthouse"}]

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="m",
            messages=question,
            extra_body=source(seeded, strictness=9),  # type: ignore[arg-type]
        )
    assert error_of(bad.value)["param"] == f"{P}.strictness"

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="m",
            messages=question,  # type: ignore[arg-type]
            extra_body={"data_sources": [{"type": "azure_search", "parameters": {}}]},
        )
    assert error_of(bad.value)["param"] == f"{P}.index_name"

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="m",
            messages=question,  # type: ignore[arg-type]
            extra_body={
                "data_sources": [
                    {"type": "azure_search", "parameters": {"index_name": "no-such-index-v"}}
                ]
            },
        )
    assert error_of(missing.value)["code"] == "index_not_found"

    not_an_image = image_question(b"just some text, not a picture")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="m", messages=not_an_image)  # type: ignore[arg-type]
    assert error_of(bad.value)["param"] == "messages[0].content[1].image_url.url"

    with pytest.raises(openai.APIStatusError) as too_large:
        client.chat.completions.create(
            model="m",
            messages=image_question(b"\xff" * (21 * 1024 * 1024)),  # type: ignore[arg-type]
        )
    assert too_large.value.status_code == 413
    assert error_of(too_large.value)["code"] == "image_too_large"

    private = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "this?"},
                {"type": "image_url", "image_url": {"url": "http://127.0.0.1:10000/x.jpg"}},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="m", messages=private)  # type: ignore[arg-type]
    assert error_of(bad.value)["code"] == "image_url_not_allowed"

    no_version = requests.post(
        f"{host.base_url}/api/openai/deployments/gpt-4o/chat/completions",
        json={"messages": question},
        timeout=30,
    )
    assert no_version.status_code == 400
    assert no_version.json()["error"]["param"] == "api-version"
