"""Activities of the ingestion pipeline: thin wrappers over imagerag.ingestion.

Each takes and returns the types of imagerag.ingestion.contract (references and counts only,
never image bytes or vectors); ``<ACTIVITY>.implementation`` makes mypy check the signature
against what the orchestrator sends.
"""

from __future__ import annotations

import azure.durable_functions as df

from imagerag import config
from imagerag.ingestion import finish, image, plan
from imagerag.ingestion.contract import (
    ENSURE_INDEX,
    INGEST_IMAGE,
    PLAN_INGESTION,
    SYNC_DELETIONS,
    WRITE_PARTITION_REPORT,
    WRITE_REPORT,
    Counts,
    EnsureIndexInput,
    EntryResult,
    ImageTask,
    IndexReady,
    IndexRefused,
    PartitionReportInput,
    Plan,
    PlanInput,
    PlanRejected,
    ReportInput,
    ReportResult,
    SyncInput,
    SyncResult,
)

bp = df.Blueprint()


@bp.function_name(PLAN_INGESTION.name)
@bp.activity_trigger(input_name="payload")
@PLAN_INGESTION.implementation
def plan_ingestion(payload: PlanInput) -> Plan | PlanRejected:
    settings = config.settings()
    return plan.plan_ingestion(
        config.blob_store(settings),
        metadata=payload["metadata"],
        sha256=payload["sha256"],
        instance_id=payload["instance_id"],
        work_container=settings.work_container,
        partition_size=settings.partition_size,
        containers=config.served_containers(settings),
    )


@bp.function_name(ENSURE_INDEX.name)
@bp.activity_trigger(input_name="payload")
@ENSURE_INDEX.implementation
def ensure_index(payload: EnsureIndexInput) -> IndexReady | IndexRefused:
    settings = config.settings()
    return plan.ensure_index(
        config.image_index(settings, payload["index"]), config.vectorizer(settings).model
    )


@bp.function_name(INGEST_IMAGE.name)
@bp.activity_trigger(input_name="payload")
@INGEST_IMAGE.implementation
def ingest_image(payload: ImageTask) -> EntryResult:
    settings = config.settings()
    return image.ingest_image(
        config.blob_store(settings),
        config.vectorizer(settings),
        config.image_index(settings, payload["target"]["index"]),
        work=payload["work"],
        partition=payload["partition"],
        slot=payload["slot"],
        target=payload["target"],
    )


@bp.function_name(WRITE_PARTITION_REPORT.name)
@bp.activity_trigger(input_name="payload")
@WRITE_PARTITION_REPORT.implementation
def write_partition_report(payload: PartitionReportInput) -> Counts:
    return finish.write_partition_report(
        config.blob_store(config.settings()),
        work=payload["work"],
        partition=payload["partition"],
        results=payload["results"],
    )


@bp.function_name(SYNC_DELETIONS.name)
@bp.activity_trigger(input_name="payload")
@SYNC_DELETIONS.implementation
def sync_deletions(payload: SyncInput) -> SyncResult:
    settings = config.settings()
    return finish.sync_deletions(
        config.blob_store(settings),
        config.image_index(settings, payload["index"]),
        work=payload["work"],
        partitions=payload["partitions"],
        metadata=payload["metadata"],
        sha256=payload["sha256"],
    )


@bp.function_name(WRITE_REPORT.name)
@bp.activity_trigger(input_name="payload")
@WRITE_REPORT.implementation
def write_report(payload: ReportInput) -> ReportResult:
    return finish.write_report(
        config.blob_store(config.settings()),
        work=payload["work"],
        metadata=payload["metadata"],
        sha256=payload["sha256"],
        partitions=payload["partitions"],
        index=payload["index"],
        deleted=payload["deleted"],
        error=payload.get("error"),
    )
