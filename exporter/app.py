"""Wiring: builds the exporter's parts from a config, for the CLI and for in-process tests.

Owns which part gets which dependency (clock, stop event, observer). It starts nothing: the
caller decides whether to run the poller in a thread or cycle by cycle on a simulated clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.bsg.budget import RequestBudget
from exporter.bsg.client import BsgClient, RetryPolicy
from exporter.collector import BsgCollector
from exporter.config import Config, TargetConfig
from exporter.poller import Poller
from exporter.stats import ExporterState, TargetStatus
from exporter.store import StateStore
from exporter.tracker import TargetTracker

log = structlog.get_logger("exporter")


@dataclass(frozen=True, slots=True)
class App:
    """The wired parts of one exporter."""

    config: Config
    state: ExporterState
    store: StateStore
    client: BsgClient
    poller: Poller
    registry: CollectorRegistry

    def close(self) -> None:
        """Close the client and the state store."""
        self.client.close()
        self.store.close()


def build_app(
    config: Config,
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    process_metrics: bool = True,
    state_path: str | None = None,
) -> App:
    """Build the state, client, poller and registry of an exporter for ``config``.

    Raises :class:`~exporter.store.StateError` when the state file cannot be used.
    """
    store = StateStore(state_path or config.state.path)
    _drop_removed_targets(store, config)
    trackers = {target.name: _tracker(config, store, target) for target in config.targets}
    now = clock()
    per_minute = config.api.max_requests_per_minute
    budget = RequestBudget(per_minute, clock) if per_minute else None
    state = ExporterState(
        targets={name: TargetStatus(snapshot=t.snapshot(now)) for name, t in trackers.items()},
        version=__version__,
        test_key=config.api.key.is_test_key,
        budget=budget,
    )
    client = BsgClient(
        config.api.url,
        config.api.key.reveal(),
        tz=config.api.tz,
        timeout=config.api.timeout,
        retry=RetryPolicy(max_retries=config.api.max_retries),
        observer=state.api,
        stop=stop,
        user_agent=f"bsg-exporter/{__version__}",
        clock=clock,
        budget=budget,
    )
    poller = Poller(config, client, state, trackers, stop=stop, clock=clock, budget=budget)
    return App(config, state, store, client, poller, _registry(state, process_metrics))


def _drop_removed_targets(store: StateStore, config: Config) -> None:
    """Forget the state of targets no longer in the config."""
    configured = {target.name for target in config.targets}
    for name in store.target_names():
        if name not in configured:
            log.warning("state_target_dropped", target=name, reason="not in the configuration")
            store.drop_target(name)


def _tracker(config: Config, store: StateStore, target: TargetConfig) -> TargetTracker:
    """A tracker for one target."""
    return TargetTracker(
        store,
        target.name,
        target.window,
        campaign_id=target.campaign_id,
        count_existing_on_start=config.count_existing_on_start,
        delivery_latency_buckets=config.metrics.delivery_latency_buckets,
        send_delay_buckets=config.metrics.send_delay_buckets,
        recheck=[(tier.max_age, tier.every) for tier in config.poll.recheck],
        abandon_grace=config.poll.abandon_grace,
        interval=config.poll.interval,
    )


def _registry(state: ExporterState, process_metrics: bool) -> CollectorRegistry:
    """A registry of our own (not the global one), with the process metrics exporters carry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BsgCollector(state))
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
