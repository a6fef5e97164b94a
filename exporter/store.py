"""SQLite persistence of the trackers: tracked messages, counters and cursors.

Owns the schema, opening (WAL, integrity check, refusing a corrupt file), and the one
transaction per poll in which a tracker's changes land before they are exposed. A ``kill -9``
at any moment leaves either the whole poll or none of it.

Must not import: prometheus_client, httpx, or the client, poller, collector and web modules.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

SCHEMA_VERSION = 1
MEMORY = ":memory:"
_CACHE_KIB = 16 * 1024
"""SQLite's page cache, KiB (its default is 2 MiB)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    target TEXT NOT NULL,
    id INTEGER NOT NULL,
    created_at REAL NOT NULL,
    series TEXT NOT NULL,
    status TEXT NOT NULL,
    state INTEGER NOT NULL,
    next_check REAL,
    deadline REAL,
    PRIMARY KEY (target, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_created ON messages (target, created_at);
CREATE INDEX IF NOT EXISTS messages_due ON messages (target, next_check) WHERE state = 0;
CREATE INDEX IF NOT EXISTS messages_pending ON messages (target, created_at) WHERE state = 0;
CREATE INDEX IF NOT EXISTS messages_deadline ON messages (target, deadline) WHERE state = 0;
"""


class StateError(Exception):
    """The state file cannot be used; the message says why and what to do."""


@dataclass(slots=True)
class Row:
    """One tracked message as stored."""

    id: int
    created_at: float
    series: str  # the channel, then any extra label values of the target (see tracker.SEP)
    status: str
    state: int
    next_check: float | None
    deadline: float | None


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
        # A cold read stores up to 150,000 rows in one transaction: with the default 2 MiB page
        # cache, SQLite spilled pages mid-transaction, and storing a row took half again as
        # long (benchmarks/ingest.py). The cache only grows as far as it is used.
        db.execute(f"PRAGMA cache_size={-_CACHE_KIB}")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version[0]}, expected {SCHEMA_VERSION}")
        return db

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit: everything inside lands together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
            self._db.execute("DELETE FROM messages WHERE target = ?", (name,))
            self._db.execute("DELETE FROM targets WHERE name = ?", (name,))

    def rows(self, target: str, ids: Sequence[int]) -> dict[int, Row]:
        """The stored rows of ``ids`` (those that exist)."""
        found: dict[int, Row] = {}
        # Ids above the target's highest stored id cannot be stored: a cold read and every read
        # of new messages are mostly such ids, and looking each up cost as much as storing it
        # (profile of benchmarks/ingest.py). MAX over the primary key is one B-tree descent.
        top = self._db.execute("SELECT MAX(id) FROM messages WHERE target = ?", (target,))
        highest = top.fetchone()[0]
        if highest is None:
            return found
        ids = [i for i in ids if i <= highest]
        for start in range(0, len(ids), 500):  # SQLite caps the number of bound parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {_COLUMNS} FROM messages WHERE target = ? AND id IN ({marks})"
            for row in self._db.execute(query, (target, *chunk)):
                found[row[0]] = Row(*row)
        return found

    def put(self, target: str, rows: Iterable[Row]) -> None:
        """Insert or replace rows (inside a transaction)."""
        self.put_values(
            [
                (target, r.id, r.created_at, r.series, r.status, r.state, r.next_check, r.deadline)
                for r in rows
            ]
        )

    def put_values(self, values: Sequence[RowValues]) -> None:
        """Insert or replace rows given as tuples in column order (inside a transaction).

        Rows go in statements of ``_ROWS_PER_STATEMENT``: executemany runs one statement per row,
        and its per-row overhead was a third of the time of storing a message
        (benchmarks/ingest.py); tuples, because a cold read stores every message it sees.
        """
        db, full = self._db, len(values) - len(values) % _ROWS_PER_STATEMENT
        for start in range(0, full, _ROWS_PER_STATEMENT):
            db.execute(
                _PUT_MANY, list(chain.from_iterable(values[start : start + _ROWS_PER_STATEMENT]))
            )
        if full < len(values):
            db.executemany(_PUT_ONE, values[full:])

    def delete(self, target: str, ids: Iterable[int]) -> None:
        """Delete rows by id (inside a transaction)."""
        self._db.executemany(
            "DELETE FROM messages WHERE target = ? AND id = ?", ((target, i) for i in ids)
        )

    def due(self, target: str, now: float) -> list[tuple[int, float]]:
        """``(id, created_at)`` of pending messages whose re-check is due, oldest due first."""
        return list(
            self._db.execute(
                "SELECT id, created_at FROM messages WHERE target = ? AND state = 0 "
                "AND next_check <= ? ORDER BY next_check, id",
                (target, now),
            )
        )

    def pending_created_between(
        self, target: str, after: float, upto: float
    ) -> list[tuple[int, float]]:
        """``(id, created_at)`` of pending messages created in ``(after, upto]``."""
        return list(
            self._db.execute(
                "SELECT id, created_at FROM messages WHERE target = ? AND state = 0 "
                "AND created_at > ? AND created_at <= ? ORDER BY created_at",
                (target, after, upto),
            )
        )

    def validity_ended(self, target: str, deadline: float) -> list[tuple[int, float]]:
        """Pending messages due by ``deadline`` that have no re-check time of their own yet."""
        return list(
            self._db.execute(
                "SELECT id, created_at FROM messages WHERE target = ? AND state = 0 "
                "AND next_check IS NULL AND deadline <= ?",
                (target, deadline),
            )
        )

    def mark_backlog(self, target: str, ids: Iterable[int], now: float) -> None:
        """Keep due messages that were not read due from ``now`` on (inside a transaction)."""
        self._db.executemany(
            "UPDATE messages SET next_check = ? WHERE target = ? AND id = ? AND state = 0",
            ((now, target, i) for i in ids),
        )

    def expired(self, target: str, now: float) -> list[Row]:
        """Pending messages past their deadline."""
        query = f"SELECT {_COLUMNS} FROM messages WHERE target = ? AND state = 0 AND deadline <= ?"
        return [Row(*row) for row in self._db.execute(query, (target, now))]

    def oldest_pending(self, target: str) -> float | None:
        """``created_at`` of the oldest pending message."""
        row = self._db.execute(
            "SELECT MIN(created_at) FROM messages WHERE target = ? AND state = 0", (target,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def counts(self, target: str) -> tuple[int, int]:
        """Tracked and pending messages."""
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(state = 0), 0) FROM messages WHERE target = ?",
            (target,),
        ).fetchone()
        return int(row[0]), int(row[1])

    def status_counts(
        self, target: str, start: float, end: float | None = None
    ) -> dict[tuple[str, str], int]:
        """Messages created in ``[start, end)`` by series and status."""
        query = "SELECT series, status, COUNT(*) FROM messages WHERE target = ? AND created_at >= ?"
        args: tuple[Any, ...] = (target, start)
        if end is not None:
            query += " AND created_at < ?"
            args = (*args, end)
        query += " GROUP BY series, status"
        return {(c, s): n for c, s, n in self._db.execute(query, args)}

    def prune(self, target: str, before: float) -> int:
        """Delete final messages created before ``before``; returns how many."""
        cursor = self._db.execute(
            "DELETE FROM messages WHERE target = ? AND state != 0 AND created_at < ?",
            (target, before),
        )
        return cursor.rowcount


_COLUMNS = "id, created_at, series, status, state, next_check, deadline"
RowValues = tuple[str, int, float, str, str, int, float | None, float | None]
"""A row as a tuple: the target, then the columns in the order of :data:`_COLUMNS`."""
_ROWS_PER_STATEMENT = 100
"""Rows per INSERT statement: 800 parameters, under SQLite's oldest limit of 999."""
_PUT_ONE = "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_PUT_MANY = "INSERT OR REPLACE INTO messages VALUES " + ", ".join(
    ["(?, ?, ?, ?, ?, ?, ?, ?)"] * _ROWS_PER_STATEMENT
)


def set_aside(path: str) -> str:
    """Rename a state file (and its WAL files) out of the way; returns the new name."""
    aside = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    return aside
