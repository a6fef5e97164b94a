"""The window gauges of one target: its tracked messages by (series, status), as the window
``[now - window, ...)`` moves.

Kept up to date as messages arrive and change status, and slid forward from the table's counts
of what left the window, so a snapshot never walks the whole table.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module outside tracking.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import compress

from exporter.tracking.counts import add_counts, add_to
from exporter.tracking.table import MessageTable


class WindowCounts:
    """Tracked messages created in the window, by (series, status)."""

    __slots__ = ("_counts", "_start", "_table", "_width")

    def __init__(self, table: MessageTable, width: float) -> None:
        self._table = table
        self._width = width
        self._counts: dict[tuple[str, str], int] = {}
        self._start: float | None = None  # None: not counted yet (the next slide counts)

    def counts(self) -> dict[tuple[str, str], int]:
        """The non-zero counts (call :meth:`slide` first)."""
        return {key: count for key, count in self._counts.items() if count}

    def slide(self, now: float) -> None:
        """Move the window to ``[now - width, ...)``: what left it is taken off."""
        start = now - self._width
        if self._start is None:
            self._counts = self._table.status_counts(start)
        elif start > self._start:
            for key, count in self._table.status_counts(self._start, start).items():
                self._counts[key] = self._counts.get(key, 0) - count
        else:
            return
        self._start = start

    def add(self, created_at: float, series: str, status: str, amount: int) -> None:
        """Add (or with a negative ``amount`` remove) a message when it lies in the window."""
        if self._start is not None and created_at >= self._start:
            add_to(self._counts, (series, status), amount)

    def move(self, created_at: float, series: str, old: str, new: str) -> None:
        """Move a message of the window from one status to another."""
        if self._start is not None and created_at >= self._start:
            add_to(self._counts, (series, old), -1)
            add_to(self._counts, (series, new), 1)

    def add_new(
        self,
        keys: list[tuple[str, str]],
        counts: Counter[tuple[str, str]],
        created: list[float],
        earliest: float,
    ) -> None:
        """Add messages seen for the first time: ``counts`` of their ``keys``, and when each
        was ``created`` (the ``earliest`` of them), some maybe before the window."""
        start = self._start if self._start is not None else math.inf
        if earliest >= start:
            add_counts(self._counts, counts)
        else:
            add_counts(self._counts, Counter(compress(keys, map(start.__le__, created))))
