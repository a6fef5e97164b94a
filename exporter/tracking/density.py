"""The messages a target has seen per minute of creation: what a range read of the API costs.

Owns the density the read planner asks about: counts by minute in two sorted arrays, and their
running totals, built when first asked after a change. A dict of int objects cost ~70 bytes a
minute, and its keys, made among the short-lived objects of a poll, kept far more of the heap
from being reused: 4,320 minutes of a 72 h window were ~10 bytes a message of a small target.

Must not import: any exporter module.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from itertools import accumulate


class MinuteDensity:
    """Messages seen per minute of creation (minutes since the epoch)."""

    __slots__ = ("_counts", "_minutes", "_totals")

    def __init__(self, counts: Iterable[tuple[int, int]] = ()) -> None:
        """The density of ``(minute, count)`` pairs, in any order (of a minute given twice,
        the last counts)."""
        by_minute = dict(counts)
        self._minutes = array("q", sorted(by_minute))
        self._counts = array("q", map(by_minute.__getitem__, self._minutes))
        self._totals: array[int] | None = None  # _totals[i]: messages of the first i minutes

    def add(self, minute: int, count: int) -> None:
        """Count ``count`` more messages created in ``minute``."""
        minutes = self._minutes
        if not minutes or minute > minutes[-1]:  # a poll's new messages: the newest minute
            minutes.append(minute)
            self._counts.append(count)
        else:
            at = bisect_left(minutes, minute)
            if at < len(minutes) and minutes[at] == minute:
                self._counts[at] += count
            else:
                minutes.insert(at, minute)
                self._counts.insert(at, count)
        self._totals = None

    def keep_from(self, minute: int) -> None:
        """Forget the minutes before ``minute``."""
        cut = bisect_left(self._minutes, minute)
        if cut:
            del self._minutes[:cut], self._counts[:cut]
            self._totals = None

    def between(self, first: int, last: int) -> int:
        """Messages created in the minutes ``first`` to ``last``, both included."""
        if self._totals is None:
            self._totals = array("q", accumulate(self._counts, initial=0))
        start = bisect_left(self._minutes, first)
        end = bisect_right(self._minutes, last)
        return self._totals[end] - self._totals[start] if end > start else 0

    def items(self) -> Iterator[tuple[int, int]]:
        """``(minute, count)`` of every minute with messages, oldest first."""
        return zip(self._minutes, self._counts, strict=True)

    def columns(self) -> tuple[array[int], array[int]]:
        """The minutes with messages, oldest first, and their counts (read only)."""
        return self._minutes, self._counts

    def __len__(self) -> int:
        """Minutes with messages."""
        return len(self._minutes)
