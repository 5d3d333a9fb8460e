"""Retrieval for grounded chat: which query to run, how ranked lists fuse, what strictness drops.

The query comes from the conversation (the last user turn's text, and its image or else the most
recent earlier user image). Up to three ranked lists are searched and fused with weighted
Reciprocal Rank Fusion (k = 60, as Azure AI Search does):

- ``image``: the prompt image vectorized, image-to-image over the image vector field (where
  the model and the index keep verification thumbnails, the nearest hits re-ordered by
  matching the pictures: :mod:`imagerag.verification`);
- ``text_vector``: the text vectorized, text-to-image (only where the model embeds text);
- ``text``: full-text over the content (description) fields;
- ``description``: the text's sentence embedding against the descriptions' (only where the
  index stores description vectors: the embedded index; it finds paraphrases, which share no
  word with the description).

Strictness rule (documented for users in :data:`STRICTNESS_RULE`):

- a vector hit passes if its cosine similarity is at least the model's absolute floor for the
  strictness AND at least ``best - gap`` where ``best`` is that list's top score (relative cut:
  weak tails of a strong match are dropped even when they clear the floor); the image hit that
  verification matched best to the picture itself also passes, whatever its cosine, when its
  ``match`` reaches the strictness's ``SURE_MATCH`` well ahead of the next best (see
  :mod:`imagerag.verification`);
- a full-text hit passes if its rank in the text list is within the strictness's rank limit
  (engine text scores are not comparable across queries, so rank is the only fair cut) and its
  content covers enough of the query's content words, IDF-weighted (:func:`covering_hits`);
- a document is kept if it passes in at least one list; the rest are reported with
  ``filter_reason: "score"``. Kept documents are ordered by fused score; ``top_n`` are returned.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from imagerag import verification
from imagerag.ports import (
    FieldMapping,
    FieldMappingError,
    ImageIndex,
    ImageIndexError,
    IndexModelMismatchError,
    IndexNotFoundError,
    InvalidFilterError,
    ModelInfo,
    SearchHit,
    SemanticConfigurationError,
    Vectorizer,
    VectorizerInputError,
    VectorizerUnavailableError,
)

logger = logging.getLogger(__name__)

RRF_K = 60
# When the prompt has an image, its text is mostly an instruction ("what is this?"): the
# text lists then count half in the fusion, so a word match cannot outrank the picture itself.
TEXT_WEIGHT_WITH_IMAGE = 0.5
# Candidates fetched per list before fusion and strictness (then top_n are kept).
MIN_CANDIDATES = 20
CANDIDATES_PER_RESULT = 4
# What a query may cost: only the first words of the last user turn are searched. A full-text
# query's cost grows with its terms (a 25 MB question once made the engine try to allocate
# 59 GB); 64 words is more than any question needs (Azure AI Vision embeds at most 70).
MAX_QUERY_WORDS = 64
MAX_QUERY_CHARS = 1000

ListName = Literal["image", "text_vector", "text", "description"]

# The lists of one query are independent, so they are searched side by side: the text lists
# while the prompt image is vectorized (the longest step). One pool for all requests.
_SEARCH_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="retrieval-search")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Per strictness 1..5 (index 0..4): absolute cosine floors and relative gaps."""

    image_floor: tuple[float, float, float, float, float]
    text_vector_floor: tuple[float, float, float, float, float]
    gap: tuple[float, float, float, float, float]


