"""The read plan of one target poll: what to read so that every due re-check costs least.

Owns the choice between a range read over a dense stretch of messages (one request per 500
messages, due or not) and ``filter[id]`` lookups for sparse stragglers (one request each), and
the order in which a short request budget is spent: new messages first, then the most overdue
re-checks; the rest waits for a later cycle. Pure functions, no I/O.

Must not import: prometheus_client, httpx, or any other exporter module but ``exporter.bsg``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter.bsg.client import PAGE_LIMIT

Density = Callable[[float, float], int]
"""Messages (due or not) created in ``[start, end]``: what a range read there must page through."""


@dataclass(slots=True)
class RangeRead:
    """One range read over ``[start, end]`` (created_at) and the due messages it covers."""

    start: float
    end: float
    ids: list[int] = field(default_factory=list)
    priority: int = 0  # position of its most overdue message in the due list

    def cost(self, density: Density) -> int:
        """Requests the read is expected to take."""
        return pages(density(self.start, self.end))


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one target poll reads."""

    new_from: float
    new_covers: tuple[int, ...]
    ranges: tuple[RangeRead, ...]
    lookups: tuple[int, ...]
    deferred: int


def pages(messages: int) -> int:
    """Requests needed to page through ``messages`` rows (at least one)."""
    return max(1, math.ceil(messages / PAGE_LIMIT))


def plan_reads(
    due: Sequence[tuple[int, float]],
    new_from: float,
    now: float,
    density: Density,
    allowance: int | None = None,
) -> ReadPlan:
    """Plan the reads of a poll: the new messages since ``new_from``, then the due re-checks.

    ``due`` is ``(id, created_at)`` most overdue first; ``allowance`` caps the requests (None
    means no cap). The new-message read is always planned; re-checks go by priority while the
    allowance lasts.
    """
    clusters = _clusters(due, density)
    new_covers: list[int] = []
    if clusters and _worth_merging(clusters[-1], new_from, now, density):
        merged = clusters.pop()
        new_from, new_covers = merged.start, merged.ids
    left = None if allowance is None else allowance - pages(density(new_from, now))
    ranges: list[RangeRead] = []
    lookups: list[int] = []
    deferred = 0
    for cluster in sorted(clusters, key=lambda c: c.priority):
        as_range = cluster.cost(density)
        cost = min(as_range, len(cluster.ids))
        if left is not None and cost > left:
            deferred += len(cluster.ids)
            continue
        if left is not None:
            left -= cost
        if as_range < len(cluster.ids):
            ranges.append(cluster)
        else:
            lookups.extend(cluster.ids)
    return ReadPlan(new_from, tuple(new_covers), tuple(ranges), tuple(lookups), deferred)


def _clusters(due: Sequence[tuple[int, float]], density: Density) -> list[RangeRead]:
    """Group due messages by creation time wherever one range read covers them cheaply."""
    order = sorted(range(len(due)), key=lambda i: due[i][1])
    clusters: list[RangeRead] = []
    for index in order:
        msg_id, created = due[index]
        current = clusters[-1] if clusters else None
        # Extending a range is worth it while it costs no more than one lookup more.
        if (
            current is not None
            and pages(density(current.start, created)) <= current.cost(density) + 1
        ):
            current.end = created
            current.ids.append(msg_id)
            current.priority = min(current.priority, index)
        else:
            clusters.append(RangeRead(created, created, [msg_id], index))
    return clusters


def _worth_merging(cluster: RangeRead, new_from: float, now: float, density: Density) -> bool:
    """True when reading new messages from the cluster's start costs no more than both reads."""
    merged = pages(density(cluster.start, now))
    separate = pages(density(new_from, now)) + min(cluster.cost(density), len(cluster.ids))
    return merged <= separate
