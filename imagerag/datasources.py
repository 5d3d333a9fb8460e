"""Data sources: the three ways to add data, as the original offered them, kept in a registry.

- ``upload``: files and descriptions sent over HTTP, stored in a container of the source's own
  (by default named after the source) with a metadata file, then ingested by the same blob
  pipeline as any container;
- ``blob``: a container that already holds images and ``metadata*.json`` files, ingested and
  kept in step as files are added, changed or deleted there;
- ``search_index``: an existing Azure AI Search (or local) index and its field mapping;
  nothing is ingested.

Generated indexes are ``<name>-v``. One container belongs to at most one source (its index is
the function of the container's metadata files). The app's own images container is the
built-in source ``<IMAGES_CONTAINER>`` (index ``<IMAGES_CONTAINER>-v``), registered by nobody.

Records live in the work container as ``datasources/<name>.json``, created with an
if-none-match condition, so two concurrent registrations of one name cannot both win; the
claim ``datasources/containers/<container>.json`` does the same for containers.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagerag.naming import index_name_for
from imagerag.ports import BlobChangedError, BlobNotFoundError, BlobStore, FieldMapping

KINDS = ("upload", "blob", "search_index")
PREFIX = "datasources/"
# Azure AI Search index names: lowercase letters, digits and dashes, starting and ending with a
# letter or digit, no two dashes in a row, at most 128 characters; "-v" is added to it.
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){1,125}$")
# Azure container names: 3-63 lowercase letters, digits and single dashes inside.
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")


class DataSourceError(ValueError):
    """A request the registry refuses: ``field`` names what is wrong, ``status`` the HTTP
    status that says so (400 invalid, 404 unknown, 409 taken)."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


@dataclass(frozen=True)
class DataSource:
    name: str
    kind: str
    index: str  # the index chat searches: "<name>-v", or the existing index
    container: str | None = None  # upload and blob sources
    fields_mapping: dict[str, Any] = field(default_factory=dict)  # search_index sources
    created: str = ""
    builtin: bool = False
    created_container: bool = False  # the app created the container (upload sources)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataSource:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def mapping(self) -> FieldMapping:
        return mapping_from(self.fields_mapping)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DataSourceError(
            400,
            "name",
            "'name' must be 2 to 126 lowercase letters, digits or single dashes, starting and "
            "ending with a letter or digit (the index is '<name>-v', an Azure AI Search name)",
        )
    return name


def check_container(container: Any, field_name: str = "container") -> str:
    if not isinstance(container, str) or not _CONTAINER.match(container):
        raise DataSourceError(
            400,
            field_name,
            f"'{field_name}' must be a container name: 3 to 63 lowercase letters, digits and "
            "single dashes",
        )
    return container


def builtin_source(images_container: str) -> DataSource:
    return DataSource(
        name=images_container,
        kind="blob",
        index=index_name_for(images_container),
        container=images_container,
        builtin=True,
    )


def record_path(name: str) -> str:
    return f"{PREFIX}{name}.json"


def claim_path(container: str) -> str:
    return f"{PREFIX}containers/{container}.json"


class Registry:
    """The data sources registered in one work container."""

    def __init__(self, store: BlobStore, work_container: str, images_container: str) -> None:
        self._store = store
        self._work = work_container
        self._builtin = builtin_source(images_container)

    def add(self, source: DataSource) -> DataSource:
        """Register; DataSourceError(409) when the name or the container is taken."""
        if source.name == self._builtin.name or source.container == self._builtin.container:
            raise DataSourceError(
                409, "name", f"{source.name!r} or its container is the app's own images source"
            )
        stamped = DataSource(**{**source.to_json(), "created": _now()})
        self._store.ensure_container(self._work)
        if source.container is not None:
            self._create(claim_path(source.container), {"name": source.name}, "container")
        try:
            self._create(record_path(source.name), stamped.to_json(), "name")
        except DataSourceError:
            if source.container is not None:  # the name lost: release the container again
                self._store.delete(self._work, claim_path(source.container))
            raise
        return stamped

    def get(self, name: str) -> DataSource | None:
        if name == self._builtin.name:
            return self._builtin
        found = self._store.read_versioned(self._work, record_path(name))
        return None if found is None else DataSource.from_json(json.loads(found[0]))

    def require(self, name: str) -> DataSource:
        source = self.get(name)
        if source is None:
            raise DataSourceError(404, "name", f"no data source {name!r}")
        return source

    def all(self) -> list[DataSource]:
        names = [
            blob.name[len(PREFIX) : -len(".json")]
            for blob in self._store.list_blobs(self._work, prefix=PREFIX, top_level=False)
            if "/" not in blob.name[len(PREFIX) :]
        ]
        found = [self.get(name) for name in names]
        return [self._builtin, *sorted((s for s in found if s), key=lambda s: s.name)]

    def remove(self, name: str) -> DataSource:
        source = self.require(name)
        if source.builtin:
            raise DataSourceError(409, "name", f"{name!r} is the app's own images source")
        self._store.delete(self._work, record_path(name))
        if source.container is not None:
            self._store.delete(self._work, claim_path(source.container))
        return source

    def by_container(self, container: str) -> DataSource | None:
        """The source that owns a container (the built-in one for the images container)."""
        if container == self._builtin.container:
            return self._builtin
        found = self._store.read_versioned(self._work, claim_path(container))
        return None if found is None else self.get(json.loads(found[0])["name"])

    def by_index(self, index: str) -> DataSource | None:
        return next((s for s in self.all() if s.index == index), None)

    def _create(self, path: str, body: dict[str, Any], field_name: str) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            self._store.write(
                self._work, path, data, content_type="application/json", create_only=True
            )
        except BlobChangedError:
            what = "data source" if field_name == "name" else "container's data source"
            raise DataSourceError(409, field_name, f"that {what} exists already") from None
        except BlobNotFoundError:
            raise DataSourceError(400, field_name, "the work container is missing") from None


def mapping_from(raw: dict[str, Any]) -> FieldMapping:
    """A FieldMapping from On Your Data ``fields_mapping`` JSON (already validated)."""
    defaults = FieldMapping()
    return FieldMapping(
        image_vector_fields=tuple(raw.get("image_vector_fields") or defaults.image_vector_fields),
        content_fields=tuple(raw.get("content_fields") or defaults.content_fields),
        title_field=raw.get("title_field", defaults.title_field),
        url_field=raw.get("url_field", defaults.url_field),
        filepath_field=raw.get("filepath_field", defaults.filepath_field),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
