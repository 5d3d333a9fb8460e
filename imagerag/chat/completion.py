"""One grounded completion: the prompt image, retrieval through the ports, the answerer, and
the citations (with URLs a client can open)."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from imagerag.chat.errors import ChatError, invalid, unavailable
from imagerag.chat.prompt_image import ImageUrlPolicy, fetch_image_url, load_prompt_image
from imagerag.chat.request import ChatRequest, DataSource, P
from imagerag.chat.response import Citation, build_context
from imagerag.image_links import ImageLinks
from imagerag.ports import (
    Answerer,
    AnswererError,
    AnswerRequest,
    BlobNotFoundError,
    BlobStore,
    FieldMapping,
    FieldMappingError,
    GroundingDocument,
    ImageIndex,
    ImageIndexError,
    IndexModelMismatchError,
    IndexNotFoundError,
    InvalidFilterError,
    SearchHit,
    Vectorizer,
    VectorizerInputError,
    VectorizerUnavailableError,
)
from imagerag.retrieval import Query, RetrievalResult, SearchOptions, extract_query, retrieve

logger = logging.getLogger(__name__)

# The sentence Azure OpenAI On Your Data answers with when in_scope finds nothing.
NOT_FOUND_ANSWER = (
    "The requested information is not available in the retrieved data. "
    "Please try another query or topic."
)
# Images shown to a vision model: downscaled so ten fit a request comfortably.
GROUNDING_IMAGE_SIDE = 768
GROUNDING_IMAGE_QUALITY = 85


@dataclass
class ChatDependencies:
    vectorizer: Callable[[], Vectorizer]  # built on first use (the local model loads weights)
    index: Callable[[str], ImageIndex]
    answerer: Answerer
    blobs: BlobStore | None
    image_policy: ImageUrlPolicy = field(default_factory=ImageUrlPolicy)
    # hit -> URL the client can open (SAS or this app's image route); None keeps the index's.
    citation_url: Callable[[SearchHit], str | None] = lambda hit: None
    fetch: Callable[..., bytes] = fetch_image_url
    # index name -> the field mapping its registered data source gives, if any.
    mapping_for: Callable[[str], FieldMapping | None] = lambda index: None


@dataclass(frozen=True)
class ChatOutcome:
    context: dict[str, Any]  # message.context: citations, intent, retrieved documents
    deltas: Iterator[str]  # the answer as it is written
    model: str  # the model that writes it


def complete(request: ChatRequest, deps: ChatDependencies) -> ChatOutcome:
    """Retrieve for the conversation and start answering. Every ChatError that retrieval can
    raise is raised here; answering errors surface while ``deltas`` is consumed."""
    source = request.data_source
    query = extract_query(request.messages)
    image = _query_image(query, deps)
    if not query.text and image is None:
        raise invalid(
            f"messages[{len(request.messages) - 1}].content",
            "the last user message has neither text nor an image to search with",
        )
    result = _retrieve(query.text, image, source, deps)
    citations = [_citation(doc.hit, deps) for doc in result.documents]
    context = build_context(result, citations, source.include_contexts, deps.citation_url)
    model = deps.answerer.model
    if not result.documents and source.in_scope:
        return ChatOutcome(context=context, deltas=iter([NOT_FOUND_ANSWER]), model=model)
    grounding = [
        GroundingDocument(
            label=f"doc{i}",
            content=doc.hit.content,
            title=doc.hit.title,
            image_url=_grounding_image(doc.hit, deps) if deps.answerer.sees_images else None,
        )
        for i, doc in enumerate(result.documents, start=1)
    ]
    answer = AnswerRequest(
        messages=request.messages,
        documents=grounding,
        role_information=source.role_information,
        in_scope=source.in_scope,
    )
    return ChatOutcome(context=context, deltas=_answer(deps.answerer, answer), model=model)


def _query_image(query: Query, deps: ChatDependencies) -> bytes | None:
    if query.image is None:
        return None
    return load_prompt_image(query.image.url, query.image.param, deps.image_policy, deps.fetch)


def _retrieve(
    text: str, image: bytes | None, source: DataSource, deps: ChatDependencies
) -> RetrievalResult:
    options = SearchOptions(
        top_n=source.top_n,
        strictness=source.strictness,
        fields=source.fields or deps.mapping_for(source.index_name) or FieldMapping(),
        filter=source.filter,
        query_type=source.query_type,
    )
    try:
        return retrieve(
            text=text,
            image=image,
            vectorizer=deps.vectorizer(),
            index=deps.index(source.index_name),
            options=options,
        )
    except IndexNotFoundError:
        raise ChatError(
            404,
            f"index {source.index_name!r} does not exist",
            param=f"{P}.index_name",
            code="index_not_found",
        ) from None
    except IndexModelMismatchError as exc:
        raise ChatError(409, str(exc), param=f"{P}.index_name", code="model_mismatch") from None
    except InvalidFilterError as exc:
        raise invalid(f"{P}.filter", f"the filter is not valid: {exc}") from None
    except FieldMappingError as exc:
        param = f"{P}.fields_mapping.{exc.mapping}"
        raise invalid(param, f"the index cannot serve this mapping: {exc}") from None
    except ImageIndexError as exc:
        # The index cannot run this query with this mapping (a field it lacks, other dims).
        raise invalid(f"{P}.fields_mapping", f"the index cannot be searched: {exc}") from None
    except VectorizerInputError as exc:
        raise ChatError(
            400, f"the vectorizer refused the query: {exc}", param="messages", code="invalid_image"
        ) from None
    except VectorizerUnavailableError as exc:
        raise unavailable("the vectorizer", exc.status, exc.retry_after_s) from None


def _answer(answerer: Answerer, request: AnswerRequest) -> Iterator[str]:
    try:
        yield from answerer.stream_answer(request)
    except AnswererError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
            raise ChatError(
                502,
                f"the answering model refused the request: {exc}",
                code="upstream_error",
                type="server_error",
            ) from None
        raise unavailable("the answering model", exc.status, exc.retry_after_s) from None


def _citation(hit: SearchHit, deps: ChatDependencies) -> Citation:
    return Citation(
        content=hit.content,
        title=hit.title,
        url=deps.citation_url(hit) or hit.url,
        filepath=hit.filepath,
    )


def _grounding_image(hit: SearchHit, deps: ChatDependencies) -> str | None:
    if deps.blobs is None or not hit.url:
        return None
    located = deps.blobs.locate(hit.url)
    if located is None:
        return None
    try:
        return grounding_data_url(deps.blobs.read(*located))
    except BlobNotFoundError:
        logger.warning("grounding image of %s is gone from storage", hit.id)
    except Exception:  # a broken image must not fail the answer: the text label remains
        logger.warning("grounding image of %s could not be prepared", hit.id, exc_info=True)
    return None


def grounding_data_url(data: bytes) -> str:
    """A retrieved image as the model sees it: a JPEG of at most 768 px a side, as data URL."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (GROUNDING_IMAGE_SIDE, GROUNDING_IMAGE_SIDE))
        small = image.convert("RGB")
        small.thumbnail((GROUNDING_IMAGE_SIDE, GROUNDING_IMAGE_SIDE))
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=GROUNDING_IMAGE_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def citation_url(
    hit: SearchHit,
    blobs: BlobStore | None,
    *,
    image_route: str,
    containers: Iterable[str],
    links: ImageLinks,
    expires_in_s: int = 3600,
) -> str | None:
    """Where a citation's image opens: a SAS URL when the store signs, else a signed link to
    this app's image route (``image_route`` ends with '/') for the served containers; None
    keeps the index's own URL."""
    if blobs is None or not hit.url:
        return None
    located = blobs.locate(hit.url)
    if located is None:
        return None
    container, path = located
    signed = blobs.read_url(container, path, expires_in_s=expires_in_s)
    if signed is not None:
        return signed
    if container not in set(containers):
        return None
    return links.sign(image_route, container, path)
