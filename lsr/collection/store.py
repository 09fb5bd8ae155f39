"""DocStore: each document's text and metadata in an embedded SQLite database (WAL mode).

The store follows the collection's log: every applied batch of writes commits together with the
sequence number of its last record (``applied_seq``), so after a crash the collection replays
exactly the records the store has not seen. Searches read payloads through per-thread
connections; WAL mode lets them read while the writer commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lsr.collection.failpoints import crash_point
from lsr.collection.records import Delete, Op

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY, text TEXT, metadata TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
"""


class DocStore:
    """Text + metadata by external id, versioned by the log's sequence number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self._writer.commit()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # the collection's log is the durable copy
        return connection

    @property
    def applied_seq(self) -> int:
        row = self._writer.execute("SELECT value FROM state WHERE key='applied_seq'").fetchone()
        return int(row[0]) if row else 0

    def apply(self, ops: Iterable[tuple[int, Op]]) -> None:
        """Apply ops (seq, op) in one transaction and record the last seq (writer thread only)."""
        last = None
        cursor = self._writer.cursor()
        cursor.execute("BEGIN")
        try:
            for seq, op in ops:
                last = seq
                if isinstance(op, Delete):
                    cursor.executemany("DELETE FROM docs WHERE id=?", ((i,) for i in op.ids))
                    continue
                rows = [
                    (doc_id, text, None if meta is None else json.dumps(meta, ensure_ascii=False))
                    for doc_id, text, meta in zip(op.ids, op.texts, op.metadata, strict=True)
                ]
                cursor.executemany("DELETE FROM docs WHERE id=?", ((r[0],) for r in rows))
                cursor.executemany(
                    "INSERT INTO docs VALUES (?, ?, ?)",
                    [r for r in rows if r[1] is not None or r[2] is not None],
                )
            if last is not None:
                cursor.execute("INSERT OR REPLACE INTO state VALUES ('applied_seq', ?)", (last,))
            crash_point("store.before_commit")
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise

    def checkpoint(self) -> None:
        """Make everything applied durable in the database file (before the log is dropped)."""
        self._writer.execute("PRAGMA wal_checkpoint(FULL)")

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    def fetch(self, ids: Sequence[str]) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
        """``{id: (text, metadata)}`` for the ids that have either."""
        if not ids:
            return {}
        return _fetch(self._reader(), ids)

    def count(self) -> int:
        return int(self._writer.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def close(self) -> None:
        """Close every connection (readers of all threads, then the writer)."""
        with self._readers_lock:
            for connection in self._readers:
                connection.close()
            self._readers.clear()
        self._writer.close()


Payload = tuple[str | None, dict[str, Any] | None]


def _fetch(connection: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Payload]:
    out: dict[str, Payload] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        for doc_id, text, meta in connection.execute(
            f"SELECT id, text, metadata FROM docs WHERE id IN ({marks})", chunk
        ):
            out[doc_id] = (text, None if meta is None else json.loads(meta))
    return out


class DocStoreReader:
    """Read-only access to a store that another process may be writing; creates no file.

    Each fetch uses its own short-lived connection, so the writer's last connection still
    checkpoints and removes ``-wal``/``-shm`` when it closes. While the writer has the store
    open (its ``-wal`` and ``-shm`` exist) the connection is an ordinary ``mode=ro`` WAL reader;
    otherwise the database file is quiescent and is read with ``immutable=1``, because a
    ``mode=ro`` connection would create the ``-wal``/``-shm`` files (and leave them behind).
    """

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self._sidecars = (Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))

    def _writer_present(self) -> bool:
        return all(p.exists() for p in self._sidecars)

    def fetch(self, ids: Sequence[str]) -> dict[str, Payload]:
        """``{id: (text, metadata)}`` for the ids that have either."""
        if not ids or not self.path.is_file():
            return {}
        for _ in range(3):
            shared = self._writer_present()
            flag = "mode=ro" if shared else "immutable=1"
            connection = sqlite3.connect(
                f"{self.path.as_uri()}?{flag}", uri=True, isolation_level=None
            )
            try:
                connection.execute("PRAGMA query_only=1")
                rows = _fetch(connection, ids)
            finally:
                connection.close()
            # a writer that opened during an immutable read may have checkpointed under it
            if shared or not any(p.exists() for p in self._sidecars):
                return rows
        return rows

    def close(self) -> None:
        """Nothing stays open between fetches."""
