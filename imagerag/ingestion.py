"""The I/O steps of ingesting one metadata file, one function per activity.

Activities call these with a BlobStore from imagerag.config; everything that crosses the
Durable history is a small JSON-able dict (references, counts), never blob bytes.

Work blobs, all under ``<work container>/<instance id>/``:
    partitions/<i:04d>.json   the entries of partition i (input of its sub-orchestration)
    reports/<i:04d>.json      per-image results of partition i
    report.json               the merged report of the whole file
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, NotRequired, TypedDict

from imagerag import manifest
from imagerag.ports import BlobNotFoundError, BlobStore, InvalidBlobNameError

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
STATUS_RECORDED = "recorded"
STATUS_MISSING = "missing"
STATUS_INVALID = "invalid"


class WorkRef(TypedDict):
    container: str  # work container
    prefix: str  # "<instance id>"


class PlanError(TypedDict):
    code: str  # InvalidManifest | MetadataNotFound | MetadataChanged
    message: str
    rule: NotRequired[str]


class Plan(TypedDict, total=False):
    metadata: str  # "container/blob path"
    entries: int
    partitions: int
    problems: int
    work: WorkRef
    error: PlanError  # present only when the file is rejected


class EntryRef(TypedDict):
    container: str  # images container
    index: int
    image_blob_path: str | None
    description: str | None
    problem: NotRequired[dict[str, str]]  # {"code", "message"} from manifest validation


class EntryResult(TypedDict):
    index: int
    image_blob_path: str | None
    id: str | None
    status: str  # recorded | missing | invalid
    size: int | None
    reason: NotRequired[str]


class Counts(TypedDict):
    entries: int
    recorded: int
    missing: int
    invalid: int


def partition_path(prefix: str, partition: int) -> str:
    return f"{prefix}/partitions/{partition:04d}.json"


def partition_report_path(prefix: str, partition: int) -> str:
    return f"{prefix}/reports/{partition:04d}.json"


def report_path(prefix: str) -> str:
    return f"{prefix}/report.json"


def plan_ingestion(
    store: BlobStore,
    *,
    container: str,
    blob_path: str,
    sha256: str,
    instance_id: str,
    work_container: str,
    partition_size: int,
) -> Plan:
    """Read and validate the metadata file, write its partitions, return the plan.

    Rejections (bad file, file gone or changed) are returned as ``{"error": ...}``: they are
    user errors to report, not failures to retry.
    """
    metadata = f"{container}/{blob_path}"
    try:
        data = store.read(container, blob_path)
    except BlobNotFoundError:
        return {
            "metadata": metadata,
            "error": {"code": "MetadataNotFound", "message": "metadata file no longer exists"},
        }
    if hashlib.sha256(data).hexdigest() != sha256:
        # A newer upload has its own trigger and instance; this one must not ingest it.
        return {
            "metadata": metadata,
            "error": {"code": "MetadataChanged", "message": "metadata changed while ingesting"},
        }
    try:
        parsed = manifest.parse_manifest(data, blob_path=blob_path)
    except manifest.ManifestError as exc:
        return {
            "metadata": metadata,
            "error": {"code": "InvalidManifest", "rule": exc.rule, "message": exc.message},
        }

    items = _entry_refs(container, parsed)
    store.ensure_container(work_container)
    chunks = manifest.chunk(items, partition_size)
    for i, part in enumerate(chunks):
        store.write(
            work_container,
            partition_path(instance_id, i),
            _dumps(list(part)),
            content_type=JSON_CONTENT_TYPE,
        )
    logger.info(
        "planned %s: %d entries (%d with problems) in %d partitions",
        metadata,
        parsed.count,
        len(parsed.problems),
        len(chunks),
    )
    return {
        "metadata": metadata,
        "entries": parsed.count,
        "partitions": len(chunks),
        "problems": len(parsed.problems),
        "work": {"container": work_container, "prefix": instance_id},
    }


def _entry_refs(container: str, parsed: manifest.Manifest) -> list[EntryRef]:
    # Every array element gets a row, valid or not, so counts add up to the file's length
    # and the report answers "what happened to line N" for each of them.
    refs: list[EntryRef] = [
        {
            "container": container,
            "index": e.index,
            "image_blob_path": e.image_blob_path,
            "description": e.description,
        }
        for e in parsed.entries
    ]
    for p in parsed.problems:
        refs.append(
            {
                "container": container,
                "index": p.index,
                "image_blob_path": p.image_blob_path,
                "description": None,
                "problem": {"code": p.code, "message": p.message},
            }
        )
    refs.sort(key=lambda r: r["index"])
    return refs


def read_partition(store: BlobStore, *, work: WorkRef, partition: int) -> list[EntryRef]:
    data = store.read(work["container"], partition_path(work["prefix"], partition))
    entries: list[EntryRef] = json.loads(data)
    return entries


def record_entry(store: BlobStore, entry: EntryRef) -> EntryResult:
    """Check one listed image. Per-entry problems come back as results; transient storage
    errors raise so that the caller's retry policy applies."""
    path = entry["image_blob_path"]
    container = entry["container"]
    result: EntryResult = {
        "index": entry["index"],
        "image_blob_path": path,
        "id": manifest.document_id(container, path) if path is not None else None,
        "status": STATUS_INVALID,
        "size": None,
    }
    problem = entry.get("problem")
    if problem is not None:
        result["reason"] = problem["message"]
        return result
    assert path is not None  # entries without a problem always have a path
    try:
        props = store.properties(container, path)
    except InvalidBlobNameError as exc:
        result["reason"] = str(exc)
        return result
    if props is None:
        result["status"] = STATUS_MISSING
        result["reason"] = f"no blob {path!r} in container {container!r}"
        return result
    result["status"] = STATUS_RECORDED
    result["size"] = props.size
    return result


def count_results(results: list[EntryResult]) -> Counts:
    counts: Counts = {"entries": len(results), "recorded": 0, "missing": 0, "invalid": 0}
    for r in results:
        status = r["status"]
        if status == STATUS_RECORDED:
            counts["recorded"] += 1
        elif status == STATUS_MISSING:
            counts["missing"] += 1
        else:
            counts["invalid"] += 1
    return counts


def write_partition_report(
    store: BlobStore, *, work: WorkRef, partition: int, results: list[EntryResult]
) -> Counts:
    ordered = sorted(results, key=lambda r: r["index"])
    store.write(
        work["container"],
        partition_report_path(work["prefix"], partition),
        _dumps({"partition": partition, "results": ordered}),
        content_type=JSON_CONTENT_TYPE,
    )
    return count_results(ordered)


def write_report(
    store: BlobStore,
    *,
    work: WorkRef,
    metadata: str,
    sha256: str,
    partitions: int,
) -> dict[str, Any]:
    """Merge the partition reports into ``<prefix>/report.json``; return where it is and the
    counts recomputed from what was merged."""
    results: list[EntryResult] = []
    for i in range(partitions):
        part = json.loads(store.read(work["container"], partition_report_path(work["prefix"], i)))
        results.extend(part["results"])
    results.sort(key=lambda r: r["index"])
    counts = count_results(results)
    path = report_path(work["prefix"])
    report = {
        "metadata": metadata,
        "sha256": sha256,
        "instance_id": work["prefix"],
        "entries": counts["entries"],
        "recorded": counts["recorded"],
        "missing": counts["missing"],
        "invalid": counts["invalid"],
        "results": results,
    }
    store.write(work["container"], path, _dumps(report), content_type=JSON_CONTENT_TYPE)
    return {"container": work["container"], "path": path, **counts}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
