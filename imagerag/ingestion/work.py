"""The work blobs of one run, all under ``<work container>/<run id>/``:

plan.json                 what the run read: metadata files, their entries, notices
partitions/<i:04d>.json   the work items of partition i (input of its sub-orchestration)
reports/<i:04d>.json      per-image results of partition i
stale.json                ids of documents no present metadata file lists
report.json               the merged report of the run
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from imagerag.ingestion.contract import BlobRef, WorkItem, WorkRef, blob_ref
from imagerag.ports import BlobStore

JSON_CONTENT_TYPE = "application/json"


def partition_path(prefix: str, partition: int) -> str:
    return f"{prefix}/partitions/{partition:04d}.json"


def partition_report_path(prefix: str, partition: int) -> str:
    return f"{prefix}/reports/{partition:04d}.json"


def report_ref(work: WorkRef) -> BlobRef:
    return blob_ref(work["container"], f"{work['prefix']}/report.json")


def plan_ref(work: WorkRef) -> BlobRef:
    return blob_ref(work["container"], f"{work['prefix']}/plan.json")


def stale_ref(work: WorkRef) -> BlobRef:
    return blob_ref(work["container"], f"{work['prefix']}/stale.json")


def read_json(store: BlobStore, ref: BlobRef) -> Any:
    return json.loads(store.read(ref["container"], ref["path"]))


def write_json(store: BlobStore, ref: BlobRef, value: Any) -> None:
    store.write(ref["container"], ref["path"], dumps(value), content_type=JSON_CONTENT_TYPE)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_partition(
    store: BlobStore, work: WorkRef, partition: int, items: Sequence[WorkItem]
) -> None:
    ref = blob_ref(work["container"], partition_path(work["prefix"], partition))
    write_json(store, ref, list(items))


def read_partition(store: BlobStore, *, work: WorkRef, partition: int) -> list[WorkItem]:
    path = partition_path(work["prefix"], partition)
    key = (id(store), work["container"], path)
    with _partition_cache_lock:
        cached = _partition_cache.get(key)
    if cached is None:
        cached = tuple(json.loads(store.read(work["container"], path)))
        with _partition_cache_lock:
            if len(_partition_cache) >= _PARTITION_CACHE_SIZE:
                _partition_cache.pop(next(iter(_partition_cache)))
            _partition_cache[key] = cached
    return list(cached)


# Partition blobs never change once written (same instance id = same file content), and every
# image activity of a partition reads its own entry from the same blob: keep the recent ones.
_PARTITION_CACHE_SIZE = 64
_partition_cache: dict[tuple[int, str, str], tuple[WorkItem, ...]] = {}
_partition_cache_lock = threading.Lock()
