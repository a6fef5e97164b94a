"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.simulator import (
    CampaignProfile,
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