# efficientnet-lite0 (R-MAC at two scales), measured on bench/retrieval_quality.py's set (120
# real photo tiles, their quarters indexed as hard negatives, 600 edited copies re-encoded at
# JPEG quality 30; brute force): a copy scores 0.57 / 0.72 / 0.89 against its original (1st /
# 5th / 50th percentile); the best document of another photo 0.57 median, 0.69 at the 95th
# percentile, 0.75 at most. Floors 0.6 / 0.68 / 0.72 / 0.8 keep 98% / 97.5% / 95% / 81% of the
# originals and let the best other-photo document through for 33% / 6% / 1% / 0% of the
# queries; originals under the floor mostly pass by verification (imagerag.verification).
# azure-ai-vision (1024-d) is not measurable here: its values follow the published behaviour
# (unrelated photos about 0.3-0.5, near-duplicates above 0.85, text-to-image 0.2-0.35).
_THRESHOLDS: dict[str, Thresholds] = {
    "efficientnet-lite0": Thresholds(
        image_floor=(0.0, 0.6, 0.68, 0.72, 0.8),
        text_vector_floor=(0.0, 0.0, 0.0, 0.0, 0.0),
        gap=(1.0, 0.3, 0.2, 0.12, 0.06),
    ),
    "azure-ai-vision": Thresholds(
        image_floor=(0.0, 0.45, 0.55, 0.65, 0.8),
        text_vector_floor=(0.0, 0.15, 0.2, 0.24, 0.28),
        gap=(1.0, 0.3, 0.2, 0.12, 0.06),
    ),
}
# Models we have not calibrated (e.g. an index made elsewhere): relative cut only, plus a
# floor that only drops clearly unrelated matches.
_DEFAULT_THRESHOLDS = Thresholds(
    image_floor=(0.0, 0.3, 0.4, 0.5, 0.6),
    text_vector_floor=(0.0, 0.0, 0.1, 0.15, 0.2),
    gap=(1.0, 0.35, 0.25, 0.15, 0.08),
)
# all-minilm-l6-v2 (description vectors), measured on bench/retrieval_quality.py's 34 photos:
# a paraphrase scores 0.17 / 0.35 / 0.49 against its photo's description (min / 10th
# percentile / median), the best other description 0.33 median, 0.46 at the 90th; questions
# about nothing pictured ("what is the capital of France", "recipe for lasagna") reach at most
# 0.28. At the default level 3 the floor 0.3 keeps 94% of the paraphrases' photos.
DESCRIPTION_FLOOR = (0.0, 0.2, 0.3, 0.4, 0.5)
# Full-text hits kept per strictness: the first N ranks.
_TEXT_RANK_LIMIT = (50, 20, 10, 5, 3)

STRICTNESS_RULE = (
    "vector hits pass when cosine >= the model's floor for the strictness and >= best - gap, "
    "and an image hit also when it is the best verified match of the picture itself "
    "(match >= 0.4 / 0.5 / 0.6 / 0.7 / 0.8 for strictness 1-5, 0.2 ahead of the next); "
    "full-text hits pass when their rank is within the strictness's rank limit and they hold "
    "enough of the question's content words (IDF-weighted); a document "
    "passes if it passes in any list"
)


def thresholds_for(model_name: str | None) -> Thresholds:
    return _THRESHOLDS.get(model_name or "", _DEFAULT_THRESHOLDS)


def text_rank_limit(strictness: int) -> int:
    return _TEXT_RANK_LIMIT[strictness - 1]


# --------------------------------------------------------------------------- text coverage

# Words that name no subject: function words and the requests a subject is wrapped in
# ("show me", "find a picture of"). The engine stems ("show" finds "showing"), so a hit on
# these alone is no evidence that the picture shows what was asked.
_STOP_WORDS = frozenset(
    """a about all an and any are as at be by can could did do does each find for from get
    give has have here how i image images in is it its like look looking me my of on or
    photo photos picture pictures please see show showing shows some that the their them
    there these this those to us want was we what where which who with would you your""".split()
)
# The share of the query's content words (IDF-weighted) a full-text hit must contain to pass.
_TEXT_COVERAGE = (0.0, 0.34, 0.5, 0.67, 0.85)
_WORD = re.compile(r"\w+")


def covering_hits(query: str, hits: Sequence[SearchHit], strictness: int) -> list[SearchHit]:
    """The full-text hits whose content covers enough of the query's content words.

    A word's weight is its inverse document frequency among the hits the engine returned
    (rare words say more: "elephant" outweighs "purple" when only "purple" is found). A query
    with no content words ("what is this?") puts no condition."""
    words = content_words(query)
    need = _TEXT_COVERAGE[strictness - 1]
    if not words or need == 0:
        return list(hits)
    contents = [set(content_words(hit.content)) for hit in hits]
    size = len(hits) + 1
    idf = {w: math.log(1 + size / (1 + sum(w in c for c in contents))) for w in words}
    total = sum(idf.values())
    return [
        hit
        for hit, found in zip(hits, contents, strict=True)
        if sum(idf[w] for w in words if w in found) >= need * total
    ]


