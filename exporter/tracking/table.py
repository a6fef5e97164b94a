"""The tracked messages of one target, in memory, and the chunks that persist them.

Owns what the tracker knows of each message it follows: a final message as a :class:`Final`
shared by all messages of its series, status and state; a pending one as a :class:`Row`. Every
message is filed by creation minute (window gauges, pruning); pending ones also by creation
minute, deadline and re-check time. Each change is written down as it happens: the store saves
one :class:`Chunk` of changes per poll and now and then replaces them all with a snapshot, and
:meth:`MessageTable.replay` rebuilds the table from them. A SQLite row per message, the design
before, cost more to store than the message cost to decode.

Must not import: sqlite3, prometheus_client, httpx, or the store, the client, the polling and
serving packages.
"""

from __future__ import annotations

import math
import operator
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import compress, islice
from typing import Any

import msgspec

PENDING = 0
"""The state of a pending message (the tracker's ``Standing.PENDING``)."""

_NONE = math.nan
"""A missing re-check time or deadline in a chunk's float arrays."""
_SWAP = sys.byteorder != "little"
"""Chunks hold little-endian arrays, so that a state file moves between machines."""


@dataclass(slots=True)
class Row:
    """A pending message."""

    id: int
    created_at: float
    series: str  # the channel, then any extra label values of the target (see tracker.SEP)
    status: str
    next_check: float | None  # a re-check time of its own (backlog, end of validity), if any
    deadline: float | None  # when it is abandoned if still pending


class Final:
    """What is kept of a final message: one object per series, status and state, shared."""

    __slots__ = ("series", "state", "status")

    def __init__(self, series: str, status: str, state: int) -> None:
        self.series = series
        self.status = status
        self.state = state


Entry = Row | Final


class Chunk(msgspec.Struct, array_like=True):
    """Changes to a table (or all of it), as little-endian arrays that decode without a loop."""

    kinds: list[tuple[str, str, int]]  # (series, status, state) of each kind code
    pending: tuple[bytes, bytes, bytes, bytes, bytes]  # ids, created, kinds, next, deadline
    final: tuple[bytes, bytes, bytes]  # ids, created, kinds
    deleted: bytes  # ids


_PENDING_TYPES = "qdIdd"
"""The array typecodes of ``Chunk.pending``, in order."""
_FINAL_TYPES = "qdI"
"""The array typecodes of ``Chunk.final``, in order."""


_CHUNK_ENCODER = msgspec.msgpack.Encoder()
_CHUNK_DECODER = msgspec.msgpack.Decoder(Chunk)


