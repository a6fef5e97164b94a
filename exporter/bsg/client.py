"""The BSG One API client: login, bearer auth, retries, and the requests a pass is read with.

Owns every HTTP exchange with the provider. Each request goes through one place,
:meth:`BsgClient._attempt`, which turns whatever happens (an answer, a transport failure, a
body that cannot be decoded, a bug) into one outcome reported to a :class:`RequestObserver`
and, on failure, into a :class:`BsgError` with a stable ``reason``. The API key and the bearer
token never reach a log line or an exception message, and nothing the provider writes reaches
one unless :func:`safe_text` has cleaned it.

Must not import: prometheus_client, or any exporter module outside ``exporter.bsg`` but the
vocabulary and the defaults.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Protocol, TypeVar

import httpx
import msgspec
import structlog

from exporter import model
from exporter.bsg.budget import RequestBudget
from exporter.bsg.decode import Decoder, decode_balance, decode_token, nested_too_deeply
from exporter.bsg.errors import (
    ApiConnectionError,
    AuthError,
    BadAnswerError,
    BsgError,
    BudgetExhaustedError,
    ClientError,
    InternalError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    StoppedError,
)
from exporter.bsg.paging import MessagePass, MessageQuery, read_range
from exporter.bsg.replies import api_message, clock_text, jwt_expiry, retry_after_seconds, safe_text
from exporter.bsg.reports import ReportPass, ReportQuery, read_reports
from exporter.bsg.transport import Deadline, deadline_transport
from exporter.bsg.wire import MAX_DEPTH, Balance, Message, Page
from exporter.defaults import DEFAULT_MAX_RESPONSE_SIZE, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from exporter.model import LABEL_DIMENSIONS

_REFRESH_MARGIN = 86400.0
"""Refresh the token when it expires within a day, rather than waiting for a 401."""
_LOGIN_BACKOFF = (30.0, 900.0)
"""After a refused login, or a token refused as soon as it was issued, wait this long
(doubling up to the cap) before trying the key again: a revoked key must not turn every poll
of every target into a login attempt."""
_ERROR_BODY_SIZE = 64 * 2**10
"""Bytes of an error answer read for its message: the status says what happened."""

T = TypeVar("T")
log = structlog.get_logger("exporter.bsg")


class RequestObserver(Protocol):
    """Receives the outcome of every API request (the metrics side implements it)."""

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        """Record one request: endpoint name, HTTP status or failure kind, seconds taken."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried.

    A ``Retry-After`` up to ``retry_after_wait`` is waited inside the request; a longer one
    fails the request at once and holds every request until then, believed up to
    ``retry_after_cap`` seconds.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_after_wait: float = 5.0
    retry_after_cap: float = 900.0

    def longest_silence(self, timeout: float) -> float:
        """The longest a request with deadline ``timeout`` goes between two outcomes: the
        longest wait before a retry, then one whole attempt."""
        return max(self.max_delay, self.retry_after_wait) + timeout


