"""Activities of the ingestion pipeline: thin wrappers over imagerag.ingestion.

Inputs and outputs (JSON; references and counts only, never image bytes or vectors):
    plan_ingestion          {container, blob_path, sha256, instance_id}
                            -> {metadata, index, entries, partitions, partition_size, problems,
                                work: {container, prefix}}
                               or {metadata, error: {code, message[, rule]}, report}
    ensure_index            {index} -> {index, model: {name, version}} or {error}
    ingest_image            {work, partition, slot, target: {index, source}}
                            -> {index, image_blob_path, id, status[, code, reason]}
    write_partition_report  {work, partition, results: [...]}
                            -> {entries, indexed, updated, unchanged, skipped, failed}
    sync_deletions          {work, partitions, metadata, sha256, index}
                            -> {deleted, superseded}
    write_report            {work, metadata, sha256, partitions, index, deleted[, error]}
                            -> {container, path, entries, indexed, ..., deleted}
"""

from __future__ import annotations

from typing import Any, cast

import azure.durable_functions as df

from imagerag import config, ingestion
from imagerag.config import Settings

PLAN_INGESTION = "plan_ingestion"
ENSURE_INDEX = "ensure_index"
INGEST_IMAGE = "ingest_image"
WRITE_PARTITION_REPORT = "write_partition_report"
SYNC_DELETIONS = "sync_deletions"
WRITE_REPORT = "write_report"

bp = df.Blueprint()


@bp.function_name(PLAN_INGESTION)
@bp.activity_trigger(input_name="payload")
def plan_ingestion(payload: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    plan = ingestion.plan_ingestion(
        config.blob_store(settings),
        container=payload["container"],
        blob_path=payload["blob_path"],
        sha256=payload["sha256"],
        instance_id=payload["instance_id"],
        work_container=settings.work_container,
        partition_size=settings.partition_size,
    )
    return dict(plan)


@bp.function_name(ENSURE_INDEX)
@bp.activity_trigger(input_name="payload")
def ensure_index(payload: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    return ingestion.ensure_index(
        config.image_index(settings, payload["index"]), config.vectorizer(settings).model
    )


@bp.function_name(INGEST_IMAGE)
@bp.activity_trigger(input_name="payload")
def ingest_image(payload: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    target = cast(ingestion.Target, payload["target"])
    result = ingestion.ingest_image(
        config.blob_store(settings),
        config.vectorizer(settings),
        config.image_index(settings, target["index"]),
        work=payload["work"],
        partition=payload["partition"],
        slot=payload["slot"],
        target=target,
    )
    return dict(result)


@bp.function_name(WRITE_PARTITION_REPORT)
@bp.activity_trigger(input_name="payload")
def write_partition_report(payload: dict[str, Any]) -> dict[str, Any]:
    counts = ingestion.write_partition_report(
        config.blob_store(Settings.from_env()),
        work=payload["work"],
        partition=payload["partition"],
        results=payload["results"],
    )
    return dict(counts)


@bp.function_name(SYNC_DELETIONS)
@bp.activity_trigger(input_name="payload")
def sync_deletions(payload: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    return ingestion.sync_deletions(
        config.blob_store(settings),
        config.image_index(settings, payload["index"]),
        work=payload["work"],
        partitions=payload["partitions"],
        metadata=payload["metadata"],
        sha256=payload["sha256"],
    )


@bp.function_name(WRITE_REPORT)
@bp.activity_trigger(input_name="payload")
def write_report(payload: dict[str, Any]) -> dict[str, Any]:
    return ingestion.write_report(
        config.blob_store(Settings.from_env()),
        work=payload["work"],
        metadata=payload["metadata"],
        sha256=payload["sha256"],
        partitions=payload["partitions"],
        index=payload["index"],
        deleted=payload["deleted"],
        error=payload.get("error"),
    )