class _Changes:
    """The changes since the last save, appended as they happen."""

    __slots__ = ("_final_kinds", "_kinds", "count", "deleted", "final", "pending")

    def __init__(self) -> None:
        self._kinds: dict[tuple[str, str, int], int] = {}
        self._final_kinds: dict[Final, int] = {}  # identity hash: no tuple built per message
        # Lists, packed into arrays once, when encoded: extending an array from a list costs
        # tens of nanoseconds an item, a list a few (a cold read extends them by the 100,000).
        self.pending: tuple[list[int], list[float], list[int], list[float], list[float]] = (
            [], [], [], [], []
        )  # fmt: skip
        self.final: tuple[list[int], list[float], list[int]] = ([], [], [])
        self.deleted: list[int] = []
        self.count = 0

    def kind(self, series: str, status: str, state: int) -> int:
        """The code of a (series, status, state) in this chunk."""
        key = (series, status, state)
        code = self._kinds.get(key)
        if code is None:
            code = self._kinds[key] = len(self._kinds)
        return code

    def add_pending(self, row: Row) -> None:
        """Record a pending row as it now is."""
        ids, created, kinds, next_checks, deadlines = self.pending
        ids.append(row.id)
        created.append(row.created_at)
        kinds.append(self.kind(row.series, row.status, PENDING))
        next_checks.append(_NONE if row.next_check is None else row.next_check)
        deadlines.append(_NONE if row.deadline is None else row.deadline)
        self.count += 1

    def add_final(self, msg_id: int, created_at: float, entry: Final) -> None:
        """Record a message as final."""
        code = self._final_kinds.get(entry)
        if code is None:
            code = self._final_kinds[entry] = self.kind(entry.series, entry.status, entry.state)
        ids, created, kinds = self.final
        ids.append(msg_id)
        created.append(created_at)
        kinds.append(code)
        self.count += 1

    def add_finals(self, ids: list[int], created: list[float], entries: list[Final]) -> None:
        """Record messages as final, in one batch."""
        codes = self._final_kinds
        for entry in set(entries).difference(codes):
            codes[entry] = self.kind(entry.series, entry.status, entry.state)
        final_ids, final_created, kinds = self.final
        final_ids.extend(ids)
        final_created.extend(created)
        kinds.extend(map(codes.__getitem__, entries))
        self.count += len(ids)

    def add_deleted(self, msg_id: int) -> None:
        """Record a message no longer tracked."""
        self.deleted.append(msg_id)
        self.count += 1

    def encode(self) -> bytes:
        """The chunk, encoded."""
        kinds = [key for key, _ in sorted(self._kinds.items(), key=lambda item: item[1])]
        chunk = Chunk(
            kinds=kinds,
            # one array a typecode: the tuples have the lengths the Chunk fields declare
            pending=_pack_all(_PENDING_TYPES, self.pending),  # type: ignore[arg-type]
            final=_pack_all(_FINAL_TYPES, self.final),  # type: ignore[arg-type]
            deleted=_pack("q", self.deleted),
        )
        return _CHUNK_ENCODER.encode(chunk)


