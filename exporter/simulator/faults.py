"""Injectable faults: what can go wrong, on which endpoint, for how many requests."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = ("messages", "balance", "login", "refresh")
FAULT_ENDPOINTS = frozenset({*ENDPOINTS, "any"})
# faults that act on the transport, the status line or the whole body, whatever the endpoint
TRANSPORT_FAULTS = frozenset(
    {"http_status", "slow", "reset", "malformed", "bad_encoding", "gzip", "drip", "deep_nesting"}
)
# faults that rewrite a successful page of /api/messages
CONTENT_FAULTS = frozenset(
    {
        "send_at",
        "phone_string",
        "iso_timestamps",
        "unknown_status",
        "amount_missing",
        "bad_records",
        "total_lies",
        "duplicate_rows",
        "empty_page",
        "negative_price",
        "huge_number",
        "set_field",
        "page_cap",
    }
)
# content faults that also rewrite the balance answer
BALANCE_FAULTS = frozenset({"huge_number"})
FAULT_DEFAULTS: dict[str, dict[str, Any]] = {
    "http_status": {"status": 503, "retry_after": None, "message": None},
    "slow": {"delay": 2.0},
    "reset": {},
    "malformed": {},
    "bad_encoding": {"encoding": "gzip"},
    "gzip": {"pad": 0},
    "drip": {"interval": 1.5, "part": "body"},
    "deep_nesting": {"depth": 100_000, "status": None},
    "send_at": {},
    "phone_string": {},
    "iso_timestamps": {},
    "unknown_status": {"status": "queued_v2"},
    "amount_missing": {"mode": "missing"},
    "bad_records": {},
    "total_lies": {"delta": 1000, "beyond": False},
    "duplicate_rows": {"n": 5},
    "empty_page": {},
    "negative_price": {"value": None},
    "huge_number": {"field": None, "digits": 400},
    "set_field": {"field": "created_at", "value": None, "ids": None},
    "page_cap": {"limit": 100, "state": True},
}
HUGE_FIELDS = {"balance": ("balance", "credit"), "messages": ("amount", "id", "validity")}
"""The fields huge_number can blow up, per endpoint (the first is the default)."""
RECORD_FIELDS = frozenset(
    {
        "id", "campaign_id", "reference_id", "type", "source", "text", "phone", "validity",
        "status", "amount", "sender", "created_at", "sent_at", "delivered_at", "country", "parts",
    }
)  # fmt: skip
"""The keys of a message record, which set_field may set."""
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


@dataclass
class Fault:
    """An injected misbehaviour, applied to the next `remaining` matching requests once the
    first `skip` of them went by untouched (the third page of a read, say)."""

    kind: str
    endpoint: str
    remaining: int | None
    params: dict[str, Any] = field(default_factory=dict)
    skip: int = 0

    def describe(self) -> dict[str, Any]:
        """Return a JSON-friendly description."""
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "count": self.remaining,
            "skip": self.skip,
            **self.params,
        }


def _check_fault(
    kind: str, endpoint: str, count: int | None, skip: int, params: Mapping[str, Any]
) -> None:
    """Raise ValueError for a fault the simulator cannot apply."""
    if kind not in FAULT_DEFAULTS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_DEFAULTS)}")
    if endpoint not in FAULT_ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {sorted(FAULT_ENDPOINTS)}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer or null")
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError("skip must be a non-negative integer")
    unknown = set(params) - set(FAULT_DEFAULTS[kind])
    if unknown:
        raise ValueError(f"unknown parameters for {kind}: {sorted(unknown)}")
    if kind == "http_status" and "status" not in params:
        raise ValueError("http_status needs an integer status within 400..599")
    for name, value in params.items():
        check = _PARAM_CHECKS.get((kind, name))
        problem = None if check is None else check(value)
        if problem is not None:
            raise ValueError(f"{kind} needs {problem}")
    if kind == "huge_number" and params.get("field") is not None:
        allowed = HUGE_FIELDS.get(endpoint, ())
        if params["field"] not in allowed:
            raise ValueError(f"huge_number on {endpoint} can set {list(allowed)} only")


def _integer(low: int, high: int, what: str) -> Callable[[Any], str | None]:
    """A check of an integer parameter within low..high."""

    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"{what} as an integer within {low}..{high}"

    return check


def _choice(allowed: tuple[Any, ...], what: str) -> Callable[[Any], str | None]:
    """A check of a parameter taking one of a few values."""
    return lambda value: None if value in allowed else f"{what} among {list(allowed)}"


def _interval(value: Any) -> str | None:
    """drip's interval: seconds between two bytes."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = number and math.isfinite(value) and 0 < value <= 60
    return None if ok else "an interval in seconds within (0, 60]"


