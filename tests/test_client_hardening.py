"""The client against an API that misbehaves: every answer ends as a counted, typed outcome.

End to end over loopback against the simulator's fault modes; httpx.MockTransport only where
a simulator cannot produce the case (an exception inside the transport itself).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from exporter.bsg.budget import RequestBudget
from exporter.bsg.client import BsgClient, RetryPolicy
from exporter.bsg.errors import AuthError, BsgError
from exporter.bsg.paging import MessageQuery
from exporter.bsg.replies import retry_after_seconds, safe_text
from exporter.config.schema import ConfigError, parse_config
from exporter.simulator import DEMO_API_KEY, Simulator, SimulatorServer
from tests.harness import InProcessExporter, value

RETRY = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.05)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


class Recorder:
    """Counts observed requests the way the metrics side would."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        self.seen.append((endpoint, code))

    def codes(self, endpoint: str) -> list[str]:
        """The codes seen for one endpoint, in order."""
        return [code for name, code in self.seen if name == endpoint]


class Clock:
    """The client's wall clock, movable by the test (the simulator keeps real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


Rig = tuple[Simulator, SimulatorServer, Callable[..., BsgClient]]


@pytest.fixture
def rig(quiet_simulator: tuple[Simulator, SimulatorServer]) -> Iterator[Rig]:
    """The quiet simulator, with a few messages, and a factory of clients for it."""
    sim, server = quiet_simulator
    sim.create_messages([{"campaign_id": 21, "status": "delivered"}] * 3)
    clients: list[BsgClient] = []

    def make(**kwargs: Any) -> BsgClient:
        kwargs.setdefault("retry", RETRY)
        kwargs.setdefault("timeout", 5.0)
        made = BsgClient(server.url, DEMO_API_KEY, tz=UTC, **kwargs)
        clients.append(made)
        return made

    yield sim, server, make
    for made in clients:
        made.close()


def recent() -> MessageQuery:
    """A pass over the last hour."""
    return MessageQuery(time.time() - 3600, time.time() + 1)


def call(client: BsgClient, endpoint: str) -> Any:
    """One read of ``endpoint`` (balance or messages)."""
    return client.read_balance() if endpoint == "balance" else client.read_messages(recent())


# --- 1. no uncaught path ------------------------------------------------------------------

ODD_ANSWERS = [
    pytest.param({"kind": "bad_encoding"}, "decode", "200", id="gzip-header-over-plain-body"),
    pytest.param(
        {"kind": "http_status", "status": 429, "retry_after": "soon"},
        "rate_limited",
        "429",
        id="429-junk-retry-after",
    ),
    pytest.param({"kind": "deep_nesting"}, "decode", "200", id="deep-success-body"),
    pytest.param(
        {"kind": "deep_nesting", "status": 500}, "server_error", "500", id="deep-500-body"
    ),
]


@pytest.mark.parametrize("endpoint", ["balance", "messages"])
@pytest.mark.parametrize(("fault", "reason", "code"), ODD_ANSWERS)
def test_an_odd_answer_is_a_counted_and_retried_error_never_an_escape(
    rig: Rig, endpoint: str, fault: dict[str, Any], reason: str, code: str
) -> None:
    sim, _, make = rig
    recorder = Recorder()
    client = make(observer=recorder)
    sim.add_fault(**fault, endpoint=endpoint, count=2)  # the first try and its one retry
    with pytest.raises(BsgError) as info:
        call(client, endpoint)
    assert info.value.reason == reason
    assert recorder.codes(endpoint) == [code, code]  # each counted, and retried once
    call(client, endpoint)  # the fault used up, the same client reads on
    assert recorder.codes(endpoint)[-1] == "200"


def test_a_balance_of_400_digits_is_a_decode_error(rig: Rig) -> None:
    sim, _, make = rig
    recorder = Recorder()
    client = make(observer=recorder)
    sim.add_fault("huge_number", endpoint="balance", count=2)
    with pytest.raises(BsgError) as info:
        client.read_balance()
    assert info.value.reason == "decode"
    assert recorder.codes("balance") == ["200", "200"]
    assert client.read_balance().balance >= 0


def test_400_digit_numbers_in_a_page_cost_their_field_only(rig: Rig) -> None:
    sim, _, make = rig
    client = make()
    for field, reason in (("amount", "bad_price"), ("id", "bad_id")):
        sim.add_fault("huge_number", field=field, count=1)
        read = client.read_messages(recent())
        assert read.rejected == {reason: 3}
    assert len(client.read_messages(recent()).messages) == 3


def test_an_unexpected_exception_is_internal_counted_and_logged_once_with_its_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/login":
            return httpx.Response(200, json={"bearer": JWT})
        raise RuntimeError(f"a bug in a fake transport near {DEMO_API_KEY}")

    recorder = Recorder()
    client = BsgClient(
        "https://api.test",
        DEMO_API_KEY,
        tz=UTC,
        retry=RETRY,
        observer=recorder,
        transport=httpx.MockTransport(handler),
    )
    with client:
        for _ in range(2):
            with pytest.raises(BsgError) as info:
                client.read_balance()
            assert info.value.reason == "internal"
    assert recorder.codes("balance") == ["internal", "internal"]  # counted, not retried
    logs = capsys.readouterr().out
    assert logs.count("api_internal_error") == 2
    assert logs.count("Traceback") == 1 and "RuntimeError" in logs
    assert DEMO_API_KEY not in logs and DEMO_API_KEY not in str(info.value)


# --- 2. api.timeout is a deadline ------------------------------------------------------------


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_dripping_answer_ends_at_the_timeout_and_counts_as_one(rig: Rig, part: str) -> None:
    sim, _, make = rig
    recorder = Recorder()
    client = make(observer=recorder, timeout=1.0)
    sim.add_fault("drip", interval=0.3, part=part, endpoint="balance", count=2)
    started = time.monotonic()
    with pytest.raises(BsgError) as info:
        client.read_balance()
    elapsed = time.monotonic() - started
    assert info.value.reason == "timeout"
    assert recorder.codes("balance") == ["timeout", "timeout"]
    # two tries of one second each and a short backoff; a byte every 0.3 s never trips a
    # per-read timeout, so without a deadline this took the whole answer's length (30 s+)
    assert elapsed < 2 * 1.0 + 2.0
    assert client.read_balance().currency  # the next answer, whole, is read


def test_a_dripping_page_times_out_within_the_deadline_too(rig: Rig) -> None:
    sim, _, make = rig
    recorder = Recorder()
    client = make(observer=recorder, timeout=1.5, retry=RetryPolicy(max_retries=0))
    sim.add_fault("drip", interval=0.4, part="both", count=1)
    started = time.monotonic()
    with pytest.raises(BsgError) as info:
        client.read_messages(recent())
    assert info.value.reason == "timeout" and time.monotonic() - started < 1.5 + 1.5
    assert recorder.codes("messages") == ["timeout"]


# --- 3. bounded bodies -------------------------------------------------------------------


def test_a_gzip_bomb_is_stopped_after_decompression(rig: Rig) -> None:
    sim, _, make = rig
    recorder = Recorder()
    client = make(observer=recorder, max_response_size=2**20)
    sim.add_fault("gzip", pad=8 * 2**20, endpoint="balance", count=2)  # ~8 KiB on the wire
    with pytest.raises(BsgError, match="larger than 1048576 bytes") as info:
        client.read_balance()
    assert info.value.reason == "decode" and recorder.codes("balance") == ["200", "200"]
    sim.add_fault("gzip", endpoint="balance", count=1)  # an honest gzip answer is read
    assert client.read_balance().currency


def test_a_nesting_too_deep_for_the_limit_yet_shallow_for_python_is_refused(rig: Rig) -> None:
    sim, _, make = rig
    client = make()
    sim.add_fault("deep_nesting", depth=100, endpoint="balance", count=2)  # json copes, we do not
    with pytest.raises(BsgError, match="nested deeper than 64 levels"):
        client.read_balance()


def test_max_response_size_is_configured_and_reaches_the_client(
    quiet_simulator: tuple[Simulator, SimulatorServer],
) -> None:
    sim, server = quiet_simulator
    sim.create_messages([{"campaign_id": 21, "status": "delivered"}] * 40)  # ~17 kB a page
    text = (
        f"api:\n  url: {server.url}\n  key: {DEMO_API_KEY}\n  max_retries: 0\n"
        f"  max_response_size: 4KiB\n{TARGETS}state:\n  path: ':memory:'\n"
    )
    capped = InProcessExporter(parse_config(text), time.time)
    try:
        capped.cycle()
        samples = capped.samples()
        assert value(samples, "bsg_poll_errors_total", target="all", reason="decode") == 1
        assert value(samples, "bsg_up", target="all") == 0
    finally:
        capped.close()


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MiB", 64 * 2**20), ("1048576", 2**20), ('"500kB"', 500_000), ("1 GiB", 2**30)],
)
def test_max_response_size_accepts_bytes_and_units(text: str, size: int) -> None:
    config = parse_config(f"api:\n  key: k\n  max_response_size: {text}\n{TARGETS}")
    assert config.api.max_response_size == size


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("64 furlongs", "expected a size in bytes"),
        ("1.5MiB", "expected a size in bytes"),
        ("true", "expected a size in bytes"),
        ("512", "must be between 1KiB and 1GiB"),
        ("2GiB", "must be between 1KiB and 1GiB"),
    ],
)
def test_max_response_size_refuses_what_is_not_a_size(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"api:\n  key: k\n  max_response_size: {text}\n{TARGETS}")
    [error] = info.value.errors
    assert error.startswith("api.max_response_size: ") and problem in error


TARGETS = "targets:\n  - name: all\n    window: 1h\n"


def test_the_default_response_size_is_64_mib() -> None:
    assert parse_config(f"api:\n  key: k\n{TARGETS}").api.max_response_size == 64 * 2**20


# --- 4. Retry-After ----------------------------------------------------------------------


def test_retry_after_is_read_defensively() -> None:
    now = time.time()
    soon = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds(" 1.5 ", now) == 1.5
    assert retry_after_seconds("-5", now) == 0.0
    assert retry_after_seconds("1e11", now) == 1e11
    assert retry_after_seconds("inf", now) == float("inf")
    assert 28 <= (retry_after_seconds(soon, now) or 0) <= 30
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0  # in the past
    for junk in ("soon", "nan", "", "  ", None, "Wed, 99 Foo 2015", "9" * 5000 + "x"):
        assert retry_after_seconds(junk, now) is None, junk


@pytest.mark.parametrize("asked", ["120", "1e11", "inf"])
def test_a_long_retry_after_fails_at_once_and_holds_every_request_until_then(
    rig: Rig, asked: str
) -> None:
    sim, _, make = rig
    stop = threading.Event()
    guard = threading.Timer(10, stop.set)  # a client that waits it out fails fast instead
    guard.start()
    clock, recorder = Clock(), Recorder()
    budget = RequestBudget(100, clock)
    client = make(observer=recorder, clock=clock, budget=budget, stop=stop)
    client.read_balance()
    sim.add_fault("http_status", status=429, retry_after=asked, endpoint="balance", count=1)
    started = time.monotonic()
    with pytest.raises(BsgError, match=r"no request for (120|900)s") as info:
        client.read_balance()
    assert info.value.reason == "rate_limited" and time.monotonic() - started < 5
    held = 120 if asked == "120" else 900  # believed up to the cap, 15 minutes
    until = client.rate_limited_until
    assert until is not None and abs(until - (clock() + held)) < 5
    sent, left = sim.request_counts(), budget.remaining()
    for read in (client.read_balance, lambda: client.read_messages(recent())):
        with pytest.raises(BsgError, match="next request in") as info:
            read()
        assert info.value.reason == "rate_limited"
    assert sim.request_counts() == sent and budget.remaining() == left  # nothing sent, or spent
    clock.offset += held + 1
    assert client.rate_limited_until is None
    assert client.read_balance().currency
    guard.cancel()
    assert not stop.is_set()


def test_a_short_retry_after_is_still_waited_inside_the_request(rig: Rig) -> None:
    sim, _, make = rig
    client = make()
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    sim.add_fault("http_status", status=429, retry_after=date, endpoint="balance", count=1)
    started = time.monotonic()
    assert client.read_balance().currency
    assert time.monotonic() - started >= 0.9  # an HTTP date, waited (whole seconds)
    assert client.rate_limited_until is None


# --- 5. a 401 loop -------------------------------------------------------------------------


def test_a_401_loop_after_a_good_login_backs_off_like_a_refused_login(rig: Rig) -> None:
    sim, _, make = rig
    clock = Clock()
    client = make(clock=clock)
    sim.add_fault("http_status", status=401, endpoint="balance")  # every balance: 401
    errors = []
    for _ in range(20):  # 20 s of polling
        with pytest.raises(AuthError) as info:
            client.read_balance()
        errors.append(str(info.value))
        clock.offset += 1
    assert sim.request_counts()["login"] == 1  # was 2 a request: 40 logins
    assert "next login in 30s" in errors[0] and "next attempt in" in errors[-1]
    clock.offset += 30
    with pytest.raises(AuthError, match="next login in 60s"):  # the backoff doubles
        client.read_balance()
    assert sim.request_counts()["login"] == 2
    sim.clear_faults()
    clock.offset += 60
    assert client.read_balance().currency
    sim.add_fault("http_status", status=401, endpoint="balance", count=1)
    assert client.read_balance().currency  # a token that worked: logged in again at once
    assert sim.request_counts()["login"] == 4


# --- 6. provider text ----------------------------------------------------------------------


def test_provider_text_in_errors_is_cut_redacted_and_stripped(rig: Rig) -> None:
    sim, _, make = rig
    client = make()
    echoed = (
        f"Invalid key {DEMO_API_KEY} for token {JWT} (Authorization: Bearer abc.DEF-123)"
        "\x1b[31m\r\nforged_log_line=1\u202e " + "x" * 1000
    )
    sim.add_fault("http_status", status=422, message=echoed, endpoint="balance", count=1)
    with pytest.raises(BsgError) as info:
        client.read_balance()
    text = str(info.value)
    assert info.value.reason == "client_error"
    assert DEMO_API_KEY not in text and JWT not in text and "abc.DEF-123" not in text
    assert text.count("[redacted]") == 3
    assert not any(c in text for c in "\x1b\r\n\u202e")
    assert len(text) < 260


def test_safe_text() -> None:
    key = "live_Zq9secretkey"
    assert safe_text(f"a {key} b", key) == "a [redacted] b"
    assert safe_text("key test_abcdefgh1 and live_xyzxyz9") == "key [redacted] and [redacted]"
    assert safe_text(f"jwt {JWT}.") == "jwt [redacted]."
    assert safe_text("bearer eyJ0eXAi.x.y done") == "[redacted] done"
    assert safe_text("line\none\ttab\x00\x07\u200b") == "line one tab"
    assert safe_text("é ✓ ok") == "é ✓ ok"  # printable text is kept
    assert safe_text("y" * 300) == "y" * 199 + "…"
    assert safe_text("the latest_version and a test_ run") == "the latest_version and a test_ run"


# --- 7. prices and timestamps ------------------------------------------------------------


def test_negative_and_absurd_prices_keep_their_messages_without_a_price(rig: Rig) -> None:
    sim, _, make = rig
    client = make()
    for params in ({}, {"value": "NaN"}, {"value": "2e6"}, {"value": "abc"}):
        sim.add_fault("negative_price", count=1, **params)
        read = client.read_messages(recent())
        assert len(read.messages) == 3 and read.rejected == {"bad_price": 3}, params
        assert all(m.cost_nanos is None for m in read.messages.values())
    clean = client.read_messages(recent())
    assert not clean.rejected and all(m.cost_nanos for m in clean.messages.values())


def test_a_created_at_before_2000_or_unreadable_is_rejected_not_dropped_silently(
    rig: Rig,
) -> None:
    sim, _, make = rig
    client = make()
    first, *others = sorted(client.read_messages(recent()).messages)
    for stamp in ("1970-01-01 00:00:00", "yesterday"):
        sim.add_fault("set_field", field="created_at", value=stamp, ids=[first], count=1)
        read = client.read_messages(recent())
        assert sorted(read.messages) == others and read.rejected == {"bad_created_at": 1}


# --- 8. paging ends on what was read -----------------------------------------------------


def many(sim: Simulator, count: int) -> None:
    """``count`` more delivered messages."""
    sim.create_messages([{"campaign_id": 22, "status": "delivered"}] * count)


def test_a_total_that_always_overstates_ends_the_pass_on_its_short_page(rig: Rig) -> None:
    sim, _, make = rig
    many(sim, 1231)
    client = make()
    sim.add_fault("total_lies", delta=700, beyond=True)  # every page claims 700 more
    before = sim.request_counts()["messages"]
    read = client.read_messages(recent())
    assert sim.request_counts()["messages"] - before == 3  # 500, 500, 234: no empty page after
    assert len(read.messages) == 1234 and read.rows == 1234
    assert read.complete and not read.ended_early and read.total_mismatch


def test_an_api_that_serves_smaller_pages_than_asked_is_paged_on(rig: Rig) -> None:
    sim, _, make = rig
    many(sim, 247)
    client = make()
    sim.add_fault("page_cap", limit=100)  # says limit 100 in meta.page
    sim.add_fault("total_lies", delta=-200)  # and a total below what is there
    read = client.read_messages(recent())
    assert len(read.messages) == 250 and read.pages == 3  # 100, 100, 50
    assert read.total_mismatch and not read.ended_early


def test_an_honest_total_matches_and_a_silent_cap_is_told_apart(rig: Rig) -> None:
    sim, _, make = rig
    many(sim, 597)
    client = make()
    read = client.read_messages(recent())
    assert len(read.messages) == 600 and read.pages == 2 and not read.total_mismatch
    sim.add_fault("page_cap", limit=100, state=False)  # caps pages, yet says limit 500
    read = client.read_messages(recent())
    assert len(read.messages) == 100 and read.total_mismatch  # the total tells it apart
