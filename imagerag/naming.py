"""Every deterministic name the app derives: index names, document ids, Durable instance ids.

Pure. Each rule lives here once, so the trigger, the orchestrators, the activities and the
status routes cannot disagree about how a name is built or taken apart.
"""

from __future__ import annotations

import hashlib
import re

INSTANCE_ID_PREFIX = "ingest-"
# A run: "ingest-<16 hex of the container>-<run number, 8 digits>".
INSTANCE_ID_PATTERN = r"^ingest-[0-9a-f]{16}-[0-9]{8}$"
_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
# A notice about a file the app saw but does not ingest: "notice-<16 hex>-<16 hex>".
NOTICE_ID_PATTERN = r"^notice-[0-9a-f]{16}-[0-9a-f]{16}$"
_NOTICE_ID = re.compile(NOTICE_ID_PATTERN)


def index_name_for(container: str) -> str:
    """The image index of a container: ``<container>-v`` (as the Studio named it)."""
    return f"{container}-v"


def document_id(container: str, image_blob_path: str) -> str:
    """Deterministic index key for an image: same container + path -> same document.

    64 lowercase hex chars, valid as an Azure AI Search key (letters, digits, ``-``, ``_``,
    ``=``) and stable across re-ingestions, so upserts replace instead of duplicating.
    Container names cannot contain ``/``, so ``container/path`` is unambiguous.
    """
    return hashlib.sha256(f"{container}/{image_blob_path}".encode()).hexdigest()


def container_key(container: str) -> str:
    """16 hex characters naming a container in instance ids (no '/', '#', '?', '\\')."""
    return hashlib.sha256(container.encode()).hexdigest()[:16]


def run_id(container: str, number: int) -> str:
    """Instance id (and record name) of run ``number`` of a container's index."""
    return f"{INSTANCE_ID_PREFIX}{container_key(container)}-{number:08d}"


def sync_instance_id(container: str) -> str:
    """The one sync orchestration of a container (it runs the container's runs in turn)."""
    return f"sync-{container_key(container)}"


def notice_id(container: str, blob_path: str) -> str:
    location = hashlib.sha256(f"{container}/{blob_path}".encode()).hexdigest()[:16]
    return f"notice-{container_key(container)}-{location}"


def is_ingestion_instance_id(value: str) -> bool:
    return bool(_INSTANCE_ID.match(value))


def is_notice_id(value: str) -> bool:
    return bool(_NOTICE_ID.match(value))


def partition_instance_id(parent_instance_id: str, partition: int) -> str:
    """Instance id of partition ``partition`` of an ingestion. Deterministic, so a replay or a
    restarted parent addresses the same children."""
    return f"{partition_id_prefix(parent_instance_id)}{partition:04d}"


def partition_id_prefix(parent_instance_id: str) -> str:
    """The prefix shared by the partition instances of one ingestion (to find and stop them)."""
    return f"{parent_instance_id}-p"
