"""Whether a container's index needs another ingestion run, kept in one small blob per container
(``<work>/containers/<container>.json``) updated with optimistic concurrency (ETag).

Every event (a metadata file created, replaced or deleted; an upload through the API) asks
for a run with :func:`request_run`. Runs of one container never overlap: one sync
orchestration per container runs them one after the other while requests keep coming
(:func:`begin_run`, :func:`end_run`), so what a run reads is never changed under it by a
sibling run, and events that arrive during a run are covered by the next one.

State fields:
    requested   how many requests have been made (each event adds one)
    changes     how many of them changed what the metadata files list (a new, edited or
                deleted file; not an identical re-upload): a run in progress stops early
                when this moves, since the next run will redo its work anyway
    handled     the ``requested`` value the latest run started from
    running     a sync orchestration is (or is about to be) running the container's runs
    epoch       how many times ``running`` went from false to true: names the orchestration
                that owns the runs, so a stale flag can be told from a live one
    runs        how many runs have begun (run numbers)
    files       {metadata file: sha256}: the latest known content of each file (what the
                latest run read, then what requests since said was written)
    reasons     the latest requests (what triggered them), newest last
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imagerag.ports import BlobChangedError, BlobNotFoundError, BlobStore

logger = logging.getLogger(__name__)

MAX_REASONS = 20
_ATTEMPTS = 50  # optimistic-concurrency retries; writers are few (a trigger, one orchestration)


@dataclass(frozen=True, slots=True)
class RunRequest:
    requested: int  # the request number this event got
    epoch: int  # the sync orchestration that will cover it
    start: bool  # this caller flipped ``running`` on: it must start that orchestration
    run: int  # the number of the run that will cover it (runs begin one after the other)


@dataclass(frozen=True, slots=True)
class RunStart:
    number: int  # the run's number in this container (1, 2, ...)
    requested: int  # the requests this run covers: every one up to this number
    changes: int  # the content changes it has seen (see ``superseded``)
    reasons: list[dict[str, Any]]


def state_path(container: str) -> str:
    return f"containers/{container}.json"


def read_state(store: BlobStore, work_container: str, container: str) -> dict[str, Any]:
    found = store.read_versioned(work_container, state_path(container))
    return _initial(container) if found is None else json.loads(found[0])


def request_run(
    store: BlobStore,
    work_container: str,
    container: str,
    *,
    reason: dict[str, Any],
    written: tuple[str, str] | None = None,
    deleted: str | None = None,
) -> RunRequest:
    """Count one more request for ``container``: a metadata file ``written`` (name, sha256)
    or ``deleted`` (name), or anything else (neither: counts as a change). A file written
    with the bytes last known for it (a re-drop, or the second delivery of one upload) asks
    for one more run, to retry what can change (missing images, failures), without stopping
    the run in progress: the same content is not a new version."""

    def change(state: dict[str, Any]) -> RunRequest:
        state["requested"] += 1
        files: dict[str, str] = state["files"]
        if written is not None:
            if files.get(written[0]) != written[1]:
                files[written[0]] = written[1]
                state["changes"] += 1
        elif deleted is not None:
            files.pop(deleted, None)
            state["changes"] += 1
        else:
            state["changes"] += 1
        start = not state["running"]
        if start:
            state["running"] = True
            state["epoch"] += 1
        stamped = {**reason, "request": state["requested"], "at": _now()}
        state["reasons"] = [*state["reasons"], stamped][-MAX_REASONS:]
        return RunRequest(
            requested=state["requested"],
            epoch=state["epoch"],
            start=start,
            run=state["runs"] + 1,
        )

    result: RunRequest = _update(store, work_container, container, change)
    return result


def begin_run(store: BlobStore, work_container: str, container: str) -> RunStart:
    """The next run: it covers every request made so far."""

    def change(state: dict[str, Any]) -> RunStart:
        state["runs"] += 1
        state["handled_before"] = state["handled"]
        state["handled"] = state["requested"]
        covered = [r for r in state["reasons"] if r.get("request", 0) > state["handled_before"]]
        return RunStart(
            number=state["runs"],
            requested=state["requested"],
            changes=state["changes"],
            reasons=covered,
        )

    result: RunStart = _update(store, work_container, container, change)
    return result


def record_planned_files(
    store: BlobStore, work_container: str, container: str, files: dict[str, str]
) -> None:
    """What the run in progress read: {file: sha256} (see ``request_run``)."""

    def change(state: dict[str, Any]) -> bool:
        state["files"] = files
        return True

    _update(store, work_container, container, change)


def end_run(store: BlobStore, work_container: str, container: str, *, epoch: int) -> bool:
    """After a run: True when requests arrived meanwhile (run again); False when none did, and
    then ``running`` is off, so the next request starts a new sync orchestration."""

    def change(state: dict[str, Any]) -> bool:
        if state["requested"] > state["handled"]:
            return True
        if state["epoch"] == epoch:
            state["running"] = False
        return False

    again = _update(store, work_container, container, change)
    return bool(again)


def superseded(state: dict[str, Any], changes: int) -> bool:
    """Whether what the metadata files list changed after a run that saw ``changes`` began:
    its remaining work would be redone by the next run, so it stops early."""
    return int(state["changes"]) > changes


def _initial(container: str) -> dict[str, Any]:
    return {
        "container": container,
        "requested": 0,
        "changes": 0,
        "handled": 0,
        "handled_before": 0,
        "running": False,
        "epoch": 0,
        "runs": 0,
        "files": {},
        "reasons": [],
    }


def _update(
    store: BlobStore,
    work_container: str,
    container: str,
    change: Callable[[dict[str, Any]], Any],
) -> Any:
    """Read, change, write back only if nobody wrote meanwhile; retry otherwise."""
    path = state_path(container)
    for _attempt in range(_ATTEMPTS):
        found = store.read_versioned(work_container, path)
        state = _initial(container) if found is None else json.loads(found[0])
        result = change(state)
        body = json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            if found is None:
                store.write(
                    work_container, path, body, content_type="application/json", create_only=True
                )
            else:
                store.write(
                    work_container, path, body, content_type="application/json", if_match=found[1]
                )
            return result
        except BlobChangedError:
            continue  # someone else wrote first: read again and redo the change
        except BlobNotFoundError:
            store.ensure_container(work_container)  # the app's first run ever
    raise RuntimeError(f"the sync state of {container!r} kept changing; gave up after retries")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
