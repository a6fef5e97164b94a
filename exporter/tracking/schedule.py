"""The re-check schedule: which tiers of pending messages a poll re-reads, as a value, and what
the delivery-report feed is asked to read and tells back.

A tracker's :meth:`~exporter.tracking.tracker.TargetTracker.rechecks` returns a
:class:`Recheck`; the poller reads what it names, and hands it back to ``apply`` with what it
read, so nothing of one poll's plan waits inside the tracker for the next call. While the feed
is trusted, a tier runs ``factor`` times more rarely once it has run since the feed was trusted
(a report that came before then is read by that run).

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


@dataclass(frozen=True, slots=True)
class FeedRead:
    """What the report feed is to read: reports of messages created from ``start`` (the oldest
    pending one), down to report time ``since``; None: one page, to find where reports stand.

    While the feed is not trusted yet, ``cover`` is the moment since which the re-check tiers
    have not all run: a pass down to it sees every report they could have missed, and the feed
    is trusted from then on.
    """

    start: float
    since: float | None
    cover: float | None = None


@dataclass(frozen=True, slots=True)
class FeedResult:
    """What a feed pass found: its latest report time, and how far it read in order."""

    asked: FeedRead
    top: float | None
    disorder: str | None  # a reason of the vocabulary's FEED_DISORDERS, None when in order
    reached: bool  # down to ``since`` (or to the last report)
    complete: bool  # not cut by the request budget
    expiry_reported: bool = False  # it read an expired message with a report time

    @property
    def trusted(self) -> bool:
        """Every report down to ``since`` was read, in order, within the budget."""
        return self.reached and self.complete and self.disorder is None


@dataclass(frozen=True, slots=True)
class Sweep:
    """Tiers stretched ``factor`` times while the feed is trusted, from ``since`` on."""

    factor: float
    since: float


def tiers_due(
    tiers: Sequence[Tier],
    runs: Sequence[float],
    now: float,
    slack: float,
    sweep: Sweep | None = None,
) -> set[int]:
    """The tiers whose period has passed (within ``slack``) since they last ran."""
    if len(runs) != len(tiers):  # first poll, or the tiers were reconfigured
        return set(range(len(tiers)))
    due: set[int] = set()
    for index, ((_age, every), last) in enumerate(zip(tiers, runs, strict=True)):
        period = every * sweep.factor if sweep is not None and last >= sweep.since else every
        if now + slack >= last + period:
            due.add(index)
    return due


def mark_run(tiers: Sequence[Tier], runs: list[float], ran: frozenset[int], now: float) -> None:
    """Record that the tiers ``ran`` ran at ``now`` (a new tracker starts every clock now)."""
    if len(runs) != len(tiers):
        runs[:] = [now] * len(tiers)  # a new tracker checks nothing yet: all were just read
    for index in ran:
        runs[index] = now
