"""First steps of a run: make sure the index exists for the vectorizer's model, then work out
what the container's index must hold, from every metadata file present.

The rule (the invariant of a generated index): its documents are exactly the images that the
metadata files present in the container list, one document per image, whatever the order in
which files were created, replaced or deleted.

- Only top-level files named ``metadata*.json`` (lowercase ``metadata``) are read.
- When several files list the same image, the description of the file whose name sorts first
  (by code point) is used, and that file is the document's ``source``: order-independent.
- A file that cannot be read as a metadata file (bad JSON, too many entries) lists nothing this
  run, but the documents it was the source of are kept: a broken edit never empties the index.
- Documents that no present file lists are deleted at the end of the run (stale.json).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from imagerag import manifest
from imagerag.ingestion import runs, sync_state
from imagerag.ingestion.contract import (
    IndexReady,
    IndexRefused,
    Plan,
    PlanRejected,
    Problem,
    RunRef,
    WorkItem,
    WorkRef,
)
from imagerag.ingestion.work import plan_ref, stale_ref, write_json, write_partition
from imagerag.naming import document_id
from imagerag.ports import BlobStore, ImageIndex, IndexModelMismatchError, ModelInfo

logger = logging.getLogger(__name__)


def ensure_index(index: ImageIndex, model: ModelInfo) -> IndexReady | IndexRefused:
    """Create the image index if missing. A model mismatch is the user's to resolve: returned
    as ``{"error"}``, not raised, so the run is reported rather than retried."""
    try:
        index.ensure(model)
    except IndexModelMismatchError as exc:
        return {"error": {"code": "IndexModelMismatch", "message": str(exc)}}
    return {"index": index.name, "model": {"name": model.name, "version": model.version}}


@dataclass
class Listing:
    """What the present metadata files list: one work item per image (the first file by name
    wins), one per broken entry, and per file the rows that point at them."""

    items: list[WorkItem] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    rejected_sources: set[str] = field(default_factory=set)
    shas: dict[str, str] = field(default_factory=dict)
    _slot_of_path: dict[str, int] = field(default_factory=dict)

    def add_file(self, container: str, name: str, data: bytes) -> None:
        source = f"{container}/{name}"
        sha256 = hashlib.sha256(data).hexdigest()
        self.shas[name] = sha256
        summary: dict[str, Any] = {"metadata": source, "sha256": sha256, "rows": []}
        self.files.append(summary)
        try:
            parsed = manifest.parse_manifest(data, blob_path=name)
        except manifest.ManifestError as exc:
            summary["error"] = {"code": "InvalidManifest", "rule": exc.rule, "message": exc.message}
            summary["entries"] = 0
            self.rejected_sources.add(source)
            return
        summary["entries"] = parsed.count
        rows: list[tuple[int, int]] = []
        for entry in parsed.entries:
            slot = self._slot_of_path.get(entry.image_blob_path)
            if slot is None:
                slot = len(self.items)
                self._slot_of_path[entry.image_blob_path] = slot
                self.items.append(
                    {
                        "path": entry.image_blob_path,
                        "id": document_id(container, entry.image_blob_path),
                        "description": entry.description,
                        "source": source,
                    }
                )
            rows.append((entry.index, slot))
        for problem in parsed.problems:
            rows.append((problem.index, len(self.items)))
            self.items.append(
                {
                    "path": problem.image_blob_path,
                    "id": None,
                    "description": None,
                    "source": source,
                    "problem": {"code": problem.code, "message": problem.message},
                }
            )
        summary["rows"] = sorted(rows)  # (entry index in the file, work item)

    def desired_ids(self) -> set[str]:
        return {item["id"] for item in self.items if item["id"] is not None}


def plan_run(
    store: BlobStore,
    index: ImageIndex,
    *,
    container: str,
    index_name: str,
    run: RunRef,
    work_container: str,
    partition_size: int,
    containers: Collection[str],
) -> Plan | PlanRejected:
    """Read every metadata file present, write the run's work items and the ids to delete."""
    work: WorkRef = {"container": work_container, "prefix": run["id"]}
    store.ensure_container(work_container)  # even a refused run writes its report there
    if container not in containers:
        # The Durable management API can start an orchestration with any input: only the
        # containers the app is configured for are ever read.
        error: Problem = {
            "code": "ContainerNotAllowed",
            "message": f"container {container!r} is not one this app ingests",
        }
        return {"work": work, "error": error}
    listing, notices = read_listing(store, container)
    sync_state.record_planned_files(store, work_container, container, listing.shas)

    desired = listing.desired_ids()
    stale = sorted(
        state.id
        for state in index.all_states()
        if state.id not in desired and state.source not in listing.rejected_sources
    )
    chunks = manifest.chunk(listing.items, partition_size)
    for i, part in enumerate(chunks):
        write_partition(store, work, i, part)
    write_json(store, stale_ref(work), stale)
    write_json(
        store,
        plan_ref(work),
        {"run": run["id"], "container": container, "files": listing.files, "notices": notices},
    )
    runs.update_record(
        store,
        work_container,
        run["id"],
        phase=runs.INGESTING,
        container=container,
        index=index_name,
        total=len(listing.items),
        done=0,
        files=[_file_summary(f) for f in listing.files],
        notices=notices,
    )
    logger.info(
        "planned run %s of %s: %d files, %d work items, %d stale documents",
        run["id"],
        container,
        len(listing.files),
        len(listing.items),
        len(stale),
    )
    return {
        "work": work,
        "items": len(listing.items),
        "partitions": len(chunks),
        "partition_size": partition_size,
        "files": len(listing.files),
        "stale": len(stale),
    }


def read_listing(store: BlobStore, container: str) -> tuple[Listing, list[dict[str, str]]]:
    """Every top-level metadata file of the container, read; and a notice for each top-level
    name that looks like a metadata file but breaks the name rule."""
    listing = Listing()
    notices: list[dict[str, str]] = []
    for blob in store.list_blobs(container, top_level=True):
        if manifest.is_metadata_name(blob.name):
            found = store.read_versioned(container, blob.name)
            if found is not None:  # deleted since the listing: it lists nothing
                listing.add_file(container, blob.name, found[0])
        else:
            rule = manifest.near_miss_rule(blob.name)
            if rule is not None:
                notices.append({"metadata": f"{container}/{blob.name}", "rule": rule})
    return listing, notices


def _file_summary(file: dict[str, Any]) -> dict[str, Any]:
    summary = {key: file[key] for key in ("metadata", "sha256", "entries")}
    if "error" in file:
        summary["error"] = file["error"]
    return summary
