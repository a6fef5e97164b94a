"""Wiring: builds the exporter's parts from a config, for the CLI and for in-process tests.

Owns which part gets which dependency (clock, stop event, observer). It starts nothing: the
caller decides whether to run the poller in a thread or cycle by cycle on a simulated clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.bsg.client import BsgClient, RetryPolicy
from exporter.collector import BsgCollector
from exporter.config import Config
from exporter.poller import Poller
from exporter.stats import ExporterState, TargetStatus
from exporter.tracker import TargetTracker


@dataclass(frozen=True, slots=True)
class App:
    """The wired parts of one exporter."""

    config: Config
    state: ExporterState
    client: BsgClient
    poller: Poller
    registry: CollectorRegistry


def build_app(
    config: Config,
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    process_metrics: bool = True,
) -> App:
    """Build the state, client, poller and registry of an exporter for ``config``."""
    trackers = {
        target.name: _tracker(config, target.name, target.window) for target in config.targets
    }
    now = clock()
    state = ExporterState(
        targets={name: TargetStatus(snapshot=t.snapshot(now)) for name, t in trackers.items()},
        version=__version__,
        test_key=config.api.key.is_test_key,
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
    )
    poller = Poller(config, client, state, trackers, stop=stop, clock=clock)
    return App(config, state, client, poller, _registry(state, process_metrics))


def _tracker(config: Config, name: str, window: float) -> TargetTracker:
    """A tracker for one target."""
    return TargetTracker(
        name,
        window,
        count_existing_on_start=config.count_existing_on_start,
        delivery_latency_buckets=config.metrics.delivery_latency_buckets,
        send_delay_buckets=config.metrics.send_delay_buckets,
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
