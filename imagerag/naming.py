"""Every deterministic name the app derives: index names, document ids, Durable instance ids.

Pure. Each rule lives here once, so the trigger, the orchestrators, the activities and the
status routes cannot disagree about how a name is built or taken apart.
"""

from __future__ import annotations

import hashlib
import re

INSTANCE_ID_PREFIX = "ingest-"
INSTANCE_ID_PATTERN = r"^ingest-[0-9a-f]{16}-[0-9a-f]{16}$"
_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


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


def ingestion_instance_id(container: str, blob_path: str, content_sha256: str) -> str:
    """Durable instance id of the ingestion of one version (by content) of a metadata file.

    ``ingest-<16 hex of the file's location>-<16 hex of its content>``: every ingestion of one
    file shares the prefix (see ``ingestion_id_prefix``), and there is no ``/ \\ # ?``
    (forbidden in instance ids).
    """
    if not _SHA256_HEX.match(content_sha256):
        raise ValueError("content_sha256 must be 64 lowercase hex characters")
    return ingestion_id_prefix(container, blob_path) + content_sha256[:16]


def ingestion_id_prefix(container: str, blob_path: str) -> str:
    """The instance-id prefix shared by all ingestions of one metadata file."""
    location = hashlib.sha256(f"{container}/{blob_path}".encode()).hexdigest()
    return f"{INSTANCE_ID_PREFIX}{location[:16]}-"


def is_ingestion_instance_id(value: str) -> bool:
    return bool(_INSTANCE_ID.match(value))


def partition_instance_id(parent_instance_id: str, partition: int) -> str:
    """Instance id of partition ``partition`` of an ingestion. Deterministic, so a replay or a
    restarted parent addresses the same children."""
    return f"{partition_id_prefix(parent_instance_id)}{partition:04d}"


def partition_id_prefix(parent_instance_id: str) -> str:
    """The prefix shared by the partition instances of one ingestion (to find and stop them)."""
    return f"{parent_instance_id}-p"
