"""The read plan of one target poll: what to read so that every due re-check costs least.

Owns the choice between a range read over a dense stretch of messages (one request per 500
messages, due or not) and ``filter[id]`` lookups for sparse stragglers (one request each), and
the order in which a short request budget is spent: new messages first, then the most overdue
re-checks; the rest waits for a later cycle. Pure functions, no I/O.

Must not import: prometheus_client, httpx, the client, or any other exporter module but the
API's records (``exporter.bsg.wire``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.bsg.wire import PAGE_LIMIT

Density = Callable[[float, float], int]
"""Messages (due or not) created in ``[start, end]``: what a range read there must page through."""


@dataclass(slots=True)
class Check:
    """Re-checks of due messages created in ``[start, end]``: one range read, or lookups."""

    start: float
    end: float
    ids: list[int] = field(default_factory=list)
    priority: int = 0  # position of its most overdue message in the due list
    by_range: bool = True

    def range_cost(self, density: Density) -> int:
        """Requests a range read over it is expected to take."""
        return pages(density(self.start, self.end))

    def cost(self, density: Density) -> int:
        """Requests it is expected to take, the way it is planned."""
        return self.range_cost(density) if self.by_range else len(self.ids)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one target poll reads: new messages from ``new_from``, then ``checks`` in order."""

    new_from: float
    new_covers: tuple[int, ...]
    checks: tuple[Check, ...]


def pages(messages: int) -> int:
    """Requests needed to page through ``messages`` rows (at least one)."""
    return max(1, math.ceil(messages / PAGE_LIMIT))


def plan_reads(
    due: Sequence[tuple[int, float]],
    new_from: float,
    now: float,
    density: Density,
    *,
    resuming: bool = False,
) -> ReadPlan:
    """Plan a poll: the new messages since ``new_from``, then the due re-checks.

    ``due`` is ``(id, created_at)``, most overdue first; the checks come back in that priority
    order, each as a range read or as lookups, whichever is cheaper. A ``resuming`` read of new
    messages keeps its start (its offset depends on it).
    """
    clusters = _clusters(due, density)
    new_covers: list[int] = []
    if clusters and not resuming and _worth_merging(clusters[-1], new_from, now, density):
        merged = clusters.pop()
        new_from, new_covers = merged.start, merged.ids
    for cluster in clusters:
        cluster.by_range = cluster.range_cost(density) < len(cluster.ids)
    checks = sorted(clusters, key=lambda c: c.priority)
    return ReadPlan(new_from, tuple(new_covers), tuple(checks))


def within_allowance(
    checks: Sequence[Check], allowance: int | None, density: Density
) -> tuple[list[Check], int]:
    """The checks that fit ``allowance`` requests, by priority, and how many messages wait."""
    if allowance is None:
        return list(checks), 0
    chosen: list[Check] = []
    deferred = 0
    for check in checks:
        cost = check.cost(density)
        if cost <= allowance:
            allowance -= cost
            chosen.append(check)
        elif not check.by_range and allowance > 0:
            # Lookups can be split: as many as fit now, the rest in a later cycle.
            chosen.append(Check(check.start, check.end, check.ids[:allowance], by_range=False))
            deferred += len(check.ids) - allowance
            allowance = 0
        else:
            deferred += len(check.ids)
    return chosen, deferred


def _clusters(due: Sequence[tuple[int, float]], density: Density) -> list[Check]:
    """Group due messages by creation time wherever one range read covers them cheaply."""
    order = sorted(range(len(due)), key=lambda i: due[i][1])
    clusters: list[Check] = []
    for index in order:
        msg_id, created = due[index]
        current = clusters[-1] if clusters else None
        # Extending a range is worth it while it costs no more than one lookup more.
        if current is not None and pages(density(current.start, created)) <= (
            current.range_cost(density) + 1
        ):
            current.end = created
            current.ids.append(msg_id)
            current.priority = min(current.priority, index)
        else:
            clusters.append(Check(created, created, [msg_id], index))
    return clusters


def _worth_merging(cluster: Check, new_from: float, now: float, density: Density) -> bool:
    """True when reading new messages from the cluster's start costs no more than both reads."""
    merged = pages(density(cluster.start, now))
    separate = pages(density(new_from, now)) + min(cluster.range_cost(density), len(cluster.ids))
    return merged <= separate