class _RetryableError(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, error: BsgError, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


class _UnauthorizedError(Exception):
    """Internal: a 401 on an authorised request."""


class _TooLargeError(Exception):
    """Internal: a body larger than the cap."""


class _DeadlineError(Exception):
    """Internal: the body was still arriving at the request's deadline."""


class _NullObserver:
    """Observer used when nobody listens."""

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        """Discard the observation."""


@dataclass(frozen=True, slots=True)
class _Request:
    """What is needed to send one request again."""

    endpoint: str
    method: str
    path: str
    params: Mapping[str, str | int] | None
    json_body: object
    authorized: bool


@dataclass(frozen=True, slots=True)
class _Answer:
    """A received answer: status, headers and (for an error, the start of) the body."""

    status: int
    headers: httpx.Headers
    body: bytes


@dataclass(slots=True)
class _Outcome:
    """The observed code of one request, as it becomes known."""

    code: str = model.INTERNAL


class BsgClient:
    """A synchronous client for the parts of the One API an exporter needs."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        tz: tzinfo,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        observer: RequestObserver | None = None,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "bsg-exporter",
        clock: Callable[[], float] = time.time,
        budget: RequestBudget | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        self._key = api_key
        self._tz = tz
        self._decoder = Decoder(tz)
        self._timeout = timeout
        self._max_body = max_response_size
        self._retry = retry or RetryPolicy()
        self._observer: RequestObserver = observer or _NullObserver()
        self._stop = stop or threading.Event()
        self._clock = clock
        self._budget = budget
        self._token: str | None = None
        self._token_expiry: float | None = None
        self._token_proven = False  # an authorised request succeeded with the current token
        self._login_refusals = 0
        self._login_retry_at = 0.0
        self._login_refused = "refused earlier"
        self._limited_until: float | None = None
        self._internal_seen: set[tuple[str, str]] = set()
        self._lock = threading.RLock()
        self._deadline = Deadline()
        base = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=base,
            timeout=timeout,
            transport=transport or deadline_transport(base, self._deadline),
            headers={"Accept": "application/json", "User-Agent": user_agent},
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> BsgClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rate_limited_until(self) -> float | None:
        """When (on the client's clock) the API's ``Retry-After`` ends; None when not held."""
        until = self._limited_until
        return until if until is not None and until > self._clock() else None

    def read_messages(self, query: MessageQuery) -> MessagePass:
        """Read every message of ``query`` in one pass (see :func:`read_range`)."""
        return read_range(self._get_page, query, self._tz)

    def read_reports(self, query: ReportQuery) -> ReportPass:
        """Read the delivery reports of ``query``, newest first (see :func:`read_reports`)."""
        return read_reports(self._get_page, query, self._tz)

    def read_message(self, message_id: int) -> Message | None:
        """Look one message up by id (``filter[id]``); None when the API does not know it."""
        page = self._get_page({"filter[id]": message_id, "page[limit]": 15})
        matching = [m for m in page.messages if m.id == message_id]
        return matching[0] if matching else None

    def read_balance(self) -> Balance:
        """Read the account balance and credit limit."""
        return self._call("balance", "GET", "/api/accounts/balance", decode=decode_balance)

    def _get_page(
        self, params: Mapping[str, str | int], labels: tuple[str, ...] = LABEL_DIMENSIONS
    ) -> Page:
        """One ``GET /api/messages`` page, decoded, with the label fields in ``labels``."""
        decoder = self._decoder
        return self._call(
            "messages",
            "GET",
            "/api/messages",
            params=params,
            decode=lambda body: decoder.page(body, labels),
        )

    def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        decode: Callable[[bytes], T],
        params: Mapping[str, str | int] | None = None,
        authorized: bool = True,
        json_body: object = None,
    ) -> T:
        """Send a request with auth and retries, and decode its body."""
        request = _Request(endpoint, method, path, params, json_body, authorized)
        retries = 0
        while True:
            if authorized:
                self._ensure_token()
            try:
                return self._attempt(request, decode)
            except _UnauthorizedError:
                self._unauthorized(endpoint)
            except _RetryableError as retry:
                if retries >= self._retry.max_retries:
                    raise retry.error from None
                retries += 1
                delay = retry.delay if retry.delay is not None else self._backoff(retries)
                log.debug(
                    "api_retry",
                    endpoint=endpoint,
                    reason=retry.error.reason,
                    error=str(retry.error),
                    attempt=retries,
                    delay_s=round(delay, 3),
                )
                if self._stop.wait(delay):
                    raise StoppedError("shutting down") from None

    def _unauthorized(self, endpoint: str) -> None:
        """A 401: log in again, unless the token never worked (then back off, like a refusal)."""
        with self._lock:
            if not self._token_proven:
                # The key logs in, yet its token is refused: logging in again at once would
                # loop (41 logins in 20 s were seen), so the next login waits.
                why = f"{endpoint}: 401 Unauthorized with a token just issued"
                delay = self._refuse_login(why)
                raise AuthError(f"{why}; next login in {delay:.0f}s")
            # A token can expire or be revoked at any time: log in again.
            self._drop_token()

    def _attempt(self, request: _Request, decode: Callable[[bytes], T]) -> T:
        """Send one request, observe its outcome, and turn it into a value or an error.

        Whatever goes wrong inside is counted and becomes a :class:`BsgError` (or a retry):
        nothing else leaves this method but ``KeyboardInterrupt`` and its kind.
        """
        self._admit(request.endpoint)
        outcome = _Outcome()
        started = time.monotonic()
        try:
            answer = self._exchange(request, outcome)
            return self._handle(request, answer, decode)
        except (_RetryableError, _UnauthorizedError, BsgError):
            raise
        except Exception as exc:
            raise self._failure(request.endpoint, exc, outcome) from None
        finally:
            self._observe(request.endpoint, outcome.code, started)

    def _admit(self, endpoint: str) -> None:
        """Refuse to send while stopping, while the API holds us off, or over the budget."""
        if self._stop.is_set():
            raise StoppedError("shutting down")
        until = self.rate_limited_until
        if until is not None:
            wait = until - self._clock()
            raise RateLimitedError(
                f"{endpoint}: the API asked for a pause; next request in {wait:.0f}s "
                f"(at {clock_text(until)})"
            )
        if self._budget is not None and not self._budget.try_acquire():
            raise BudgetExhaustedError(f"{endpoint}: request budget spent for this minute")

    def _exchange(self, request: _Request, outcome: _Outcome) -> _Answer:
        """Send one request and read its answer, all within ``api.timeout``."""
        headers = {"Authorization": f"Bearer {self._token}"} if request.authorized else None
        deadline = time.monotonic() + self._timeout
        self._deadline.at = deadline
        try:
            with self._http.stream(
                request.method,
                request.path,
                params=request.params,
                headers=headers,
                json=request.json_body,
            ) as response:
                outcome.code = str(response.status_code)
                ok = 200 <= response.status_code < 300
                body = _read_body(response, self._max_body if ok else _ERROR_BODY_SIZE, deadline)
                return _Answer(response.status_code, response.headers, body)
        finally:
            self._deadline.at = None

    def _failure(self, endpoint: str, exc: Exception, outcome: _Outcome) -> Exception:
        """The error (or retry) an exception raised inside one request stands for."""
        name = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException | _DeadlineError):
            outcome.code = model.TIMEOUT
            error: BsgError = RequestTimeoutError(
                f"{endpoint}: no whole answer within {self._timeout:g}s ({name})"
            )
            return _RetryableError(error)
        if isinstance(exc, httpx.DecodingError):  # a body not in its Content-Encoding
            return _RetryableError(BadAnswerError(f"{endpoint}: undecodable body ({name})"))
        if isinstance(exc, _TooLargeError):
            message = f"{endpoint}: answer larger than {self._max_body} bytes"
            return _RetryableError(BadAnswerError(message))
        if isinstance(exc, httpx.HTTPError):  # TransportError, and any other kind httpx adds
            outcome.code = model.CONNECTION_ERROR
            return _RetryableError(ApiConnectionError(f"{endpoint}: {name}"))
        self._log_internal(endpoint, exc)
        return InternalError(f"{endpoint}: unexpected {name} handling the answer")

    def _log_internal(self, endpoint: str, exc: Exception) -> None:
        """Log an unexpected exception, with its traceback the first time it is seen."""
        kind = (endpoint, type(exc).__name__)
        trace = None
        if kind not in self._internal_seen:
            self._internal_seen.add(kind)
            lines = "".join(traceback.format_exception(exc)).splitlines()
            trace = "\n".join(_indent(line) + safe_text(line, self._key, 500) for line in lines)
        error = safe_text(f"{type(exc).__name__}: {exc}", self._key)
        log.error("api_internal_error", endpoint=endpoint, error=error, traceback=trace)

    def _handle(self, request: _Request, answer: _Answer, decode: Callable[[bytes], T]) -> T:
        """Turn an answer into a value, a retry, or a final error."""
        endpoint, status = request.endpoint, answer.status
        if 200 <= status < 300:
            value = self._decode(endpoint, answer.body, decode)
            if request.authorized:
                self._token_proven = True
                self._login_refusals = 0
            return value
        message = api_message(answer.body, self._key)
        if status == 401 and request.authorized:
            raise _UnauthorizedError
        if status in (401, 403):
            raise AuthError(f"{endpoint}: HTTP {status} {message}")
        if status == 429:
            self._rate_limited(endpoint, answer.headers, message)
        if status >= 500:
            raise _RetryableError(ServerError(f"{endpoint}: HTTP {status} {message}"))
        raise ClientError(f"{endpoint}: HTTP {status} {message}")

    def _decode(self, endpoint: str, body: bytes, decode: Callable[[bytes], T]) -> T:
        """Decode a successful answer; an undecodable one is worth another try."""
        if nested_too_deeply(body):
            message = f"{endpoint}: answer nested deeper than {MAX_DEPTH} levels"
            raise _RetryableError(BadAnswerError(message))
        try:
            return decode(body)
        except (ValueError, OverflowError, RecursionError, msgspec.MsgspecError) as exc:
            # ValueError covers DecodeError, msgspec's errors and UnicodeDecodeError.
            error = BadAnswerError(f"{endpoint}: {safe_text(str(exc), self._key)}")
            raise _RetryableError(error) from None

    def _rate_limited(self, endpoint: str, headers: httpx.Headers, message: str) -> None:
        """A 429: wait a short ``Retry-After`` out; hold every request through a long one."""
        now = self._clock()
        wait = retry_after_seconds(headers.get("Retry-After"), now)
        if wait is None or wait <= self._retry.retry_after_wait:
            error = RateLimitedError(f"{endpoint}: HTTP 429 {message}")
            raise _RetryableError(error, wait)
        held = min(wait, self._retry.retry_after_cap)
        with self._lock:
            self._limited_until = max(self._limited_until or 0.0, now + held)
        asked = f"{wait:.0f}s" if wait < 1e9 else "an unbounded pause"
        log.warning("api_rate_limited", endpoint=endpoint, asked=asked, held_s=held)
        raise RateLimitedError(
            f"{endpoint}: HTTP 429 {message}; the API asked for {asked}, "
            f"no request for {held:.0f}s (until {clock_text(now + held)})"
        )

    def _observe(self, endpoint: str, code: str, started: float) -> None:
        """Report one request to the observer."""
        self._observer.observe_request(endpoint, code, time.monotonic() - started)

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with jitter, so that many exporters do not retry in step."""
        ceiling = min(self._retry.max_delay, self._retry.base_delay * 2 ** (retry - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    def _ensure_token(self) -> None:
        """Log in when there is no token, refresh it when it is about to expire."""
        with self._lock:
            if self._token is None:
                self._login()
            elif self._token_expiry is not None and (
                self._token_expiry - self._clock() < _REFRESH_MARGIN
            ):
                # Cleared first: the refresh request itself passes through here.
                self._token_expiry = None
                self._refresh()

    def _drop_token(self) -> None:
        """Forget the token so the next request logs in again."""
        with self._lock:
            self._token = None
            self._token_expiry = None

    def _login(self) -> None:
        """Exchange the API key for a bearer token, backing off after a refusal."""
        wait = self._login_retry_at - self._clock()
        if wait > 0:
            raise AuthError(f"login: {self._login_refused}; next attempt in {wait:.0f}s")
        try:
            token = self._call(
                "login",
                "POST",
                "/api/auth/login",
                decode=decode_token,
                authorized=False,
                json_body={"api_key": self._key},
            )
        except AuthError as exc:
            self._refuse_login(str(exc))
            raise
        self._set_token(token)
        log.info("api_login", expires_in_s=self._expires_in())

    def _refuse_login(self, why: str) -> float:
        """Hold logins off for the next step of the backoff; returns its length in seconds."""
        first, cap = _LOGIN_BACKOFF
        delay = min(cap, first * 2.0 ** min(self._login_refusals, 16))
        self._login_refusals += 1
        self._login_retry_at = self._clock() + delay
        self._login_refused = why
        self._drop_token()
        log.warning("api_login_refused", error=why, retry_in_s=delay)
        return delay

    def _refresh(self) -> None:
        """Trade a token close to expiry for a new one; log in again if that fails."""
        try:
            token = self._call("refresh", "POST", "/api/auth/refresh", decode=decode_token)
        except BsgError as exc:
            log.info("api_refresh_failed", reason=exc.reason)
            self._token = None
            self._login()
            return
        self._set_token(token)

    def _set_token(self, token: str) -> None:
        """Keep a token and the expiry its ``exp`` claim announces."""
        self._token = token
        self._token_expiry = jwt_expiry(token)
        self._token_proven = False

    def _expires_in(self) -> float | None:
        """Seconds until the token expires, when known."""
        if self._token_expiry is None:
            return None
        return round(self._token_expiry - self._clock())


def _read_body(response: httpx.Response, limit: int, deadline: float) -> bytes:
    """The decoded body, by the deadline; over ``limit`` bytes it is too large for a success,
    and cut there for an error (whose status says what happened)."""
    chunks: list[bytes] = []
    size = 0
    # iter_bytes() decompresses a chunk at a time: the limit holds after decompression, a
    # gzip bomb costs at most one read's worth of expansion (64 KiB, about 1000-fold).
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            if 200 <= response.status_code < 300:
                raise _TooLargeError
            chunks.append(chunk[: limit - (size - len(chunk))])
            break
        chunks.append(chunk)
        # The real transport keeps to the deadline on each read; this bounds any other one.
        if time.monotonic() > deadline:
            raise _DeadlineError
    return b"".join(chunks)


def _indent(line: str) -> str:
    """The leading spaces of a line (a traceback's structure)."""
    return line[: len(line) - len(line.lstrip(" "))]
