"""The delivery-report feed end to end: the real exporter against the simulator in each way it
can order ``sort=delivered``, every count checked against the ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from exporter.model import FEED_DISORDERS
from exporter.simulator import (
    DEMO_API_KEY,
    CampaignProfile,
    ManualClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
)
from tests.harness import (
    InProcessExporter,
    assert_matches,
    expected_counts,
    in_process,
    series,
    value,
)
from tests.test_e2e_counting import TARGETS, check_truth, run, traffic

START = 1_780_000_000.0
MISORDERS = ("ignored", "nulls_first", "no_direction")


@contextmanager
def exporter_for(
    sim: Simulator, clock: ManualClock, **kwargs: object
) -> Iterator[InProcessExporter]:
    """An exporter polling ``sim`` every simulated minute (closed after the test)."""
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now, **kwargs)
        try:
            yield exporter
        finally:
            exporter.close()


def disorders(exporter: InProcessExporter, target: str) -> float:
    """The target's feed passes found out of order, all reasons."""
    samples = exporter.samples()
    return sum(
        value(samples, "bsg_report_feed_disorders_total", target=target, reason=reason)
        for reason in FEED_DISORDERS
    )


def trusted(exporter: InProcessExporter, target: str) -> float:
    """The target's bsg_report_feed_trusted."""
    return value(exporter.samples(), "bsg_report_feed_trusted", target=target)


@pytest.fixture
def clock() -> ManualClock:
    """A simulated clock shared by the simulator and the exporter."""
    return ManualClock(start=START)


def test_an_honest_feed_counts_every_message_at_the_first_poll_after_its_report(
    clock: ManualClock,
) -> None:
    """With the default re-check schedule, only the feed can make every count land at the first
    poll after its report (a pending message an hour old is re-read every 2 minutes). The
    window's split among pending statuses, and among final ones, waits for a sweep."""
    sim = traffic(clock)
    with exporter_for(sim, clock, recheck_every=None) as exporter:
        polls: list[float] = []
        run(exporter, clock, 90, polls)
        truth, samples = sim.truth(), exporter.samples()
        for target, window, campaign in (("all", 3600, None), ("otp", 1800, 11)):
            expected = expected_counts(truth, polls, window=window, campaign_id=campaign)
            assert_matches(samples, target, expected, window_by_finality=True)
        for target in ("all", "otp"):
            assert trusted(exporter, target) == 1 and disorders(exporter, target) == 0


@pytest.mark.parametrize("mode", MISORDERS)
def test_a_feed_out_of_order_falls_back_and_every_count_stays_exact(
    clock: ManualClock, mode: str
) -> None:
    """Each way the API may misorder the feed is found in the pass, and the poll re-checks by the
    tiers as if there were none: the counts are those of a poller without a feed."""
    sim = traffic(clock)
    sim.set_sorting(delivered=mode)
    with exporter_for(sim, clock) as exporter:
        polls: list[float] = []
        run(exporter, clock, 60, polls)
        check_truth(sim, exporter, polls)
        for target in ("all", "otp"):
            assert trusted(exporter, target) == 0
            # Found at the first pass, then tried again every 30 intervals: 60 polls, 2 or 3.
            assert 2 <= disorders(exporter, target) <= 3


def test_a_feed_that_turns_out_of_order_is_dropped_in_that_poll_and_trusted_again_later(
    clock: ManualClock,
) -> None:
    sim = traffic(clock)
    with exporter_for(sim, clock) as exporter:
        polls: list[float] = []
        run(exporter, clock, 5, polls)
        assert trusted(exporter, "all") == 1
        sim.set_sorting(delivered="ignored")
        run(exporter, clock, 1, polls)
        assert trusted(exporter, "all") == 0 and disorders(exporter, "all") == 1
        sim.set_sorting(delivered="mysql")
        run(exporter, clock, 29, polls)
        assert trusted(exporter, "all") == 0  # not tried again yet
        run(exporter, clock, 3, polls)
        assert trusted(exporter, "all") == 1 and disorders(exporter, "all") == 1
        check_truth(sim, exporter, polls)


