"""Turn stored messages into the JSON records of GET /api/messages (faults included)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from .engine import Simulator
from .store import Message
from .traffic import PENDING_STATUSES

_FORMAT = "%Y-%m-%d %H:%M:%S"


class PageRenderer:
    """Renders records as seen at `now`, bent by the content faults in `kinds`."""

    def __init__(self, sim: Simulator, now: float, kinds: Mapping[str, Mapping[str, Any]]) -> None:
        self._sim = sim
        self._now = now
        self._kinds = kinds
        self._iso = "iso_timestamps" in kinds
        self._sent_key = "send_at" if "send_at" in kinds else "sent_at"

    def records(self, rows: list[Message]) -> list[dict[str, Any]] | list[msgspec.Raw]:
        """The page's records, with broken extras when bad_records is on."""
        if not self._kinds:
            return [self.encoded(m) for m in rows]
        data = [self.record(m) for m in rows]
        if "bad_records" in self._kinds:
            data.extend(_bad_records(data))
        return data

    def stamp(self, t: float | None) -> str | None:
        """A timestamp as the API prints it (zone-less, or ISO 8601 under the fault)."""
        if t is None:
            return None
        moment = datetime.fromtimestamp(t, self._sim.zone)
        return moment.isoformat() if self._iso else moment.strftime(_FORMAT)

    def encoded(self, m: Message) -> msgspec.Raw:
        """One record as JSON, re-rendered only when the message's state has changed.

        Full-window readers (benchmarks) re-read a million unchanged rows a minute: rendering
        each once per state instead of once per read is what makes them affordable.
        """
        cached = m.rendered
        if cached is not None and cached[0] <= self._now < cached[1]:
            return msgspec.Raw(cached[2])
        body = msgspec.json.encode(self.record(m))
        span = m.steady(self._now)
        if span is not None:
            m.rendered = (span[0], span[1], body)
        return msgspec.Raw(body)

    def record(self, m: Message) -> dict[str, Any]:
        """One message record, with the keys in the provider's order."""
        status, sent, done = self._sim.state(m, self._now)
        amount = self._sim.shown_amount(m, status)
        kinds = self._kinds
        if "unknown_status" in kinds and status in PENDING_STATUSES:
            status = str(kinds["unknown_status"]["status"])
        rec: dict[str, Any] = {
            "id": m.id,
            "campaign_id": m.campaign_id,
            "reference_id": m.reference_id,
            "type": m.type,
            "source": m.source,
            "text": m.text,
            "phone": str(m.phone) if "phone_string" in kinds else m.phone,
            "validity": m.validity,
            "status": status,
            "amount": None if amount is None else {"value": amount[0], "currency": amount[1]},
            "sender": m.sender,
            "created_at": self.stamp(m.created),
            self._sent_key: self.stamp(sent),
            "delivered_at": self.stamp(done),
            "country": m.country,
            "parts": m.parts,
        }
        if "amount_missing" in kinds:
            if kinds["amount_missing"]["mode"] == "null":
                rec["amount"] = None
            else:
                del rec["amount"]
        _bend(rec, kinds)
        return rec


def _bend(rec: dict[str, Any], kinds: Mapping[str, Mapping[str, Any]]) -> None:
    """Apply the faults that set one field of a record to something it should not be."""
    amount = rec.get("amount")
    if "negative_price" in kinds and amount is not None:
        value = kinds["negative_price"]["value"]
        rec["amount"] = {**amount, "value": f"-{amount['value']}" if value is None else value}
    if "huge_number" in kinds:
        name = kinds["huge_number"]["field"] or "amount"
        huge = int("9" * int(kinds["huge_number"]["digits"]))
        if name == "amount":
            rec["amount"] = {"value": huge, "currency": amount["currency"] if amount else "EUR"}
        else:
            rec[name] = huge
    if "set_field" in kinds:
        bend = kinds["set_field"]
        if bend["ids"] is None or rec["id"] in bend["ids"]:
            rec[bend["field"]] = bend["value"]


def _bad_records(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A record without `id` and one without `status`, copied from real rows."""
    first = dict(data[0]) if data else {"status": "sent", "phone": 380000000000}
    last = dict(data[-1]) if data else {"id": 1, "phone": 380000000000}
    first.pop("id", None)
    last.pop("status", None)
    return [first, last]
