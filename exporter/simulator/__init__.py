"""BSG One API simulator: a deterministic fake of the provider for demos, tests, benchmarks.

Owns: simulated clocks, traffic profiles and scenarios, the message store and status
timelines, JWT-like auth, GET /api/messages with every filter and paging parameter (and
sort=delivered off a report index, served right or in one of the ways an API gets it wrong),
the balance endpoint, injectable faults, ground truth and the /_sim/ admin API, the HTTP
server and the `bsg-simulator` CLI.

Must not import: anything from exporter outside exporter.simulator, prometheus_client.
"""

from .clock import Clock, ManualClock, RealClock, ScaledClock
from .engine import DEMO_API_KEY, Simulator, status_at
from .reports import DELIVERED_SORTS
from .server import SimulatorServer, start_demo
from .traffic import SCENARIOS, CampaignProfile, TrafficProfile, demo_profile

__all__ = [
    "DELIVERED_SORTS",
    "DEMO_API_KEY",
    "SCENARIOS",
    "CampaignProfile",
    "Clock",
    "ManualClock",
    "RealClock",
    "ScaledClock",
    "Simulator",
    "SimulatorServer",
    "TrafficProfile",
    "demo_profile",
    "start_demo",
    "status_at",
]
