"""The client's failures: one exception class a way a request can fail for good, each with
the stable ``reason`` that labels ``bsg_poll_errors_total``.

Must not import: httpx, prometheus_client, or any exporter module but the vocabulary.
"""

from __future__ import annotations

from exporter import model


class BsgError(Exception):
    """A request that failed for good; ``reason`` is a stable label value."""

    reason = "error"


class AuthError(BsgError):
    """The API refused the key or the token."""

    reason = model.AUTH


class RateLimitedError(BsgError):
    """429 answers outlasted the retries, or the API asked for a longer pause than is waited."""

    reason = model.RATE_LIMITED


class ServerError(BsgError):
    """5xx answers outlasted the retries."""

    reason = model.SERVER_ERROR


class ClientError(BsgError):
    """A 4xx answer that retrying cannot fix."""

    reason = model.CLIENT_ERROR


class RequestTimeoutError(BsgError):
    """Requests timed out until the retries ran out."""

    reason = model.TIMEOUT


class ApiConnectionError(BsgError):
    """The connection failed until the retries ran out."""

    reason = model.CONNECTION_ERROR


class BadAnswerError(BsgError):
    """The answers could not be decoded until the retries ran out."""

    reason = model.DECODE


class BudgetExhaustedError(BsgError):
    """The request budget (api.max_requests_per_minute) is spent for now."""

    reason = model.BUDGET


class InternalError(BsgError):
    """An exception nobody expected while handling one request (a bug; logged with its trace)."""

    reason = model.INTERNAL


class StoppedError(BsgError):
    """The exporter is shutting down; the pass was abandoned."""

    reason = model.SHUTDOWN
