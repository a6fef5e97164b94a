"""Explicit messages (tests, benchmarks): built from plain dicts, no automatic timeline."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .store import Message
from .traffic import FINAL_STATUSES, CampaignProfile, price_of

_MESSAGE_FIELDS = frozenset(
    {
        "campaign_id",
        "type",
        "country",
        "status",
        "created_at",
        "sent_at",
        "delivered_at",
        "amount",
        "validity",
        "reference_id",
        "phone",
        "text",
        "sender",
        "source",
        "parts",
    }
)


def build_explicit(
    spec: Mapping[str, Any], now: float, campaigns: Mapping[int, CampaignProfile], first: int
) -> Message:
    """Build (not store) one explicit message from its description; id is set on storing."""
    unknown = set(spec) - _MESSAGE_FIELDS
    if unknown:
        raise ValueError(f"unknown message fields: {sorted(unknown)}")
    campaign_id = int(spec.get("campaign_id", first))
    c = campaigns.get(campaign_id)
    channel = str(spec.get("type", "sms"))
    country = str(spec.get("country", "UA"))
    status = str(spec.get("status", "sent"))
    created = _whole(spec.get("created_at"), now)
    if created > now:
        raise ValueError("created_at cannot be in the future of the simulator clock")
    parts = int(spec.get("parts", 1))
    amount = _amount(spec["amount"]) if "amount" in spec else price_of(country, channel, parts)
    m = Message(
        msg_id=0,
        campaign_id=campaign_id,
        channel=channel,
        country=country,
        created=created,
        validity=int(spec.get("validity", c.validity_hours if c else 72)),
        amount=amount,
    )
    m.parts, m.reference_id = parts, spec.get("reference_id")
    m.source = str(spec.get("source", c.source if c else "rest"))
    m.sender = str(spec.get("sender", c.sender if c else "testsms"))
    m.text = str(spec.get("text", ""))
    m.phone = int(spec.get("phone", 0))
    m.sent_at, m.delivered_at = _explicit_times(spec, status, created)
    m.history = _explicit_history(status, created, m.sent_at, m.delivered_at)
    return m


def _whole(value: Any, default: float) -> float:
    """An epoch value floored to whole seconds (the API's resolution)."""
    return float(math.floor(default if value is None else float(value)))


def _amount(value: Any) -> tuple[str, str] | None:
    """Parse an explicit amount: null or {"value": str, "currency": str}."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or {"value", "currency"} - set(value):
        raise ValueError('amount must be null or {"value": ..., "currency": ...}')
    return str(value["value"]), str(value["currency"])


def _explicit_times(
    spec: Mapping[str, Any], status: str, created: float
) -> tuple[float | None, float | None]:
    """sent_at/delivered_at of an explicit message: given, or implied by its status."""
    final = status in FINAL_STATUSES
    implied_sent = created if status == "sent" or (final and status != "failed") else None
    sent = _opt_whole(spec["sent_at"]) if "sent_at" in spec else implied_sent
    implied_done = (sent if sent is not None else created) if final else None
    done = _opt_whole(spec["delivered_at"]) if "delivered_at" in spec else implied_done
    return sent, done


def _opt_whole(value: Any) -> float | None:
    """Like _whole() but keeps null."""
    return None if value is None else float(math.floor(float(value)))


def _explicit_history(
    status: str, created: float, sent: float | None, done: float | None
) -> list[tuple[float, str]]:
    """A plausible history ending in `status`."""
    if status not in FINAL_STATUSES and status != "sent":
        return [(created, status)]
    history = [(created, "accepted")]
    if sent is not None:
        history.append((sent, "sent"))
    if status in FINAL_STATUSES:
        history.append((done if done is not None else created, status))
    elif sent is None:
        history.append((created, "sent"))
    history.sort(key=lambda e: e[0])  # stable: keeps the status order on equal times
    return history
