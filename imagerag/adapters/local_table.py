"""The LanceDB table behind a local index: its Arrow schema (the model recorded in the
schema metadata), document rows, and SQL literals for LanceDB's filters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from imagerag.adapters.index_rules import search_hit
from imagerag.ports import (
    FieldMapping,
    FieldMappingError,
    IndexDocument,
    ModelInfo,
    SearchHit,
)

MODEL_METADATA_KEY = b"imagerag.model"
TEXT_MODEL_METADATA_KEY = b"imagerag.text_model"
KEY_FIELD = "id"
VECTOR_FIELD = "image_vector"
# Sentence embeddings of the descriptions (only in indexes made with a text embedder).
DESCRIPTION_VECTOR_FIELD = "description_vector"
# The model's verification thumbnail of each image (imagerag.verification).
THUMBNAIL_FIELD = "image_thumbnail"
STRING_FIELDS = (
    "description",
    "filepath",
    "url",
    "title",
    "source",
    "model_name",
    "model_version",
    "content_hash",
)


def schema(model: ModelInfo, text_model: ModelInfo | None = None) -> pa.Schema:
    fields = [pa.field(KEY_FIELD, pa.string(), nullable=False)]
    fields.append(pa.field(VECTOR_FIELD, pa.list_(pa.float32(), model.dimensions)))
    fields += [pa.field(name, pa.string()) for name in STRING_FIELDS]
    fields.append(pa.field(THUMBNAIL_FIELD, pa.binary()))
    metadata = {MODEL_METADATA_KEY: _model_json(model)}
    if text_model is not None:
        dims = text_model.dimensions
        fields.append(pa.field(DESCRIPTION_VECTOR_FIELD, pa.list_(pa.float32(), dims)))
        metadata[TEXT_MODEL_METADATA_KEY] = _model_json(text_model)
    return pa.schema(fields, metadata=metadata)


def _model_json(model: ModelInfo) -> bytes:
    recorded = {
        "name": model.name,
        "version": model.version,
        "dimensions": model.dimensions,
        "supports_text": model.supports_text,
    }
    return json.dumps(recorded).encode()


def recorded_model(schema: pa.Schema, key: bytes = MODEL_METADATA_KEY) -> ModelInfo | None:
    raw = (schema.metadata or {}).get(key)
    if raw is None:
        return None
    data = json.loads(raw)
    return ModelInfo(
        name=str(data["name"]),
        version=str(data["version"]),
        dimensions=int(data["dimensions"]),
        supports_text=bool(data.get("supports_text", False)),
    )


def vector_dims(schema: pa.Schema, name: str) -> int | None:
    if name not in schema.names:
        return None
    kind = schema.field(name).type
    return int(kind.list_size) if pa.types.is_fixed_size_list(kind) else None


def string_fields(schema: pa.Schema) -> tuple[str, ...]:
    return tuple(
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    )


def check_mapped_fields(schema: pa.Schema, fields: FieldMapping, strings: tuple[str, ...]) -> None:
    mapped = [(name, "content_fields") for name in fields.content_fields]
    mapped += [
        (getattr(fields, role), role) for role in ("title_field", "url_field", "filepath_field")
    ]
    for name, role in mapped:
        if name is not None and name not in strings:
            raise FieldMappingError(
                f"mapped field {name!r} is not a text field of the index", mapping=role, field=name
            )


def hit_from_row(row: dict[str, Any], score: float, fields: FieldMapping) -> SearchHit:
    def value(name: str | None) -> str | None:
        return None if name is None else row.get(name)

    return search_hit(id=row[KEY_FIELD], score=score, fields=fields, value=value)


def document_rows(
    documents: list[IndexDocument],
    schema: pa.Schema,
    description_vectors: list[list[float]] | None = None,
) -> pa.Table:
    columns: dict[str, Any] = {
        KEY_FIELD: [d.id for d in documents],
        VECTOR_FIELD: vector_column([d.image_vector for d in documents]),
    }
    for name in STRING_FIELDS:
        columns[name] = [getattr(d, name) for d in documents]
    if THUMBNAIL_FIELD in schema.names:
        columns[THUMBNAIL_FIELD] = [d.thumbnail for d in documents]
    if description_vectors is not None:
        columns[DESCRIPTION_VECTOR_FIELD] = vector_column(description_vectors)
    return pa.table(columns, schema=schema)


def vector_column(vectors: list[list[float]]) -> pa.FixedSizeListArray:
    flat = np.asarray(vectors, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), len(vectors[0]))


def last_per_id(rows: pa.Table) -> pa.Table:
    """merge_insert refuses two source rows for one key: keep the last write of each id."""
    last = {key: i for i, key in enumerate(rows.column(KEY_FIELD).to_pylist())}
    if len(last) == rows.num_rows:
        return rows
    return rows.take(sorted(last.values()))


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: list[str]) -> str:
    return ", ".join(sql_string(v) for v in values)