def _retry_after(value: Any) -> str | None:
    """A Retry-After value: a number, any text that fits in a header line, or null."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None
    if isinstance(value, str) and value.isprintable() and value.isascii():
        return None
    return "retry_after as a number, printable ASCII text, or null"


def _optional_text(value: Any) -> str | None:
    """A text parameter that may be null."""
    return None if value is None or isinstance(value, str) else "message as a string or null"


def _price_value(value: Any) -> str | None:
    """negative_price's value: null (negate each price), a number or a string."""
    ok = value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))
    return None if ok else "value as null, a number or a string"


def _ids(value: Any) -> str | None:
    """set_field's ids: null (every record) or a list of ids."""
    ok = value is None or (isinstance(value, list) and all(type(i) is int for i in value))
    return None if ok else "ids as null or a list of integer ids"


def _status(value: Any) -> str | None:
    """A status code, or null to keep the handler's."""
    return None if value is None else _integer(200, 599, "status")(value)


_PARAM_CHECKS: dict[tuple[str, str], Callable[[Any], str | None]] = {
    ("http_status", "status"): _integer(400, 599, "an integer status"),
    ("http_status", "retry_after"): _retry_after,
    ("http_status", "message"): _optional_text,
    ("bad_encoding", "encoding"): lambda v: (
        None if isinstance(v, str) and _TOKEN.fullmatch(v) else "encoding as a header token"
    ),
    ("gzip", "pad"): _integer(0, 2**30, "pad (bytes)"),
    ("drip", "interval"): _interval,
    ("drip", "part"): _choice(("headers", "body", "both"), "part"),
    ("deep_nesting", "depth"): _integer(1, 10_000_000, "depth"),
    ("deep_nesting", "status"): _status,
    ("total_lies", "delta"): _integer(-(2**62), 2**62, "delta"),
    ("total_lies", "beyond"): _choice((True, False), "beyond"),
    ("negative_price", "value"): _price_value,
    ("huge_number", "digits"): _integer(1, 100_000, "digits"),
    ("set_field", "field"): _choice(tuple(sorted(RECORD_FIELDS)), "field"),
    ("set_field", "ids"): _ids,
    ("page_cap", "limit"): _integer(1, 500, "limit"),
    ("page_cap", "state"): _choice((True, False), "state"),
}


class FaultBook:
    """The active faults and how often each kind was applied (not thread-safe itself)."""

    def __init__(self) -> None:
        self.active: list[Fault] = []
        self.applied: Counter[str] = Counter()

    def add(
        self, kind: str, count: int | None, endpoint: str, params: Mapping[str, Any], skip: int = 0
    ) -> Fault:
        """Validate and register a fault."""
        _check_fault(kind, endpoint, count, skip, params)
        fault = Fault(kind, endpoint, count, {**FAULT_DEFAULTS[kind], **params}, skip)
        self.active.append(fault)
        return fault

    def take(self, endpoint: str, kinds: frozenset[str]) -> list[Fault]:
        """Consume the active faults of `kinds` matching a request to `endpoint`."""
        matching = [f for f in self.active if f.kind in kinds and f.endpoint in (endpoint, "any")]
        taken = [f for f in matching if not f.skip]
        for f in matching:
            f.skip = max(0, f.skip - 1)
        for f in taken:
            self.applied[f.kind] += 1
            if f.remaining is not None:
                f.remaining -= 1
        self.active = [f for f in self.active if f.remaining is None or f.remaining > 0]
        return taken
