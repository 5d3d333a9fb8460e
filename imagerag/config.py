"""Settings from the environment, and the ONE place that builds adapters.

Nothing here runs at import time: functions call :func:`settings` and the factories below
when they first need a client, so importing function_app never touches the network.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imagerag import cpu_share
from imagerag.naming import index_name_for
from imagerag.ports import Answerer, BlobStore, ImageIndex, TextEmbedder, Vectorizer

if TYPE_CHECKING:
    from collections.abc import Callable

    from azure.core.credentials import TokenCredential

    from imagerag.chat.completion import ChatDependencies
    from imagerag.datasources import DataSource, Registry
    from imagerag.image_links import ImageLinks

STORAGE_SETTING = "AzureWebJobsStorage"
STORAGE_BLOB_URI_SETTING = "AzureWebJobsStorage__blobServiceUri"
STORAGE_ACCOUNT_NAME_SETTING = "AzureWebJobsStorage__accountName"
STORAGE_CLIENT_ID_SETTING = "AzureWebJobsStorage__clientId"
STORAGE_CREDENTIAL_SETTING = "AzureWebJobsStorage__credential"

# Azure AI services (each adapter is Azure when its endpoint is set, local otherwise).
VISION_ENDPOINT_SETTING = "AZURE_VISION_ENDPOINT"
VISION_KEY_SETTING = "AZURE_VISION_KEY"
VISION_MODEL_VERSION_SETTING = "AZURE_VISION_MODEL_VERSION"
SEARCH_ENDPOINT_SETTING = "AZURE_SEARCH_ENDPOINT"
SEARCH_KEY_SETTING = "AZURE_SEARCH_KEY"
OPENAI_ENDPOINT_SETTING = "AZURE_OPENAI_ENDPOINT"
OPENAI_DEPLOYMENT_SETTING = "AZURE_OPENAI_CHAT_DEPLOYMENT"
OPENAI_API_VERSION_SETTING = "AZURE_OPENAI_API_VERSION"
OPENAI_KEY_SETTING = "AZURE_OPENAI_KEY"
# Any OpenAI-compatible server (e.g. a local vision model) when Azure OpenAI is not set.
COMPATIBLE_BASE_URL_SETTING = "OPENAI_BASE_URL"
COMPATIBLE_MODEL_SETTING = "OPENAI_MODEL"
COMPATIBLE_KEY_SETTING = "OPENAI_API_KEY"
# Client id of a user-assigned managed identity for the AI services (Storage has its own).
CLIENT_ID_SETTING = "AZURE_CLIENT_ID"
LOCAL_DATA_DIR_SETTING = "LOCAL_DATA_DIR"
# From how many rows the embedded index keeps a neighbour graph (HNSW) for vector search;
# unset: never, every search is exact (local_neighbours.py says why it is opt-in).
LOCAL_GRAPH_SETTING = "LOCAL_INDEX_GRAPH_FROM_ROWS"
# How the host learns of new metadata files: "EventGrid" (required on Flex Consumption) or
# "LogsAndContainerScan" (the classic polling trigger; the default, works with Azurite).
INGEST_TRIGGER_SOURCE_SETTING = "INGEST_TRIGGER_SOURCE"
TRIGGER_SOURCES = ("EventGrid", "LogsAndContainerScan")
CHAT_DEFAULT_INDEX_SETTING = "CHAT_DEFAULT_INDEX"
CHAT_IMAGE_URL_ALLOWLIST_SETTING = "CHAT_IMAGE_URL_ALLOWLIST"
IMAGE_LINK_KEY_SETTING = "IMAGE_LINK_KEY"

DEFAULT_VISION_MODEL_VERSION = "2023-04-15"
DEFAULT_OPENAI_DEPLOYMENT = "gpt-5.6-terra"
DEFAULT_OPENAI_API_VERSION = "2025-04-01-preview"
DEFAULT_LOCAL_DATA_DIR = ".imagerag"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"

DEFAULT_IMAGES_CONTAINER = "images"
DEFAULT_WORK_CONTAINER = "imagerag-work"
DEFAULT_PARTITION_SIZE = 100

# Understood by azure-storage-blob itself: Azurite on 127.0.0.1:10000 (devstoreaccount1).
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"

# Azure container naming rules: 3-63 chars, lowercase letters, digits, single dashes inside.
_CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")
_MAX_PARTITION_SIZE = 1000


@dataclass(frozen=True, kw_only=True)
class Settings:
    images_container: str = DEFAULT_IMAGES_CONTAINER
    work_container: str = DEFAULT_WORK_CONTAINER
    partition_size: int = DEFAULT_PARTITION_SIZE
    # Either a connection string (may hold an account key: kept out of repr) ...
    storage_connection_string: str | None = field(default=None, repr=False)
    # ... or an identity-based connection.
    storage_blob_service_uri: str | None = None
    storage_client_id: str | None = None
    storage_credential: str | None = None
    # AI services: None endpoint = the local adapter. Keys are optional (identity first).
    vision_endpoint: str | None = None
    vision_key: str | None = field(default=None, repr=False)
    vision_model_version: str = DEFAULT_VISION_MODEL_VERSION
    search_endpoint: str | None = None
    search_key: str | None = field(default=None, repr=False)
    openai_endpoint: str | None = None
    openai_deployment: str = DEFAULT_OPENAI_DEPLOYMENT
    openai_api_version: str = DEFAULT_OPENAI_API_VERSION
    openai_key: str | None = field(default=None, repr=False)
    compatible_base_url: str | None = None
    compatible_model: str | None = None
    compatible_key: str | None = field(default=None, repr=False)
    client_id: str | None = None
    local_data_dir: Path = Path(DEFAULT_LOCAL_DATA_DIR)
    local_graph_from_rows: int | None = None
    chat_default_index: str = f"{DEFAULT_IMAGES_CONTAINER}-v"
    chat_image_url_allowlist: tuple[str, ...] = ()
    # Signs the image route's links; unset: a random key per process (see image_links.py).
    image_link_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        images_container = get("IMAGES_CONTAINER") or DEFAULT_IMAGES_CONTAINER
        work_container = get("WORK_CONTAINER") or DEFAULT_WORK_CONTAINER
        for name, value in (
            ("IMAGES_CONTAINER", images_container),
            ("WORK_CONTAINER", work_container),
        ):
            if not _CONTAINER_NAME.match(value):
                raise ValueError(
                    f"{name}={value!r} is not a valid container name "
                    "(3-63 lowercase letters, digits and single dashes)"
                )
        if images_container == work_container:
            raise ValueError("IMAGES_CONTAINER and WORK_CONTAINER must differ")

        partition_size = _positive_int(
            get("INGEST_PARTITION_SIZE"), "INGEST_PARTITION_SIZE", DEFAULT_PARTITION_SIZE
        )

        connection_string = get(STORAGE_SETTING)
        blob_uri = get(STORAGE_BLOB_URI_SETTING)
        if connection_string is None and blob_uri is None:
            account = get(STORAGE_ACCOUNT_NAME_SETTING)
            if account is not None:
                blob_uri = f"https://{account}.blob.core.windows.net"
        if connection_string is None and blob_uri is None:
            raise ValueError(
                f"no blob storage configured: set {STORAGE_SETTING} (a connection string, or "
                f"{DEVELOPMENT_STORAGE} for Azurite) or {STORAGE_BLOB_URI_SETTING} "
                f"(identity-based, optionally with {STORAGE_CLIENT_ID_SETTING})"
            )
        return cls(
            images_container=images_container,
            work_container=work_container,
            partition_size=partition_size,
            storage_connection_string=connection_string,
            storage_blob_service_uri=None if connection_string else blob_uri,
            storage_client_id=get(STORAGE_CLIENT_ID_SETTING),
            storage_credential=get(STORAGE_CREDENTIAL_SETTING),
            vision_endpoint=_endpoint(get(VISION_ENDPOINT_SETTING)),
            vision_key=get(VISION_KEY_SETTING),
            vision_model_version=get(VISION_MODEL_VERSION_SETTING) or DEFAULT_VISION_MODEL_VERSION,
            search_endpoint=_endpoint(get(SEARCH_ENDPOINT_SETTING)),
            search_key=get(SEARCH_KEY_SETTING),
            openai_endpoint=_endpoint(get(OPENAI_ENDPOINT_SETTING)),
            openai_deployment=get(OPENAI_DEPLOYMENT_SETTING) or DEFAULT_OPENAI_DEPLOYMENT,
            openai_api_version=get(OPENAI_API_VERSION_SETTING) or DEFAULT_OPENAI_API_VERSION,
            openai_key=get(OPENAI_KEY_SETTING),
            compatible_base_url=_endpoint(get(COMPATIBLE_BASE_URL_SETTING)),
            compatible_model=get(COMPATIBLE_MODEL_SETTING),
            compatible_key=get(COMPATIBLE_KEY_SETTING),
            client_id=get(CLIENT_ID_SETTING),
            local_data_dir=Path(get(LOCAL_DATA_DIR_SETTING) or DEFAULT_LOCAL_DATA_DIR),
            local_graph_from_rows=_rows(get(LOCAL_GRAPH_SETTING), LOCAL_GRAPH_SETTING),
            chat_default_index=get(CHAT_DEFAULT_INDEX_SETTING) or index_name_for(images_container),
            image_link_key=get(IMAGE_LINK_KEY_SETTING),
            chat_image_url_allowlist=tuple(
                host.strip().lower()
                for host in (get(CHAT_IMAGE_URL_ALLOWLIST_SETTING) or "").split(",")
                if host.strip()
            ),
        )


@functools.cache
def settings() -> Settings:
    """The app's settings, read from the environment once per process (the host sets app
    settings before the worker starts; they do not change while it runs)."""
    return Settings.from_env()


def ingest_trigger_source(environ: Mapping[str, str] | None = None) -> str:
    """Read when the function app is indexed (trigger decorators need it at import time)."""
    env = os.environ if environ is None else environ
    value = env.get(INGEST_TRIGGER_SOURCE_SETTING, "").strip() or "LogsAndContainerScan"
    if value not in TRIGGER_SOURCES:
        raise ValueError(
            f"{INGEST_TRIGGER_SOURCE_SETTING}={value!r} must be one of {', '.join(TRIGGER_SOURCES)}"
        )
    return value


def _endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"endpoint {value!r} must be an http(s) URL")
    return value.rstrip("/")


def _positive_int(raw: str | None, name: str, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be an integer") from None
    if not 1 <= value <= _MAX_PARTITION_SIZE:
        raise ValueError(f"{name}={value} must be between 1 and {_MAX_PARTITION_SIZE}")
    return value


def _rows(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r} must be a whole number of rows, at least 1")
    return int(raw)


@functools.lru_cache(maxsize=8)
def blob_store(settings: Settings) -> BlobStore:
    """The process-wide BlobStore for these settings (clients are thread-safe and pool
    connections, so one per process, built on first use)."""
    from azure.storage.blob import BlobServiceClient

    from imagerag.adapters.blob import AzureBlobStore

    if settings.storage_connection_string is not None:
        service = BlobServiceClient.from_connection_string(settings.storage_connection_string)
    else:
        assert settings.storage_blob_service_uri is not None  # from_env guarantees one of both
        service = BlobServiceClient(
            account_url=settings.storage_blob_service_uri,
            credential=_storage_credential(settings),
        )
    return AzureBlobStore(service=service)


def _storage_credential(settings: Settings) -> TokenCredential:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    # Same meaning as the Functions host gives these settings: "managedidentity" pins the
    # managed identity (user-assigned when a client id is given); otherwise the default chain,
    # so a developer's `az login` works too.
    if (settings.storage_credential or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    return DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)


@functools.lru_cache(maxsize=4)
def vectorizer(settings: Settings) -> Vectorizer:
    """Azure AI Vision when AZURE_VISION_ENDPOINT is set, else the local EfficientNet model
    (one per process: it micro-batches concurrent calls)."""
    if settings.vision_endpoint is not None:
        from imagerag.adapters.azure_vision import AzureVisionVectorizer

        return AzureVisionVectorizer(
            endpoint=settings.vision_endpoint,
            key=settings.vision_key,
            token_provider=None if settings.vision_key else _cognitive_token_provider(settings),
            model_version=settings.vision_model_version,
        )
    from imagerag.adapters.local_vectorizer import LocalVectorizer

    return LocalVectorizer(share=cpu_share.process_share())


@functools.lru_cache(maxsize=64)
def image_index(settings: Settings, name: str) -> ImageIndex:
    """Azure AI Search when AZURE_SEARCH_ENDPOINT is set, else the embedded on-disk index."""
    if settings.search_endpoint is not None:
        from azure.core.credentials import AzureKeyCredential

        from imagerag.adapters.azure_search import AzureSearchImageIndex

        return AzureSearchImageIndex(
            endpoint=settings.search_endpoint,
            name=name,
            credential=(
                AzureKeyCredential(settings.search_key)
                if settings.search_key
                else _azure_credential(settings)
            ),
        )
    from imagerag.adapters.local_index import LocalImageIndex

    # Descriptions are also matched by meaning (sentence embeddings stored in the index);
    # one embedder per process, shared by every index.
    return LocalImageIndex(
        directory=settings.local_data_dir / "index",
        name=name,
        text_embedder=text_embedder(),
        approximate_from=settings.local_graph_from_rows,
    )


@functools.lru_cache(maxsize=1)
def text_embedder() -> TextEmbedder:
    """The process's description embedder, shared by every embedded index."""
    from imagerag.adapters.local_text_embedder import LocalTextEmbedder

    return LocalTextEmbedder(share=cpu_share.process_share())


