"""What the data-source routes do: register a source of each kind (checking what it names),
take uploaded files, tell a source's state, remove it. Knows nothing of HTTP."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagerag import images, manifest, naming
from imagerag.datasources import (
    KINDS,
    DataSource,
    DataSourceError,
    Registry,
    check_container,
    check_name,
)
from imagerag.ingestion import runs, sync_state
from imagerag.naming import index_name_for
from imagerag.ports import BlobStore, ImageIndex, IndexField, ModelInfo

UPLOAD_METADATA_PREFIX = "metadata-upload-"
MAPPING_KEYS = (
    "image_vector_fields",
    "content_fields",
    "title_field",
    "url_field",
    "filepath_field",
)


def register(
    registry: Registry,
    store: BlobStore,
    body: Any,
    *,
    index: Callable[[str], ImageIndex],
    model: ModelInfo,
) -> DataSource:
    """Check a registration request ({name, kind, ...}) and register the source."""
    if not isinstance(body, dict):
        raise DataSourceError(400, None, "the request body must be a JSON object")
    name = check_name(body.get("name"))
    kind = body.get("kind")
    if kind not in KINDS:
        raise DataSourceError(400, "kind", f"'kind' must be one of {', '.join(KINDS)}")
    if kind == "search_index":
        return registry.add(_existing_index(name, body, index, model))
    if kind == "blob":
        container = check_container(body.get("container"))
        if not store.container_exists(container):
            raise DataSourceError(400, "container", f"container {container!r} does not exist")
        return registry.add(
            DataSource(name=name, kind=kind, index=index_name_for(name), container=container)
        )
    container = check_container(body.get("container") or name)  # an upload source's own
    created = not store.container_exists(container)
    store.ensure_container(container)
    return registry.add(
        DataSource(
            name=name,
            kind=kind,
            index=index_name_for(name),
            container=container,
            created_container=created,
        )
    )


def _existing_index(
    name: str, body: dict[str, Any], index: Callable[[str], ImageIndex], model: ModelInfo
) -> DataSource:
    """An index made elsewhere: it must exist, and the mapped fields must be there, with the
    vector field of the configured vectorizer's dimensions."""
    index_name = body.get("index_name")
    if not isinstance(index_name, str) or not index_name:
        raise DataSourceError(400, "index_name", "'index_name' names the existing index")
    mapping = body.get("fields_mapping") or {}
    if not isinstance(mapping, dict) or set(mapping) - set(MAPPING_KEYS):
        raise DataSourceError(
            400, "fields_mapping", f"'fields_mapping' may hold {', '.join(MAPPING_KEYS)}"
        )
    fields = index(index_name).fields()
    if fields is None:
        raise DataSourceError(400, "index_name", f"index {index_name!r} does not exist")
    vectors = mapping.get("image_vector_fields") or ["image_vector"]
    for vector in _names(vectors, "fields_mapping.image_vector_fields"):
        _check_vector(fields, vector, model)
    for key in ("content_fields",):
        for text in _names(mapping.get(key) or ["description"], f"fields_mapping.{key}"):
            _check_text(fields, text, f"fields_mapping.{key}")
    for key in ("title_field", "url_field", "filepath_field"):
        if mapping.get(key):
            _check_text(fields, mapping[key], f"fields_mapping.{key}")
    return DataSource(name=name, kind="search_index", index=index_name, fields_mapping=mapping)


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DataSourceError(400, where, f"'{where}' must be a list of field names")
    return list(value)


def _check_vector(fields: dict[str, IndexField], name: str, model: ModelInfo) -> None:
    where = "fields_mapping.image_vector_fields"
    found = fields.get(name)
    if found is None or found.kind != "vector":
        raise DataSourceError(400, where, f"the index has no vector field {name!r}")
    if found.dimensions != model.dimensions:
        raise DataSourceError(
            400,
            where,
            f"vector field {name!r} has {found.dimensions} dimensions, but the configured "
            f"vectorizer ({model.name} {model.version}) makes {model.dimensions}",
        )


def _check_text(fields: dict[str, IndexField], name: Any, where: str) -> None:
    found = fields.get(name) if isinstance(name, str) else None
    if found is None or found.kind != "text":
        raise DataSourceError(400, where, f"the index has no text field {name!r}")


# --------------------------------------------------------------------------- uploads


@dataclass
class Upload:
    """What an upload stored, and what it refused (with each file's name and reason)."""

    accepted: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    metadata: str | None = None  # the metadata file written, when anything was accepted
    sha256: str = ""  # of that file's bytes


