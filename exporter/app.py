"""Wiring: builds the exporter's parts from a config, and rebuilds them on a reload.

Owns which part gets which dependency (clock, stop event, observer, budget, store). It starts
nothing: the caller decides whether to run the poller in a thread or cycle by cycle on a
simulated clock. A reload swaps parts between two target polls, under the poller's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.bsg.budget import RequestBudget
from exporter.bsg.client import BsgClient, RetryPolicy
from exporter.config.schema import ApiConfig, Config, ConfigError, TargetConfig
from exporter.liveness import Liveness, stall_limit
from exporter.polling.poller import Poller
from exporter.runtime import COLLECTION_PAUSE
from exporter.serving.exposition import BsgRegistry
from exporter.stats import ApiStats, ExporterState, TargetStatus
from exporter.tracking.store import StateStore
from exporter.tracking.tracker import TargetTracker

log = structlog.get_logger("exporter")


class App:
    """The wired parts of one exporter."""

    def __init__(
        self,
        config: Config,
        *,
        stop: threading.Event,
        clock: Callable[[], float],
        process_metrics: bool,
        state_path: str | None,
    ) -> None:
        self._stop = stop
        self._clock = clock
        self.config = config
        self.store = StateStore(state_path or config.state.path)
        _drop_removed_targets(self.store, config)
        trackers = _trackers(config, self.store)
        budget = _budget(config, clock)
        now = clock()
        self.state = ExporterState(
            targets={n: TargetStatus(snapshot=t.snapshot(now)) for n, t in trackers.items()},
            version=__version__,
            test_key=config.api.key.is_test_key,
            budget=budget,
            liveness=Liveness(_stall_limit(config)),
        )
        self.state.reloaded(ok=True, at=now)  # the first load counts as one
        self.client = self._client(config.api, budget)
        self.poller = Poller(
            config,
            self.client,
            self.state,
            trackers,
            stop=stop,
            clock=clock,
            budget=budget,
            store=self.store,
            pause=COLLECTION_PAUSE,
        )
        self.registry = _registry(self.state, process_metrics)

    def reload(self, config: Config) -> None:
        """Apply a new config between two target polls; kept targets keep all their state."""
        with self.poller.lock:
            _drop_removed_targets(self.store, config)
            trackers = _trackers(config, self.store)  # rebuilt from the store: nothing is lost
            budget = self.state.budget
            if config.api.max_requests_per_minute != self.config.api.max_requests_per_minute:
                budget = _budget(config, self._clock)
            client = self.client
            if config.api != self.config.api or budget is not self.state.budget:
                client = self._client(config.api, budget)
            now = self._clock()
            self.state.replace_targets(
                {name: tracker.snapshot(now) for name, tracker in trackers.items()},
                test_key=config.api.key.is_test_key,
                budget=budget,
            )
            self.poller.reconfigure(config, client, trackers, budget)
            self.state.liveness.set_stall_limit(_stall_limit(config))
            if client is not self.client:
                self.client.close()
                self.client = client
            self.config = config
        # Render /metrics again now: until the next poll publishes, a scrape could be served
        # the targets' part rendered before the reload (without a target just added).
        self.state.published()
        log.info("config_reloaded", targets=[t.name for t in config.targets])

    def reload_with(self, load: Callable[[], Config]) -> str | None:
        """Load a config and apply it; a bad one keeps the running one. Returns the error."""
        try:
            config = load()
        except ConfigError as exc:
            log.error("config_reload_failed", source=exc.source, errors=list(exc.errors))
            self.state.reloaded(ok=False, at=self._clock())
            return str(exc)
        self.reload(config)
        self.state.reloaded(ok=True, at=self._clock())
        return None

    def close(self) -> None:
        """Close the client and the state store."""
        self.client.close()
        self.store.close()

    def _client(self, api: ApiConfig, budget: RequestBudget | None) -> BsgClient:
        """A client for ``api`` that reports to the state and spends ``budget``."""
        return BsgClient(
            api.url,
            api.key.reveal(),
            tz=api.tz,
            timeout=api.timeout,
            retry=_retry_policy(api),
            observer=_BeatingObserver(self.state.api, self.state.liveness),
            stop=self._stop,
            user_agent=f"bsg-exporter/{__version__}",
            clock=self._clock,
            budget=budget,
            max_response_size=api.max_response_size,
        )


def build_app(
    config: Config,
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    process_metrics: bool = True,
    state_path: str | None = None,
) -> App:
    """Build the state, client, poller and registry of an exporter for ``config``.

    Raises :class:`~exporter.tracking.store.StateError` when the state file cannot be used.
    """
    return App(
        config, stop=stop, clock=clock, process_metrics=process_metrics, state_path=state_path
    )


class _BeatingObserver:
    """Counts each API request and takes its end as a sign of the poll loop's progress."""

    def __init__(self, stats: ApiStats, liveness: Liveness) -> None:
        self._stats = stats
        self._liveness = liveness

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        """Record the request, then beat."""
        self._stats.observe_request(endpoint, code, duration)
        self._liveness.beat()


def _stall_limit(config: Config) -> float:
    """How long the poll loop may go without progress before it counts as stuck."""
    longest = _retry_policy(config.api).longest_silence(config.api.timeout)
    return stall_limit(config.poll.interval, longest)


def _retry_policy(api: ApiConfig) -> RetryPolicy:
    """How the client for ``api`` retries (the stall limit is derived from the same)."""
    return RetryPolicy(max_retries=api.max_retries)


def _budget(config: Config, clock: Callable[[], float]) -> RequestBudget | None:
    """The request budget of ``config``, or None without a limit."""
    per_minute = config.api.max_requests_per_minute
    return RequestBudget(per_minute, clock) if per_minute else None


def _drop_removed_targets(store: StateStore, config: Config) -> None:
    """Forget the state of targets no longer in the config."""
    configured = {target.name for target in config.targets}
    for name in store.target_names():
        if name not in configured:
            log.warning("state_target_dropped", target=name, reason="not in the configuration")
            store.drop_target(name)


def _trackers(config: Config, store: StateStore) -> dict[str, TargetTracker]:
    """One tracker per target, each loaded from the store."""
    return {target.name: _tracker(config, store, target) for target in config.targets}


def _tracker(config: Config, store: StateStore, target: TargetConfig) -> TargetTracker:
    """A tracker for one target."""
    return TargetTracker(
        store,
        target,
        poll=config.poll,
        metrics=config.metrics,
        count_existing_on_start=config.count_existing_on_start,
    )


def _registry(state: ExporterState, process_metrics: bool) -> CollectorRegistry:
    """A registry of our own (not the global one), with the process metrics exporters carry."""
    registry = BsgRegistry(state)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
