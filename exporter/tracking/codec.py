"""What a target saves with every poll: its counters and its reading progress, and their JSON.

Owns the two records a tracker keeps and the save format the store holds for them; a change
to the format is a change here only.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module but the counting
containers and the density.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from itertools import accumulate, islice
from typing import Any

import structlog

from exporter.tracking.counts import Histogram
from exporter.tracking.density import MinuteDensity

log = structlog.get_logger("exporter.tracking.codec")


@dataclass(slots=True)
class Counters:
    """Everything a target counts; saved with every poll."""

    series: set[str] = field(default_factory=set)
    label_values: dict[str, set[str]] = field(default_factory=dict)
    overflow: dict[str, int] = field(default_factory=dict)
    counted: dict[tuple[str, str], int] = field(default_factory=dict)
    submitted: dict[str, int] = field(default_factory=dict)
    cost: dict[tuple[str, str, str], int] = field(default_factory=dict)
    changes: dict[tuple[str, str], int] = field(default_factory=dict)
    abandoned: dict[tuple[str, str], int] = field(default_factory=dict)
    latency: dict[str, Histogram] = field(default_factory=dict)
    send_delay: dict[str, Histogram] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    disorders: dict[str, int] = field(default_factory=dict)  # feed passes out of order


@dataclass(slots=True)
class FeedProgress:
    """Where the delivery-report feed stands."""

    mark: float | None = None  # the latest report time a trusted pass read (the API's clock)
    trusted_since: float | None = None  # when the feed was last found in order; None: it is not
    retry_at: float = float("-inf")  # after a disorder, when the feed is tried again
    expiry_reported: bool = False  # the API gives an expiry a report time: the feed shows it


@dataclass(slots=True)
class Progress:
    """Where reading stands: the cold flag, the cursor, the horizon and the id density."""

    cold: bool = True
    cursor_id: int | None = None
    cursor_created: float | None = None
    read_to: float | None = None
    resume: tuple[float, int] | None = None  # (start, offset) of an unfinished new-message read
    horizon: float = float("-inf")
    density: MinuteDensity = field(default_factory=MinuteDensity)
    baseline_started: float | None = None  # when the first (cold) poll began
    tier_runs: list[float] = field(default_factory=list)  # when each re-check tier last ran
    feed: FeedProgress = field(default_factory=FeedProgress)


def dump(c: Counters, p: Progress) -> dict[str, Any]:
    """The JSON form of a target's counters and progress."""
    return {
        "cold": p.cold,
        "cursor": [p.cursor_id, p.cursor_created],
        "read_to": p.read_to,
        "resume": list(p.resume) if p.resume is not None else None,
        "horizon": p.horizon if p.horizon != float("-inf") else None,
        "baseline_started": p.baseline_started,
        "tier_runs": p.tier_runs,
        "feed": [
            p.feed.mark,
            p.feed.trusted_since,
            _finite(p.feed.retry_at),
            p.feed.expiry_reported,
        ],
        "density": _density_form(p.density),
        "series": sorted(c.series),
        "label_values": {k: sorted(v) for k, v in c.label_values.items()},
        "overflow": c.overflow,
        "counted": [[*k, v] for k, v in c.counted.items()],
        "submitted": c.submitted,
        "cost": [[*k, v] for k, v in c.cost.items()],
        "changes": [[*k, v] for k, v in c.changes.items()],
        "abandoned": [[*k, v] for k, v in c.abandoned.items()],
        "latency": {k: [list(h.bounds), h.counts, h.total] for k, h in c.latency.items()},
        "send_delay": {k: [list(h.bounds), h.counts, h.total] for k, h in c.send_delay.items()},
        "errors": c.errors,
        "rejected": c.rejected,
        "disorders": c.disorders,
    }


def _density_form(density: MinuteDensity) -> dict[str, Any]:
    """The JSON form of a density: its first minute, the steps to each next one, the counts.

    The steps and most counts are small ints, which Python shares: pairs of minutes and counts
    made ~70 bytes of objects a minute at every save (4,320 minutes in a 72 h window).
    """
    minutes, counts = density.columns()
    return {
        "first": minutes[0] if minutes else None,
        "steps": list(map(operator.sub, islice(minutes, 1, None), minutes)),
        "counts": counts.tolist(),
    }


def _density(saved: Any) -> MinuteDensity:
    """A density from its JSON form, or from the ``[minute, count]`` pairs saved before."""
    if not isinstance(saved, dict):
        return MinuteDensity((int(minute), int(count)) for minute, count in saved)
    if saved["first"] is None:
        return MinuteDensity()
    minutes = accumulate(saved["steps"], initial=int(saved["first"]))
    return MinuteDensity(zip(minutes, map(int, saved["counts"]), strict=True))


def _finite(value: float) -> float | None:
    """A moment for JSON, which has no infinities: None for "never"."""
    return value if value != float("-inf") else None


def restore(
    c: Counters,
    p: Progress,
    data: dict[str, Any],
    latency_buckets: tuple[float, ...],
    send_buckets: tuple[float, ...],
) -> None:
    """Fill counters and progress from their JSON form."""
    p.cold = bool(data["cold"])
    p.cursor_id, p.cursor_created = data["cursor"]
    p.read_to = data["read_to"]
    p.resume = (data["resume"][0], data["resume"][1]) if data.get("resume") else None
    p.horizon = data["horizon"] if data["horizon"] is not None else float("-inf")
    p.baseline_started = data.get("baseline_started")
    p.tier_runs = list(data.get("tier_runs") or [])
    mark, since, retry, expiry = data.get("feed") or (None, None, None, False)  # none before it
    p.feed = FeedProgress(mark, since, retry if retry is not None else float("-inf"), expiry)
    p.density = _density(data["density"])
    c.series = set(data["series"])
    c.label_values = {k: set(v) for k, v in data["label_values"].items()}
    c.overflow = dict(data["overflow"])
    c.counted = {(a, b): n for a, b, n in data["counted"]}
    c.submitted = dict(data["submitted"])
    c.cost = {(a, b, d): n for a, b, d, n in data["cost"]}
    c.changes = {(a, b): n for a, b, n in data["changes"]}
    c.abandoned = {(a, b): n for a, b, n in data["abandoned"]}
    c.latency = _histograms(data["latency"], latency_buckets)
    c.send_delay = _histograms(data["send_delay"], send_buckets)
    c.errors = dict(data["errors"])
    c.rejected = dict(data["rejected"])
    c.disorders = dict(data.get("disorders") or {})


def _histograms(data: dict[str, Any], bounds: tuple[float, ...]) -> dict[str, Histogram]:
    """Histograms from JSON; ones saved with other buckets start over (they cannot be merged)."""
    result: dict[str, Histogram] = {}
    for channel, (saved_bounds, counts, total) in data.items():
        histogram = Histogram(bounds)
        if tuple(saved_bounds) == bounds:
            histogram.counts, histogram.total = list(counts), float(total)
        else:
            log.warning("state_histogram_reset", channel=channel, reason="buckets changed")
        result[channel] = histogram
    return result