@functools.lru_cache(maxsize=4)
def answerer(settings: Settings) -> Answerer:
    """Azure OpenAI when AZURE_OPENAI_ENDPOINT is set, else an OpenAI-compatible server when
    OPENAI_BASE_URL is set, else the local extractive answerer."""
    if settings.openai_endpoint is not None:
        from imagerag.adapters.azure_openai import AzureOpenAIAnswerer

        return AzureOpenAIAnswerer.for_azure(
            endpoint=settings.openai_endpoint,
            deployment=settings.openai_deployment,
            api_version=settings.openai_api_version,
            key=settings.openai_key,
            token_provider=None if settings.openai_key else _cognitive_token_provider(settings),
        )
    if settings.compatible_base_url is not None:
        from imagerag.adapters.azure_openai import AzureOpenAIAnswerer

        if settings.compatible_model is None:
            raise ValueError(f"{COMPATIBLE_BASE_URL_SETTING} needs {COMPATIBLE_MODEL_SETTING}")
        return AzureOpenAIAnswerer.for_compatible(
            base_url=settings.compatible_base_url,
            model=settings.compatible_model,
            key=settings.compatible_key,
        )
    from imagerag.adapters.extractive import ExtractiveAnswerer

    return ExtractiveAnswerer()


def chat_dependencies(settings: Settings, *, image_route: str) -> ChatDependencies:
    """What one chat request needs. ``image_route``: this app's image route as the caller
    reaches it (ends with '/'); citation links point there when storage does not sign URLs."""
    from imagerag.chat.completion import ChatDependencies, citation_url
    from imagerag.chat.prompt_image import ImageUrlPolicy
    from imagerag.ports import FieldMapping, SearchHit

    store = blob_store(settings)
    containers = served_containers(settings)
    links = image_links(settings)

    def url_of(hit: SearchHit) -> str | None:
        return citation_url(hit, store, image_route=image_route, containers=containers, links=links)

    def mapping_for(index: str) -> FieldMapping | None:
        # A registered search_index source's field mapping, when the request names none.
        found = next((s for s in data_sources(settings) if s.index == index), None)
        return found.mapping() if found is not None and found.kind == "search_index" else None

    return ChatDependencies(
        vectorizer=lambda: vectorizer(settings),
        index=lambda name: image_index(settings, name),
        answerer=answerer(settings),
        blobs=store,
        image_policy=ImageUrlPolicy(allowlist=settings.chat_image_url_allowlist),
        citation_url=url_of,
        mapping_for=mapping_for,
        search_endpoint=settings.search_endpoint,
        vectorizer_endpoint=settings.vision_endpoint,
    )


