"""The BSG One API client: login, bearer auth, retries, paging and decoding.

Owns every HTTP exchange with the provider. Each request is reported to a
:class:`RequestObserver` with its outcome, so that metrics can be kept without this module knowing
about them. The API key and the bearer token never reach a log line or an exception message.

Must not import: prometheus_client, or any exporter module outside ``exporter.bsg``.
"""

from __future__ import annotations

import base64
import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from operator import attrgetter
from typing import Protocol, TypeVar

import httpx
import structlog

from exporter.bsg.budget import RequestBudget
from exporter.bsg.records import (
    LABEL_FIELDS,
    Balance,
    DecodeError,
    Message,
    Page,
    decode_balance,
    decode_page,
    decode_token,
    format_api_time,
)

PAGE_LIMIT = 500
"""The API's largest page: fewest requests per pass."""
_MAX_EXTRA_PAGES = 20
"""Pages followed past the first answer's total before a pass is cut short (a total that lies)."""
_REFRESH_MARGIN = 86400.0
"""Refresh the token when it expires within a day, rather than waiting for a 401."""
_LOGIN_BACKOFF = (30.0, 900.0)
"""After a refused login, wait this long (doubling up to the cap) before trying the key again:
a revoked key must not turn every poll of every target into a login attempt."""

T = TypeVar("T")
log = structlog.get_logger("exporter.bsg")
_ID = attrgetter("id")


class RequestObserver(Protocol):
    """Receives the outcome of every API request (the metrics side implements it)."""

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        """Record one request: endpoint name, HTTP status or failure kind, seconds taken."""


class BsgError(Exception):
    """A request that failed for good; ``reason`` is a stable label value."""

    reason = "error"


class AuthError(BsgError):
    """The API refused the key or the token."""

    reason = "auth"


class RateLimitedError(BsgError):
    """429 answers outlasted the retries."""

    reason = "rate_limited"


class ServerError(BsgError):
    """5xx answers outlasted the retries."""

    reason = "server_error"


class ClientError(BsgError):
    """A 4xx answer that retrying cannot fix."""

    reason = "client_error"


class RequestTimeoutError(BsgError):
    """Requests timed out until the retries ran out."""

    reason = "timeout"


class ApiConnectionError(BsgError):
    """The connection failed until the retries ran out."""

    reason = "connection_error"


class BadAnswerError(BsgError):
    """The answers could not be decoded until the retries ran out."""

    reason = "decode"


class BudgetExhaustedError(BsgError):
    """The request budget (api.max_requests_per_minute) is spent for now."""

    reason = "budget"


class StoppedError(BsgError):
    """The exporter is shutting down; the pass was abandoned."""

    reason = "shutdown"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_after_cap: float = 60.0


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """One pass over ``GET /api/messages``: a created-at range and an optional campaign."""

    start: float
    end: float
    campaign_id: int | None = None
    offset: int = 0  # rows of this query already read by an earlier, unfinished pass
    labels: tuple[str, ...] = LABEL_FIELDS  # the label fields read (the others are None)


@dataclass(slots=True)
class MessagePass:
    """What one pass read: the messages (deduplicated by id) and how it went."""

    messages: dict[int, Message] = field(default_factory=dict)
    complete: bool = True
    ended_early: bool = False  # stopped on an empty page short of the total, or at the page cap
    last_id: int | None = None
    next_offset: int = 0
    pages: int = 0
    rows: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def add_page(self, page: Page) -> None:
        """Merge one page; a row seen again keeps its newest version."""
        self.pages += 1
        self.rows += page.rows
        ids = list(map(_ID, page.messages))
        known = len(self.messages)
        self.messages.update(zip(ids, page.messages, strict=True))
        self.duplicates += len(ids) - (len(self.messages) - known)
        top = max(ids, default=None)
        if top is not None and (self.last_id is None or top > self.last_id):
            self.last_id = top
        for reason, count in page.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count


