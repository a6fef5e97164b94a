"""The tracked messages of one target, in memory, and the chunks that persist them.

Owns what the tracker knows of each message it follows: a final message as the code of its
:class:`Final` (one object per series, status and state) in the flat arrays of
:mod:`.finals`; a pending one as a :class:`Row`, indexed by creation hour, deadline and
re-check time. Each change is written down as it happens: the store saves one chunk
(:mod:`.chunks`) of changes per poll and now and then replaces them all with a snapshot, and
:meth:`MessageTable.replay` rebuilds the table from them. A SQLite row per message, the design
before, cost more to store than the message cost to decode.

Must not import: sqlite3, prometheus_client, httpx, or the store, the client, the polling and
serving packages.
"""

from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress, islice

from exporter.tracking import chunks
from exporter.tracking.changes import Changes
from exporter.tracking.chunks import LegacyChunk
from exporter.tracking.finals import FinalStore, whole_seconds

BUCKET = 3600.0
"""Seconds of creation, and of deadline, that one bucket of the pending rows' indexes spans.
Every query filters the rows by their exact times: a bucket a minute cost a dict for each of a
sparse target's pending messages, ~400 bytes a row with both indexes."""


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


class _Entries(Mapping[int, Entry]):
    """The table's messages by id, read-only (a test's view: the tracker asks the table)."""

    def __init__(self, table: MessageTable) -> None:
        self._table = table

    def __getitem__(self, msg_id: int) -> Entry:
        entry = self._table.get(msg_id)
        if entry is None:
            raise KeyError(msg_id)
        return entry

    def __iter__(self) -> Iterator[int]:
        yield from self._table._rows
        yield from (msg_id for msg_id, _ in self._table._finals.items())

    def __len__(self) -> int:
        return len(self._table)


