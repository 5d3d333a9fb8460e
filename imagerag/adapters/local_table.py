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
KEY_FIELD = "id"
VECTOR_FIELD = "image_vector"
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


def schema(model: ModelInfo) -> pa.Schema:
    recorded = {
        "name": model.name,
        "version": model.version,
        "dimensions": model.dimensions,
        "supports_text": model.supports_text,
    }
    fields = [pa.field(KEY_FIELD, pa.string(), nullable=False)]
    fields.append(pa.field(VECTOR_FIELD, pa.list_(pa.float32(), model.dimensions)))
    fields += [pa.field(name, pa.string()) for name in STRING_FIELDS]
    return pa.schema(fields, metadata={MODEL_METADATA_KEY: json.dumps(recorded).encode()})


def recorded_model(schema: pa.Schema) -> ModelInfo | None:
    raw = (schema.metadata or {}).get(MODEL_METADATA_KEY)
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


def document_rows(documents: list[IndexDocument], schema: pa.Schema) -> pa.Table:
    dims = len(documents[0].image_vector)
    flat = np.asarray([d.image_vector for d in documents], dtype=np.float32).reshape(-1)
    columns: dict[str, Any] = {
        KEY_FIELD: [d.id for d in documents],
        VECTOR_FIELD: pa.FixedSizeListArray.from_arrays(pa.array(flat), dims),
    }
    for name in STRING_FIELDS:
        columns[name] = [getattr(d, name) for d in documents]
    return pa.table(columns, schema=schema)


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
