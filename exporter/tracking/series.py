"""Series keys: a message's channel and extra label values, joined, within the label caps.

Owns the encoding of a key (see :data:`~exporter.tracking.snapshot.SEP`), the cap of distinct
values per extra label (beyond it a value is ``other``, counted in the overflow), and the cache
of keys already admitted.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module but the vocabulary,
the counting containers and the snapshot's key encoding.
"""

from __future__ import annotations

from typing import Any

from exporter.model import MISSING_VALUE, OTHER_VALUE
from exporter.tracking.counts import add_to
from exporter.tracking.snapshot import SEP


class SeriesKeys(dict[tuple[Any, ...], str]):
    """(channel, extra label fields as read) -> series key, kept once the label caps admitted
    every value: most messages of a labelled target then cost a lookup. A value over its cap is
    not kept, so that each message with it is counted in the overflow."""

    def __init__(
        self,
        labels: tuple[str, ...],
        max_values: int,
        label_values: dict[str, set[str]],
        overflow: dict[str, int],
    ) -> None:
        """Keys for ``labels``; ``label_values`` and ``overflow`` are the counters' own."""
        super().__init__()
        self._labels = labels
        self._max_values = max_values
        self._label_values = label_values
        self._overflow = overflow

    def __missing__(self, read: tuple[Any, ...]) -> str:
        key, admitted = self._make(read)
        if admitted:
            self[read] = key
        return key

    def _make(self, read: tuple[Any, ...]) -> tuple[str, bool]:
        """The series key of a new message from its channel and extra label fields as read;
        and whether every value was admitted (not over its label's cap)."""
        channel, *raws = read
        values: list[str] = [channel]
        admitted = True
        for label, raw in zip(self._labels, raws, strict=True):
            value = (raw or MISSING_VALUE).replace(SEP, " ")
            values.append(self._capped(label, value))
            admitted = admitted and value in self._label_values[label]
        return SEP.join(values), admitted

    def _capped(self, label: str, value: str) -> str:
        """``value``, or ``other`` once the label already has its maximum of distinct values."""
        seen = self._label_values.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) < self._max_values:
            seen.add(value)
            return value
        add_to(self._overflow, label)
        return OTHER_VALUE
