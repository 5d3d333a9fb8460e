"""The offline answerer: a short answer stitched from the retrieved descriptions, with [docN]."""

from __future__ import annotations

import re
from collections.abc import Iterator

from imagerag.ports import AnswerRequest, GroundingDocument

MODEL_NAME = "imagerag-extractive"
MAX_DESCRIPTION_CHARS = 300
MAX_OTHERS = 4
# A description that itself contains "[doc3]" would read as a citation: neutralised.
_MARKER = re.compile(r"\[(doc\d+)\]", re.IGNORECASE)


class ExtractiveAnswerer:
    """imagerag.ports.Answerer without a model: the best match's description first, then the
    other matches, each followed by its [docN] marker. Needs no images."""

    @property
    def model(self) -> str:
        return MODEL_NAME

    @property
    def sees_images(self) -> bool:
        return False

    def stream_answer(self, request: AnswerRequest) -> Iterator[str]:
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


def _name(document: GroundingDocument) -> str:
    return f'"{document.title}"' if document.title else "an image"


def _clause(text: str) -> str:
    text = _MARKER.sub(r"(\1)", " ".join(text.split()))
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[: MAX_DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return text.rstrip(" .") or "(no description)"
