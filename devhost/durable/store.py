"""On-disk state of the task hub: instances, their history, their inbox of new events.

SQLite gives atomic episodes: an orchestrator's new history, the inbox events it consumed and
the work it scheduled are committed together, so a killed devhost resumes exactly where the last
commit left it. Only the event-loop thread touches the connection. The blob trigger's receipts
and the Event Grid emulation's state (blobs seen, events published, receipts) live here too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    runtime_status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    created_time TEXT NOT NULL,
    last_updated_time TEXT NOT NULL,
    parent_instance_id TEXT,
    parent_task_id INTEGER,
    book TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (instance_id, position)
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox (instance_id, id);
CREATE TABLE IF NOT EXISTS blob_receipts (
    function_name TEXT NOT NULL,
    blob TEXT NOT NULL,
    etag TEXT NOT NULL,
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (function_name, blob, etag)
);
CREATE TABLE IF NOT EXISTS eventgrid_blobs (
    container TEXT NOT NULL,
    name TEXT NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    blob_type TEXT NOT NULL,
    PRIMARY KEY (container, name)
);
CREATE TABLE IF NOT EXISTS eventgrid_events (
    seq INTEGER PRIMARY KEY,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS eventgrid_deliveries (
    function_name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (function_name, seq)
);
CREATE INDEX IF NOT EXISTS eventgrid_open ON eventgrid_deliveries (outcome, seq);
"""

ACTIVE_STATUSES = ("Pending", "Running")


@dataclass
class InstanceRecord:
    instance_id: str
    name: str
    execution_id: str
    runtime_status: str
    input: str | None
    created_time: str
    last_updated_time: str
    output: str | None = None
    custom_status: str | None = None
    parent_instance_id: str | None = None
    parent_task_id: int | None = None
    # Host bookkeeping: actions seen so far, sequence numbers, retry groups (see engine.py).
    book: dict[str, Any] = field(default_factory=dict)

    @property
    def is_active(self) -> bool:
        return self.runtime_status in ACTIVE_STATUSES


_COLUMNS = (
    "instance_id, name, execution_id, runtime_status, input, output, custom_status, "
    "created_time, last_updated_time, parent_instance_id, parent_task_id, book"
)


def _record(row: tuple[Any, ...]) -> InstanceRecord:
    (
        iid,
        name,
        execution_id,
        status,
        input_,
        output,
        custom,
        created,
        updated,
        parent,
        parent_task,
        book,
    ) = row
    return InstanceRecord(
        instance_id=iid,
        name=name,
        execution_id=execution_id,
        runtime_status=status,
        input=input_,
        output=output,
        custom_status=custom,
        created_time=created,
        last_updated_time=updated,
        parent_instance_id=parent,
        parent_task_id=parent_task,
        book=json.loads(book),
    )


class DurableStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # instances -----------------------------------------------------------------------------

    def get(self, instance_id: str) -> InstanceRecord | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        return _record(row) if row else None

    def status(self, instance_id: str) -> tuple[str, str] | None:
        """(execution id, runtime status) of the instance, without decoding its bookkeeping
        as get() does (it grows with the instance's fan-out)."""
        row = self._db.execute(
            "SELECT execution_id, runtime_status FROM instances WHERE instance_id = ?",
            (instance_id,),
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def active_execution(self, instance_id: str) -> str | None:
        """The execution id of the instance while it is active (Pending or Running), else None."""
        status = self.status(instance_id)
        return status[0] if status and status[1] in ACTIVE_STATUSES else None

    def put(self, record: InstanceRecord) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO instances ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.instance_id,
                record.name,
                record.execution_id,
                record.runtime_status,
                record.input,
                record.output,
                record.custom_status,
                record.created_time,
                record.last_updated_time,
                record.parent_instance_id,
                record.parent_task_id,
                json.dumps(record.book),
            ),
        )

    def query(
        self,
        *,
        statuses: list[str] | None = None,
        created_from: str | None = None,
        created_to: str | None = None,
        prefix: str | None = None,
    ) -> list[InstanceRecord]:
        clauses: list[str] = []
        args: list[str | int] = []
        if statuses:
            clauses.append(f"runtime_status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if created_from:
            clauses.append("created_time >= ?")
            args.append(created_from)
        if created_to:
            clauses.append("created_time <= ?")
            args.append(created_to)
        if prefix:
            clauses.append("substr(instance_id, 1, ?) = ?")
            args.extend([len(prefix), prefix])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM instances {where} ORDER BY created_time", args
        ).fetchall()
        return [_record(r) for r in rows]

    def delete(self, instance_id: str) -> None:
        with self.transaction():
            for table in ("instances", "history", "inbox"):
                self._db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))

    # history and inbox ---------------------------------------------------------------------

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.history_texts(instance_id)]

    def history_texts(self, instance_id: str) -> list[str]:
        """The instance's history, each event as the JSON text it was stored as."""
        rows = self._db.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY position", (instance_id,)
        )
        return [str(r[0]) for r in rows]

    def append_history(self, instance_id: str, start: int, texts: list[str]) -> None:
        """Events (as JSON texts) stored from position ``start`` of the instance's history."""
        self._db.executemany(
            "INSERT INTO history (instance_id, position, event) VALUES (?,?,?)",
            [(instance_id, start + i, text) for i, text in enumerate(texts)],
        )

    def clear_history(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
        self._db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))

    def clear_inbox(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))

    def add_to_inbox(self, instance_id: str, execution_id: str, event: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO inbox (instance_id, execution_id, event) VALUES (?,?,?)",
            (instance_id, execution_id, json.dumps(event)),
        )

    def inbox(self, instance_id: str, execution_id: str) -> list[tuple[int, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT id, event FROM inbox WHERE instance_id = ? AND execution_id = ? ORDER BY id",
            (instance_id, execution_id),
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    def remove_from_inbox(self, row_ids: list[int]) -> None:
        self._db.executemany("DELETE FROM inbox WHERE id = ?", [(i,) for i in row_ids])

    # blob trigger receipts -----------------------------------------------------------------

    def receipt(self, function_name: str, blob: str, etag: str) -> tuple[str, int] | None:
        row = self._db.execute(
            "SELECT outcome, attempts FROM blob_receipts "
            "WHERE function_name = ? AND blob = ? AND etag = ?",
            (function_name, blob, etag),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def put_receipt(
        self, function_name: str, blob: str, etag: str, outcome: str, attempts: int
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO blob_receipts VALUES (?,?,?,?,?)",
            (function_name, blob, etag, outcome, attempts),
        )

    # Event Grid emulation: what the storage topic has published, and receipts per function --

    def seen_blobs(self) -> dict[str, dict[str, SeenBlob]]:
        """container -> name -> the blob as the last scan saw it."""
        seen: dict[str, dict[str, SeenBlob]] = {}
        for container, name, etag, content_type, blob_type in self._db.execute(
            "SELECT container, name, etag, content_type, blob_type FROM eventgrid_blobs"
        ):
            seen.setdefault(container, {})[name] = SeenBlob(etag, content_type, blob_type)
        return seen

    def put_seen_blob(self, container: str, name: str, blob: SeenBlob) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO eventgrid_blobs VALUES (?,?,?,?,?)",
            (container, name, blob.etag, blob.content_type, blob.blob_type),
        )

    def forget_seen_blob(self, container: str, name: str) -> None:
        self._db.execute(
            "DELETE FROM eventgrid_blobs WHERE container = ? AND name = ?", (container, name)
        )

    def forget_seen_container(self, container: str) -> None:
        self._db.execute("DELETE FROM eventgrid_blobs WHERE container = ?", (container,))

    def next_event_sequence(self) -> int:
        # Events are never deleted, so MAX + 1 only grows (the sequencer orders events).
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM eventgrid_events").fetchone()
        return int(row[0])

    def add_event(self, seq: int, event: dict[str, Any], functions: Iterable[str]) -> None:
        self._db.execute(
            "INSERT INTO eventgrid_events (seq, event) VALUES (?, ?)", (seq, json.dumps(event))
        )
        self._db.executemany(
            "INSERT INTO eventgrid_deliveries VALUES (?, ?, 'pending', 0)",
            [(name, seq) for name in functions],
        )

    def open_deliveries(
        self, functions: Iterable[str], max_attempts: int
    ) -> list[tuple[str, int, int, dict[str, Any]]]:
        """(function, seq, attempts so far, event) not yet delivered nor given up, oldest first."""
        names = list(functions)
        rows = self._db.execute(
            "SELECT d.function_name, d.seq, d.attempts, e.event "
            "FROM eventgrid_deliveries d JOIN eventgrid_events e ON e.seq = d.seq "
            "WHERE d.outcome != 'ok' AND d.attempts < ? "
            f"AND d.function_name IN ({','.join('?' * len(names))}) ORDER BY d.seq",
            (max_attempts, *names),
        )
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def put_delivery(self, function_name: str, seq: int, outcome: str, attempts: int) -> None:
        self._db.execute(
            "UPDATE eventgrid_deliveries SET outcome = ?, attempts = ? "
            "WHERE function_name = ? AND seq = ?",
            (outcome, attempts, function_name, seq),
        )


@dataclass(frozen=True)
class SeenBlob:
    """A top-level .json blob as the Event Grid emulation last listed it."""

    etag: str
    content_type: str
    blob_type: str