class MessageTable:
    """The tracked messages of one target."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.pending = 0
        self.written = 0  # changes saved since the last snapshot: what a load replays
        self.finals: dict[tuple[str, str, int], Final] = {}  # see final()
        # By creation minute: the ids (a list: its ints are the entries' keys, so it costs the
        # same as an array, and is extended far faster) and their creation times.
        self._minutes: dict[int, tuple[list[int], array[float]]] = {}
        self._pending_minutes: dict[int, dict[int, Row]] = {}  # creation minute
        self._deadlines: dict[int, dict[int, Row]] = {}  # deadline minute
        self._scheduled: dict[int, Row] = {}  # rows with a re-check time of their own
        self._pruned_before = -math.inf  # final messages created before were forgotten
        self._changes = _Changes()

    def final(self, series: str, status: str, state: int) -> Final:
        """The shared entry of final messages of this series, status and state."""
        key = (series, status, state)
        entry = self.finals.get(key)
        if entry is None:
            entry = self.finals[key] = Final(series, status, state)
        return entry

    # --- changes (each one recorded for the next save) -----------------------------------

    def add_final(self, msg_id: int, created_at: float, entry: Final) -> None:
        """Track a message first seen in a final status."""
        self.entries[msg_id] = entry
        self._file(msg_id, created_at)
        self._changes.add_final(msg_id, created_at, entry)

    def add_finals(self, ids: list[int], created: list[float], entries: list[Final]) -> None:
        """Track messages first seen in a final status, in one batch (as a cold read sees them)."""
        self.entries.update(zip(ids, entries, strict=True))
        self._file_all(ids, created)
        self._changes.add_finals(ids, created, entries)

    def add_pending(self, row: Row) -> None:
        """Track a message first seen pending."""
        self.entries[row.id] = row
        self._file(row.id, row.created_at)
        self._index(row)
        self.pending += 1
        self._changes.add_pending(row)

    def update(self, row: Row) -> None:
        """Note that a pending row's status or re-check time changed."""
        self._schedule(row)
        self._changes.add_pending(row)

    def finalize(self, row: Row, entry: Final) -> None:
        """A pending message reached a final status."""
        self._unindex(row)
        self.pending -= 1
        if row.created_at < self._pruned_before:
            # Pruning is over for it: nothing would ever drop the entry (and a read of it is
            # ignored anyway, being older than the tracker's horizon).
            del self.entries[row.id]
            self._changes.add_deleted(row.id)
            return
        self.entries[row.id] = entry
        self._changes.add_final(row.id, row.created_at, entry)

    def change_final(self, msg_id: int, entry: Final) -> None:
        """A final message changed to another final status."""
        self.entries[msg_id] = entry
        self._changes.add_final(msg_id, 0.0, entry)  # a known id: its created_at is not read

    def abandon(self, rows: Iterable[Row]) -> None:
        """Stop tracking pending messages."""
        for row in rows:
            self._drop_pending(row)
            self._changes.add_deleted(row.id)

    def mark_backlog(self, ids: Iterable[int], now: float) -> None:
        """Make due messages that were not read due from ``now`` on."""
        for msg_id in ids:
            row = self.entries.get(msg_id)
            if isinstance(row, Row):
                row.next_check = now
                self.update(row)

    def prune(self, before: float) -> int:
        """Forget final messages created before ``before``; returns how many.

        Pending ones stay until abandoned, though their minute is dropped: it is out of the
        window, and they are found by id.
        """
        limit = int(before // 60)
        removed = 0
        entries = self.entries
        for minute in [m for m in self._minutes if m <= limit]:
            ids, created = self._minutes[minute]
            if minute < limit:
                del self._minutes[minute]
            for msg_id, created_at in zip(ids, created, strict=True):
                if created_at < before and type(entries.get(msg_id)) is Final:
                    del entries[msg_id]
                    removed += 1
        self._pruned_before = max(self._pruned_before, before)
        return removed

    # --- queries --------------------------------------------------------------------------

    def due(self, now: float) -> list[tuple[int, float]]:
        """``(id, created_at)`` of pending messages whose own re-check time has come."""
        due = (
            r for r in self._scheduled.values() if r.next_check is not None and r.next_check <= now
        )
        rows = sorted(due, key=_by_next_check)
        return [(r.id, r.created_at) for r in rows]

    def pending_created_between(self, after: float, upto: float) -> list[tuple[int, float]]:
        """``(id, created_at)`` of pending messages created in ``(after, upto]``, oldest first."""
        low = -math.inf if after == -math.inf else after // 60
        minutes = sorted(m for m in self._pending_minutes if low <= m <= upto // 60)
        found = [
            (row.id, row.created_at)
            for minute in minutes
            for row in self._pending_minutes[minute].values()
            if after < row.created_at <= upto
        ]
        found.sort(key=_by_created)
        return found

    def validity_ended(self, deadline: float) -> list[tuple[int, float]]:
        """Pending messages due by ``deadline`` that have no re-check time of their own yet."""
        return [
            (row.id, row.created_at)
            for row in self._due_by(deadline)
            if row.next_check is None and row.deadline is not None and row.deadline <= deadline
        ]

    def expired(self, now: float) -> list[Row]:
        """Pending messages past their deadline."""
        return [r for r in self._due_by(now) if r.deadline is not None and r.deadline <= now]

    def created_at(self, msg_id: int) -> float | None:
        """When a tracked message was created, as filed (a search: for the rare answer that
        leaves it out)."""
        for ids, created in self._minutes.values():
            if msg_id in ids:
                return created[ids.index(msg_id)]
        return None

    def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest pending message."""
        if not self._pending_minutes:
            return None
        first = min(self._pending_minutes)
        return min(row.created_at for row in self._pending_minutes[first].values())

    def status_counts(self, start: float, end: float | None = None) -> dict[tuple[str, str], int]:
        """Messages created in ``[start, end)`` by series and status."""
        high = math.inf if end is None else end
        counts: dict[tuple[str, str], int] = {}
        entries = self.entries
        first, last = start // 60, math.inf if end is None else end // 60
        for minute in [m for m in self._minutes if first <= m <= last]:
            ids, created = self._minutes[minute]
            for msg_id, created_at in zip(ids, created, strict=True):
                entry = entries.get(msg_id)
                if entry is not None and start <= created_at < high:
                    key = (entry.series, entry.status)
                    counts[key] = counts.get(key, 0) + 1
        return counts

    # --- persistence ----------------------------------------------------------------------

    def take_changes(self) -> bytes | None:
        """The changes since the last call, encoded as a chunk (None when there are none)."""
        changes, self._changes = self._changes, _Changes()
        if not changes.count:
            return None
        self.written += changes.count
        return changes.encode()

    def snapshot(self) -> bytes:
        """The whole table as one chunk; replaying it alone gives this table."""
        snapshot = _Changes()
        for rows in self._pending_minutes.values():
            for row in rows.values():
                snapshot.add_pending(row)
        entries = self.entries
        for ids, created in self._minutes.values():
            for msg_id, created_at in zip(ids, created, strict=True):
                entry = entries.get(msg_id)
                if type(entry) is Final:
                    snapshot.add_final(msg_id, created_at, entry)
        self.written = snapshot.count
        return snapshot.encode()

    def replay(self, blob: bytes) -> None:
        """Apply a saved chunk (a snapshot, or the changes of one poll)."""
        chunk = _CHUNK_DECODER.decode(blob)
        pending = zip(*_unpack_all(_PENDING_TYPES, chunk.pending), strict=True)
        for msg_id, created_at, kind, next_check, deadline in pending:
            series, status, _state = chunk.kinds[kind]
            self._put_pending(
                Row(msg_id, created_at, series, status, _value(next_check), _value(deadline))
            )
        finals = [self.final(*kind) for kind in chunk.kinds]
        final = zip(*_unpack_all(_FINAL_TYPES, chunk.final), strict=True)
        for msg_id, created_at, kind in final:
            self._put_final(msg_id, created_at, finals[kind])
        deleted = _unpack("q", chunk.deleted)
        for msg_id in deleted:
            row = self.entries.get(msg_id)
            if isinstance(row, Row):
                self._drop_pending(row)
        self.written += (len(chunk.pending[0]) + len(chunk.final[0]) + len(chunk.deleted)) // 8

    # --- internals ------------------------------------------------------------------------

    def _put_pending(self, row: Row) -> None:
        """Insert or replace a pending row, as a chunk says."""
        known = self.entries.get(row.id)
        if isinstance(known, Row):
            self._unindex(known)
        elif known is None:
            self._file(row.id, row.created_at)
            self.pending += 1
        else:
            return  # a final message never goes back to pending
        self.entries[row.id] = row
        self._index(row)

    def _put_final(self, msg_id: int, created_at: float, entry: Final) -> None:
        """Insert a final message, or make a tracked one final, as a chunk says."""
        known = self.entries.get(msg_id)
        if known is None:
            self._file(msg_id, created_at)
        elif isinstance(known, Row):
            self._unindex(known)
            self.pending -= 1
        self.entries[msg_id] = entry

    def _drop_pending(self, row: Row) -> None:
        """Forget a pending row."""
        self._unindex(row)
        del self.entries[row.id]
        self.pending -= 1

    def _file(self, msg_id: int, created_at: float) -> None:
        """File a new message under its creation minute."""
        minute = int(created_at // 60)
        filed = self._minutes.get(minute)
        if filed is None:
            filed = self._minutes[minute] = ([], array("d"))
        filed[0].append(msg_id)
        filed[1].append(created_at)

    def _file_all(self, ids: list[int], created: list[float]) -> None:
        """File new messages under their creation minutes, a run of one minute at a time."""
        minutes = self._minutes
        for minute, start, end in minute_runs(created):
            filed = minutes.get(minute)
            if filed is None:
                filed = minutes[minute] = ([], array("d"))
            filed[0].extend(ids[start:end])
            filed[1].fromlist(created[start:end])

    def _index(self, row: Row) -> None:
        """Index a pending row by creation minute, deadline and re-check time."""
        self._pending_minutes.setdefault(int(row.created_at // 60), {})[row.id] = row
        if row.deadline is not None:
            self._deadlines.setdefault(int(row.deadline // 60), {})[row.id] = row
        self._schedule(row)

    def _unindex(self, row: Row) -> None:
        """Remove a pending row from the indexes."""
        _discard(self._pending_minutes, int(row.created_at // 60), row.id)
        if row.deadline is not None:
            _discard(self._deadlines, int(row.deadline // 60), row.id)
        self._scheduled.pop(row.id, None)

    def _schedule(self, row: Row) -> None:
        """Keep the index of rows with a re-check time of their own."""
        if row.next_check is None:
            self._scheduled.pop(row.id, None)
        else:
            self._scheduled[row.id] = row

    def _due_by(self, moment: float) -> list[Row]:
        """Pending rows whose deadline minute is not after ``moment``'s."""
        last = moment // 60
        return [
            row
            for minute in sorted(m for m in self._deadlines if m <= last)
            for row in self._deadlines[minute].values()
        ]


def minute_runs(created: list[float]) -> Iterator[tuple[int, int, int]]:
    """``(minute, start, end)``: ``created[start:end]`` are all of that creation minute.

    New messages come in creation order, in a few stretches (a poll's new messages, then
    older ones read again): within each, every minute's run is found by bisection, and
    thousands of messages cost a few runs, not a loop.
    """
    count = len(created)
    descents = map(operator.gt, created, islice(created, 1, None))
    start = 0
    for stretch_end in [*compress(range(1, count), descents), count]:
        while start < stretch_end:
            minute = created[start] // 60
            end = bisect_left(created, (minute + 1) * 60, start, stretch_end)
            yield int(minute), start, end
            start = end


def _discard(index: dict[int, dict[int, Row]], key: int, msg_id: int) -> None:
    """Remove an id from one bucket of an index, and the bucket once empty."""
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(msg_id, None)
        if not bucket:
            del index[key]


def _by_next_check(row: Row) -> tuple[float, int]:
    """Sort key: oldest re-check time first."""
    return (row.next_check or 0.0, row.id)


def _by_created(item: tuple[int, float]) -> tuple[float, int]:
    """Sort key: oldest first."""
    return (item[1], item[0])


def _value(number: float) -> float | None:
    """A float from a chunk, None for the NaN that stands for a missing value."""
    return None if math.isnan(number) else number


def _pack(typecode: str, values: list[int] | list[float]) -> bytes:
    """Values as a little-endian array of ``typecode``, in bytes."""
    packed = array(typecode, values)
    if _SWAP:  # pragma: no cover - big-endian machines only
        packed.byteswap()
    return packed.tobytes()


def _pack_all(typecodes: str, columns: Iterable[list[Any]]) -> tuple[bytes, ...]:
    """Columns packed by :func:`_pack`, one typecode each."""
    return tuple(_pack(code, values) for code, values in zip(typecodes, columns, strict=True))


def _unpack_all(typecodes: str, blobs: Iterable[bytes]) -> list[array[Any]]:
    """What :func:`_pack_all` wrote, unpacked."""
    return [_unpack(code, data) for code, data in zip(typecodes, blobs, strict=True)]


def _unpack(typecode: str, data: bytes) -> array[Any]:
    """Little-endian bytes as an array of ``typecode`` (what :func:`_pack` wrote)."""
    values = array(typecode)
    values.frombytes(data)
    if _SWAP:  # pragma: no cover - big-endian machines only
        values.byteswap()
    return values
