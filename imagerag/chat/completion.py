"""One grounded completion: the prompt image, retrieval through the ports, the answerer, and
the citations (with URLs a client can open)."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from PIL import Image

from imagerag.chat import source_params
from imagerag.chat.errors import ChatError, invalid, unavailable
from imagerag.chat.generation import refuse_unhonoured
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
    SemanticConfigurationError,
    Vectorizer,
    VectorizerInputError,
    VectorizerUnavailableError,
)
from imagerag.retrieval import (
    Query,
    QueryTypeError,
    RetrievalResult,
    SearchOptions,
    extract_query,
    retrieve,
)

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
    # What a request's endpoint / embedding_dependency must name (None: embedded ones).
    search_endpoint: str | None = None
    vectorizer_endpoint: str | None = None


@dataclass(frozen=True)
class ChatOutcome:
    context: dict[str, Any]  # message.context: citations, intent, retrieved documents
    deltas: Iterator[str]  # the answer as it is written (the first choice)
    model: str  # the model that writes it
    more: tuple[Iterator[str], ...] = ()  # the other choices when the request asks n > 1
    # finish_reason per choice, final once that choice's deltas are consumed.
    finish: list[str] = field(default_factory=lambda: ["stop"])


def complete(request: ChatRequest, deps: ChatDependencies) -> ChatOutcome:
    """Retrieve for the conversation and start answering. Every ChatError that retrieval can
    raise is raised here; answering errors surface while ``deltas`` is consumed."""
    source = request.data_source
    model = deps.answerer.model
    refuse_unhonoured(request.options, deps.answerer.honoured_options, model)
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
    if not result.documents and source.in_scope:
        return _outcome(context, model, request.n, lambda: iter([NOT_FOUND_ANSWER]))
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
    return _outcome(
        context,
        model,
        request.n,
        lambda: deps.answerer.stream_answer(answer, options=request.options),
    )


def _outcome(
    context: dict[str, Any], model: str, n: int, start: Callable[[], Iterator[str]]
) -> ChatOutcome:
    """``n`` choices, each its own answer (one model call per choice, made when read)."""
    finish = ["stop"] * n
    streams = [_answer(start, finish, i) for i in range(n)]
    return ChatOutcome(
        context=context, deltas=streams[0], model=model, more=tuple(streams[1:]), finish=finish
    )


def _query_image(query: Query, deps: ChatDependencies) -> bytes | None:
    if query.image is None:
        return None
    return load_prompt_image(query.image.url, query.image.param, deps.image_policy, deps.fetch)


def _retrieve(
    text: str, image: bytes | None, source: DataSource, deps: ChatDependencies
) -> RetrievalResult:
    vectorizer = deps.vectorizer()
    source_params.check(
        where=P,
        endpoint=source.endpoint,
        search_endpoint=deps.search_endpoint,
        dependency=source.embedding_dependency,
        vectorizer_model=vectorizer.model.name,
        vectorizer_endpoint=deps.vectorizer_endpoint,
    )
    options = SearchOptions(
        top_n=source.top_n,
        strictness=source.strictness,
        fields=source.fields or deps.mapping_for(source.index_name) or FieldMapping(),
        filter=source.filter,
        query_type=source.query_type,
        semantic_configuration=source.semantic_configuration,
        allow_partial_result=source.allow_partial_result,
    )
    try:
        return retrieve(
            text=text,
            image=image,
            vectorizer=vectorizer,
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
    except SemanticConfigurationError as exc:
        raise invalid(f"{P}.semantic_configuration", str(exc)) from None
    except QueryTypeError as exc:
        raise invalid(f"{P}.query_type", str(exc)) from None
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


def _answer(start: Callable[[], Iterator[str]], finish: list[str], i: int) -> Iterator[str]:
    """One choice's deltas; its finish reason is what the answerer's generator returns."""
    try:
        # An answerer's generator may return its finish reason (see Answerer.stream_answer).
        reason = yield from cast("Generator[str, None, Any]", start())
        finish[i] = reason if reason in ("stop", "length") else "stop"
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
