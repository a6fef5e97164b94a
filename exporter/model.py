"""The exporter's vocabulary: statuses, channels, label dimensions and the reasons it counts by.

One home for every word that is a label value or decides what a message is, so the client, the
tracker, the collector and the status page cannot drift apart. The simulator keeps its own
copy on purpose: it stands for the provider, whose words these are only by agreement.

Must not import: anything (it is the bottom of every other module).
"""

from __future__ import annotations

from typing import Final

EXPIRED: Final = "expired"
"""The final status of a message whose validity ended without a delivery report."""
FINAL_STATUSES: tuple[str, ...] = (
    "delivered",
    "read",
    EXPIRED,
    "failed",
    "undelivered",
    "unknown",
    "not_viber_user",
    "not_service_user",
)
PENDING_STATUSES: tuple[str, ...] = ("scheduled", "moderation", "accepted", "sending", "sent")
OTHER = "other"
"""Label value for a status or channel outside the documented vocabulary."""
ALL_STATUSES: tuple[str, ...] = PENDING_STATUSES + FINAL_STATUSES + (OTHER,)
DELIVERED_STATUSES = frozenset({"delivered", "read"})
"""Final statuses that mean the message reached the phone (their latency is observed)."""
CHANNELS: tuple[str, ...] = ("sms", "viber", "hlr", "rcs", "whatsapp")
DEFAULT_CHANNEL: Final = "sms"
"""The channel of a message that states none (the documentation: "Campaign type: sms")."""
FAILED_STATUSES: tuple[str, ...] = ("failed", "undelivered")
"""Final statuses that mean the route gave up: what the status page and the alerts call failed."""

LABEL_DIMENSIONS: tuple[str, ...] = ("country", "sender")
"""The extra labels a target may split its series by (message fields read only for them)."""
OTHER_VALUE = "other"
"""An extra label's value beyond the target's cap."""
MISSING_VALUE = "unknown"
"""An extra label's value when the message has none."""

NANOS = 1_000_000_000
"""Prices are summed as integer nano-units so that millions of additions stay exact."""

# Why a record of a page was rejected (bsg_records_rejected_total{reason}).
MISSING_ID = "missing_id"
BAD_ID = "bad_id"
MISSING_STATUS = "missing_status"
NOT_AN_OBJECT = "not_an_object"
BAD_CREATED_AT = "bad_created_at"
BAD_PRICE = "bad_price"
REJECT_REASONS: tuple[str, ...] = (
    MISSING_ID,
    BAD_ID,
    MISSING_STATUS,
    NOT_AN_OBJECT,
    BAD_CREATED_AT,
    BAD_PRICE,
)
"""Every reason a record can be rejected for; each has a series from the first scrape."""
KEPT_REJECTS = frozenset({BAD_PRICE})
"""Reject reasons counted for records that are still used (the message counts, without a
price): they are not rows missing from a page."""

# Why a poll failed (bsg_poll_errors_total{reason}): the client's reasons, then the exporter's.
AUTH = "auth"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
CLIENT_ERROR = "client_error"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
DECODE = "decode"
BUDGET = "budget"
STATE = "state"
INTERNAL = "internal"
POLL_ERROR_REASONS: tuple[str, ...] = (
    AUTH,
    RATE_LIMITED,
    SERVER_ERROR,
    CLIENT_ERROR,
    TIMEOUT,
    CONNECTION_ERROR,
    DECODE,
    BUDGET,
    STATE,
    INTERNAL,
)
"""Every reason a poll can fail with; each has a series from the first scrape."""
BALANCE_ERROR_REASONS: tuple[str, ...] = tuple(
    reason for reason in POLL_ERROR_REASONS if reason not in (BUDGET, STATE)
)
"""Every reason a balance read can fail with (one the budget has no room for is skipped)."""
# Why the delivery-report feed (sort=delivered, newest first) was not trusted for a poll
# (bsg_report_feed_disorders_total{reason}).
RISING = "rising"
"""A report time later than one above it: the API ignores the sort or its direction."""
NULL_FIRST = "null_first"
"""A report after a message without one: the API puts messages without a report first."""
UNPROVEN = "unproven"
"""Pages of messages without a report and no report after them: the order could not be told."""
REFUSED = "refused"
"""The API answered the feed's query with a client error (a 4xx): it may not sort so at all."""
FEED_DISORDERS: tuple[str, ...] = (RISING, NULL_FIRST, UNPROVEN, REFUSED)
"""Every reason the feed can be found out of order; each has a series from the first scrape."""
SHUTDOWN = "shutdown"
"""Why a pass was abandoned as the exporter stops: logged, never counted as a failure."""
