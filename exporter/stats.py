"""Plain in-memory statistics shared by the poller (writer) and the collector (reader).

Owns the per-target poll status, the API request statistics, and :class:`ExporterState`, the
one object the collector and the web pages read. Writers change it through its methods, under
its lock and only briefly, so a scrape never waits for a poll.

Must not import: prometheus_client, httpx, or the polling and serving packages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.bsg.budget import RequestBudget
from exporter.bsg.wire import Balance
from exporter.liveness import Liveness
from exporter.tracking.counts import Histogram, add_to

if TYPE_CHECKING:
    from exporter.tracking.snapshot import TargetSnapshot

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

    def copy(self) -> TargetStatus:
        """A copy of the mutable parts (the snapshot is immutable, and shared)."""
        return TargetStatus(
            snapshot=self.snapshot,
            up=self.up,
            polled_once=self.polled_once,
            last_success=self.last_success,
            durations=self.durations.copy(),
            last_error=self.last_error,
            total_mismatches=self.total_mismatches,
        )


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


@dataclass(frozen=True, slots=True)
class StateView:
    """A consistent copy of what the collector and the status page show, taken at once."""

    targets: dict[str, TargetStatus]  # copies: the snapshots inside are immutable
    balances: dict[str, Balance]
    balance_errors: dict[str, int]
    version: str
    test_key: bool
    reload_ok: bool
    reload_success: float


@dataclass(slots=True)
class ExporterState:
    """Everything the collector and the landing page show, changed only through its methods.

    Writers (the poller, a reload) change it briefly under its private lock and readers take
    a :meth:`view`, so a scrape never waits for a poll.
    """

    targets: dict[str, TargetStatus]
    version: str
    test_key: bool
    api: ApiStats = field(default_factory=ApiStats)
    budget: RequestBudget | None = None
    liveness: Liveness = field(default_factory=lambda: Liveness(float("inf")))
    listeners: list[Callable[[], None]] = field(default_factory=list)  # told of each publish
    _balances: dict[str, Balance] = field(default_factory=dict)
    _balance_errors: dict[str, int] = field(default_factory=dict)  # failed reads, by reason
    _reload_ok: bool = True
    _reload_success: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def view(self) -> StateView:
        """A consistent copy of everything shown."""
        with self._lock:
            return StateView(
                targets={name: status.copy() for name, status in self.targets.items()},
                balances=dict(self._balances),
                balance_errors=dict(self._balance_errors),
                version=self.version,
                test_key=self.test_key,
                reload_ok=self._reload_ok,
                reload_success=self._reload_success,
            )

    def publish_success(
        self, name: str, snapshot: TargetSnapshot, *, at: float, duration: float, mismatches: int
    ) -> None:
        """A poll of ``name`` succeeded: show its new values and mark it up."""
        with self._lock:
            status = self.targets[name]
            status.snapshot = snapshot
            status.up = status.polled_once = True
            status.last_success = at
            status.durations.observe(duration)
            status.last_error = None
            status.total_mismatches += mismatches
        self.published()

    def publish_failure(
        self, name: str, snapshot: TargetSnapshot | None, *, duration: float, error: str
    ) -> None:
        """A poll of ``name`` failed: mark it down, with its error and its counts so far."""
        with self._lock:
            status = self.targets[name]
            if snapshot is not None:
                status.snapshot = snapshot
            status.up = False
            status.durations.observe(duration)
            status.last_error = error
        self.published()

    def publish_problem(self, name: str, snapshot: TargetSnapshot, error: str) -> None:
        """Show a problem of ``name`` (and the count of it) without marking it down."""
        with self._lock:
            status = self.targets[name]
            status.snapshot = snapshot
            status.last_error = error
        self.published()

    def publish_balance(self, balance: Balance) -> None:
        """A balance read succeeded."""
        with self._lock:
            self._balances = {balance.currency: balance}

    def count_balance_failure(self, reason: str) -> None:
        """A balance read failed (the last good balance stays shown)."""
        with self._lock:
            add_to(self._balance_errors, reason)

    def replace_targets(
        self, snapshots: dict[str, TargetSnapshot], *, test_key: bool, budget: RequestBudget | None
    ) -> None:
        """Show exactly these targets (a reload): kept ones keep their status, new ones start.

        Listeners are not told: the caller publishes once the rest of the reload is done.
        """
        with self._lock:
            old, self.targets = self.targets, {}
            for name, snapshot in snapshots.items():
                status = old.get(name) or TargetStatus(snapshot=snapshot)
                status.snapshot = snapshot  # a changed campaign starts over
                self.targets[name] = status
            self.test_key = test_key
            self.budget = budget

    def reloaded(self, ok: bool, at: float) -> None:
        """A configuration reload ended; ``at`` is when, if it succeeded."""
        with self._lock:
            self._reload_ok = ok
            if ok:
                self._reload_success = at

    def published(self) -> None:
        """Tell the listeners that a target's values changed (call without the lock held)."""
        for listener in list(self.listeners):
            listener()

    def healthy(self) -> tuple[bool, str]:
        """Whether the poll loop lives and makes progress; when not, why."""
        return self.liveness.check()

    def ready(self) -> bool:
        """True once every target has completed a poll."""
        with self._lock:
            return all(status.polled_once for status in self.targets.values())