class _RetryableError(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, error: BsgError, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


class _NullObserver:
    """Observer used when nobody listens."""

    def observe_request(self, endpoint: str, code: str, duration: float) -> None:
        """Discard the observation."""


class BsgClient:
    """A synchronous client for the parts of the One API an exporter needs."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        tz: tzinfo,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        observer: RequestObserver | None = None,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "bsg-exporter",
        clock: Callable[[], float] = time.time,
        budget: RequestBudget | None = None,
    ) -> None:
        self._key = api_key
        self._tz = tz
        self._retry = retry or RetryPolicy()
        self._observer: RequestObserver = observer or _NullObserver()
        self._stop = stop or threading.Event()
        self._clock = clock
        self._budget = budget
        self._token: str | None = None
        self._token_expiry: float | None = None
        self._login_refusals = 0
        self._login_retry_at = 0.0
        self._lock = threading.RLock()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
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

    def read_messages(self, query: MessageQuery) -> MessagePass:
        """Read every message of ``query``, page by page, with ``filter[to]`` fixed for the pass.

        When the request budget runs out mid-pass, the pages read so far come back with
        ``complete`` False: rows arrive in id order, so everything up to ``last_id`` was read.
        """
        params: dict[str, str | int] = {
            "page[limit]": PAGE_LIMIT,
            "sort": "id",
            "way": "asc",
            "filter[from]": format_api_time(query.start, self._tz),
            "filter[to]": format_api_time(query.end, self._tz),
        }
        if query.campaign_id is not None:
            params["filter[campaign_id]"] = query.campaign_id
        result, total = self._read_pass(params, query.offset, query.labels)
        if result.complete and _rows_skipped(result, total, query.offset):
            # Rows shifted between two pages (a page repeated some rows, and fewer distinct rows
            # came than the total says): some were skipped, and a skipped row below the cursor
            # is never read as new again. One more pass finds them; known rows cost nothing.
            log.info("pass_reread", reason="rows shifted between pages", rows=result.rows)
            again, _ = self._read_pass(params, query.offset, query.labels)
            again.messages = {**result.messages, **again.messages}
            again.pages += result.pages
            again.rows += result.rows
            again.duplicates += result.duplicates
            if result.last_id is not None:
                again.last_id = max(result.last_id, again.last_id or result.last_id)
            result = again
        return result

    def _read_pass(
        self, params: Mapping[str, str | int], offset: int, labels: tuple[str, ...]
    ) -> tuple[MessagePass, int | None]:
        """Page through one pass from ``offset``; also returns the total of its first page."""
        result = MessagePass()
        total: int | None = None
        max_pages: int | None = None
        while True:
            try:
                page = self._get_page({**params, "page[offset]": offset}, labels)
            except BudgetExhaustedError:
                result.complete = False
                result.next_offset = offset
                return result, total
            result.add_page(page)
            offset += page.rows
            result.next_offset = offset
            if max_pages is None:
                total = page.total
                # max(): a negative total (one that lies) must not stop the pass at its first page
                max_pages = max(page.total or 0, 0) // PAGE_LIMIT + _MAX_EXTRA_PAGES
            if result.pages >= max_pages:
                result.ended_early = True
                return result, total
            if not _more_pages(page, offset):
                # An empty page short of the total may be a glitch (or a total that lies): the
                # caller must not take the pass as having read everything up to its end.
                result.ended_early = page.rows == 0 and (page.total or 0) > offset
                return result, total

    def read_message(self, message_id: int) -> Message | None:
        """Look one message up by id (``filter[id]``); None when the API does not know it."""
        page = self._get_page({"filter[id]": message_id, "page[limit]": 15})
        matching = [m for m in page.messages if m.id == message_id]
        return matching[0] if matching else None

    def read_balance(self) -> Balance:
        """Read the account balance and credit limit."""
        return self._call("balance", "GET", "/api/accounts/balance", decode=decode_balance)

    def _get_page(
        self, params: Mapping[str, str | int], labels: tuple[str, ...] = LABEL_FIELDS
    ) -> Page:
        """One ``GET /api/messages`` page, decoded, with the label fields in ``labels``."""
        tz = self._tz
        return self._call(
            "messages",
            "GET",
            "/api/messages",
            params=params,
            decode=lambda body: decode_page(body, tz, labels),
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
        relogged = False
        while True:
            if authorized:
                self._ensure_token()
            try:
                return self._attempt(request, decode)
            except _UnauthorizedError:
                # A token can expire or be revoked at any time: log in again, once per request.
                if relogged:
                    raise AuthError(f"{endpoint}: 401 Unauthorized after a fresh login") from None
                relogged = True
                self._drop_token()
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

    def _attempt(self, request: _Request, decode: Callable[[bytes], T]) -> T:
        """Send one request and classify its outcome."""
        if self._stop.is_set():
            raise StoppedError("shutting down")
        if self._budget is not None and not self._budget.try_acquire():
            raise BudgetExhaustedError(f"{request.endpoint}: request budget spent for this minute")
        endpoint = request.endpoint
        headers = {"Authorization": f"Bearer {self._token}"} if request.authorized else None
        started = time.monotonic()
        try:
            response = self._http.request(
                request.method,
                request.path,
                params=request.params,
                headers=headers,
                json=request.json_body,
            )
        except httpx.TimeoutException as exc:
            self._observe(endpoint, "timeout", started)
            error: BsgError = RequestTimeoutError(f"{endpoint}: timed out ({type(exc).__name__})")
            raise _RetryableError(error) from None
        except httpx.TransportError as exc:
            self._observe(endpoint, "connection_error", started)
            raise _RetryableError(ApiConnectionError(f"{endpoint}: {type(exc).__name__}")) from None
        self._observe(endpoint, str(response.status_code), started)
        return self._handle(endpoint, response, decode, request.authorized)

    def _handle(
        self,
        endpoint: str,
        response: httpx.Response,
        decode: Callable[[bytes], T],
        authorized: bool,
    ) -> T:
        """Turn an answer into a value, a retry, or a final error."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                return decode(response.content)
            except DecodeError as exc:
                raise _RetryableError(BadAnswerError(f"{endpoint}: {exc}")) from None
        if status == 401 and authorized:
            raise _UnauthorizedError
        if status in (401, 403):
            raise AuthError(f"{endpoint}: HTTP {status} {_api_message(response)}")
        if status == 429:
            error: BsgError = RateLimitedError(f"{endpoint}: HTTP 429 {_api_message(response)}")
            raise _RetryableError(error, self._retry_after(response))
        if status >= 500:
            raise _RetryableError(
                ServerError(f"{endpoint}: HTTP {status} {_api_message(response)}")
            )
        raise ClientError(f"{endpoint}: HTTP {status} {_api_message(response)}")

    def _observe(self, endpoint: str, code: str, started: float) -> None:
        """Report one request to the observer."""
        self._observer.observe_request(endpoint, code, time.monotonic() - started)

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with jitter, so that many exporters do not retry in step."""
        ceiling = min(self._retry.max_delay, self._retry.base_delay * 2 ** (retry - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    def _retry_after(self, response: httpx.Response) -> float | None:
        """The server's ``Retry-After`` in seconds, capped; None when absent or unreadable."""
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        seconds: float | None
        try:
            seconds = float(value)
        except ValueError:
            moment = email.utils.parsedate_to_datetime(value) if value.strip() else None
            seconds = moment.timestamp() - self._clock() if moment is not None else None
        if seconds is None:
            return None
        return min(max(seconds, 0.0), self._retry.retry_after_cap)

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
            raise AuthError(f"login: refused earlier; next attempt in {wait:.0f}s")
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
            first, cap = _LOGIN_BACKOFF
            delay = min(cap, first * 2**self._login_refusals)
            self._login_refusals += 1
            self._login_retry_at = self._clock() + delay
            log.warning("api_login_refused", error=str(exc), retry_in_s=delay)
            raise
        self._login_refusals = 0
        self._set_token(token)
        log.info("api_login", expires_in_s=self._expires_in())

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

    def _expires_in(self) -> float | None:
        """Seconds until the token expires, when known."""
        if self._token_expiry is None:
            return None
        return round(self._token_expiry - self._clock())


class _UnauthorizedError(Exception):
    """Internal: a 401 on an authorised request."""


@dataclass(frozen=True, slots=True)
class _Request:
    """What is needed to send one request again."""

    endpoint: str
    method: str
    path: str
    params: Mapping[str, str | int] | None
    json_body: object
    authorized: bool


def _rows_skipped(result: MessagePass, total: int | None, offset: int) -> bool:
    """Tell whether a pass repeated rows and yet read fewer distinct rows than its total."""
    if not result.duplicates or total is None:
        return False
    return len(result.messages) + sum(result.rejected.values()) < total - offset


def _more_pages(page: Page, offset: int) -> bool:
    """Tell whether a pass must ask for another page."""
    if page.rows == 0:
        return False
    if page.total is None or page.total < offset:
        # No total, or one below the rows already read (it lies): a full page may have more
        # behind it. Trusting such a total dropped the rest of the pass, and a pass of new
        # messages that ends early moves the read position past rows it never read.
        return page.rows >= PAGE_LIMIT
    return offset < page.total


def _api_message(response: httpx.Response) -> str:
    """The ``message`` of a Laravel-shaped error body, shortened; never the request itself."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return f"({str(message)[:200]})" if message else ""


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, without verifying it (the API does that)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
