"""Activities of ingestion: thin wrappers over imagerag.ingestion.

Each takes and returns the types of imagerag.ingestion.contract (references and counts only,
never image bytes or vectors); ``<ACTIVITY>.implementation`` makes mypy check the signature
against what the orchestrator sends.
"""

from __future__ import annotations

import azure.durable_functions as df

from imagerag import config, cpu_share, naming, warm_up
from imagerag.ingestion import finish, image, plan, runs, sync_state
from imagerag.ingestion.contract import (
    BEGIN_RUN,
    DELETE_STALE,
    END_RUN,
    ENSURE_INDEX,
    FAIL_RUN,
    INGEST_IMAGE,
    PLAN_RUN,
    WRITE_PARTITION_REPORT,
    WRITE_REPORT,
    Counts,
    EndRun,
    EnsureIndexInput,
    EntryResult,
    FailedRun,
    ImageTask,
    IndexReady,
    IndexRefused,
    PartitionReportInput,
    Plan,
    PlanInput,
    PlanRejected,
    ReportInput,
    ReportResult,
    RunRef,
    StaleInput,
    StaleResult,
    SyncRef,
)

bp = df.Blueprint()


@bp.function_name(BEGIN_RUN.name)
@bp.activity_trigger(input_name="payload")
@BEGIN_RUN.implementation
def begin_run(payload: SyncRef) -> RunRef:
    settings = config.settings()
    store = config.blob_store(settings)
    container = payload["container"]
    start = sync_state.begin_run(store, settings.work_container, container)
    run_id = naming.run_id(container, start.number)
    record = {"id": run_id, "kind": "run", "container": container, "number": start.number}
    runs.write_record(
        store,
        settings.work_container,
        record | {"phase": runs.PLANNING, "reasons": start.reasons, "total": 0, "done": 0},
    )
    return {
        "id": run_id,
        "number": start.number,
        "requested": start.requested,
        "changes": start.changes,
    }


@bp.function_name(FAIL_RUN.name)
@bp.activity_trigger(input_name="payload")
@FAIL_RUN.implementation
def fail_run(payload: FailedRun) -> bool:
    settings = config.settings()
    return runs.fail_run(config.blob_store(settings), settings.work_container, payload["run"])


@bp.function_name(END_RUN.name)
@bp.activity_trigger(input_name="payload")
@END_RUN.implementation
def end_run(payload: SyncRef) -> EndRun:
    settings = config.settings()
    again = sync_state.end_run(
        config.blob_store(settings),
        settings.work_container,
        payload["container"],
        epoch=payload["epoch"],
    )
    return {"again": again}


@bp.function_name(ENSURE_INDEX.name)
@bp.activity_trigger(input_name="payload")
@ENSURE_INDEX.implementation
def ensure_index(payload: EnsureIndexInput) -> IndexReady | IndexRefused:
    settings = config.settings()
    ready = plan.ensure_index(
        config.image_index(settings, payload["index"]), config.vectorizer(settings).model
    )
    if "error" not in ready:
        warm_up.models_for_ingestion(settings)  # before the fan-out, which needs them
    return ready


@bp.function_name(PLAN_RUN.name)
@bp.activity_trigger(input_name="payload")
@PLAN_RUN.implementation
def plan_run(payload: PlanInput) -> Plan | PlanRejected:
    settings = config.settings()
    return plan.plan_run(
        config.blob_store(settings),
        config.image_index(settings, payload["index"]),
        container=payload["container"],
        index_name=payload["index"],
        run=payload["run"],
        work_container=settings.work_container,
        partition_size=settings.partition_size,
        # Read afresh (not the cached list): a source registered a moment ago is ingested.
        containers={s.container for s in config.registry(settings).all() if s.container},
    )


@bp.function_name(INGEST_IMAGE.name)
@bp.activity_trigger(input_name="payload")
@INGEST_IMAGE.implementation
def ingest_image(payload: ImageTask) -> EntryResult:
    settings = config.settings()
    store, work = config.blob_store(settings), payload["work"]
    with cpu_share.process_share().bulk_step():  # chat requests go first
        result = image.ingest_image(
            store,
            config.vectorizer(settings),
            config.image_index(settings, payload["target"]["index"]),
            work=work,
            partition=payload["partition"],
            slot=payload["slot"],
            target=payload["target"],
        )
    # Counted now, written to the run's record within a second or so (runs.LiveProgress).
    runs.live_progress.add(store, work["container"], work["prefix"], payload["partition"], result)
    return result


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


@bp.function_name(DELETE_STALE.name)
@bp.activity_trigger(input_name="payload")
@DELETE_STALE.implementation
def delete_stale(payload: StaleInput) -> StaleResult:
    settings = config.settings()
    return finish.delete_stale(
        config.blob_store(settings),
        config.image_index(settings, payload["target"]["index"]),
        work=payload["work"],
        target=payload["target"],
    )


@bp.function_name(WRITE_REPORT.name)
@bp.activity_trigger(input_name="payload")
@WRITE_REPORT.implementation
def write_report(payload: ReportInput) -> ReportResult:
    return finish.write_report(
        config.blob_store(config.settings()),
        work=payload["work"],
        container=payload["container"],
        index=payload["index"],
        run=payload["run"],
        partitions=payload["partitions"],
        deleted=payload["deleted"],
        superseded=payload["superseded"],
        error=payload.get("error"),
    )
