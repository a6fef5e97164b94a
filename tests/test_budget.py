"""The request budget: never more than N requests in any sliding minute, new messages first."""

from __future__ import annotations

from exporter.bsg.budget import RequestBudget
from exporter.simulator import (
    DEMO_API_KEY,
    CampaignProfile,
    ManualClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
)
from tests.harness import in_process, series, value


def test_sliding_window_limit() -> None:
    clock = ManualClock(start=1000.0)
    budget = RequestBudget(3, clock.now)
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.advance(30)
    assert budget.remaining() == 0 and not budget.try_acquire()
    clock.advance(30)  # the first three are now a minute old
    assert budget.remaining() == 3


def test_a_short_budget_is_never_exceeded_and_the_backlog_drains() -> None:
    clock = ManualClock(start=1_780_000_000.0)
    profile = TrafficProfile(campaigns=(CampaignProfile(campaign_id=1, rate=0.0),))
    sim = Simulator(profile, clock=clock, seed=1)
    with SimulatorServer(sim) as server:
        exporter = in_process(
            server.url,
            [{"name": "all", "window": "2h"}],
            DEMO_API_KEY,
            clock.now,
            max_requests_per_minute=8,
        )
        try:
            exporter.cycle()
            # 12 sparse stragglers: each needs its own lookup, more than the budget allows
            ids = []
            for _ in range(12):
                ids += sim.create_messages([{"campaign_id": 1, "status": "sent"}])
                sim.create_messages([{"campaign_id": 1, "status": "delivered"}] * 600)
                clock.advance(1)
            for _ in range(10):  # 7,212 new messages take 15 pages: several cycles of budget
                clock.advance(60)
                exporter.cycle()
                in_window = sum(series(exporter.samples(), "bsg_window_messages").values())
                if in_window == 12 * 601:
                    break
            assert in_window == 12 * 601
            for msg_id in ids:
                sim.set_status(msg_id, "failed")
            per_cycle = []
            backlogs = []
            for _ in range(6):
                clock.advance(60)
                before = sum(sim.request_counts().values())
                exporter.cycle()
                per_cycle.append(sum(sim.request_counts().values()) - before)
                samples = exporter.samples()
                backlogs.append(value(samples, "bsg_poll_backlog_messages", target="all"))
            assert max(per_cycle) <= 8, per_cycle
            assert backlogs[0] > 0 and backlogs[-1] == 0, backlogs
            failed = value(
                samples, "bsg_messages_total", target="all", channel="sms", status="failed"
            )
            assert failed == 12
            assert value(samples, "bsg_api_budget_remaining") >= 0
        finally:
            exporter.close()
