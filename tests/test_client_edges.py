"""Edge cases of the client that a simulator run makes awkward to pin down exactly.

The client's normal life (login, paging, faults) is tested over HTTP against the simulator in
test_client.py; these use httpx.MockTransport only to script one exact sequence of answers.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC

import httpx
import pytest

from exporter.bsg.client import BsgClient, RetryPolicy
from exporter.bsg.errors import AuthError, ClientError, RateLimitedError, ServerError, StoppedError
from exporter.bsg.paging import MessageQuery
from exporter.bsg.replies import jwt_expiry

KEY = "live_secretkey_1234567890"
FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.01, retry_after_wait=0.2)


def token(exp: float, tag: str = "a") -> str:
    """A JWT-shaped token with an ``exp`` claim."""
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp, "id": 1}).encode()).rstrip(b"=")
    return f"eyJhbGciOiJIUzI1NiJ9.{payload.decode()}.sig{tag}"


class Recorder:
    """Counts observed requests the way the metrics side would."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        self.seen.append((endpoint, code))


def client(handler: Callable[[httpx.Request], httpx.Response], **kwargs: object) -> BsgClient:
    """A client over a scripted transport."""
    return BsgClient(
        "https://api.test",
        KEY,
        tz=UTC,
        retry=kwargs.pop("retry", FAST),  # type: ignore[arg-type]
        transport=httpx.MockTransport(handler),
        **kwargs,  # type: ignore[arg-type]
    )


class ScriptedApi:
    """Answers logins itself and every other request with ``answer``, counting them."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/login":
            return httpx.Response(200, json={"bearer": token(time.time() + 9e6)})
        self.calls += 1
        return self.answer(request)


EMPTY_PAGE = {"data": [], "meta": {"page": {"total": 0, "offset": 0, "limit": 500}}}


def test_a_401_logs_in_again_once_and_a_token_refused_when_fresh_backs_off() -> None:
    logins = 0
    balances = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal logins, balances
        if request.url.path == "/api/auth/login":
            logins += 1
            return httpx.Response(200, json={"bearer": token(time.time() + 9e6, str(logins))})
        balances += 1
        if balances == 1:  # the first token works once, then every token is refused
            return httpx.Response(200, json={"data": {"balance": 1, "currency": "EUR"}})
        return httpx.Response(401, json={"message": "Unauthenticated."})

    recorder = Recorder()
    with client(handler, observer=recorder) as c:
        c.read_balance()
        with pytest.raises(AuthError) as info:
            c.read_balance()
        with pytest.raises(AuthError, match="next attempt in 30s"):
            c.read_balance()  # held off: no login, no request
    assert logins == 2
    assert recorder.seen == [
        ("login", "200"),
        ("balance", "200"),
        ("balance", "401"),  # a token that worked: log in again at once
        ("login", "200"),
        ("balance", "401"),  # a token refused as soon as issued: back off
    ]
    assert KEY not in str(info.value)


def test_a_short_retry_after_is_waited_and_a_long_one_fails_at_once() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "0.1"}, json={"message": "Too many"}),
            httpx.Response(200, json={"data": {"balance": 1, "currency": "EUR", "credit": 0}}),
            httpx.Response(429, headers={"Retry-After": "3600"}, json={"message": "Too many"}),
        ]
    )
    api = ScriptedApi(lambda _: next(answers))
    started = time.monotonic()
    with client(api) as c:
        assert c.read_balance().balance == 1.0
        assert time.monotonic() - started >= 0.1  # waited what the server asked
        assert c.rate_limited_until is None
        with pytest.raises(RateLimitedError, match="asked for 3600s, no request for 900s"):
            c.read_balance()
        until = c.rate_limited_until  # believed up to the cap, 15 minutes
        assert until is not None and 890 < until - time.time() <= 900
    assert api.calls == 3  # the long one is not retried


def test_5xx_retries_are_bounded() -> None:
    api = ScriptedApi(lambda _: httpx.Response(503, json={"message": "down"}))
    with client(api) as c, pytest.raises(ServerError):
        c.read_balance()
    assert api.calls == 1 + FAST.max_retries


def test_4xx_is_not_retried() -> None:
    message = {"message": "The page.limit must be between 15 and 500."}
    api = ScriptedApi(lambda _: httpx.Response(422, json=message))
    with client(api) as c, pytest.raises(ClientError, match=r"page\.limit"):
        c.read_messages(MessageQuery(0, 1))
    assert api.calls == 1


def test_stop_interrupts_a_backoff() -> None:
    stop = threading.Event()
    handler = ScriptedApi(lambda _: httpx.Response(503, json={"message": "down"}))

    slow = RetryPolicy(max_retries=5, base_delay=30, max_delay=30)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with client(handler, retry=slow, stop=stop) as c, pytest.raises(StoppedError):
        c.read_balance()
    assert time.monotonic() - started < 5


def test_token_close_to_expiry_is_refreshed() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("Authorization", "")[-4:]))
        if request.url.path == "/api/auth/login":
            return httpx.Response(200, json={"bearer": token(time.time() + 60)})
        if request.url.path == "/api/auth/refresh":
            return httpx.Response(200, json={"bearer": token(time.time() + 9e6, "r")})
        return httpx.Response(200, json=EMPTY_PAGE)

    with client(handler) as c:
        c.read_messages(MessageQuery(0, 1))
        c.read_messages(MessageQuery(0, 1))
    assert seen == [
        ("/api/auth/login", ""),
        ("/api/messages", "siga"),
        ("/api/auth/refresh", "siga"),
        ("/api/messages", "sigr"),
    ]


def test_paging_follows_total_and_stops_when_it_lies() -> None:
    offsets: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/login":
            return httpx.Response(200, json={"bearer": token(time.time() + 9e6)})
        offset = int(request.url.params["page[offset]"])
        offsets.append(offset)
        assert request.url.params["filter[to]"] == "1970-01-01 00:16:40"  # fixed for the pass
        rows = (
            [{"id": offset + i + 1, "status": "sent"} for i in range(500)] if offset < 1000 else []
        )
        return httpx.Response(200, json={"data": rows, "meta": {"page": {"total": 99_999}}})

    with client(handler) as c:
        result = c.read_messages(MessageQuery(0, 1000))
    assert offsets == [0, 500, 1000]  # an empty page ends the pass whatever total says
    assert len(result.messages) == 1000 and result.pages == 3


def test_jwt_expiry() -> None:
    assert jwt_expiry(token(1234.0)) == 1234.0
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None
