"""The re-check schedule: which tiers of pending messages a poll re-reads, as a value.

A tracker's :meth:`~exporter.tracking.tracker.TargetTracker.rechecks` returns a
:class:`Recheck`; the poller reads what it names, and hands it back to ``apply`` with what it
read, so nothing of one poll's plan waits inside the tracker for the next call.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Tier = tuple[float, float]
"""(max_age, every): pending messages younger than max_age are re-read every ``every`` s."""


@dataclass(frozen=True, slots=True)
class Recheck:
    """What one poll must re-read: pending messages due, most overdue first, and their tiers."""

    due: tuple[tuple[int, float], ...] = ()  # (id, created_at)
    tiers: frozenset[int] = frozenset()

    @property
    def ids(self) -> frozenset[int]:
        """The ids of the messages due."""
        return frozenset(msg_id for msg_id, _ in self.due)

    def left_unread(self, checked: set[int]) -> frozenset[int]:
        """The messages due that the poll did not read (the budget ran out): the backlog."""
        return self.ids - checked


def tiers_due(tiers: Sequence[Tier], runs: Sequence[float], now: float, slack: float) -> set[int]:
    """The tiers whose period has passed (within ``slack``) since they last ran."""
    if len(runs) != len(tiers):  # first poll, or the tiers were reconfigured
        return set(range(len(tiers)))
    return {
        index
        for index, ((_age, every), last) in enumerate(zip(tiers, runs, strict=True))
        if now + slack >= last + every
    }


def mark_run(tiers: Sequence[Tier], runs: list[float], ran: frozenset[int], now: float) -> None:
    """Record that the tiers ``ran`` ran at ``now`` (a new tracker starts every clock now)."""
    if len(runs) != len(tiers):
        runs[:] = [now] * len(tiers)  # a new tracker checks nothing yet: all were just read
    for index in ran:
        runs[index] = now