def test_final_statuses_without_a_report_time_are_counted_by_the_sweep(
    clock: ManualClock,
) -> None:
    """An API that gives expired and unknown messages no report time: the feed cannot show them,
    and they are counted when a tier sweeps (here every poll: the counts stay predictable)."""
    sim = traffic(clock)
    sim.set_sorting(reportless=["expired", "unknown"])
    with exporter_for(sim, clock) as exporter:
        polls: list[float] = []
        run(exporter, clock, 60, polls)
        check_truth(sim, exporter, polls)
        assert trusted(exporter, "all") == 1
        assert value(
            exporter.samples(), "bsg_messages_total", target="all", channel="sms", status="expired"
        )


def requests_over(per_second: float, feed: bool, cycles: int) -> int:
    """Requests for messages over ``cycles`` polls of the default schedule, at a rate."""
    clock = ManualClock(start=START)
    profile = TrafficProfile(
        campaigns=(CampaignProfile(campaign_id=11, rate=per_second, validity_hours=6),),
        backfill=3600,
    )
    sim = Simulator(profile, clock=clock, seed=3)
    with exporter_for(sim, clock, recheck_every=None, report_feed=feed) as exporter:
        run(exporter, clock, cycles, [])
    return sim.request_counts()["messages"]


def test_the_feed_costs_fewer_requests_than_the_tiers_once_there_is_traffic() -> None:
    """The feed reads the reports since the last poll, where the tiers re-read every message of
    their stretch, final ones too: at 3 messages a second it wins; at a trickle it costs at most
    one request a poll and target more, for counts fresh at every age."""
    assert requests_over(3.0, feed=True, cycles=30) < requests_over(3.0, feed=False, cycles=30)
    busy_polls = 30 * len(TARGETS)
    quiet = requests_over(0.2, feed=True, cycles=30)
    assert quiet <= requests_over(0.2, feed=False, cycles=30) + busy_polls


def test_an_api_that_refuses_the_feed_keeps_every_poll_going_without_it(
    clock: ManualClock,
) -> None:
    """A 4xx to the feed's query (an API that cannot sort by report time) is a disorder like
    the others: the poll completes on the tiers, and the feed is tried again later."""
    sim = traffic(clock)
    with exporter_for(sim, clock) as exporter:
        polls: list[float] = []
        run(exporter, clock, 3, polls)
        assert trusted(exporter, "all") == 1
        # The feed reads first in every poll: the next request for messages is the feed's.
        sim.add_fault("http_status", count=1, status=422, message="The selected sort is invalid.")
        run(exporter, clock, 1, polls)
        samples = exporter.samples()
        assert value(samples, "bsg_up", target="all") == 1 and len(polls) == 4
        assert (
            value(samples, "bsg_report_feed_disorders_total", target="all", reason="refused") == 1
        )
        assert trusted(exporter, "all") == 0
        run(exporter, clock, 56, polls)
        check_truth(sim, exporter, polls)


def test_after_a_long_stop_the_feed_trusts_itself_again_from_then_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hours without a poll leave more reports above the mark than a pass reads (the bound is
    made 2 pages here): the feed is trusted from that poll on, the tiers read what lies below,
    and the counts are those of a poller without the feed over the same stop."""
    monkeypatch.setattr("exporter.polling.poller.FEED_MAX_PAGES", 2)
    counted: dict[bool, dict[frozenset[tuple[str, str]], float]] = {}
    requests: dict[bool, int] = {}
    for feed in (True, False):
        clock = ManualClock(start=START)
        sim = traffic(clock)
        with exporter_for(sim, clock, report_feed=feed) as exporter:
            run(exporter, clock, 5, [])
            assert trusted(exporter, "all") == feed
            clock.advance(2 * 3600)  # stopped: some 1,600 reports wait above the mark
            before = sim.request_counts()["messages"]
            run(exporter, clock, 30, [])
            requests[feed] = sim.request_counts()["messages"] - before
            samples = exporter.samples()
            counted[feed] = series(samples, "bsg_messages_total") | series(
                samples, "bsg_message_cost_total"
            )
            assert trusted(exporter, "all") == feed and disorders(exporter, "all") == 0
    assert counted[True] == counted[False] and sum(counted[True].values()) > 1000
    # A page a poll and target after the capped one, not the cap again and again.
    assert requests[True] - requests[False] <= 30 * len(TARGETS) + 4
