"""The offline answerer: a short answer stitched from the retrieved descriptions, with [docN]."""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator

from imagerag.ports import NO_OPTIONS, AnswerRequest, GenerationOptions, GroundingDocument

MODEL_NAME = "imagerag-extractive"
MAX_DESCRIPTION_CHARS = 300
MAX_OTHERS = 4
# A description that itself contains "[doc3]" would read as a citation: neutralised.
_MARKER = re.compile(r"\[(doc\d+)\]", re.IGNORECASE)
# What a token is here (no model tokenizer): a word, or one other non-space character.
_TOKEN = re.compile(r"\w+|[^\w\s]")
# The rest (sampling, penalties, seed, user, response formats) would change nothing in a
# stitched answer: they are refused by the endpoint instead of silently ignored.
HONOURED = frozenset({"max_tokens", "max_completion_tokens", "stop"})


class ExtractiveAnswerer:
    """imagerag.ports.Answerer without a model: the best match's description first, then the
    other matches, each followed by its [docN] marker. Needs no images."""

    @property
    def model(self) -> str:
        return MODEL_NAME

    @property
    def sees_images(self) -> bool:
        return False

    @property
    def honoured_options(self) -> frozenset[str]:
        return HONOURED

    def stream_answer(
        self, request: AnswerRequest, *, options: GenerationOptions = NO_OPTIONS
    ) -> Generator[str, None, str]:
        """The answer within ``stop`` and the token limit; returns the finish reason."""
        limit = min(
            (n for n in (options.max_tokens, options.max_completion_tokens) if n is not None),
            default=None,
        )
        if not options.stop and limit is None:
            yield from self._answer(request)
            return "stop"
        return (yield from limited("".join(self._answer(request)), options.stop, limit))

    def _answer(self, request: AnswerRequest) -> Iterator[str]:
        documents = request.documents
        if not documents:
            yield "I found no matching images in your data."
            return
        best, others = documents[0], documents[1 : 1 + MAX_OTHERS]
        yield f"The closest match in your data is {_name(best)}: "
        yield f"{_clause(best.content)} [{best.label}]."
        if others:
            yield "\n\nOther similar images: "
            for i, doc in enumerate(others):
                separator = "; " if i < len(others) - 1 else "."
                yield f"{_name(doc)}: {_clause(doc.content)} [{doc.label}]{separator}"


def limited(text: str, stop: tuple[str, ...], max_tokens: int | None) -> Generator[str, None, str]:
    """``text`` up to the first stop sequence (excluded) and at most ``max_tokens`` tokens,
    as the model's parameters do; returns "length" when the limit cut it, else "stop"."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    text = text[:cut]
    reason = "stop"
    if max_tokens is not None:
        tokens = list(_TOKEN.finditer(text))
        if len(tokens) > max_tokens:
            text, reason = text[: tokens[max_tokens - 1].end()], "length"
    if text:
        yield text
    return reason


def _name(document: GroundingDocument) -> str:
    return f'"{document.title}"' if document.title else "an image"


def _clause(text: str) -> str:
    text = _MARKER.sub(r"(\1)", " ".join(text.split()))
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[: MAX_DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return text.rstrip(" .") or "(no description)"
