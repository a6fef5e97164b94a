"""Plain in-memory statistics shared by the poller (writer) and the collector (reader).

Owns the histogram and counter containers, the per-target poll status, the API request
statistics, and :class:`ExporterState`, the one object the collector and the web pages read.
Writers change it under its lock and only briefly, so a scrape never waits for a poll.

Must not import: prometheus_client, httpx, or the poller, collector and web modules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from exporter.bsg.budget import RequestBudget
from exporter.bsg.records import Balance
from exporter.liveness import Liveness
from exporter.tracking.counts import Histogram, add_to

if TYPE_CHECKING:
    from exporter.tracking.snapshot import TargetSnapshot

K = TypeVar("K")

POLL_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
API_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class TargetStatus:
    """How a target's polls go: the last outcome and counts of failures and rejects."""

    snapshot: TargetSnapshot
    up: bool = False
    polled_once: bool = False
    last_success: float | None = None
    durations: Histogram = field(default_factory=lambda: Histogram(POLL_DURATION_BUCKETS))
    last_error: str | None = None
    total_mismatches: int = 0  # passes whose meta.page.total disagreed with the rows read


@dataclass(slots=True)
class ApiStats:
    """Counts and latencies of API requests; implements the client's ``RequestObserver``."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    durations: dict[str, Histogram] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        """Record one request's outcome and latency."""
        with self.lock:
            add_to(self.requests, (endpoint, code))
            histogram = self.durations.get(endpoint)
            if histogram is None:
                histogram = self.durations[endpoint] = Histogram(API_DURATION_BUCKETS)
            histogram.observe(duration)

    def copy(self) -> tuple[dict[tuple[str, str], int], dict[str, Histogram]]:
        """A consistent copy of the counts and histograms."""
        with self.lock:
            return dict(self.requests), {k: h.copy() for k, h in self.durations.items()}


@dataclass(slots=True)
class ExporterState:
    """Everything the collector and the landing page show, behind one lock."""

    targets: dict[str, TargetStatus]
    version: str
    test_key: bool
    api: ApiStats = field(default_factory=ApiStats)
    balances: dict[str, Balance] = field(default_factory=dict)
    balance_errors: dict[str, int] = field(default_factory=dict)  # failed reads, by reason
    budget: RequestBudget | None = None
    reload_ok: bool = True
    reload_success: float = 0.0
    liveness: Liveness = field(default_factory=lambda: Liveness(float("inf")))
    lock: threading.Lock = field(default_factory=threading.Lock)
    listeners: list[Callable[[], None]] = field(default_factory=list)  # told of each publish

    def published(self) -> None:
        """Tell the listeners that a target's values changed (call without the lock held)."""
        for listener in list(self.listeners):
            listener()

    def healthy(self) -> tuple[bool, str]:
        """Whether the poll loop lives and makes progress; when not, why."""
        return self.liveness.check()

    def ready(self) -> bool:
        """True once every target has completed a poll."""
        with self.lock:
            return all(status.polled_once for status in self.targets.values())
