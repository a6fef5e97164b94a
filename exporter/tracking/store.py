"""SQLite persistence of the trackers: their counters, cursors and message tables.

Owns the schema, opening (WAL, integrity check, refusing a corrupt file, upgrading an older
schema or chunk layout), and the one transaction per poll in which a tracker's changes land
before they are exposed: its counters as JSON, and its message table's changes as one chunk (see
:mod:`exporter.tracking.table`), replaced now and then by a snapshot of the table. A ``kill -9``
at any moment leaves either the whole poll or none of it.

Must not import: prometheus_client, httpx, or the client, polling and serving packages.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import msgspec

from exporter.tracking.table import MessageTable, Row

SCHEMA_VERSION = 4
"""1: a row per message; 2: chunks of wide columns (8-byte ids and times); 3: compact columns;
4: a target's density saved as steps between minutes (3's pairs are read as they are: the
version only keeps an earlier exporter from misreading the new form)."""
MEMORY = ":memory:"
PAGE_CACHE_KIB = 256
"""SQLite's page cache (its default is 2 MiB): a poll appends one chunk and rewrites one row,
and a load reads each chunk once, so a larger cache only holds pages no one reads again."""

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


class StateAccessError(StateError):
    """The state file or its directory cannot be reached or written: setting it aside won't help."""


WRITE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)
"""What saving to a state file that failed under the exporter raises (disk full, read-only,
gone): its callers catch these without knowing the store is SQLite."""
FILE_ERRORS: tuple[type[Exception], ...] = (StateError, *WRITE_ERRORS)
"""What any use of the state file can raise, the store's own verdicts included."""


class StateStore:
    """The SQLite file behind every tracker (or ``:memory:``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = self._connect(path)
        self._identity = _file_identity(path)

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        """Open the file, turning each way it can fail into a StateError that names the fix."""
        if path != MEMORY:
            _check_access(path)
        try:
            return StateStore._open(path)
        except OSError as exc:
            raise StateAccessError(
                f"state file {path!r} cannot be created or opened ({exc.strerror}); "
                "set --state.path (state.path in the config) to a writable file"
            ) from None
        except sqlite3.OperationalError as exc:  # cannot open, read-only, disk I/O
            raise StateAccessError(
                f"state file {path!r} cannot be opened for writing ({exc}); check that the "
                "exporter's user can write it and its directory, or set --state.path"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state file {path!r} is unreadable ({exc}); move it aside or start with "
                "--state.reset (which renames it, never deletes it)"
            ) from None

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        """Open, check and migrate the database."""
        if path != MEMORY:
            # Counts and message ids are the account's business: readable by its owner only.
            # SQLite gives the -wal and -shm files the database file's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        # The poller thread owns the connection; check_same_thread only guards misuse.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if path != MEMORY:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; only a power cut may lose the last
            # poll, which the next poll then reads again.
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")  # negative: in KiB
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        db.executescript(_SCHEMA)
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) == 1:
            _upgrade_from_1(db)
        elif int(version[0]) == 2:
            _upgrade_from_2(db)
        elif int(version[0]) == 3:
            _mark_current(db)
        elif int(version[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version[0]}, expected {SCHEMA_VERSION}")
        return db

    def file_problem(self) -> str | None:
        """Why the file at ``path`` is no longer the one open (deleted, replaced, moved), or None.

        SQLite goes on writing to an open file that was unlinked or renamed: without this
        check, everything counted since would be lost at the next restart, without a word.
        """
        if self.path == MEMORY:
            return None
        current = _file_identity(self.path)
        if current is None:
            return "the state file was deleted or moved away"
        if current != self._identity:
            return "the state file was replaced by another file"
        return None

    def recreate(self) -> str | None:
        """Open a new file at ``path`` (a foreign file there is set aside first); returns where
        the foreign file went, if any. The caller writes the state into it again."""
        aside = None
        if os.path.exists(self.path):
            aside = set_aside(self.path, "replaced")
        db = self._connect(self.path)
        self._db.close()
        self._db = db
        self._identity = _file_identity(self.path)
        return aside

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


def _mark_current(db: sqlite3.Connection) -> None:
    """Say that the file is of this schema."""
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))


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
        _mark_current(db)


def _upgrade_from_2(db: sqlite3.Connection) -> None:
    """Rewrite each target's chunks of schema 2 as one snapshot in the compact layout."""
    with _transaction(db):
        targets = db.execute("SELECT DISTINCT target FROM chunks").fetchall()
        for (target,) in targets:
            table = MessageTable()
            query = "SELECT data FROM chunks WHERE target = ? ORDER BY seq"
            try:
                for (data,) in db.execute(query, (target,)):
                    table.replay(bytes(data))
            except (ValueError, OverflowError, msgspec.MsgspecError) as exc:
                problem = f"target {target!r}: a chunk is unreadable ({exc})"
                raise sqlite3.DatabaseError(problem) from None
            db.execute("DELETE FROM chunks WHERE target = ?", (target,))
            db.execute("INSERT INTO chunks VALUES (?, 1, ?)", (target, table.snapshot()))
        _mark_current(db)


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


def set_aside(path: str, why: str = "corrupt") -> str:
    """Rename a state file (and its WAL files) out of the way; returns the new name."""
    aside = f"{path}.{why}-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
    except OSError as exc:
        raise StateAccessError(
            f"state file {path!r} cannot be renamed aside ({exc.strerror}); its directory "
            "must be writable by the exporter's user"
        ) from None
    return aside


def _file_identity(path: str) -> tuple[int, int] | None:
    """The device and inode of the file at ``path`` (None when there is none)."""
    if path == MEMORY:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _check_access(path: str) -> None:
    """Refuse, naming the path and the fix, a state file this process cannot create or write."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StateAccessError(
            f"state file {path!r}: directory {directory!r} does not exist; create it or set "
            "--state.path (state.path in the config) to a writable place"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        # SQLite's WAL mode creates -wal and -shm files beside the database, so a writable
        # file in a read-only directory is not enough.
        raise StateAccessError(
            f"state file {path!r}: directory {directory!r} is not writable by this user "
            f"(uid {os.getuid()}); make it writable (chown, or a writable volume) or set "
            "--state.path (state.path in the config) elsewhere"
        )
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StateAccessError(
            f"state file {path!r} is not readable and writable by this user (uid {os.getuid()}); "
            "fix its owner or mode, or set --state.path elsewhere"
        )
