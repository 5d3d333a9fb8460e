"""Activities of the ingestion pipeline: thin wrappers over imagerag.ingestion.

Inputs and outputs (JSON):
    plan_ingestion          {container, blob_path, sha256, instance_id}
                            -> {metadata, entries, partitions, problems, work: {container, prefix}}
                               or {metadata, error: {code, message[, rule]}}
    read_partition          {work, partition} -> [entry, ...]   (partition's entries, in order)
    record_entry            entry {container, index, image_blob_path, description[, problem]}
                            -> {index, image_blob_path, id, status, size[, reason]}
    write_partition_report  {work, partition, results: [...]}
                            -> {entries, recorded, missing, invalid}
    write_report            {work, metadata, sha256, partitions}
                            -> {container, path, entries, recorded, missing, invalid}
"""

from __future__ import annotations

from typing import Any, cast

import azure.durable_functions as df

from imagerag import ingestion
from imagerag.config import Settings, blob_store

PLAN_INGESTION = "plan_ingestion"
READ_PARTITION = "read_partition"
RECORD_ENTRY = "record_entry"
WRITE_PARTITION_REPORT = "write_partition_report"
WRITE_REPORT = "write_report"

bp = df.Blueprint()


@bp.function_name(PLAN_INGESTION)
@bp.activity_trigger(input_name="payload")
def plan_ingestion(payload: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    plan = ingestion.plan_ingestion(
        blob_store(settings),
        container=payload["container"],
        blob_path=payload["blob_path"],
        sha256=payload["sha256"],
        instance_id=payload["instance_id"],
        work_container=settings.work_container,
        partition_size=settings.partition_size,
    )
    return dict(plan)


@bp.function_name(READ_PARTITION)
@bp.activity_trigger(input_name="payload")
def read_partition(payload: dict[str, Any]) -> list[dict[str, Any]]:
    entries = ingestion.read_partition(
        blob_store(Settings.from_env()), work=payload["work"], partition=payload["partition"]
    )
    return [dict(e) for e in entries]


@bp.function_name(RECORD_ENTRY)
@bp.activity_trigger(input_name="payload")
def record_entry(payload: dict[str, Any]) -> dict[str, Any]:
    entry = cast(ingestion.EntryRef, payload)
    return dict(ingestion.record_entry(blob_store(Settings.from_env()), entry))


@bp.function_name(WRITE_PARTITION_REPORT)
@bp.activity_trigger(input_name="payload")
def write_partition_report(payload: dict[str, Any]) -> dict[str, Any]:
    counts = ingestion.write_partition_report(
        blob_store(Settings.from_env()),
        work=payload["work"],
        partition=payload["partition"],
        results=payload["results"],
    )
    return dict(counts)


@bp.function_name(WRITE_REPORT)
@bp.activity_trigger(input_name="payload")
def write_report(payload: dict[str, Any]) -> dict[str, Any]:
    return ingestion.write_report(
        blob_store(Settings.from_env()),
        work=payload["work"],
        metadata=payload["metadata"],
        sha256=payload["sha256"],
        partitions=payload["partitions"],
    )
