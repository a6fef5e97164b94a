"""The changes to a message table since it was last saved, and their encoding as a chunk.

Owns what a poll's changes are until they are saved: pending rows as they now are, messages made
final (their ids, creation seconds and the table's kind codes), messages no longer tracked; and
how they, or a whole table, become one chunk (:mod:`.chunks`).

Must not import: any exporter module but ``exporter.tracking.chunks`` and
``exporter.tracking.finals`` (and the table's records, for their types only).
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import TYPE_CHECKING, TypeVar

from exporter.tracking import chunks
from exporter.tracking.chunks import NONE
from exporter.tracking.finals import FinalStore, clipped_second, sorted_last_wins

if TYPE_CHECKING:
    from exporter.tracking.table import Final, Row

T = TypeVar("T")
PENDING = 0
"""The state of a pending message (the tracker's ``Standing.PENDING``)."""


class Changes:
    """The changes to a table since its last save, appended as they happen."""

    __slots__ = ("_kinds", "count", "deleted", "exact", "final", "pending")

    def __init__(self, kinds: Iterable[Final] = ()) -> None:
        self._kinds: dict[tuple[str, str, int], int] = {}
        for entry in kinds:  # first, so that their codes here are their codes in the table
            self.kind(*_key(entry))
        # Lists, packed into arrays once, when encoded: extending an array from a list costs
        # tens of nanoseconds an item, a list a few (a cold read extends them by the 100,000).
        self.pending: tuple[list[int], list[float], list[int], list[float], list[float]] = (
            [], [], [], [], []
        )  # fmt: skip
        # ids, creation seconds, the table's kind codes; exact creation times (see finals.py).
        # Arrays: a cold read's ids in a list would keep an int object each (40 bytes) until
        # the save, where the table keeps 8-byte ids.
        self.final: tuple[array[int], array[int], array[int]] = (
            array("q"), array("I"), array("I")
        )  # fmt: skip
        self.exact: dict[int, float] = {}
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
        next_checks.append(NONE if row.next_check is None else row.next_check)
        deadlines.append(NONE if row.deadline is None else row.deadline)
        self.count += 1

    def add_final(self, msg_id: int, created_at: float, code: int) -> None:
        """Record a message as final, of the table's kind ``code``."""
        ids, seconds, codes = self.final
        second = clipped_second(created_at)
        ids.append(msg_id)
        seconds.append(second)
        codes.append(code)
        if second != created_at:
            self.exact[msg_id] = float(created_at)
        elif self.exact:  # an id recorded before, with another time (a test's)
            self.exact.pop(msg_id, None)
        self.count += 1

    def add_finals(
        self, ids: list[int], seconds: array[int], codes: list[int], exact: dict[int, float]
    ) -> None:
        """Record new messages as final, in one batch (see :func:`.finals.whole_seconds`)."""
        final_ids, final_seconds, final_codes = self.final
        final_ids.extend(ids)
        final_seconds.extend(seconds)
        final_codes.extend(codes)
        self.exact.update(exact)
        self.count += len(ids)

    def add_deleted(self, msg_id: int) -> None:
        """Record a message no longer tracked."""
        self.deleted.append(msg_id)
        self.count += 1

    def encode(self, kinds: list[Final]) -> bytes:
        """The chunk, encoded; ``kinds`` are the table's, by code."""
        ids: Sequence[int]
        seconds: Sequence[int]
        codes: Sequence[int]
        ids, seconds, codes = self.final
        if not all(map(operator.lt, ids, islice(ids, 1, None))):
            ids, seconds, codes = sorted_last_wins(ids, seconds, codes)
        ours = {code: self.kind(*_key(kinds[code])) for code in set(codes)}
        exact = self.exact
        positions = [p for p, msg_id in enumerate(ids) if msg_id in exact] if exact else []
        times = [exact[ids[p]] for p in positions]
        codes = list(map(ours.__getitem__, codes))
        return self._encode(chunks.final_columns_of(ids, seconds, codes, (positions, times)))

    def encode_store(self, finals: FinalStore[Final]) -> bytes:
        """The chunk with all of ``finals`` (made with the table's kinds), encoded."""
        return self._encode(chunks.final_columns(finals.blocks, finals.exact_positions()))

    def _encode(self, final: chunks.FinalColumns) -> bytes:
        """The chunk with these final columns, encoded."""
        kinds = [key for key, _ in sorted(self._kinds.items(), key=operator.itemgetter(1))]
        ids, created, codes, next_checks, deadlines = self.pending
        if not all(map(operator.lt, ids, islice(ids, 1, None))):
            last = dict(zip(ids, range(len(ids)), strict=True))  # where each row last was
            order = list(map(last.__getitem__, sorted(last)))
            ids, created, codes = _at(order, ids), _at(order, created), _at(order, codes)
            next_checks, deadlines = _at(order, next_checks), _at(order, deadlines)
        pending = chunks.pending_columns(ids, created, codes, next_checks, deadlines)
        return chunks.encode(kinds, pending, final, self.deleted)


def _key(entry: Final) -> tuple[str, str, int]:
    """The (series, status, state) of a final entry."""
    return entry.series, entry.status, entry.state


def _at(order: list[int], column: list[T]) -> list[T]:
    """The items of ``column`` at the positions ``order`` gives."""
    return list(map(column.__getitem__, order))
