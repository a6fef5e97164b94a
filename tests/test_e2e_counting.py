"""End to end on a simulated clock: the real client, poller, trackers, collector and web server
against the simulator over loopback, compared with the simulator's ground truth."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.bsg.wire import is_final
from exporter.simulator import (
    DEMO_API_KEY,
    CampaignProfile,
    ManualClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
    status_at,
)
from tests.harness import (
    InProcessExporter,
    TargetSpec,
    assert_matches,
    expected_counts,
    in_process,
    series,
    value,
)

START = 1_780_000_000.0
TARGETS: list[TargetSpec] = [
    {"name": "all", "window": "1h"},
    {"name": "otp", "campaign_id": 11, "window": "30m"},
]


@pytest.fixture
def clock() -> ManualClock:
    """A simulated clock shared by the simulator and the exporter."""
    return ManualClock(start=START)


def traffic(clock: ManualClock, **kwargs: Any) -> Simulator:
    """Two campaigns over four channels and several currencies, with an hour of history."""
    profile = TrafficProfile(
        campaigns=(
            CampaignProfile(
                campaign_id=11,
                rate=0.15,
                channels={"sms": 0.6, "viber": 0.4},
                countries={"UA": 0.5, "DE": 0.3, "GB": 0.2},
                validity_hours=1,
            ),
            CampaignProfile(
                campaign_id=12,
                rate=0.08,
                channels={"whatsapp": 0.5, "rcs": 0.2, "sms": 0.3},
                countries={"US": 0.6, "PL": 0.4},
                validity_hours=2,
            ),
        ),
        backfill=3600,
        **kwargs,
    )
    return Simulator(profile, clock=clock, seed=5)


@pytest.fixture
def stack(clock: ManualClock) -> Iterator[tuple[Simulator, InProcessExporter]]:
    """A simulator with traffic and an exporter polling it every simulated minute."""
    sim = traffic(clock)
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now)
        try:
            yield sim, exporter
        finally:
            exporter.close()


def run(exporter: InProcessExporter, clock: ManualClock, cycles: int, polls: list[float]) -> None:
    """Run ``cycles`` poll cycles a simulated minute apart, recording completed poll times."""
    for _ in range(cycles):
        exporter.cycle()
        if all(s.up for s in exporter.app.state.targets.values()):
            polls.append(clock.now())
        clock.advance(60)


def check_truth(sim: Simulator, exporter: InProcessExporter, polls: list[float]) -> None:
    """Every counter of every target equals what the ground truth and the contract say."""
    truth = sim.truth()
    samples = exporter.samples()
    assert_matches(samples, "all", expected_counts(truth, polls, window=3600))
    assert_matches(samples, "otp", expected_counts(truth, polls, window=1800, campaign_id=11))


def test_counters_match_the_ground_truth_over_two_simulated_hours(
    stack: tuple[Simulator, InProcessExporter], clock: ManualClock
) -> None:
    sim, exporter = stack
    polls: list[float] = []
    run(exporter, clock, 120, polls)
    assert len(polls) == 120
    check_truth(sim, exporter, polls)
    samples = exporter.samples()
    counted = sum(series(samples, "bsg_messages_total", target="all").values())
    assert counted > 1000  # the test measured real traffic, not an empty account
    channels = {dict(k)["channel"] for k in series(samples, "bsg_messages_total", target="all")}
    assert channels == {"sms", "viber", "whatsapp", "rcs"}
    assert value(samples, "bsg_up", target="otp") == 1


def test_final_status_changes_are_seen_but_never_recounted(
    stack: tuple[Simulator, InProcessExporter], clock: ManualClock
) -> None:
    sim, exporter = stack
    polls: list[float] = []
    run(exporter, clock, 60, polls)
    samples = exporter.samples()
    changes = series(samples, "bsg_final_status_changes_total", target="all")
    assert changes, "viber and whatsapp reads after delivery must show as changes"
    possible: dict[tuple[str, str], int] = {}
    for message in sim.truth()["messages"]:
        finals = [s for _, s in message["history"] if is_final(s)]
        for before, after in itertools.pairwise(finals):
            possible[(before, after)] = possible.get((before, after), 0) + 1
    for labels, count in changes.items():
        pair = (dict(labels)["from_status"], dict(labels)["to_status"])
        assert 0 < count <= possible.get(pair, 0), pair
    # the current final statuses of the window are what was counted, moved by the changes
    check_truth(sim, exporter, polls)


def test_cold_start_baseline_is_not_counted(clock: ManualClock) -> None:
    sim = traffic(clock)
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now)
        try:
            exporter.cycle()
            samples = exporter.samples()
            assert sum(series(samples, "bsg_messages_total").values()) == 0
            assert sum(series(samples, "bsg_messages_submitted_total").values()) == 0
            in_window = sum(series(samples, "bsg_window_messages", target="all").values())
            assert in_window == len(
                [m for m in sim.truth()["messages"] if m["created_at"] >= START - 3600]
            )
        finally:
            exporter.close()


def test_count_existing_on_start_counts_the_baseline(clock: ManualClock) -> None:
    sim = traffic(clock)
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now, count_existing=True)
        try:
            polls: list[float] = []
            run(exporter, clock, 3, polls)
            truth = sim.truth()
            expected = expected_counts(truth, polls, window=3600, count_existing=True)
            assert sum(expected.messages.values()) > 100
            assert_matches(exporter.samples(), "all", expected)
        finally:
            exporter.close()


def test_faults_never_double_count(
    stack: tuple[Simulator, InProcessExporter], clock: ManualClock
) -> None:
    sim, exporter = stack
    polls: list[float] = []
    run(exporter, clock, 5, polls)
    faults: list[dict[str, Any]] = [
        {"kind": "duplicate_rows", "n": 40, "count": 6},
        {"kind": "http_status", "status": 500, "count": 2},
        {"kind": "malformed", "count": 1},
        {"kind": "reset", "count": 1},
        {"kind": "send_at", "count": 4},
        {"kind": "phone_string", "count": 4},
        {"kind": "iso_timestamps", "count": 4},
        {"kind": "bad_records", "count": 3},
    ]
    for fault in faults:
        sim.add_fault(**fault)
        run(exporter, clock, 2, polls)
    assert len(polls) == 5 + 2 * len(faults)  # every fault was absorbed by retries or decoding
    check_truth(sim, exporter, polls)
    samples = exporter.samples()
    rejected = series(samples, "bsg_records_rejected_total", target="all")
    assert sum(rejected.values()) >= 2
    codes = {dict(k)["code"]: v for k, v in series(samples, "bsg_api_requests_total").items()}
    assert codes.get("500", 0) >= 2 and codes.get("connection_error", 0) >= 1


def test_a_failed_poll_changes_nothing_and_the_next_one_catches_up(
    stack: tuple[Simulator, InProcessExporter], clock: ManualClock
) -> None:
    sim, exporter = stack
    polls: list[float] = []
    run(exporter, clock, 3, polls)
    before = exporter.samples()
    sim.add_fault("http_status", status=503, endpoint="messages")
    exporter.cycle()
    failed = exporter.samples()
    assert value(failed, "bsg_up", target="all") == 0
    assert value(failed, "bsg_poll_errors_total", target="all", reason="server_error") == 1
    assert series(failed, "bsg_messages_total") == series(before, "bsg_messages_total")
    clock.advance(60)
    sim.clear_faults()
    run(exporter, clock, 3, polls)
    check_truth(sim, exporter, polls)
    assert value(exporter.samples(), "bsg_up", target="all") == 1


def test_token_expiry_mid_run_logs_in_again(
    stack: tuple[Simulator, InProcessExporter], clock: ManualClock
) -> None:
    sim, exporter = stack
    polls: list[float] = []
    run(exporter, clock, 2, polls)
    sim.expire_tokens()
    run(exporter, clock, 2, polls)
    assert len(polls) == 4
    samples = exporter.samples()
    assert value(samples, "bsg_api_requests_total", endpoint="login", code="200") == 2
    assert value(samples, "bsg_api_requests_total", endpoint="messages", code="401") == 1
    check_truth(sim, exporter, polls)


def test_explicit_status_changes_are_counted_exactly(clock: ManualClock) -> None:
    sim = traffic(clock, scenario="paused")
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now)
        try:
            exporter.cycle()  # baseline: the backfilled hour
            base = exporter.samples()
            # The pending sms comes first: its re-checks re-read the viber message too, which is
            # how a change after counting is seen (final messages are not re-read on purpose).
            pending, viber, failed = sim.create_messages(
                [
                    {
                        "campaign_id": 11,
                        "type": "sms",
                        "status": "accepted",
                        "created_at": START - 5,
                    },
                    {"campaign_id": 11, "type": "viber", "status": "sent"},
                    {"campaign_id": 12, "type": "sms", "status": "failed"},
                ]
            )
            ids = [viber, pending, failed]
            clock.advance(60)
            exporter.cycle()
            sim.set_status(ids[0], "delivered")
            sim.set_status(ids[1], "sent")
            clock.advance(60)
            exporter.cycle()
            sim.set_status(ids[0], "read")
            sim.set_status(ids[1], "undelivered")
            clock.advance(60)
            exporter.cycle()
            exporter.cycle()
            samples = exporter.samples()

            def delta(name: str, **labels: str) -> float:
                return value(samples, name, **labels) - value(base, name, **labels)

            assert (
                delta("bsg_messages_total", target="otp", channel="viber", status="delivered") == 1
            )
            assert delta("bsg_messages_total", target="otp", channel="viber", status="read") == 0
            assert (
                delta("bsg_messages_total", target="otp", channel="sms", status="undelivered") == 1
            )
            assert delta("bsg_messages_total", target="all", channel="sms", status="failed") == 1
            assert delta("bsg_messages_total", target="otp", channel="sms", status="failed") == 0
            assert delta("bsg_messages_submitted_total", target="otp", channel="viber") == 1
            assert delta("bsg_messages_submitted_total", target="all", channel="sms") == 2
            assert (
                delta(
                    "bsg_final_status_changes_total",
                    target="otp",
                    from_status="delivered",
                    to_status="read",
                )
                == 1
            )
            truth = {m["id"]: m for m in sim.truth()["messages"]}
            assert status_at(truth[ids[0]]["history"], clock.now()) == "read"
        finally:
            exporter.close()


@pytest.mark.parametrize("feed", [False, True])
@pytest.mark.parametrize(("stragglers", "per_target"), [(2, 1 + 2), (25, 5 + 1)])
def test_pending_messages_are_followed_after_they_leave_the_window(
    clock: ManualClock, stragglers: int, per_target: int, feed: bool
) -> None:
    """A few stragglers among many messages are looked up by id (1 page of new messages plus one
    request each); many are re-read with one range (2,500 messages: 5 full pages, then the empty
    page that ends the pass, since the total is not trusted to). The report feed adds one page
    a poll: the reports of the stragglers, above the burst an hour and a half older, which it
    does not read again."""
    sim = traffic(clock, scenario="paused")
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now, report_feed=feed)
        try:
            exporter.cycle()
            ids = sim.create_messages([{"campaign_id": 11, "status": "sent"}] * stragglers)
            sim.create_messages([{"campaign_id": 11, "status": "delivered"}] * (2500 - stragglers))
            clock.advance(60)
            exporter.cycle()
            clock.advance(5400)  # outside both windows, within validity (1h) plus grace (1h)
            exporter.cycle()
            for msg_id in ids:
                sim.set_status(msg_id, "delivered")
            clock.advance(60)
            before = sim.request_counts()["messages"]
            exporter.cycle()
            assert sim.request_counts()["messages"] - before == 2 * (per_target + feed)
            samples = exporter.samples()
            for target in ("all", "otp"):
                counted = value(
                    samples, "bsg_messages_total", target=target, channel="sms", status="delivered"
                )
                assert counted == 2500  # the stragglers, and the others when first seen
                assert value(samples, "bsg_oldest_pending_message_age_seconds", target=target) == 0
            exporter.cycle()  # they are final now: no more re-checks, nothing counted twice
            assert series(exporter.samples(), "bsg_messages_total") == series(
                samples, "bsg_messages_total"
            )
        finally:
            exporter.close()


def test_messages_pending_past_validity_are_abandoned_not_guessed(clock: ManualClock) -> None:
    sim = traffic(clock, scenario="paused")
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now)
        try:
            exporter.cycle()
            ids = sim.create_messages([{"campaign_id": 11, "status": "sent", "validity": 1}] * 4)
            clock.advance(60)
            exporter.cycle()
            clock.advance(3600 + 3600 + 60)  # validity 1h, abandon_grace 1h (the default)
            exporter.cycle()
            before = sim.request_counts()["messages"]
            sim.set_status(ids[0], "delivered")  # too late: it is no longer followed
            clock.advance(60)
            exporter.cycle()
            samples = exporter.samples()
            for target in ("all", "otp"):
                labels = {"target": target, "channel": "sms"}
                assert (
                    value(samples, "bsg_messages_abandoned_total", last_status="sent", **labels)
                    == 4
                )
                assert value(samples, "bsg_messages_total", status="delivered", **labels) == 0
                assert value(samples, "bsg_oldest_pending_message_age_seconds", target=target) == 0
            assert sim.request_counts()["messages"] - before == 2  # only the new-message reads
        finally:
            exporter.close()


@pytest.mark.parametrize("feed", [False, True])
def test_a_one_second_interval_counts_a_status_change_within_seconds(
    clock: ManualClock, feed: bool
) -> None:
    """The default re-check periods follow the interval: at 1s, a pending message younger than
    10 minutes is re-read every poll, with the report feed or without it."""
    sim = traffic(clock, scenario="paused")
    with SimulatorServer(sim) as server:
        exporter = in_process(
            server.url,
            TARGETS,
            DEMO_API_KEY,
            clock.now,
            interval="1s",
            recheck_every=None,
            report_feed=feed,
        )
        try:
            exporter.cycle()
            [msg_id] = sim.create_messages([{"campaign_id": 11, "status": "sent"}])
            clock.advance(1)
            exporter.cycle()  # first seen, pending
            clock.advance(120)  # two minutes old: past any fixed one-minute period's first read
            exporter.cycle()
            sim.set_status(msg_id, "delivered")

            def delivered() -> float:
                samples = exporter.samples()
                labels = {"target": "otp", "channel": "sms", "status": "delivered"}
                return value(samples, "bsg_messages_total", **labels)

            before = delivered()
            for _ in range(3):
                clock.advance(1)
                exporter.cycle()
            after = delivered()
            assert after - before == 1
        finally:
            exporter.close()
