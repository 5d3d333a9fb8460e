"""Small Protocols the domain code depends on; adapters implement them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Protocol


class BlobStoreError(Exception):
    """Base class of the errors a BlobStore reports in domain terms."""


class BlobNotFoundError(BlobStoreError):
    """The container or blob does not exist."""

    def __init__(self, container: str, path: str) -> None:
        super().__init__(f"blob not found: {container}/{path}")
        self.container = container
        self.path = path


class BlobChangedError(BlobStoreError):
    """The blob no longer has the ETag the caller expected (it was overwritten)."""

    def __init__(self, container: str, path: str, etag: str) -> None:
        super().__init__(f"blob changed: {container}/{path} no longer has ETag {etag}")
        self.container = container
        self.path = path
        self.etag = etag


class InvalidBlobNameError(BlobStoreError, ValueError):
    """The service rejected the container or blob name itself (a caller error, not transient)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """One blob of a listing."""

    name: str
    size: int
    etag: str
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class BlobPage:
    """One page of a listing; ``continuation`` (opaque) lists the next one, None on the last."""

    blobs: list[BlobInfo]
    continuation: str | None


class BlobStore(Protocol):
    """Blob access as the domain needs it.

    Errors that are not listed (network, throttling, authorization) propagate unchanged so
    that Durable retry policies and the host see them.
    """

    def read(self, container: str, path: str, *, etag: str | None = None) -> bytes:
        """Whole content; BlobNotFoundError if missing, BlobChangedError if etag is stale."""
        ...

    def read_bounded(self, container: str, path: str, max_bytes: int) -> tuple[bytes, int]:
        """(content, size of the blob) from one request that reads at most ``max_bytes``:
        the content is whole when the size is at most ``max_bytes``, else only the blob's
        first ``max_bytes``. BlobNotFoundError if missing."""
        ...

    def write(
        self,
        container: str,
        path: str,
        data: bytes,
        *,
        content_type: str,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Create or overwrite; returns the new ETag. ``if_match``: only while the blob still
        has this ETag; ``create_only``: only if it does not exist. Either precondition failing
        raises BlobChangedError (what optimistic concurrency retries on)."""
        ...

    def read_versioned(self, container: str, path: str) -> tuple[bytes, str] | None:
        """(content, ETag) read in one request, or None when the blob is missing."""
        ...

    def delete(self, container: str, path: str) -> None:
        """Delete the blob; a missing blob is not an error."""
        ...

    def list_blobs(
        self, container: str, *, prefix: str = "", top_level: bool = False
    ) -> list[BlobInfo]:
        """Blobs whose names start with ``prefix`` (with their metadata), by name; only those
        outside any folder when ``top_level``. A missing container lists nothing."""
        ...

    def list_page(
        self, container: str, *, prefix: str = "", size: int, continuation: str | None = None
    ) -> BlobPage:
        """At most ``size`` blobs whose names start with ``prefix`` (with their metadata), by
        name, from where the page that returned ``continuation`` ended: one listing request.
        A malformed ``continuation`` raises InvalidBlobNameError."""
        ...

    def url(self, container: str, path: str) -> str:
        """The blob's URL without credentials (what the index stores as ``url``)."""
        ...

    def ensure_container(self, container: str) -> None:
        """Create the container if it does not exist yet."""
        ...

    def container_exists(self, container: str) -> bool: ...

    def delete_container(self, container: str) -> None:
        """Delete the container and every blob in it; a missing one is not an error."""
        ...

    def locate(self, url: str) -> tuple[str, str] | None:
        """(container, path) of a blob URL of this account (as ``url`` returns them), or None
        when the URL points elsewhere."""
        ...

    def read_url(self, container: str, path: str, *, expires_in_s: int) -> str | None:
        """A URL that opens the blob for reading for ``expires_in_s`` seconds with no other
        credential (a user-delegation SAS), or None when this store does not sign URLs
        (connection strings, Azurite): the app then serves the blob itself."""
        ...


# --------------------------------------------------------------------------- vectorizer


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Which embedding space vectors live in. Vectors of different (name, version) never mix."""

    name: str  # e.g. "azure-ai-vision" or "efficientnet-lite0"
    version: str  # e.g. "2023-04-15"
    dimensions: int
    supports_text: bool  # whether vectorize_text exists for this model


class VectorizerError(Exception):
    """Base class of the errors a Vectorizer reports in domain terms."""


class VectorizerInputError(VectorizerError):
    """The service (or model) refused this input: a permanent, per-item failure. Not retried."""


class VectorizerUnavailableError(VectorizerError):
    """Throttled (429) or failing (5xx) after the adapter's own retries: transient, retry later.

    ``retry_after_s`` is the service's last Retry-After hint, when it gave one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class ImageEmbedding:
    """An image's vector and, where the model makes one, its verification thumbnail: small
    grey pixels (imagerag.verification) that re-rank the nearest vectors by matching the
    pictures themselves. Part of the model's identity, stored with the document."""

    vector: list[float]
    thumbnail: bytes | None = None


class Vectorizer(Protocol):
    """Images (and, where the model supports it, text) to unit-length vectors in one space."""

    @property
    def model(self) -> ModelInfo: ...

    def embed_image(self, data: bytes, *, interactive: bool = False) -> ImageEmbedding:
        """As vectorize_image, with the model's verification thumbnail (None where it has
        none), both from one decode."""
        ...

    def vectorize_image(self, data: bytes, *, interactive: bool = False) -> list[float]:
        """One image (already validated: a supported type within the size limits).

        ``interactive``: someone is waiting for this one (a chat query): it is served before
        bulk (ingestion) work queued in the same process, not behind it."""
        ...

    def vectorize_text(self, text: str, *, interactive: bool = False) -> list[float]:
        """VectorizerInputError when ``model.supports_text`` is false. ``interactive`` as for
        images."""
        ...


class TextEmbedder(Protocol):
    """Sentences to unit-length vectors in a text-only space (descriptions and questions
    compared by meaning). Used by the embedded index; Azure's equivalent is the semantic
    ranker over full-text."""

    @property
    def model(self) -> ModelInfo: ...

    def embed(self, texts: list[str], *, interactive: bool = False) -> list[list[float]]:
        """One vector per text, in order (batched inside). ``interactive``: a query waiting
        for the answer, served before bulk (ingestion) work where the adapter can."""
        ...


# --------------------------------------------------------------------------- image index


@dataclass(frozen=True, slots=True)
class IndexDocument:
    """One indexed image. ``id`` is manifest.document_id(container, path)."""

    id: str
    description: str
    image_vector: list[float]
    filepath: str  # image_blob_path inside its container
    url: str  # blob URL without any SAS
    title: str  # file name
    source: str  # "container/metadata file" the document came from
    model_name: str
    model_version: str
    content_hash: str  # sha256 hex of the image bytes
    thumbnail: bytes | None = None  # ImageEmbedding.thumbnail, where the model makes one


@dataclass(frozen=True, slots=True)
class DocumentState:
    """What ingestion needs to know about an existing document to skip work."""

    id: str
    content_hash: str
    description: str
    source: str
    model_name: str
    model_version: str


@dataclass(frozen=True, slots=True)
class MetadataPatch:
    """Fields that change without re-vectorizing (an edited description, a new source file)."""

    id: str
    description: str
    source: str


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """Which index fields play which role (On Your Data ``fields_mapping``).

    The defaults are the schema imagerag creates; an existing index maps its own names.
    """

    image_vector_fields: tuple[str, ...] = ("image_vector",)
    content_fields: tuple[str, ...] = ("description",)
    title_field: str | None = "title"
    url_field: str | None = "url"
    filepath_field: str | None = "filepath"
    # Vectors of the content text (searched with the text's vector instead of the image
    # fields); empty: text vectors search the image fields (text and images share a space).
    vector_fields: tuple[str, ...] = ()
    content_fields_separator: str = "\n"


@dataclass(frozen=True, slots=True)
class SearchHit:
    id: str
    score: float  # higher is better; cosine similarity for vector search, engine score for text
    content: str
    title: str | None
    url: str | None
    filepath: str | None
    thumbnail: bytes | None = None  # image hits of an index that stores them
    match: float | None = None  # how well the picture itself matched (imagerag.verification)


class ImageIndexError(Exception):
    """Base class of the errors an ImageIndex reports in domain terms."""


class IndexNotFoundError(ImageIndexError):
    def __init__(self, name: str) -> None:
        super().__init__(f"index {name!r} does not exist")
        self.name = name


class IndexModelMismatchError(ImageIndexError):
    """The index holds vectors of another model (or dimension count) than the one offered."""


class InvalidFilterError(ImageIndexError, ValueError):
    """A search filter the index cannot evaluate (syntax or unsupported construct)."""


class SemanticConfigurationError(ImageIndexError, ValueError):
    """A semantic configuration the index does not have (or an index without a ranker)."""


class FieldMappingError(ImageIndexError, ValueError):
    """The index cannot serve a field the mapping names (unknown, not searchable, not a
    vector field, not retrievable). ``mapping`` is the FieldMapping attribute that names it
    (``"content_fields"``, ``"image_vector_fields"``, ``"title_field"``...), ``field`` the
    index field when the service said which."""

    def __init__(self, message: str, *, mapping: str, field: str | None = None) -> None:
        super().__init__(message)
        self.mapping = mapping
        self.field = field


class ImageIndex(Protocol):
    """One named image index (``<container>-v`` for ingested containers)."""

    @property
    def name(self) -> str: ...

    def ensure(self, model: ModelInfo) -> None:
        """Create the index for this model if missing; IndexModelMismatchError if it exists
        with another model name/version or dimension count."""
        ...

    def model(self) -> ModelInfo | None:
        """The model the index was created for; None if the index does not exist or does not
        record one (an existing index made elsewhere)."""
        ...

    def get_states(self, ids: list[str]) -> dict[str, DocumentState]:
        """States of those ids that exist."""
        ...

    def upsert(self, documents: list[IndexDocument]) -> None:
        """Insert or replace whole documents by id (idempotent)."""
        ...

    def merge_metadata(self, patches: list[MetadataPatch]) -> None:
        """Update description and source of existing documents, keeping their vectors."""
        ...

    def ids_from_source(self, source: str) -> set[str]:
        """Ids of every document whose ``source`` is this metadata file."""
        ...

    def all_states(self) -> list[DocumentState]:
        """The state of every document, by id (reconciling compares the whole index with what
        the metadata files list). An index that does not exist yet has none."""
        ...

    def delete(self, ids: list[str]) -> None:
        """Delete by id; ids that do not exist are ignored."""
        ...

    def vector_search(
        self,
        vector: list[float],
        *,
        top: int,
        fields: FieldMapping = FieldMapping(),
        filter: str | None = None,
    ) -> list[SearchHit]:
        """Nearest by cosine, best first. ``filter`` is an OData expression (AI Search syntax)."""
        ...

    def text_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = FieldMapping(),
        filter: str | None = None,
        semantic: bool = False,
        semantic_configuration: str | None = None,
    ) -> list[SearchHit]:
        """Full-text over the content fields, best first. ``semantic``: rerank with the
        service's semantic ranker (``semantic_configuration``, else the index's default);
        SemanticConfigurationError when the index cannot."""
        ...

    def description_search(
        self,
        text: str,
        *,
        top: int,
        fields: FieldMapping = FieldMapping(),
        filter: str | None = None,
    ) -> list[SearchHit] | None:
        """The text's sentence embedding against the descriptions' (cosine, best first), or
        None when the index holds no description vectors (Azure AI Search indexes here)."""
        ...

    def optimize(self) -> None:
        """Compact after a bulk change (no-op where the service does it itself)."""
        ...

    def fields(self) -> dict[str, IndexField] | None:
        """The index's fields by name (an index made elsewhere is checked against a field
        mapping with them), or None when the index does not exist."""
        ...

    def drop(self) -> None:
        """Delete the whole index; a missing index is not an error."""
        ...


