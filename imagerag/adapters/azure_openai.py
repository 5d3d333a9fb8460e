"""Answerer on the ``openai`` SDK: Azure OpenAI (a vision deployment such as gpt-5.6-terra) or any
OpenAI-compatible server (e.g. a local vision model) by base URL."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionChunk

from imagerag.adapters.retry_after import parse_retry_after
from imagerag.ports import (
    NO_OPTIONS,
    AnswererError,
    AnswerRequest,
    GenerationOptions,
    GroundingDocument,
)

logger = logging.getLogger(__name__)

# Vision input limit of the service: images per request, prompt images included.
MAX_IMAGES = 10
DEFAULT_ROLE = "You are an AI assistant that helps people find information in their images."
GROUNDING_RULES = (
    "Answer from the retrieved documents only. Each document is an image with its "
    "description, labelled doc1, doc2, ... Cite every fact with the label in brackets, e.g. "
    "[doc1]. Compare the user's image with the documents' images when the user sends one."
)
IN_SCOPE_RULE = (
    "If the documents do not contain the answer, reply exactly: The requested information is "
    "not available in the retrieved data. Please try another query or topic."
)


# Every GenerationOptions field goes to the model as the chat-completions parameter it is.
HONOURED = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "user",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "response_format",
    }
)


class AzureOpenAIAnswerer:
    """imagerag.ports.Answerer over a chat-completions endpoint; streams the model's deltas."""

    def __init__(self, *, client: openai.OpenAI, model: str) -> None:
        self._client = client
        self._model = model

    @classmethod
    def for_azure(
        cls,
        *,
        endpoint: str,
        deployment: str,
        api_version: str,
        key: str | None = None,
        token_provider: Callable[[], str] | None = None,
        max_retries: int = 2,
        timeout_s: float = 120.0,
    ) -> AzureOpenAIAnswerer:
        if key is None and token_provider is None:
            raise ValueError("Azure OpenAI needs a key or an Entra token provider")
        client = openai.AzureOpenAI(
            azure_endpoint=endpoint,
            api_version=api_version,
            api_key=key,
            azure_ad_token_provider=None if key else token_provider,
            max_retries=max_retries,
            timeout=timeout_s,
        )
        # With AzureOpenAI the model argument is the deployment (it goes into the path).
        return cls(client=client, model=deployment)

    @classmethod
    def for_compatible(
        cls,
        *,
        base_url: str,
        model: str,
        key: str | None = None,
        max_retries: int = 2,
        timeout_s: float = 120.0,
    ) -> AzureOpenAIAnswerer:
        # Local servers usually ignore the key, but the SDK insists on one.
        client = openai.OpenAI(
            base_url=base_url, api_key=key or "unused", max_retries=max_retries, timeout=timeout_s
        )
        return cls(client=client, model=model)

    @property
    def model(self) -> str:
        return self._model

    @property
    def sees_images(self) -> bool:
        return True

    @property
    def honoured_options(self) -> frozenset[str]:
        return HONOURED

    def stream_answer(
        self, request: AnswerRequest, *, options: GenerationOptions = NO_OPTIONS
    ) -> Generator[str, None, str]:
        """The model's deltas; returns its finish reason ("length" when max_tokens cut it)."""
        messages = build_messages(request)
        reason = "stop"
        try:
            stream = self._client.chat.completions.create(
                model=self._model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                **request_options(options),
            )
            for chunk in cast("Iterator[ChatCompletionChunk]", stream):
                # Azure sends chunks without choices (content-filter results): skipped.
                if not chunk.choices:
                    continue
                if chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
                if chunk.choices[0].finish_reason:
                    reason = chunk.choices[0].finish_reason
            return reason
        except openai.RateLimitError as exc:
            raise AnswererError(
                f"model throttled: {exc.message}",
                status=429,
                retry_after_s=parse_retry_after(exc.response.headers),
            ) from exc
        except openai.APIStatusError as exc:
            logger.warning("model call failed with HTTP %d", exc.status_code)
            raise AnswererError(
                f"model call failed: {exc.message}",
                status=503 if exc.status_code >= 500 else exc.status_code,
                retry_after_s=parse_retry_after(exc.response.headers),
            ) from exc
        except openai.APIConnectionError as exc:  # timeouts included
            logger.warning("model unreachable: %s", type(exc).__name__)
            raise AnswererError("model unreachable", status=503) from exc
        except openai.APIError as exc:  # an error event inside the model's stream (status 200)
            logger.warning("model stream ended by an error event")
            raise AnswererError(
                f"model stream failed: {exc.message}",
                status=429 if _throttling(exc.body) else 503,
                retry_after_s=_retry_after_in(exc.message),
            ) from exc


def _throttling(error: object) -> bool:
    return isinstance(error, dict) and str(error.get("code")) in ("429", "rate_limit_exceeded")


def _retry_after_in(message: str) -> float | None:
    """The delay a throttling message names ("Please retry after 2 seconds.")."""
    found = re.search(r"retry after (\d+) seconds?", message, re.IGNORECASE)
    return float(found.group(1)) if found else None


def request_options(options: GenerationOptions) -> dict[str, Any]:
    """The given options as chat-completions arguments (``stop`` as the list it is)."""
    given = options.given()
    if "stop" in given:
        given["stop"] = list(given["stop"])
    return given


def build_messages(request: AnswerRequest) -> list[dict[str, Any]]:
    """System rules, the conversation, and the documents as a user message just before the
    question (images go in user messages only), within the per-request image limit."""
    system = "\n\n".join(
        part
        for part in (
            request.role_information or DEFAULT_ROLE,
            GROUNDING_RULES,
            IN_SCOPE_RULE if request.in_scope else None,
        )
        if part
    )
    conversation, prompt_images = _limit_conversation_images(request.messages)
    documents = _documents_message(request.documents, MAX_IMAGES - prompt_images)
    return [{"role": "system", "content": system}, *conversation[:-1], documents, conversation[-1]]


def _limit_conversation_images(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], int]:
    """Keeps the latest MAX_IMAGES prompt images; older ones become a text note."""
    budget = MAX_IMAGES
    limited: list[dict[str, Any]] = []
    for message in reversed(messages):
        content = message.get("content")
        if not isinstance(content, list):
            limited.append(message)
            continue
        parts: list[dict[str, Any]] = []
        for part in reversed(content):
            if part.get("type") == "image_url":
                if budget == 0:
                    parts.append({"type": "text", "text": "(an earlier image, omitted)"})
                    continue
                budget -= 1
            parts.append(part)
        limited.append({**message, "content": list(reversed(parts))})
    return list(reversed(limited)), MAX_IMAGES - budget


def _documents_message(documents: list[GroundingDocument], image_budget: int) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "Retrieved documents:"}]
    for document in documents:
        title = f" ({document.title})" if document.title else ""
        parts.append({"type": "text", "text": f"{document.label}{title}: {document.content}"})
        if document.image_url and image_budget > 0:
            parts.append({"type": "image_url", "image_url": {"url": document.image_url}})
            image_budget -= 1
    if not documents:
        parts.append({"type": "text", "text": "(none were found)"})
    return {"role": "user", "content": parts}
