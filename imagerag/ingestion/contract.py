"""The Durable wire contract of ingestion: what each orchestrator and activity takes and returns.

The orchestrators (orchestrations/ingest.py) and the activities (activities/ingest.py) both use
these types, so mypy checks the two sides of every call against one definition. Everything in
here crosses the Durable history as JSON: references and counts only, never bytes or vectors.
Blob locations travel as :class:`BlobRef` (``{container, path}``), never as joined strings.

One ingestion *run* brings a container's index to what the metadata files present in the
container list (see plan.py); runs of one container run one after the other (sync_state.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, NotRequired, TypedDict, TypeVar, final

from imagerag import manifest

# What happened to one entry (the report's ``status``):
#   indexed    vectorized and upserted (new or changed image)
#   updated    same image, new description or source: merged, not re-vectorized
#   unchanged  already indexed exactly so: nothing written
#   skipped    the entry or its image breaks a rule; ``code``/``reason`` say which
#   failed     a service stayed unavailable; the next run (or a re-drop) retries it
STATUS_INDEXED: Final = "indexed"
STATUS_UPDATED: Final = "updated"
STATUS_UNCHANGED: Final = "unchanged"
STATUS_SKIPPED: Final = "skipped"
STATUS_FAILED: Final = "failed"
Status = Literal["indexed", "updated", "unchanged", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("indexed", "updated", "unchanged", "skipped", "failed")


# --------------------------------------------------------------------------- references


@final
class BlobRef(TypedDict):
    container: str
    path: str


def blob_ref(container: str, path: str) -> BlobRef:
    return {"container": container, "path": path}


def ref_text(ref: BlobRef) -> str:
    """``container/path``: how a blob is named to people (reports, logs, the status API) and
    the ``source`` a document records. Container names hold no '/', so it is unambiguous."""
    return f"{ref['container']}/{ref['path']}"


@final
class WorkRef(TypedDict):
    """Where one run keeps its work blobs: ``<container>/<prefix>/...``."""

    container: str
    prefix: str  # the run id


@final
class Problem(TypedDict):
    """Why a run (or one metadata file) was refused as a whole."""

    code: str  # InvalidManifest | ContainerNotAllowed | IndexModelMismatch | ...
    message: str
    rule: NotRequired[str]  # the manifest rule, for InvalidManifest


@final
class RunRef(TypedDict):
    """One run of a container: its id and the requests it covers."""

    id: str  # naming.run_id(container, number)
    number: int
    requested: int  # covers every request up to this number (sync_state.py)
    changes: int  # content changes seen when it began: more later = superseded


@final
class Target(TypedDict):
    """Where a run's documents go, and how its activities tell they are superseded."""

    container: str
    index: str
    changes: int


# --------------------------------------------------------------------------- orchestrators


@final
class SyncRequest(TypedDict):
    """Input of a container's sync orchestration: runs until no request is left."""

    container: str
    index: str
    epoch: int  # sync_state: which start of the sync orchestration this is


@final
class RunRequest(TypedDict):
    """Input of one run."""

    container: str
    index: str
    run: RunRef


@final
class PartitionRequest(TypedDict):
    """Input of one partition sub-orchestration."""

    work: WorkRef
    partition: int
    entries: int
    target: Target


@final
class RunResult(TypedDict):
    """Output of a run: what its report says, in counts."""

    run: str
    container: str
    index: str
    phase: str  # runs.COMPLETED | SUPERSEDED | REJECTED
    entries: int
    indexed: int
    updated: int
    unchanged: int
    skipped: int
    failed: int
    deleted: int
    report: BlobRef
    error: NotRequired[Problem]


# --------------------------------------------------------------------------- activities


@final
class SyncRef(TypedDict):
    container: str
    epoch: int


@final
class EndRun(TypedDict):
    again: bool


@final
class FailedRun(TypedDict):
    """A run whose orchestration failed unexpectedly (its record is closed as failed)."""

    container: str
    run: str  # its id


@final
class PlanInput(TypedDict):
    container: str
    index: str
    run: RunRef


