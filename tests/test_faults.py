"""Fault injection: the real exporter against a misbehaving simulator, then the ground truth.

Each case injects a fault, runs poll cycles on a simulated clock, clears the fault, runs more,
and ends with every counter of every target equal to what the simulator's ground truth and the
counting contract say. The observable side (``bsg_up``, poll error reasons, API request codes,
rejected records) is checked exactly too, so that each case can fail.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter.bsg.caches import parse_price_nanos
from exporter.bsg.wire import is_final, normalize_status
from exporter.config.schema import parse_config
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
    Expected,
    InProcessExporter,
    Samples,
    assert_matches,
    config_yaml,
    expected_counts,
    series,
    value,
)
from tests.test_e2e_counting import START, TARGETS, traffic

WINDOWS = {"all": (3600.0, None), "otp": (1800.0, 11)}


@dataclass
class Rig:
    """A simulator served over loopback, an in-process exporter, and each target's good polls."""

    clock: ManualClock
    sim: Simulator
    server: SimulatorServer
    exporter: InProcessExporter
    polls: dict[str, list[float]] = field(default_factory=dict)

    def cycles(self, count: int) -> None:
        """Run ``count`` poll cycles a simulated minute apart, noting each target's good polls."""
        for _ in range(count):
            self.exporter.cycle()
            for name, status in self.exporter.app.state.targets.items():
                if status.up:
                    self.polls.setdefault(name, []).append(self.clock.now())
            self.clock.advance(60)

    def samples(self) -> Samples:
        """The exporter's /metrics, scraped over HTTP."""
        return self.exporter.samples()

    def expected(self, target: str) -> Expected:
        """What ``target`` must show after its good polls, from the ground truth."""
        window, campaign = WINDOWS[target]
        truth = self.sim.truth()
        return expected_counts(truth, self.polls[target], window=window, campaign_id=campaign)

    def check_truth(self) -> None:
        """Every counter of every target equals the ground truth."""
        samples = self.samples()
        for target in WINDOWS:
            assert_matches(samples, target, self.expected(target))
        counted = sum(series(samples, "bsg_messages_total", target="all").values())
        assert counted > 0  # the case measured real traffic

    def restart_server(self) -> None:
        """Serve the same simulator on the same port again (after ``server.stop()``)."""
        self.server = SimulatorServer(self.sim, port=self.server.port).start()


def exporter_for(
    url: str,
    clock: ManualClock,
    *,
    timeout: str = "5s",
    max_retries: int = 3,
    state_path: str = ":memory:",
    key: str = DEMO_API_KEY,
) -> InProcessExporter:
    """An in-process exporter for TARGETS with the given API timeout and retries."""
    text = config_yaml(url, TARGETS, state_path=state_path).replace(
        "  timeout: 5s\n", f"  timeout: {timeout}\n  max_retries: {max_retries}\n"
    )
    return InProcessExporter(parse_config(text, environ={"BSG_API_KEY": key}), clock.now)


