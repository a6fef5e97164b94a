"""The cold start ends on what was read: a ``meta.page.total`` that lies never holds it open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.simulator import (
    DEMO_API_KEY,
    ManualClock,
    Simulator,
    SimulatorServer,
)
from tests.harness import InProcessExporter, in_process, value

PRICE = {"value": "0.0100000", "currency": "EUR"}


@pytest.fixture
def rig(
    manual_simulator: tuple[ManualClock, Simulator, SimulatorServer],
) -> Iterator[tuple[ManualClock, Simulator, InProcessExporter]]:
    """An exporter of one target reading a quiet simulator on a manual clock."""
    clock, sim, server = manual_simulator
    exporter = in_process(server.url, [{"name": "all", "window": "1h"}], DEMO_API_KEY, clock.now)
    try:
        yield clock, sim, exporter
    finally:
        exporter.close()


@pytest.mark.parametrize("delta", [1000, 3])
def test_a_total_that_always_overstates_ends_the_cold_start(
    rig: tuple[ManualClock, Simulator, InProcessExporter], delta: int
) -> None:
    clock, sim, exporter = rig
    sim.create_messages([{"status": "delivered", "amount": PRICE}] * 30)  # the baseline
    sim.add_fault("total_lies", delta=delta)  # every page, until cleared
    exporter.cycle()
    assert exporter.app.poller is not None
    assert not exporter.app.state.targets["all"].snapshot.pending
    # Final messages created just before the first poll that the API shows only now: after a
    # completed first poll they are new, and counted.
    late = sim.create_messages(
        [{"status": "delivered", "amount": PRICE, "created_at": clock.now() - 5}] * 20
    )
    clock.advance(60)
    requests_before = sum(sim.request_counts().values())
    for _ in range(3):
        exporter.cycle()
        clock.advance(60)
    requests = sum(sim.request_counts().values()) - requests_before
    samples = exporter.samples()
    assert len(late) == 20
    assert (
        value(samples, "bsg_messages_total", target="all", channel="sms", status="delivered") == 20
    )
    assert value(samples, "bsg_messages_submitted_total", target="all", channel="sms") == 20
    assert value(samples, "bsg_up", target="all") == 1
    assert value(samples, "bsg_page_total_mismatches_total", target="all") >= 3
    # A read of new messages, one page past a short one at most, and the balance: a lying
    # total costs no re-reading of the window.
    assert requests <= 3 * 4, requests


def test_a_total_that_understates_still_reads_every_page(
    rig: tuple[ManualClock, Simulator, InProcessExporter],
) -> None:
    clock, sim, exporter = rig
    exporter.cycle()
    clock.advance(60)
    sim.create_messages([{"status": "failed", "amount": PRICE}] * 1234)
    sim.add_fault("total_lies", delta=-1200)
    exporter.cycle()
    samples = exporter.samples()
    assert (
        value(samples, "bsg_messages_total", target="all", channel="sms", status="failed") == 1234
    )
    assert value(samples, "bsg_page_total_mismatches_total", target="all") == 1
