"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.simulator import (
    CampaignProfile,
    ManualClock,
    RealClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
)


@pytest.fixture
def quiet_simulator() -> Iterator[tuple[Simulator, SimulatorServer]]:
    """A real-time simulator with no automatic traffic: the test creates and finishes messages."""
    profile = TrafficProfile(
        campaigns=(
            CampaignProfile(campaign_id=21, rate=0.0),
            CampaignProfile(campaign_id=22, rate=0.0),
        )
    )
    sim = Simulator(profile, clock=RealClock(), seed=4)
    with SimulatorServer(sim) as server:
        yield sim, server


@pytest.fixture
def manual_simulator() -> Iterator[tuple[ManualClock, Simulator, SimulatorServer]]:
    """A simulator with no automatic traffic on a manual clock, served over loopback."""
    clock = ManualClock(start=1_780_000_000.0)
    profile = TrafficProfile(campaigns=(CampaignProfile(campaign_id=21, rate=0.0),))
    sim = Simulator(profile, clock=clock, seed=8)
    with SimulatorServer(sim) as server:
        yield clock, sim, server