def store_upload(
    store: BlobStore, source: DataSource, files: list[tuple[str, bytes]], metadata: bytes
) -> Upload:
    """Check every file (name, type, size) before storing anything; store the good ones and
    one metadata file listing them, which starts their ingestion like any metadata file."""
    if source.kind != "upload" or source.container is None:
        raise DataSourceError(409, "name", f"{source.name!r} is not an upload data source")
    try:
        parsed = manifest.parse_manifest(metadata)
    except manifest.ManifestError as exc:
        raise DataSourceError(400, "metadata", f"the 'metadata' part: {exc.message}") from None
    descriptions = {e.image_blob_path: e.description for e in parsed.entries}
    upload = Upload()
    good: list[tuple[str, bytes]] = []
    for filename, data in files:
        reason = _refusal(filename, data, descriptions)
        if reason is None:
            good.append((filename, data))
        else:
            upload.refused.append({"file": filename, **reason})
    if not good:
        return upload
    for filename, data in good:
        facts = images.inspect_image(data, filename)
        store.write(source.container, filename, data, content_type=facts.mime_type)
        upload.accepted.append(filename)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{UPLOAD_METADATA_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.json"
    entries = [{"image_blob_path": f, "description": descriptions[f]} for f, _ in good]
    body = json.dumps(entries, ensure_ascii=False).encode("utf-8")
    store.write(source.container, name, body, content_type="application/json")
    upload.metadata, upload.sha256 = name, hashlib.sha256(body).hexdigest()
    return upload


def _refusal(filename: str, data: bytes, descriptions: dict[str, str]) -> dict[str, str] | None:
    problem = manifest.blob_path_problem(filename)
    if problem is not None:
        return {"code": "invalid_path", "reason": problem}
    if filename not in descriptions:
        return {
            "code": "no_description",
            "reason": "the 'metadata' part has no entry whose image_blob_path is this file",
        }
    try:
        images.inspect_image(data, filename)
    except images.ImageRejected as exc:
        return {"code": exc.code, "reason": exc.message}
    return None


def delete_uploaded(store: BlobStore, source: DataSource) -> int:
    """Delete what an upload source stored: its container when the app made it, else the
    files its upload metadata files list and those files. Returns the blobs deleted."""
    if source.container is None:
        return 0
    if source.created_container:
        count = len(store.list_blobs(source.container))
        store.delete_container(source.container)
        return count
    deleted = 0
    for blob in store.list_blobs(source.container, prefix=UPLOAD_METADATA_PREFIX, top_level=True):
        found = store.read_versioned(source.container, blob.name)
        for entry in json.loads(found[0]) if found else []:
            store.delete(source.container, entry["image_blob_path"])
            deleted += 1
        store.delete(source.container, blob.name)
        deleted += 1
    return deleted


# --------------------------------------------------------------------------- state


def describe(store: BlobStore, work_container: str, source: DataSource) -> dict[str, Any]:
    """The source as the routes show it: its settings and its state, ``ingesting`` (with the
    counts of the run in progress), ``ready`` or ``failed`` (with the reason)."""
    body = source.to_json()
    if source.kind == "search_index" or source.container is None:
        return body | {"state": "ready"}
    state = sync_state.read_state(store, work_container, source.container)
    latest = _latest_run(store, work_container, source.container, int(state["runs"]))
    body["last_ingestion"] = None
    if latest is not None:
        body["last_ingestion"] = {
            key: latest.get(key)
            for key in ("id", "phase", "total", "done", "byStatus", "deleted", "error", "updated")
        } | {"report": f"/api/ingestions/{latest['id']}/report"}
    if state["running"] or state["requested"] > state["handled"]:
        return body | {"state": "ingesting"}
    if latest is not None and latest.get("phase") in (runs.REJECTED, runs.FAILED):
        reason = (latest.get("error") or {}).get("message", "the last ingestion failed")
        return body | {"state": "failed", "reason": reason}
    return body | {"state": "ready"}


def _latest_run(
    store: BlobStore, work_container: str, container: str, begun: int
) -> dict[str, Any] | None:
    """The record of the container's latest run: its runs are numbered one after the other,
    so this is one read, however many runs any container has had (the run that just began
    may not have written its record yet: then the one before)."""
    for number in range(begun, max(begun - 2, 0), -1):
        record = runs.read_record(store, work_container, naming.run_id(container, number))
        if record is not None:
            return record
    return None
