"""What both ImageIndex adapters enforce and build the same way: one embedding model per index,
and search hits mapped through a FieldMapping."""

from __future__ import annotations

from collections.abc import Callable

from imagerag.ports import (
    FieldMapping,
    ImageIndexError,
    IndexDocument,
    IndexModelMismatchError,
    ModelInfo,
    SearchHit,
)

# Hits of several content fields join them with this.
CONTENT_SEPARATOR = "\n"


def check_index_model(
    *,
    index: str,
    recorded: ModelInfo | None,
    dims: int | None,
    model: ModelInfo,
    delete_hint: str,
) -> None:
    """IndexModelMismatchError unless the index was made for exactly this model.

    ``index`` names it for the message ("search index 'x'"); ``delete_hint`` says what to
    delete to start again.
    """
    if recorded is not None and (recorded.name, recorded.version, recorded.dimensions) == (
        model.name,
        model.version,
        model.dimensions,
    ):
        return
    held = (
        f"{recorded.name} {recorded.version} ({recorded.dimensions} dimensions)"
        if recorded is not None
        else f"vectors of an unrecorded model ({dims or 'no'} dimensions)"
    )
    raise IndexModelMismatchError(
        f"{index} holds {held} but the vectorizer is {model.name} {model.version} "
        f"({model.dimensions} dimensions); vectors of different models never mix: use a new "
        f"index name, or delete {delete_hint} and ingest again"
    )


def check_documents(
    documents: list[IndexDocument], *, index: str, dims: int | None, recorded: ModelInfo | None
) -> None:
    """Refuse, naming the document, a vector of the wrong length or of another model."""
    for doc in documents:
        if dims is not None and len(doc.image_vector) != dims:
            raise ImageIndexError(
                f"document {doc.id!r} has a {len(doc.image_vector)}-dimensional vector; "
                f"index {index!r} holds {dims} dimensions"
            )
        if recorded is not None and (doc.model_name, doc.model_version) != (
            recorded.name,
            recorded.version,
        ):
            raise IndexModelMismatchError(
                f"document {doc.id!r} was vectorized by {doc.model_name} {doc.model_version}; "
                f"index {index!r} holds {recorded.name} {recorded.version}"
            )


def search_hit(
    *,
    id: str,
    score: float,
    fields: FieldMapping,
    value: Callable[[str | None], str | None],
    thumbnail: bytes | None = None,
) -> SearchHit:
    """A hit whose roles come from ``fields``; ``value(field)`` reads one field (None: absent)."""
    content = [value(name) for name in fields.content_fields]
    return SearchHit(
        id=id,
        score=score,
        content=fields.content_fields_separator.join(c for c in content if c),
        title=value(fields.title_field),
        url=value(fields.url_field),
        filepath=value(fields.filepath_field),
        thumbnail=thumbnail,
    )
