"""The Durable wire contract of an ingestion: what each activity takes and returns.

The orchestrators (orchestrations/ingest.py) and the activities (activities/ingest.py) both use
these types, so mypy checks the two sides of every call against one definition. Everything in
here crosses the Durable history as JSON: references and counts only, never bytes or vectors.
Blob locations travel as :class:`BlobRef` (``{container, path}``), never as joined strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, NotRequired, TypedDict, TypeVar, final

from imagerag import manifest

# What happened to one entry of the file (the report's ``status``):
#   indexed    vectorized and upserted (new or changed image)
#   updated    same image, new description or source: merged, not re-vectorized
#   unchanged  already indexed exactly so: nothing written
#   skipped    the entry or its image breaks a rule; ``code``/``reason`` say which
#   failed     a service stayed unavailable; dropping the file again retries it
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
    """Where one ingestion keeps its work blobs: ``<container>/<prefix>/...``."""

    container: str
    prefix: str  # the ingestion's instance id


@final
class Target(TypedDict):
    """Where the images of one metadata file version go."""

    index: str  # image index name
    source: BlobRef  # the metadata file: recorded on each document for the deletion sync
    etag: str  # the metadata file's ETag when planned: writes stop once it changes


@final
class Problem(TypedDict):
    """Why a file or an index was refused as a whole."""

    code: str  # InvalidManifest | MetadataNotFound | MetadataChanged | IndexModelMismatch
    message: str
    rule: NotRequired[str]  # the manifest rule, for InvalidManifest


# --------------------------------------------------------------------------- orchestrators


@final
class IngestRequest(TypedDict):
    """Input of the ingestion orchestrator: one version (by content) of one metadata file."""

    metadata: BlobRef
    sha256: str


@final
class PartitionRequest(TypedDict):
    """Input of one partition sub-orchestration."""

    work: WorkRef
    partition: int
    entries: int
    target: Target


@final
class IngestResult(TypedDict):
    """Output of a completed ingestion."""

    metadata: BlobRef
    index: str
    entries: int
    indexed: int
    updated: int
    unchanged: int
    skipped: int
    failed: int
    deleted: int
    report: BlobRef


@final
class IngestRejected(TypedDict):
    """Output of an ingestion whose file (or index) was refused whole."""

    metadata: BlobRef
    error: Problem
    report: BlobRef


# --------------------------------------------------------------------------- activities


@final
class PlanInput(TypedDict):
    metadata: BlobRef
    sha256: str
    instance_id: str


@final
class Plan(TypedDict):
    metadata: BlobRef
    index: str  # the image index: "<container>-v"
    metadata_etag: str  # ETag of the metadata file version being ingested
    entries: int
    partitions: int
    partition_size: int
    problems: int
    work: WorkRef


@final
class PlanRejected(TypedDict):
    metadata: BlobRef
    error: Problem
    report: BlobRef  # the rejection report


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
class EntryRef(TypedDict):
    """One element of the metadata file, as stored in a partition blob."""

    container: str  # images container
    index: int  # position in the file's array
    image_blob_path: str | None
    description: str | None
    problem: NotRequired[dict[str, str]]  # {"code", "message"} from manifest validation


@final
class ImageTask(TypedDict):
    """Input of ``ingest_image``: which entry (by partition and slot) and where it goes."""

    work: WorkRef
    partition: int
    slot: int
    target: Target


@final
class EntryResult(TypedDict):
    index: int
    image_blob_path: str | None
    id: str | None
    status: Status
    code: NotRequired[str]  # why skipped or failed: a manifest, image or service rule code
    reason: NotRequired[str]


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
class SyncInput(TypedDict):
    work: WorkRef
    partitions: int
    metadata: BlobRef
    sha256: str
    index: str


@final
class SyncResult(TypedDict):
    deleted: int
    superseded: bool


@final
class ReportInput(TypedDict):
    work: WorkRef
    metadata: BlobRef
    sha256: str
    partitions: int
    index: str
    deleted: int
    error: NotRequired[Problem]  # why nothing was ingested


@final
class ReportResult(TypedDict):
    report: BlobRef
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


PLAN_INGESTION: Activity[PlanInput, Plan | PlanRejected] = Activity("plan_ingestion")
ENSURE_INDEX: Activity[EnsureIndexInput, IndexReady | IndexRefused] = Activity("ensure_index")
INGEST_IMAGE: Activity[ImageTask, EntryResult] = Activity("ingest_image")
WRITE_PARTITION_REPORT: Activity[PartitionReportInput, Counts] = Activity("write_partition_report")
SYNC_DELETIONS: Activity[SyncInput, SyncResult] = Activity("sync_deletions")
WRITE_REPORT: Activity[ReportInput, ReportResult] = Activity("write_report")


def partition_counts(entries: int, partition_size: int) -> list[int]:
    """Entries per partition, as plan_ingestion cuts them (pure: orchestrators call it)."""
    return [end - start for start, end in manifest.partitions(entries, partition_size)]