def sms_traffic(clock: ManualClock) -> Simulator:
    """Two SMS campaigns with an hour of history: no read receipts, so no final status changes.

    Bulk messages make the planner look pending messages up by id instead of re-reading ranges,
    so a viber ``delivered`` turning ``read`` would go unseen (by design) and the window gauges
    would differ from the truth: the paging cases use this traffic instead.
    """
    profile = TrafficProfile(
        campaigns=(
            CampaignProfile(campaign_id=11, rate=0.15, countries={"UA": 0.6, "DE": 0.4}),
            CampaignProfile(campaign_id=12, rate=0.08, validity_hours=2),
        ),
        backfill=3600,
    )
    return Simulator(profile, clock=clock, seed=5)


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    """Build rigs (steady traffic with an hour of history); everything is closed afterwards."""
    rigs: list[Rig] = []

    def make(
        *,
        sms_only: bool = False,
        paused: bool = False,
        sim_kwargs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Rig:
        clock = ManualClock(start=START)
        sim = (
            sms_traffic(clock)
            if sms_only
            else traffic(clock, scenario="paused" if paused else "steady")
        )
        if sim_kwargs:
            sim = Simulator(sim.profile, clock=clock, seed=5, **sim_kwargs)
        server = SimulatorServer(sim).start()
        rig = Rig(clock, sim, server, exporter_for(server.url, clock, **kw))
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.exporter.close()
        rig.server.stop()


def codes(samples: Samples, endpoint: str) -> dict[str, float]:
    """``bsg_api_requests_total`` of one endpoint by code."""
    found = series(samples, "bsg_api_requests_total", endpoint=endpoint)
    return {dict(labels)["code"]: v for labels, v in found.items() if v}


def errors(samples: Samples, target: str) -> dict[str, float]:
    """``bsg_poll_errors_total`` of one target by reason (non-zero ones)."""
    found = series(samples, "bsg_poll_errors_total", target=target)
    return {dict(labels)["reason"]: v for labels, v in found.items() if v}


def rejected(samples: Samples, target: str) -> dict[str, float]:
    """``bsg_records_rejected_total`` of one target by reason (non-zero ones)."""
    found = series(samples, "bsg_records_rejected_total", target=target)
    return {dict(labels)["reason"]: v for labels, v in found.items() if v}


def counters(samples: Samples) -> dict[Any, float]:
    """Every counting series (messages, submitted, cost): what a failed poll must not move."""
    names = ("bsg_messages_total", "bsg_messages_submitted_total", "bsg_message_cost_total")
    return {k: v for k, v in samples.items() if k[0] in names}


def both_up(samples: Samples, up: float) -> None:
    """``bsg_up`` of every target is ``up``."""
    assert {t: value(samples, "bsg_up", target=t) for t in WINDOWS} == dict.fromkeys(WINDOWS, up)


# --- rate limits, server errors, outages, timeouts, resets ------------------------------------


def test_429_storm_with_retry_after_is_waited_out_then_fails_the_polls_it_outlasts(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_retries=3)
    rig.cycles(2)
    # two 429s asking for one second each: absorbed by the retries, after the wait asked for
    rig.sim.add_fault("http_status", status=429, retry_after=1, count=2)
    started = time.monotonic()
    rig.cycles(1)
    assert time.monotonic() - started >= 1.9  # Retry-After was honoured, not the short backoff
    samples = rig.samples()
    both_up(samples, 1)
    assert codes(samples, "messages").get("429") == 2
    # a storm longer than the retries (Retry-After: 0, so the test stays fast)
    before = counters(samples)
    rig.sim.add_fault("http_status", status=429, retry_after=0)
    rig.cycles(3)
    samples = rig.samples()
    both_up(samples, 0)
    for target in WINDOWS:
        assert errors(samples, target) == {"rate_limited": 3}
    assert codes(samples, "messages")["429"] == 2 + 2 * 3 * (1 + 3)  # every poll: 1 + 3 retries
    assert counters(samples) == before  # a failed poll changes nothing
    rig.sim.clear_faults()
    rig.cycles(3)
    both_up(rig.samples(), 1)
    rig.check_truth()


def test_429_storm_without_retry_after_backs_off(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(max_retries=2)
    rig.cycles(2)
    rig.sim.add_fault("http_status", status=429)
    started = time.monotonic()
    rig.cycles(1)
    # two targets, each waiting 0.25-0.5 s then 0.5-1 s before giving up: no tight loop
    assert time.monotonic() - started >= 2 * 0.75
    samples = rig.samples()
    both_up(samples, 0)
    assert codes(samples, "messages")["429"] == 2 * 3
    for target in WINDOWS:
        assert errors(samples, target) == {"rate_limited": 1}
    rig.sim.clear_faults()
    rig.cycles(2)
    rig.check_truth()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_bursts_are_retried_and_a_longer_one_fails_polls_without_losing_counts(
    make_rig: Callable[..., Rig], status: int
) -> None:
    rig = make_rig(max_retries=1)
    rig.cycles(2)
    rig.sim.add_fault("http_status", status=status, count=1)  # absorbed by one retry
    rig.cycles(1)
    both_up(rig.samples(), 1)
    rig.sim.add_fault("http_status", status=status, count=4)  # two targets, two tries each
    rig.cycles(1)
    samples = rig.samples()
    both_up(samples, 0)
    for target in WINDOWS:
        assert errors(samples, target) == {"server_error": 1}
    assert codes(samples, "messages")[str(status)] == 1 + 4
    rig.cycles(2)
    both_up(rig.samples(), 1)
    rig.check_truth()


def test_api_down_for_many_poll_intervals(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(max_retries=0)
    rig.cycles(3)
    before = rig.samples()
    last_good = value(before, "bsg_last_poll_success_timestamp_seconds", target="all")
    rig.server.stop()  # connection refused for 15 simulated minutes
    rig.cycles(15)
    samples = rig.samples()
    both_up(samples, 0)
    for target in WINDOWS:
        assert errors(samples, target) == {"connection_error": 15}
    assert codes(samples, "messages")["connection_error"] == 2 * 15
    assert counters(samples) == counters(before)
    assert value(samples, "bsg_last_poll_success_timestamp_seconds", target="all") == last_good
    rig.restart_server()
    rig.cycles(3)
    both_up(rig.samples(), 1)
    rig.check_truth()


def test_answers_slower_than_the_timeout(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(timeout="1s", max_retries=1)
    rig.cycles(2)
    rig.sim.add_fault("slow", delay=1.5, count=1)  # one slow answer: the retry gets through
    rig.cycles(1)
    samples = rig.samples()
    both_up(samples, 1)
    assert codes(samples, "messages")["timeout"] == 1
    rig.sim.add_fault("slow", delay=1.5, count=4)  # the first target's poll times out twice
    rig.cycles(1)
    samples = rig.samples()
    assert errors(samples, "all") == {"timeout": 1}
    assert value(samples, "bsg_up", target="all") == 0
    assert codes(samples, "messages")["timeout"] == 1 + 4
    rig.cycles(2)
    both_up(rig.samples(), 1)
    rig.check_truth()


def test_connection_resets_mid_body(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(max_retries=1)
    rig.cycles(2)
    rig.sim.add_fault("reset", count=1)
    rig.cycles(1)
    both_up(rig.samples(), 1)
    rig.sim.add_fault("reset", count=2)
    rig.cycles(1)
    samples = rig.samples()
    assert errors(samples, "all") == {"connection_error": 1}
    assert codes(samples, "messages")["connection_error"] == 3
    rig.cycles(2)
    rig.check_truth()


# --- bad bodies and schema drift ---------------------------------------------------------------


def test_malformed_and_truncated_json(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(max_retries=1)
    rig.cycles(2)
    rig.sim.add_fault("malformed", count=1)  # retried: a bad body is worth another try
    rig.cycles(1)
    both_up(rig.samples(), 1)
    rig.sim.add_fault("malformed", count=4)  # both targets' polls fail with reason decode
    rig.cycles(1)
    samples = rig.samples()
    both_up(samples, 0)
    for target in WINDOWS:
        assert errors(samples, target) == {"decode": 1}
    rig.cycles(2)
    both_up(rig.samples(), 1)
    rig.check_truth()


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "send_at"},
        {"kind": "phone_string"},
        {"kind": "iso_timestamps"},
        {"kind": "unknown_status"},
    ],
    ids=lambda f: str(f["kind"]),
)
def test_schema_drift_that_loses_nothing(
    make_rig: Callable[..., Rig], fault: dict[str, Any]
) -> None:
    rig = make_rig()
    rig.cycles(2)
    rig.sim.add_fault(**fault)  # on every page for three cycles
    rig.cycles(3)
    samples = rig.samples()
    both_up(samples, 1)
    if fault["kind"] == "unknown_status":
        # pending statuses read as a status the exporter does not know: "other", still pending
        got = series(samples, "bsg_window_messages", target="all", status="other")
        assert sum(got.values()) > 0
    else:
        rig.check_truth()
    rig.sim.clear_faults()
    rig.cycles(2)
    rig.check_truth()
    assert sum(rejected(rig.samples(), "all").values()) == 0


@pytest.mark.parametrize("mode", ["missing", "null"])
def test_amount_missing_counts_the_message_without_a_cost(
    make_rig: Callable[..., Rig], mode: str
) -> None:
    rig = make_rig()
    rig.cycles(2)
    faulted_from = len(rig.polls["all"])
    rig.sim.add_fault("amount_missing", mode=mode)
    rig.cycles(3)
    faulted = set(rig.polls["all"][faulted_from:])
    rig.sim.clear_faults()
    rig.cycles(2)
    samples = rig.samples()
    for target in WINDOWS:
        expected = rig.expected(target)
        # messages counted while the amount was not sent have no cost: take theirs off
        for message, poll, status in counted_at(rig, target):
            if poll in faulted and message["amount"]:
                key = (message["type"], status, message["amount"]["currency"].upper())
                expected.cost_nanos[key] -= parse_price_nanos(message["amount"]["value"]) or 0
        expected.cost_nanos = +expected.cost_nanos  # drop zeros, as the exposition does
        assert_matches(samples, target, expected)
    assert faulted


def counted_at(rig: Rig, target: str) -> Iterator[tuple[dict[str, Any], float, str]]:
    """Each message counted in ``target`` with the poll that counted it and its status then (the
    contract's rule)."""
    window, campaign = WINDOWS[target]
    polls = rig.polls[target]
    for message in rig.sim.truth()["messages"]:
        if campaign is not None and message["campaign_id"] != campaign:
            continue
        created = message["created_at"]
        first = next((i for i, p in enumerate(polls) if p - window <= created <= p), None)
        if first is None:
            continue
        for index in range(first, len(polls)):
            status = status_at(message["history"], polls[index])
            if status is not None and is_final(normalize_status(status)):
                if index > 0:
                    yield message, polls[index], status
                break


def test_bad_records_are_rejected_and_the_rest_of_the_page_is_used(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.cycles(2)
    before = rig.sim.fault_counts().get("bad_records", 0)
    rig.sim.add_fault("bad_records", count=3)
    rig.cycles(3)
    assert rig.sim.fault_counts()["bad_records"] - before == 3
    rig.cycles(1)
    samples = rig.samples()
    both_up(samples, 1)
    total = {
        reason: sum(rejected(samples, t).get(reason, 0) for t in WINDOWS)
        for reason in ("missing_id", "missing_status")
    }
    assert total == {"missing_id": 3, "missing_status": 3}  # one of each per faulted page
    rig.check_truth()


def test_empty_pages_lose_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.cycles(2)
    rig.sim.add_fault("empty_page")
    faulted_from = {t: len(p) for t, p in rig.polls.items()}
    rig.cycles(3)
    assert rig.sim.fault_counts()["empty_page"] >= 6
    # the exporter saw nothing in those polls: the contract holds for the polls that read
    for target, first in faulted_from.items():
        del rig.polls[target][first:]
    rig.sim.clear_faults()
    rig.cycles(2)
    rig.check_truth()


def quiet_rig(make_rig: Callable[..., Rig]) -> tuple[Rig, list[int]]:
    """A rig on paused traffic past its baseline, with 600 messages delivered since the poll."""
    rig = make_rig(paused=True)
    rig.cycles(1)
    ids = rig.sim.create_messages([{"campaign_id": 11, "status": "delivered"}] * 600)
    rig.clock.advance(30)  # the next read of new messages no longer overlaps them
    return rig, ids


def delivered(rig: Rig, target: str) -> float:
    """``bsg_messages_total`` of delivered sms of ``target``."""
    return value(
        rig.samples(), "bsg_messages_total", target=target, channel="sms", status="delivered"
    )


def test_an_empty_page_does_not_move_the_read_past_unread_messages(
    make_rig: Callable[..., Rig],
) -> None:
    rig, ids = quiet_rig(make_rig)
    before = {t: delivered(rig, t) for t in WINDOWS}
    rig.sim.add_fault("empty_page", count=1)  # the first page of target "all" comes back empty
    rig.cycles(3)
    for target in WINDOWS:
        assert delivered(rig, target) - before[target] == len(ids), target


def test_an_empty_page_in_the_baseline_does_not_end_it(make_rig: Callable[..., Rig]) -> None:
    """A page that comes back empty in the middle of the cold read, its total saying more rows
    follow: the baseline reads on from there; the rest of the window is not counted as new."""
    rig = make_rig(sms_only=True)
    rig.sim.create_messages([{"campaign_id": 11, "status": "delivered"}] * 3000)
    rig.sim.add_fault("empty_page", count=1, skip=2)  # the third page of the first read
    rig.cycles(3)
    assert rig.sim.fault_counts() == {"empty_page": 1}
    rig.check_truth()


def test_a_baseline_whose_total_lies_still_ends(make_rig: Callable[..., Rig]) -> None:
    """A total above the rows there are, from the first page of the cold read on: the baseline
    reads on once past its last page, finds nothing, and ends (a baseline that never ended
    would take the messages of the next cycles for baseline too, and count none of them)."""
    honest, lied_to = make_rig(sms_only=True), make_rig(sms_only=True)
    for rig in (honest, lied_to):
        rig.sim.create_messages([{"campaign_id": 11, "status": "delivered"}] * 3000)
    lied_to.sim.add_fault("total_lies", delta=1000)
    honest.cycles(1)
    lied_to.cycles(1)
    pages = honest.sim.request_counts()["messages"]
    assert lied_to.sim.request_counts()["messages"] <= pages + len(WINDOWS)  # a page a target
    lied_to.cycles(2)
    lied_to.check_truth()


def test_rows_skipped_across_pages_are_found_again(make_rig: Callable[..., Rig]) -> None:
    rig, ids = quiet_rig(make_rig)
    before = {t: delivered(rig, t) for t in WINDOWS}
    rig.sim.add_fault("duplicate_rows", n=-40, count=1)  # a page served 40 rows too far on
    rig.cycles(3)
    for target in WINDOWS:
        assert delivered(rig, target) - before[target] == len(ids), target


def test_a_total_that_lies_loses_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.cycles(2)
    rig.sim.add_fault("total_lies", delta=1000)
    rig.cycles(3)
    both_up(rig.samples(), 1)
    rig.check_truth()
    rig.sim.add_fault("total_lies", delta=-10_000)  # a total below what is really there
    rig.cycles(2)
    rig.sim.clear_faults()
    rig.cycles(2)
    rig.check_truth()


def test_rows_duplicated_across_pages_count_once(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(sms_only=True)
    rig.sim.create_messages([{"campaign_id": 11, "status": "sent"}] * 1200)
    rig.cycles(1)
    ids = rig.sim.create_messages([{"campaign_id": 11, "status": "delivered"}] * 1200)
    rig.sim.add_fault("duplicate_rows", n=60)  # every page starts 60 rows early
    rig.cycles(2)
    assert ids
    rig.sim.clear_faults()
    rig.cycles(2)
    rig.check_truth()


# --- auth ------------------------------------------------------------------------------------


def test_token_expiry_mid_pass_logs_in_again(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(sms_only=True)
    rig.cycles(2)
    rig.sim.create_messages([{"campaign_id": 12, "status": "delivered"}] * 1200)
    original = rig.sim.count_request
    seen = 0

    def expiring(endpoint: str) -> None:
        """Revoke every token as the second page of the next pass arrives."""
        nonlocal seen
        original(endpoint)
        if endpoint == "messages":
            seen += 1
            if seen == 2:
                rig.sim.expire_tokens()

    rig.sim.count_request = expiring  # type: ignore[method-assign]
    rig.cycles(1)
    samples = rig.samples()
    both_up(samples, 1)
    assert codes(samples, "login") == {"200": 2}
    assert codes(samples, "messages")["401"] == 1
    rig.cycles(2)
    rig.check_truth()


def test_login_refused_is_an_auth_error_retried_with_backoff(
    make_rig: Callable[..., Rig], capsys: pytest.CaptureFixture[str]
) -> None:
    rig = make_rig(sim_kwargs={"api_keys": ("live_someone_else",)}, max_retries=3)
    started = time.monotonic()
    rig.cycles(10)
    assert time.monotonic() - started < 5  # a refused key is not retried request by request
    samples = rig.samples()
    both_up(samples, 0)
    for target in WINDOWS:
        assert errors(samples, target) == {"auth": 10}
    logins = rig.sim.request_counts()["login"]
    # 10 cycles x (2 targets + balance) would be 30 attempts: backing off, far fewer
    assert 2 <= logins <= 6
    assert codes(samples, "login") == {"401": logins}
    assert rig.sim.request_counts()["messages"] == 0
    logs = capsys.readouterr().out
    assert "poll_failed" in logs and "login" in logs and "401" in logs
    assert DEMO_API_KEY not in logs
    rig.sim.api_keys = frozenset({DEMO_API_KEY})  # the key is accepted again
    for _ in range(20):  # within the longest backoff (15 minutes)
        rig.cycles(1)
        if "all" in rig.polls:
            break
    rig.cycles(3)
    both_up(rig.samples(), 1)
    assert codes(rig.samples(), "login")["200"] == 1
    rig.check_truth()


# --- the state file -----------------------------------------------------------------------------


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a state file, from a connection of its own."""
    with sqlite3.connect(path) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.mark.parametrize("condition", ["disk_full", "read_only"])
def test_state_disk_full_or_read_only(
    make_rig: Callable[..., Rig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    condition: str,
) -> None:
    path = tmp_path / "state.db"
    rig = make_rig(sms_only=True, state_path=str(path))
    db: sqlite3.Connection = rig.exporter.app.store._db
    rig.cycles(3)
    before = rig.samples()
    if condition == "disk_full":
        # SQLite reports SQLITE_FULL exactly as for a full disk once the file may not grow
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
    else:
        db.execute("PRAGMA query_only = ON")  # SQLITE_READONLY on every write, even as root
    # Enough that a poll's chunk needs pages the file may not have (chunks are compact, and
    # the file's free pages take a few thousand messages first).
    rig.sim.create_messages([{"campaign_id": 11, "status": "delivered"}] * 20_000)
    rig.cycles(3)
    samples = rig.samples()
    both_up(samples, 0)
    assert counters(samples) == counters(before)  # nothing exposed that was not saved
    logs = capsys.readouterr().out
    assert "poll_failed" in logs
    assert ("database or disk is full" if condition == "disk_full" else "readonly") in logs
    if condition == "disk_full":
        db.execute("PRAGMA max_page_count = 1073741823")
    else:
        db.execute("PRAGMA query_only = OFF")
    rig.cycles(3)
    samples = rig.samples()
    both_up(samples, 1)
    rig.check_truth()
    for target in WINDOWS:
        assert errors(samples, target) == {"state": 3}
    assert integrity(path) == "ok"
    # the state on disk is what was exposed: a new life of the exporter resumes from it
    rig.exporter.close()
    again = exporter_for(rig.server.url, rig.clock, state_path=str(path))
    try:
        assert counters(again.samples()) == counters(samples)
    finally:
        again.close()
    rig.exporter = exporter_for(rig.server.url, rig.clock)  # closed by the fixture


def test_poll_errors_are_kept_while_the_state_file_is_read_only(
    make_rig: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = make_rig(sms_only=True, state_path=str(tmp_path / "state.db"))
    db: sqlite3.Connection = rig.exporter.app.store._db
    rig.cycles(2)
    db.execute("PRAGMA query_only = ON")
    rig.cycles(3)
    during = rig.samples()
    db.execute("PRAGMA query_only = OFF")
    rig.cycles(1)
    after = rig.samples()
    for target in WINDOWS:
        assert errors(during, target) == {"state": 3}  # visible while it lasts
        assert errors(after, target) == {"state": 3}  # and not lost once it is over


# --- prices, rate limits -------------------------------------------------------------------------


def costs(samples: Samples) -> dict[Any, float]:
    """Every ``bsg_message_cost_total`` series."""
    return {k: v for k, v in samples.items() if k[0] == "bsg_message_cost_total"}


def test_a_negative_price_is_rejected_the_message_counts_and_no_cost_goes_down(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.cycles(2)
    faulted_from = len(rig.polls["all"])
    rig.sim.add_fault("negative_price")  # every amount on every page, until cleared
    seen = [costs(rig.samples())]
    with capture_logs() as logs:
        for _ in range(3):
            rig.cycles(1)
            seen.append(costs(rig.samples()))
    warned = [e for e in logs if e["event"] == "records_rejected"]
    assert warned and all(set(e["reasons"]) == {"bad_price"} for e in warned)  # once a poll
    assert len(warned) == sum(1 for e in logs if e["event"] == "poll_finished" and e["rejected"])
    for before, after in itertools.pairwise(seen):
        assert all(after.get(key, 0.0) >= total for key, total in before.items())
    faulted = set(rig.polls["all"][faulted_from:])
    rig.sim.clear_faults()
    rig.cycles(2)
    samples = rig.samples()
    both_up(samples, 1)
    for target in WINDOWS:
        expected = rig.expected(target)
        # counted while priced below zero: no cost
        for message, poll, status in counted_at(rig, target):
            if poll in faulted and message["amount"]:
                key = (message["type"], status, message["amount"]["currency"].upper())
                expected.cost_nanos[key] -= parse_price_nanos(message["amount"]["value"]) or 0
        expected.cost_nanos = +expected.cost_nanos
        assert_matches(samples, target, expected)  # every message counted all the same
    assert set(rejected(samples, "all")) == {"bad_price"} and faulted


def test_a_long_retry_after_marks_every_target_down_at_once_and_holds_requests(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(max_retries=3)
    rig.cycles(2)
    sent = rig.sim.request_counts()
    rig.sim.add_fault("http_status", status=429, retry_after=600, count=1)
    started = time.monotonic()
    rig.cycles(1)
    assert time.monotonic() - started < 10  # not parked inside the poll while bsg_up says 1
    samples = rig.samples()
    both_up(samples, 0)
    for target in WINDOWS:
        assert errors(samples, target) == {"rate_limited": 1}
    assert codes(samples, "messages").get("429") == 1  # one answer; the rest never sent
    assert rig.sim.request_counts()["messages"] == sent["messages"] + 1
    assert rig.exporter.app.client.rate_limited_until == pytest.approx(rig.clock.now() + 540)
    rig.cycles(10)  # the ten simulated minutes asked for, a cycle a minute
    both_up(rig.samples(), 1)
    rig.check_truth()


@pytest.mark.parametrize(
    ("fault", "params", "reason"),
    [
        ("bad_encoding", {}, "decode"),  # gzip announced over a plain body
        ("huge_number", {}, "decode"),  # a 400-digit balance
        ("http_status", {"status": 500}, "server_error"),
    ],
)
def test_a_failed_balance_read_is_counted_and_the_last_good_balance_stays(
    make_rig: Callable[..., Rig], fault: str, params: dict[str, Any], reason: str
) -> None:
    rig = make_rig(max_retries=0)
    rig.cycles(1)
    good = series(rig.samples(), "bsg_account_balance")
    assert good and value(rig.samples(), "bsg_balance_errors_total", reason=reason) == 0
    rig.sim.add_fault(fault, endpoint="balance", **params)
    rig.cycles(2)
    samples = rig.samples()
    assert value(samples, "bsg_balance_errors_total", reason=reason) == 2
    assert series(samples, "bsg_account_balance") == good
    both_up(samples, 1)  # the targets polled on
    rig.sim.clear_faults()
    rig.cycles(1)
    assert value(rig.samples(), "bsg_balance_errors_total", reason=reason) == 2
