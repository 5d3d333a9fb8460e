"""What ingestion asks of the embedded index once per image, answered from memory.

A LanceDB lookup by id costs 10-15 ms of CPU however small the table (query planning), and
ingestion makes one per image. KnownStates holds the state columns of one table version
(~25 MB of Arrow at 100,000 documents, read in ~0.2 s), and a lookup costs a version check.

The handle's own writes carry it along: a write that committed version v while it held v - 1
is applied to it. Anything else (another handle's or process's write, a compaction) leaves it
behind, and the next lookup reads every state again. Callers hold ``lock`` across a lookup
and across a write and its report, so a lookup never sees a version the map has not caught
up with.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pyarrow as pa

from imagerag.adapters.local_table import KEY_FIELD
from imagerag.ports import DocumentState

STATE_COLUMNS = [KEY_FIELD, "content_hash", "description", "source", "model_name", "model_version"]


class KnownStates:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._version: int | None = None
        self._base = pa.table({name: pa.array([], pa.string()) for name in STATE_COLUMNS})
        self._row_of: dict[str, int] = {}
        # The handle's own writes since the base was read; None: deleted.
        self._changed: dict[str, DocumentState | None] = {}

    @property
    def version(self) -> int | None:
        """The table version the map holds (that of the last get, or of a write it followed)."""
        return self._version

    def get(self, table: Any, ids: Iterable[str], version: int) -> dict[str, DocumentState]:
        """``version``: the table's latest, read before this call (so that a write made after
        it makes the next get read again)."""
        if version != self._version:
            self._read(table, version)
        found: dict[str, DocumentState] = {}
        for doc_id in ids:
            state = self._state(doc_id)
            if state is not None:
                found[doc_id] = state
        return found

    def written(self, version: int, rows: pa.Table) -> None:
        """Rows (with the state columns) this handle's write committed as ``version``."""
        if self._follows(version):
            for state in states_of(rows.select(STATE_COLUMNS)):
                self._changed[state.id] = state

    def patched(self, version: int, patches: Iterable[tuple[str, str, str]]) -> None:
        """(id, description, source) merged into existing documents by ``version``."""
        if self._follows(version):
            for doc_id, description, source in patches:
                state = self._state(doc_id)
                if state is not None:
                    self._changed[doc_id] = replace(state, description=description, source=source)

    def deleted(self, version: int, ids: Iterable[str]) -> None:
        if self._follows(version):
            self._changed.update(dict.fromkeys(ids))

    def forget(self) -> None:
        self._version = None

    def _follows(self, version: int) -> bool:
        """Whether the map held the version this write was made on; forgets it otherwise."""
        if self._version is not None and self._version == version - 1:
            self._version = version
            return True
        self._version = None
        return False

    def _read(self, table: Any, version: int) -> None:
        base = table.search().select(STATE_COLUMNS).limit(None).to_arrow().combine_chunks()
        ids = base.column(KEY_FIELD).to_pylist()
        self._base, self._changed = base, {}
        self._row_of = {doc_id: row for row, doc_id in enumerate(ids)}
        self._version = version

    def _state(self, doc_id: str) -> DocumentState | None:
        if doc_id in self._changed:
            return self._changed[doc_id]
        row = self._row_of.get(doc_id)
        if row is None:
            return None
        return states_of(self._base.slice(row, 1))[0]


def states_of(rows: pa.Table) -> list[DocumentState]:
    return [
        DocumentState(
            id=row[KEY_FIELD],
            content_hash=row["content_hash"] or "",
            description=row["description"] or "",
            source=row["source"] or "",
            model_name=row["model_name"] or "",
            model_version=row["model_version"] or "",
        )
        for row in rows.to_pylist()
    ]
