"""SQLite persistence of the trackers: their counters, cursors and message tables.

Owns the schema, opening (WAL, integrity check, refusing a corrupt file, upgrading an older
schema), and the one transaction per poll in which a tracker's changes land before they are
exposed: its counters as JSON, and its message table's changes as one chunk (see
:mod:`exporter.table`), replaced now and then by a snapshot of the table. A ``kill -9`` at any
moment leaves either the whole poll or none of it.

Must not import: prometheus_client, httpx, or the client, poller, collector and web modules.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from exporter.table import MessageTable, Row

SCHEMA_VERSION = 2
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    target TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (target, seq)
);
"""


class StateError(Exception):
    """The state file cannot be used; the message says why and what to do."""


class StateStore:
    """The SQLite file behind every tracker (or ``:memory:``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state file {path!r} is unreadable ({exc}); move it aside or start with "
                "--state.reset (which renames it, never deletes it)"
            ) from None

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        """Open, check and migrate the database."""
        # The poller thread owns the connection; check_same_thread only guards misuse.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != MEMORY:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; only a power cut may lose the last
            # poll, which the next poll then reads again.
            db.execute("PRAGMA synchronous=NORMAL")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) == 1:
            _upgrade_from_1(db)
        elif int(version[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version[0]}, expected {SCHEMA_VERSION}")
        return db

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic unit: everything inside lands together or not at all."""
        return _transaction(self._db)

    def target_names(self) -> list[str]:
        """Names of the targets that have stored state."""
        return [row[0] for row in self._db.execute("SELECT name FROM targets")]

    def load_target(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """A target's identity and data, or None when it has no state."""
        row = self._db.execute("SELECT identity, data FROM targets WHERE name = ?", (name,))
        found = row.fetchone()
        return None if found is None else (found[0], json.loads(found[1]))

    def save_target(self, name: str, identity: str, data: dict[str, Any]) -> None:
        """Write a target's counters and cursor (inside a transaction)."""
        self._db.execute(
            "INSERT OR REPLACE INTO targets VALUES (?, ?, ?)",
            (name, identity, json.dumps(data, separators=(",", ":"))),
        )

    def drop_target(self, name: str) -> None:
        """Forget a target and its messages."""
        with self.transaction():
            self._db.execute("DELETE FROM chunks WHERE target = ?", (name,))
            self._db.execute("DELETE FROM targets WHERE name = ?", (name,))

    def chunks(self, target: str) -> Iterator[bytes]:
        """A target's saved chunks, in the order they were written."""
        query = "SELECT data FROM chunks WHERE target = ? ORDER BY seq"
        for (data,) in self._db.execute(query, (target,)):
            yield bytes(data)

    def append_chunk(self, target: str, data: bytes) -> None:
        """Save the changes of one poll (inside a transaction)."""
        self._db.execute(
            "INSERT INTO chunks VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM chunks "
            "WHERE target = ?), ?)",
            (target, target, data),
        )

    def replace_chunks(self, target: str, snapshot: bytes) -> None:
        """Replace a target's chunks with a snapshot of its table (inside a transaction)."""
        self._db.execute("DELETE FROM chunks WHERE target = ?", (target,))
        self._db.execute("INSERT INTO chunks VALUES (?, 1, ?)", (target, snapshot))


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Turn schema 1's row per message into one snapshot chunk per target."""
    with _transaction(db):
        for (target,) in db.execute("SELECT name FROM targets").fetchall():
            table = MessageTable()
            query = (
                "SELECT id, created_at, series, status, state, next_check, deadline "
                "FROM messages WHERE target = ?"
            )
            for msg_id, created, series, status, state, next_check, deadline in db.execute(
                query, (target,)
            ):
                if state == 0:
                    table.add_pending(Row(msg_id, created, series, status, next_check, deadline))
                else:
                    table.add_final(msg_id, created, table.final(series, status, state))
            db.execute("INSERT INTO chunks VALUES (?, 1, ?)", (target, table.snapshot()))
        db.execute("DROP TABLE messages")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Everything inside lands together or not at all."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLite ends it itself on some errors (SQLITE_FULL)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def set_aside(path: str) -> str:
    """Rename a state file (and its WAL files) out of the way; returns the new name."""
    aside = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    return aside
