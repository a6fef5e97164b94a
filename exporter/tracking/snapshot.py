"""What a tracker hands out: the result of a poll and the snapshot the collector reads.

Owns the series-key encoding (a channel and the extra label values joined by :data:`SEP`) and
the two frozen records; readers of a snapshot import only this module, never the tracker.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module but
``exporter.tracking.counts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.tracking.counts import Histogram

SEP = "\x1f"
"""Joins a message's channel and extra label values into one series key (ASCII unit separator:
it cannot occur in a channel, a country code or a sender name)."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one poll changed."""

    new: int
    finalized: int
    changes: int
    ignored: int
    abandoned: int


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """A target's counters and gauges at the end of a poll, for the collector."""

    name: str
    label_names: tuple[str, ...]  # extra labels after channel in every series key
    series: tuple[str, ...]  # every series seen (channel plus extra values, joined by SEP)
    channels: tuple[str, ...]
    overflow: Mapping[str, int]
    messages: Mapping[tuple[str, str], int]
    submitted: Mapping[str, int]
    cost_nanos: Mapping[tuple[str, str, str], int]
    changes: Mapping[tuple[str, str], int]
    abandoned: Mapping[tuple[str, str], int]
    delivery_latency: Mapping[str, Histogram]
    send_delay: Mapping[str, Histogram]
    window: Mapping[tuple[str, str], int]
    errors: Mapping[str, int]
    rejected: Mapping[str, int]
    feed_trusted: bool  # the delivery-report feed is read and its order holds
    feed_disorders: Mapping[str, int]  # feed passes found out of order, by reason
    oldest_pending_age: float
    tracked: int
    pending: int
    backlog: int


def channel_of(series: str) -> str:
    """The channel of a series key."""
    return series.split(SEP, 1)[0]
