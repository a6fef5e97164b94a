"""The process's runtime tuning: the collector paused around each apply, and nowhere else."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.runtime import SWITCH_INTERVAL, CollectionPause, tune_process
from exporter.simulator import DEMO_API_KEY, ManualClock, Simulator, SimulatorServer
from exporter.tracking.tracker import TargetTracker
from tests.harness import in_process


@pytest.fixture
def gc_restored() -> Iterator[None]:
    """Whatever a test does to the collector, it is on again afterwards."""
    yield
    gc.enable()


@pytest.mark.parametrize("enabled_before", [True, False])
def test_nested_pauses_resume_collection_after_the_last_as_it_was(
    enabled_before: bool, gc_restored: None
) -> None:
    pause = CollectionPause()
    if not enabled_before:
        gc.disable()
    with pause:
        assert not gc.isenabled()
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled() is enabled_before


def test_the_poller_applies_every_poll_with_collection_paused(
    manual_simulator: tuple[ManualClock, Simulator, SimulatorServer],
    monkeypatch: pytest.MonkeyPatch,
    gc_restored: None,
) -> None:
    clock, _, server = manual_simulator
    during: list[bool] = []
    original = TargetTracker.apply

    def watched(self: TargetTracker, *args: Any, **kwargs: Any) -> Any:
        during.append(gc.isenabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TargetTracker, "apply", watched)
    exporter = in_process(server.url, [{"name": "all", "window": "1h"}], DEMO_API_KEY, clock.now)
    try:
        exporter.cycle()
        clock.advance(60)
        exporter.cycle()
    finally:
        exporter.close()
    assert during == [False, False]
    assert gc.isenabled()  # and on again between polls


def test_tune_process_sets_the_switch_interval() -> None:
    before = sys.getswitchinterval()
    try:
        tune_process()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    finally:
        sys.setswitchinterval(before)