def content_words(text: str) -> list[str]:
    """The stems of the words of ``text`` that are not stop words, each once."""
    words = (w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS)
    return list(dict.fromkeys(_stem(w) for w in words))


def _stem(word: str) -> str:
    """Plural and verb endings off, as the engines' English analysers do (roughly)."""
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


# --------------------------------------------------------------------------- query


@dataclass(frozen=True, slots=True)
class PromptImage:
    """An image of the conversation, before it is decoded. ``param`` names it in errors."""

    url: str
    param: str  # e.g. "messages[2].content[1].image_url.url"
    message_index: int


@dataclass(frozen=True, slots=True)
class Query:
    text: str  # the last user turn's text ("" when it has none)
    image: PromptImage | None  # last user turn's last image, else the latest earlier one


def extract_query(messages: Sequence[dict[str, Any]]) -> Query:
    """The search query of a conversation (messages already validated)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if last_user < 0:
        return Query(text="", image=None)
    texts = [text for _, text in _text_parts(messages[last_user])]
    image: PromptImage | None = None
    for index in range(last_user, -1, -1):
        if messages[index].get("role") != "user":
            continue
        images = list(_image_parts(messages[index], index))
        if images:
            image = images[-1]
            break
    return Query(text=query_text(texts), image=image)


def query_text(texts: Sequence[str]) -> str:
    """The searched text: the first MAX_QUERY_WORDS words, at most MAX_QUERY_CHARS characters.
    Reads only as much of each text as it needs, whatever its length."""
    words: list[str] = []
    for text in texts:
        words += text[: MAX_QUERY_CHARS + 1].split()[: MAX_QUERY_WORDS - len(words)]
        if len(words) >= MAX_QUERY_WORDS:
            break
    joined = " ".join(words)
    if len(joined) > MAX_QUERY_CHARS:
        joined = joined[:MAX_QUERY_CHARS].rsplit(" ", 1)[0]
    return joined


def _text_parts(message: dict[str, Any]) -> list[tuple[int, str]]:
    content = message.get("content")
    if isinstance(content, str):
        return [(0, content)]
    if not isinstance(content, list):
        return []
    return [
        (j, str(part.get("text", "")))
        for j, part in enumerate(content)
        if isinstance(part, dict) and part.get("type") == "text"
    ]


def _image_parts(message: dict[str, Any], index: int) -> list[PromptImage]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    found = []
    for j, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            param = f"messages[{index}].content[{j}].image_url.url"
            found.append(PromptImage(url=url, param=param, message_index=index))
    return found


# --------------------------------------------------------------------------- fusion


@dataclass(frozen=True, slots=True)
class RankedList:
    name: ListName
    hits: list[SearchHit]
    weight: float = 1.0
    query: str = ""  # the text searched (full-text lists: for the coverage rule)


def rrf(lists: Sequence[RankedList], k: int = RRF_K) -> dict[str, float]:
    """Weighted Reciprocal Rank Fusion: score(d) = sum over lists of weight / (k + rank(d)),
    rank starting at 1. A document listed twice in one list counts at its best rank."""
    scores: dict[str, float] = {}
    for ranked in lists:
        seen: set[str] = set()
        for rank, hit in enumerate(ranked.hits, start=1):
            if hit.id in seen:
                continue
            seen.add(hit.id)
            scores[hit.id] = scores.get(hit.id, 0.0) + ranked.weight / (k + rank)
    return scores


def passing_ids(ranked: RankedList, strictness: int, model_name: str | None) -> set[str]:
    """Ids of the hits of one list that pass the strictness rule (see module docstring)."""
    if not 1 <= strictness <= 5:
        raise ValueError(f"strictness {strictness} is not in 1..5")
    level = strictness - 1
    if ranked.name == "text":
        within = ranked.hits[: text_rank_limit(strictness)]
        return {hit.id for hit in covering_hits(ranked.query, within, strictness)}
    limits = thresholds_for(model_name)
    if ranked.name == "description":
        floor = DESCRIPTION_FLOOR[level]
    elif ranked.name == "image":
        floor = limits.image_floor[level]
    else:
        floor = limits.text_vector_floor[level]
    if not ranked.hits:
        return set()
    best = max(hit.score for hit in ranked.hits)
    cut = max(floor, best - limits.gap[level])
    passing = {hit.id for hit in ranked.hits if hit.score >= cut and math.isfinite(hit.score)}
    return passing | verification.sure_matches(ranked.hits, strictness)


# --------------------------------------------------------------------------- retrieve


@dataclass(frozen=True, slots=True)
class RetrievedDocument:
    hit: SearchHit
    fused_score: float
    scores: dict[str, float]  # the engine score per list the document appeared in
    kept: bool
    search_queries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RetrievalResult:
    documents: list[RetrievedDocument]  # kept ones, best first, at most top_n
    all_documents: list[RetrievedDocument]  # every candidate, kept or not, best first
    intent: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SearchOptions:
    top_n: int = 5
    strictness: int = 3
    fields: FieldMapping = FieldMapping()
    filter: str | None = None
    query_type: str = "vector_simple_hybrid"
    semantic_configuration: str | None = None
    allow_partial_result: bool = False


def check_model(index: ImageIndex, vectorizer: Vectorizer) -> ModelInfo | None:
    """The index's model; IndexModelMismatchError when it is not the vectorizer's. None when
    the index records none (made elsewhere): then the mapping and dimensions are trusted (the
    index itself refuses a vector of the wrong dimension count)."""
    index_model = index.model()
    query_model = vectorizer.model
    if index_model is None:
        return None
    if (index_model.name, index_model.version, index_model.dimensions) != (
        query_model.name,
        query_model.version,
        query_model.dimensions,
    ):
        raise IndexModelMismatchError(
            f"index {index.name!r} holds vectors of {index_model.name} {index_model.version} "
            f"({index_model.dimensions}-d) but queries are vectorized with {query_model.name} "
            f"{query_model.version} ({query_model.dimensions}-d); re-index the images with "
            "the configured model or configure the model the index was built with"
        )
    return index_model


class QueryTypeError(ValueError):
    """The prompt has nothing the query type can search (e.g. only an image for "simple")."""


# What each query_type searches (the same on both index adapters):
# - simple: the text, full-text only; an image in the prompt is not searched (it still goes
#   to the answering model); an image-only prompt is refused.
# - semantic: as simple, the full-text list reranked by the semantic ranker.
# - vector: vectors only: the image by image similarity, the text by its embedding
#   (refused when neither can be vectorized, e.g. a model without a text encoder).
# - vector_simple_hybrid (default): the image vector, the text vector and full-text, fused.
# - vector_semantic_hybrid: as vector_simple_hybrid, the full-text list reranked semantically.
QUERY_PLANS: dict[str, tuple[bool, bool, bool]] = {
    # query_type: (vectors, full-text, semantic ranker)
    "simple": (False, True, False),
    "semantic": (False, True, True),
    "vector": (True, False, False),
    "vector_simple_hybrid": (True, True, False),
    "vector_semantic_hybrid": (True, True, True),
}
# Errors of the request itself: every query would fail alike, partial results or not.
_REQUEST_ERRORS = (
    IndexNotFoundError,
    IndexModelMismatchError,
    InvalidFilterError,
    FieldMappingError,
    SemanticConfigurationError,
)


def retrieve(
    *,
    text: str,
    image: bytes | None,
    vectorizer: Vectorizer,
    index: ImageIndex,
    options: SearchOptions,
) -> RetrievalResult:
    """Search the index as the query type says, fuse, apply strictness, keep top_n."""
    check_model(index, vectorizer)
    model = vectorizer.model
    vectors, full_text, semantic = QUERY_PLANS[options.query_type]
    wants_text = bool(text.strip())
    if not vectors and not wants_text:
        raise QueryTypeError(
            f"query_type {options.query_type!r} searches text and the prompt has only an image; "
            "use vector or a vector_* hybrid"
        )
    text_weight = TEXT_WEIGHT_WITH_IMAGE if image is not None else 1.0
    searches: list[tuple[ListName, str, float, Callable[[], list[SearchHit] | None]]] = []
    if vectors and image is not None:
        searches.append(
            ("image", "<image>", 1.0, lambda: _image_search(image, vectorizer, index, options))
        )
    if vectors and wants_text and model.supports_text:
        searches.append(
            (
                "text_vector",
                text,
                text_weight,
                lambda: _text_vector_search(text, vectorizer, index, options),
            )
        )
    if vectors and wants_text:
        searches.append(
            (
                "description",
                text,
                text_weight,
                lambda: _description_search(text, index, options),
            )
        )
    if full_text and wants_text:
        searches.append(
            ("text", text, text_weight, lambda: _full_text_search(text, index, options, semantic))
        )
    lists = _run_searches(searches, options.allow_partial_result)
    if not full_text and not lists:
        raise QueryTypeError(
            f"query_type 'vector' needs a prompt image, a vectorizer that embeds text or an "
            f"index with description vectors; {model.name} does not embed text"
        )
    queries: dict[str, str] = {ranked.name: ranked.query for ranked in lists}
    return fuse(lists, options, model.name, queries)


def _run_searches(
    searches: list[tuple[ListName, str, float, Callable[[], list[SearchHit] | None]]],
    allow_partial: bool,
) -> list[RankedList]:
    """Every search (None: the index cannot run it, left out), the first in this thread and
    the others meanwhile in the pool; the lists keep the searches' order. With
    allow_partial_result a failing one is left out unless all of them fail (as On Your Data
    does)."""
    lists: list[RankedList] = []
    failures: list[Exception] = []
    others = [_SEARCH_POOL.submit(search) for _, _, _, search in searches[1:]]
    try:
        for position, (name, query, weight, search) in enumerate(searches):
            try:
                hits = search() if position == 0 else others[position - 1].result()
                if hits is not None:
                    lists.append(RankedList(name, hits, weight, query))
            except _REQUEST_ERRORS:
                raise
            except (ImageIndexError, VectorizerUnavailableError) as exc:
                if not allow_partial:
                    raise
                logger.warning("retrieval: the %s search failed, kept out: %s", name, exc)
                failures.append(exc)
    finally:
        for other in others:  # after a failure: those not started yet are not needed
            other.cancel()
    if failures and not lists:
        raise failures[0]
    return lists


def _image_search(
    image: bytes, vectorizer: Vectorizer, index: ImageIndex, options: SearchOptions
) -> list[SearchHit]:
    embedding = vectorizer.embed_image(image, interactive=True)
    wanted = _candidates(options)
    if embedding.thumbnail is None:
        return index.vector_search(
            embedding.vector, top=wanted, fields=options.fields, filter=options.filter
        )
    # The nearest CANDIDATES are verified against the picture itself (imagerag.verification).
    hits = index.vector_search(
        embedding.vector,
        top=max(wanted, verification.CANDIDATES),
        fields=options.fields,
        filter=options.filter,
    )
    return verification.reranked(embedding.thumbnail, hits)[:wanted]


def _text_vector_search(
    text: str, vectorizer: Vectorizer, index: ImageIndex, options: SearchOptions
) -> list[SearchHit]:
    try:
        vector = vectorizer.vectorize_text(text, interactive=True)
    except VectorizerInputError:
        # e.g. Vision embeds 1..70 words: the question is still searched by the other lists.
        logger.info("text not vectorized (refused by the model)")
        return []
    fields = options.fields
    if not fields.vector_fields:
        return index.vector_search(
            vector, top=_candidates(options), fields=fields, filter=options.filter
        )
    # Text vectors of the content, when the mapping names them.
    text_fields = replace(fields, image_vector_fields=fields.vector_fields)
    try:
        return index.vector_search(
            vector, top=_candidates(options), fields=text_fields, filter=options.filter
        )
    except FieldMappingError as exc:
        raise FieldMappingError(str(exc), mapping="vector_fields", field=exc.field) from exc


def _description_search(
    text: str, index: ImageIndex, options: SearchOptions
) -> list[SearchHit] | None:
    return index.description_search(
        text, top=_candidates(options), fields=options.fields, filter=options.filter
    )


def _full_text_search(
    text: str, index: ImageIndex, options: SearchOptions, semantic: bool
) -> list[SearchHit]:
    extra: dict[str, Any] = {}
    if semantic or options.semantic_configuration is not None:
        extra = {"semantic": semantic, "semantic_configuration": options.semantic_configuration}
    return index.text_search(
        text, top=_candidates(options), fields=options.fields, filter=options.filter, **extra
    )


def _candidates(options: SearchOptions) -> int:
    return max(MIN_CANDIDATES, options.top_n * CANDIDATES_PER_RESULT)


def fuse(
    lists: Sequence[RankedList],
    options: SearchOptions,
    model_name: str | None,
    queries: dict[str, str] | None = None,
) -> RetrievalResult:
    """Apply the strictness rule per list, fuse what passes with RRF, keep ``top_n``.

    A list contributes to a document's fused score only where the document passes that list's
    cut (a weak image match must not lift a word match). Near-duplicates of the prompt image
    (passing the strictest image cut, or verified as the same picture) come first, in the
    image list's order (verified ones first, then by similarity): rank fusion alone would let
    a second-best image that also matches a word of "what is this?" outrank the image itself.
    """
    passing_by_list = [passing_ids(r, options.strictness, model_name) for r in lists]
    passing = set().union(*passing_by_list)
    fused = rrf(
        [
            RankedList(r.name, [h for h in r.hits if h.id in ok], r.weight)
            for r, ok in zip(lists, passing_by_list, strict=True)
        ]
    )
    # Documents that pass nowhere are ordered by plain RRF (for all_retrieved_documents).
    for doc_id, score in rrf(lists).items():
        fused.setdefault(doc_id, score)
    image_lists = [r for r in lists if r.name == "image"]
    duplicates = set().union(*(passing_ids(r, 5, model_name) for r in image_lists))
    duplicates |= {h.id for r in image_lists for h in r.hits if verification.verified(h)}
    image_rank: dict[str, int] = {}
    for ranked in image_lists:
        for rank, hit in enumerate(ranked.hits):
            image_rank.setdefault(hit.id, rank)
    hits: dict[str, SearchHit] = {}
    scores: dict[str, dict[str, float]] = {}
    in_lists: dict[str, list[str]] = {}
    for ranked in lists:
        for hit in ranked.hits:
            hits.setdefault(hit.id, hit)
            scores.setdefault(hit.id, {}).setdefault(ranked.name, hit.score)
            in_lists.setdefault(hit.id, []).append(ranked.name)
    order = sorted(fused, key=_sort_key(fused, scores, passing, duplicates, image_rank))
    query_text = queries or {}
    documents = [
        RetrievedDocument(
            hit=hits[doc_id],
            fused_score=fused[doc_id],
            scores=scores[doc_id],
            kept=doc_id in passing,
            search_queries=tuple(
                query_text[name] for name in dict.fromkeys(in_lists[doc_id]) if name in query_text
            ),
        )
        for doc_id in order
    ]
    kept = [d for d in documents if d.kept][: options.top_n]
    logger.info(
        "retrieval: %d candidates from %s, %d pass strictness %d, %d kept",
        len(documents),
        "+".join(r.name for r in lists) or "no query",
        sum(1 for d in documents if d.kept),
        options.strictness,
        len(kept),
    )
    intent = [q for q in dict.fromkeys(query_text.values()) if q != "<image>"]
    return RetrievalResult(documents=kept, all_documents=documents, intent=intent)


def _sort_key(
    fused: dict[str, float],
    scores: dict[str, dict[str, float]],
    passing: set[str],
    duplicates: set[str],
    image_rank: dict[str, int],
) -> Callable[[str], tuple[bool, bool, float, float, str]]:
    def key(doc_id: str) -> tuple[bool, bool, float, float, str]:
        image = scores[doc_id].get("image", -math.inf)
        is_duplicate = doc_id in duplicates
        # Kept first; near-duplicates in image-list order; then RRF, ties to the better image
        # score.
        return (
            doc_id not in passing,
            not is_duplicate,
            image_rank[doc_id] if is_duplicate else -fused[doc_id],
            -image,
            doc_id,
        )

    return key