class MessageTable:
    """The tracked messages of one target."""

    def __init__(self) -> None:
        self.written = 0  # changes saved since the last snapshot: what a load replays
        self.finals: dict[tuple[str, str, int], Final] = {}  # see final()
        self._kinds: list[Final] = []  # by code, as the final store keeps them
        self._codes: dict[Final, int] = {}  # identity hash: no tuple built per message
        self._finals = FinalStore(self._kinds)
        self._rows: dict[int, Row] = {}
        # The row of a pending message, None for any other id: the dict's own method, as the
        # tracker asks it for every message it re-read.
        self.row: Callable[[int], Row | None] = self._rows.get
        self._pending_buckets: dict[int, dict[int, Row]] = {}  # by creation (see BUCKET)
        self._deadlines: dict[int, dict[int, Row]] = {}  # by deadline
        self._scheduled: dict[int, Row] = {}  # rows with a re-check time of their own
        self._pruned_before = -math.inf  # final messages created before were forgotten
        self._changes = Changes()

    def final(self, series: str, status: str, state: int) -> Final:
        """The shared entry of final messages of this series, status and state."""
        key = (series, status, state)
        entry = self.finals.get(key)
        if entry is None:
            entry = self.finals[key] = Final(series, status, state)
            self._codes[entry] = len(self._kinds)
            self._kinds.append(entry)
        return entry

    # --- lookups by id --------------------------------------------------------------------

    def get(self, msg_id: int) -> Entry | None:
        """The tracked message of this id: its row if pending, its shared entry if final."""
        row = self._rows.get(msg_id)
        if row is not None:
            return row
        finals = self._finals
        if msg_id >= finals.hot_from:  # read here, not through a call: a poll's new messages
            # and its re-reads of young ones are all in the dicts of the newest
            found = finals.young.get(msg_id)
            return found if found is not None else finals.old.get(msg_id)
        return finals.entry(msg_id)

    def isdisjoint(self, ids: Collection[int]) -> bool:
        """True when none of ``ids`` is tracked."""
        return self._rows.keys().isdisjoint(ids) and self._finals.isdisjoint(ids)

    def __len__(self) -> int:
        """Messages tracked."""
        return len(self._rows) + len(self._finals)

    @property
    def pending(self) -> int:
        """Pending messages tracked."""
        return len(self._rows)

    @property
    def entries(self) -> Mapping[int, Entry]:
        """Every tracked message by id (one at a time: for tests and tools, not a poll)."""
        return _Entries(self)

    # --- changes (each one recorded for the next save) -----------------------------------

    def add_final(self, msg_id: int, created_at: float, entry: Final) -> None:
        """Track a message first seen in a final status."""
        code = self._code(entry)
        self._finals.put(msg_id, created_at, code)
        self._changes.add_final(msg_id, created_at, code)

    def add_finals(self, ids: list[int], created: list[float], entries: list[Final]) -> None:
        """Track messages first seen in a final status, in one batch (as a cold read sees them)."""
        codes = {entry: self._code(entry) for entry in set(entries)}
        kinds = list(map(codes.__getitem__, entries))
        seconds, inexact = whole_seconds(created)
        exact = {ids[position]: created[position] for position in inexact}
        self._finals.put_many(ids, seconds, kinds, exact)
        self._changes.add_finals(ids, seconds, kinds, exact)

    def add_pending(self, row: Row) -> None:
        """Track a message first seen pending."""
        self._rows[row.id] = row
        self._index(row)
        self._changes.add_pending(row)

    def update(self, row: Row) -> None:
        """Note that a pending row's status or re-check time changed."""
        self._schedule(row)
        self._changes.add_pending(row)

    def finalize(self, row: Row, entry: Final) -> None:
        """A pending message reached a final status."""
        self._drop_pending(row)
        if row.created_at < self._pruned_before:
            # Pruning is over for it: nothing would ever drop the entry (and a read of it is
            # ignored anyway, being older than the tracker's horizon).
            self._changes.add_deleted(row.id)
            return
        self.add_final(row.id, row.created_at, entry)

    def change_final(self, msg_id: int, entry: Final) -> None:
        """A final message changed to another final status."""
        created_at = self._finals.created_at(msg_id)
        self.add_final(msg_id, 0.0 if created_at is None else created_at, entry)

    def abandon(self, rows: Iterable[Row]) -> None:
        """Stop tracking pending messages."""
        for row in rows:
            self._drop_pending(row)
            self._changes.add_deleted(row.id)

    def mark_backlog(self, ids: Iterable[int], now: float) -> None:
        """Make due messages that were not read due from ``now`` on."""
        for msg_id in ids:
            row = self._rows.get(msg_id)
            if row is not None:
                row.next_check = now
                self.update(row)

    def prune(self, before: float) -> int:
        """Forget final messages created before ``before``; returns how many.

        Pending ones stay until abandoned: they are out of the window, and found by id.
        """
        self._pruned_before = max(self._pruned_before, before)
        return self._finals.prune(before)

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
        found = [
            (row.id, row.created_at)
            for row in self._pending_in(_bucket(after), _bucket(upto))
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
        """When a tracked message was created."""
        row = self._rows.get(msg_id)
        return row.created_at if row is not None else self._finals.created_at(msg_id)

    def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest pending message."""
        if not self._pending_buckets:
            return None
        first = min(self._pending_buckets)
        return min(row.created_at for row in self._pending_buckets[first].values())

    def status_counts(self, start: float, end: float | None = None) -> dict[tuple[str, str], int]:
        """Messages created in ``[start, end)`` by series and status."""
        high = math.inf if end is None else end
        counts: dict[tuple[str, str], int] = {}
        for row in self._pending_in(_bucket(start), _bucket(high)):
            if start <= row.created_at < high:
                key = (row.series, row.status)
                counts[key] = counts.get(key, 0) + 1
        for code, count in self._finals.counts(start, high).items():
            entry = self._kinds[code]
            key = (entry.series, entry.status)
            counts[key] = counts.get(key, 0) + count
        return counts

    # --- persistence ----------------------------------------------------------------------

    def take_changes(self) -> bytes | None:
        """The changes since the last call, encoded as a chunk (None when there are none)."""
        changes, self._changes = self._changes, Changes()
        if not changes.count:
            return None
        self.written += changes.count
        return changes.encode(self._kinds)

    def snapshot(self) -> bytes:
        """The whole table as one chunk; replaying it alone gives this table."""
        snapshot = Changes(self._kinds)
        for row in self._rows.values():
            snapshot.add_pending(row)
        self.written = snapshot.count + len(self._finals)
        return snapshot.encode_store(self._finals)

    def replay(self, blob: bytes) -> None:
        """Apply a saved chunk (a snapshot, or the changes of one poll), of either layout."""
        chunk = chunks.decode(blob)
        records = 0
        for msg_id, created_at, kind, next_check, deadline in chunks.pending_rows(chunk):
            series, status, _state = chunk.kinds[kind]
            self._put_pending(
                Row(msg_id, created_at, series, status, _value(next_check), _value(deadline))
            )
            records += 1
        codes = [self._code(self.final(*kind)) for kind in chunk.kinds]
        keep_times = isinstance(chunk, LegacyChunk)  # its changes of status hold no creation time
        for ids, seconds, kinds, exact in chunks.final_blocks(chunk):
            self._put_finals(ids, seconds, list(map(codes.__getitem__, kinds)), exact, keep_times)
            records += len(ids)
        deleted = chunks.unpack("q", chunk.deleted)
        for msg_id in deleted:
            row = self._rows.get(msg_id)
            if row is not None:
                self._drop_pending(row)
        self.written += records + len(deleted)

    # --- internals ------------------------------------------------------------------------

    def _code(self, entry: Final) -> int:
        """The code of a final entry (one made elsewhere is taken as this table's own)."""
        code = self._codes.get(entry)
        if code is None:
            code = self._codes[entry] = self._codes[
                self.final(entry.series, entry.status, entry.state)
            ]
        return code

    def _put_pending(self, row: Row) -> None:
        """Insert or replace a pending row, as a chunk says."""
        known = self._rows.get(row.id)
        if known is not None:
            self._unindex(known)
        elif row.id in self._finals:
            return  # a final message never goes back to pending
        self._rows[row.id] = row
        self._index(row)

    def _put_finals(
        self,
        ids: array[int],
        seconds: array[int],
        codes: list[int],
        exact: dict[int, float],
        keep_times: bool,
    ) -> None:
        """Insert final messages, or make tracked ones final, as a chunk says."""
        rows = self._rows
        if rows and not rows.keys().isdisjoint(ids):
            for row in [rows[msg_id] for msg_id in ids if msg_id in rows]:
                self._drop_pending(row)
        self._finals.put_many(ids, seconds, codes, exact, keep_times=keep_times)

    def _drop_pending(self, row: Row) -> None:
        """Forget a pending row."""
        self._unindex(row)
        del self._rows[row.id]

    def _index(self, row: Row) -> None:
        """Index a pending row by creation minute, deadline and re-check time."""
        self._pending_buckets.setdefault(int(row.created_at // BUCKET), {})[row.id] = row
        if row.deadline is not None:
            self._deadlines.setdefault(int(row.deadline // BUCKET), {})[row.id] = row
        self._schedule(row)

    def _unindex(self, row: Row) -> None:
        """Remove a pending row from the indexes."""
        _discard(self._pending_buckets, int(row.created_at // BUCKET), row.id)
        if row.deadline is not None:
            _discard(self._deadlines, int(row.deadline // BUCKET), row.id)
        self._scheduled.pop(row.id, None)

    def _schedule(self, row: Row) -> None:
        """Keep the index of rows with a re-check time of their own."""
        if row.next_check is None:
            self._scheduled.pop(row.id, None)
        else:
            self._scheduled[row.id] = row

    def _pending_in(self, first: float, last: float) -> Iterator[Row]:
        """Pending rows whose creation bucket is in ``[first, last]``, oldest bucket first."""
        index = self._pending_buckets
        for bucket in sorted(b for b in index if first <= b <= last):
            yield from index[bucket].values()

    def _due_by(self, moment: float) -> list[Row]:
        """Pending rows whose deadline bucket is not after ``moment``'s (a few after it too)."""
        last = moment // BUCKET
        return [
            row
            for bucket in sorted(b for b in self._deadlines if b <= last)
            for row in self._deadlines[bucket].values()
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


def _bucket(moment: float) -> float:
    """The index bucket of a moment, or the infinity it is."""
    return moment if math.isinf(moment) else moment // BUCKET


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