@dataclass(frozen=True, slots=True)
class IndexField:
    """What a field of an existing index can be used for."""

    kind: str  # "text" (strings), "vector" (float collections), "other"
    dimensions: int | None = None  # vector fields
    searchable: bool = False  # full-text


# --------------------------------------------------------------------------- answerer


@dataclass(frozen=True, slots=True)
class GroundingDocument:
    """A retrieved document as the answerer sees it, labelled ``doc1``..``docN``."""

    label: str
    content: str
    title: str | None
    image_url: str | None  # a data: URL or a short-lived SAS URL the model can fetch


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    messages: list[dict[str, Any]]  # the OpenAI chat messages as the client sent them
    documents: list[GroundingDocument]
    role_information: str | None
    in_scope: bool


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """The request's generation parameters (chat-completions names); None: not given."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, int] | None = None
    response_format: dict[str, Any] | None = None

    def given(self) -> dict[str, Any]:
        """The parameters the client set, by name (as the chat-completions API spells them)."""
        unset = GenerationOptions()
        names = [f.name for f in dataclass_fields(self)]
        return {n: getattr(self, n) for n in names if getattr(self, n) != getattr(unset, n)}


NO_OPTIONS = GenerationOptions()


class AnswererError(Exception):
    """The answering model failed; ``status`` is the upstream HTTP status when known and
    ``retry_after_s`` its Retry-After hint when it gave one."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class Answerer(Protocol):
    """Writes the grounded answer, citing documents as ``[docN]``, as a stream of text deltas."""

    @property
    def model(self) -> str:
        """The model that writes the answers (a deployment or model name): ``completion.model``."""
        ...

    @property
    def sees_images(self) -> bool:
        """Whether ``GroundingDocument.image_url`` is used (else callers need not load images)."""
        ...

    @property
    def honoured_options(self) -> frozenset[str]:
        """The GenerationOptions names this answerer applies; the endpoint refuses others."""
        ...

    def stream_answer(
        self, request: AnswerRequest, *, options: GenerationOptions = GenerationOptions()
    ) -> Iterator[str]:
        """Text deltas of the answer; AnswererError when the model fails (possibly after some
        deltas were already produced). A generator may return the finish reason ("stop",
        "length"); returning nothing means "stop"."""
        ...