@final
class Plan(TypedDict):
    work: WorkRef
    items: int  # work items (one per listed image, plus one per broken entry)
    partitions: int
    partition_size: int
    files: int  # metadata files read
    stale: int  # documents no present file lists (deleted at the end)


@final
class PlanRejected(TypedDict):
    work: WorkRef
    error: Problem


@final
class EnsureIndexInput(TypedDict):
    index: str


@final
class ModelRef(TypedDict):
    name: str
    version: str


@final
class IndexReady(TypedDict):
    index: str
    model: ModelRef


@final
class IndexRefused(TypedDict):
    error: Problem


@final
class WorkItem(TypedDict):
    """One image to bring in line (or a broken entry to report), as stored in a partition."""

    path: str | None  # image_blob_path; None for an entry without a usable path
    id: str | None  # its document id
    description: str | None  # the description that wins (see plan.py)
    source: str | None  # "container/metadata file" the description comes from
    problem: NotRequired[dict[str, str]]  # {"code", "message", "file", "index"}: broken entry


@final
class ImageTask(TypedDict):
    """Input of ``ingest_image``: which work item (by partition and slot) and where it goes."""

    work: WorkRef
    partition: int
    slot: int
    target: Target


@final
class EntryResult(TypedDict):
    path: str | None
    id: str | None
    status: Status
    code: NotRequired[str]  # why skipped or failed: a manifest, image or service rule code
    reason: NotRequired[str]
    removed: NotRequired[bool]  # its document was deleted (the image is gone)


@final
class PartitionReportInput(TypedDict):
    work: WorkRef
    partition: int
    results: list[EntryResult]


@final
class Counts(TypedDict):
    entries: int
    indexed: int
    updated: int
    unchanged: int
    skipped: int
    failed: int


@final
class StaleInput(TypedDict):
    work: WorkRef
    target: Target


@final
class StaleResult(TypedDict):
    deleted: int
    superseded: bool


@final
class ReportInput(TypedDict):
    work: WorkRef
    container: str
    index: str
    run: RunRef
    partitions: int
    deleted: int
    superseded: bool
    error: NotRequired[Problem]  # why nothing was ingested


@final
class ReportResult(TypedDict):
    report: BlobRef
    phase: str
    counts: Counts
    deleted: int


# --------------------------------------------------------------------------- activity names

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Activity(Generic[In, Out]):
    """An activity's name with its input and output types.

    The orchestrator schedules it with :meth:`call` (mypy checks the payload against ``In``);
    the activity function is declared with :meth:`implementation` (mypy checks that it takes
    ``In`` and returns ``Out``).
    """

    name: str

    def call(self, context: Any, payload: In, retry: Any = None) -> Any:
        if retry is None:
            return context.call_activity(self.name, payload)
        return context.call_activity_with_retry(self.name, retry, payload)

    def implementation(self, function: Callable[[In], Out]) -> Callable[[In], Out]:
        return function


BEGIN_RUN: Activity[SyncRef, RunRef] = Activity("begin_run")
END_RUN: Activity[SyncRef, EndRun] = Activity("end_run")
FAIL_RUN: Activity[FailedRun, bool] = Activity("fail_run")
ENSURE_INDEX: Activity[EnsureIndexInput, IndexReady | IndexRefused] = Activity("ensure_index")
PLAN_RUN: Activity[PlanInput, Plan | PlanRejected] = Activity("plan_run")
INGEST_IMAGE: Activity[ImageTask, EntryResult] = Activity("ingest_image")
WRITE_PARTITION_REPORT: Activity[PartitionReportInput, Counts] = Activity("write_partition_report")
DELETE_STALE: Activity[StaleInput, StaleResult] = Activity("delete_stale")
WRITE_REPORT: Activity[ReportInput, ReportResult] = Activity("write_report")


def partition_counts(items: int, partition_size: int) -> list[int]:
    """Work items per partition, as plan_run cuts them (pure: orchestrators call it)."""
    return [end - start for start, end in manifest.partitions(items, partition_size)]