@functools.lru_cache(maxsize=4)
def image_links(settings: Settings) -> ImageLinks:
    """Signs and checks the links of the image route (one key per process unless set)."""
    from imagerag.image_links import ImageLinks

    key = settings.image_link_key.encode() if settings.image_link_key else None
    return ImageLinks(key)


def registry(settings: Settings) -> Registry:
    """The data sources registered with this app (read from storage on every call)."""
    from imagerag.datasources import Registry

    return Registry(blob_store(settings), settings.work_container, settings.images_container)


def data_sources(settings: Settings) -> list[DataSource]:
    """Every data source, read again at most every SOURCES_TTL_S: chat and the image route
    ask on every request, and sources change rarely (a registration in this process is seen
    at once, see forget_data_sources)."""
    now = time.monotonic()
    cached = _sources.get(settings)
    if cached is None or now - cached[0] > SOURCES_TTL_S:
        cached = (now, registry(settings).all())
        _sources[settings] = cached
    return cached[1]


def forget_data_sources() -> None:
    _sources.clear()


def served_containers(settings: Settings) -> frozenset[str]:
    """Containers whose metadata files this app ingests and whose cited images it serves."""
    return frozenset(s.container for s in data_sources(settings) if s.container is not None)


def index_of_container(settings: Settings, container: str) -> str | None:
    source = next((s for s in data_sources(settings) if s.container == container), None)
    return None if source is None else source.index


SOURCES_TTL_S = 5.0
_sources: dict[Settings, tuple[float, list[DataSource]]] = {}


def _azure_credential(settings: Settings) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    # Managed identity in Azure (user-assigned when AZURE_CLIENT_ID is set), `az login` here.
    return DefaultAzureCredential(managed_identity_client_id=settings.client_id)


def _cognitive_token_provider(settings: Settings) -> Callable[[], str]:
    from azure.identity import get_bearer_token_provider

    return get_bearer_token_provider(_azure_credential(settings), COGNITIVE_SERVICES_SCOPE)
