"""Injectable faults: what can go wrong, on which endpoint, for how many requests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = ("messages", "balance", "login", "refresh")
FAULT_ENDPOINTS = frozenset({*ENDPOINTS, "any"})
# faults that act on the transport or status line, whatever the endpoint
TRANSPORT_FAULTS = frozenset({"http_status", "slow", "reset", "malformed"})
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
    }
)
FAULT_DEFAULTS: dict[str, dict[str, Any]] = {
    "http_status": {"status": 503, "retry_after": None},
    "slow": {"delay": 2.0},
    "reset": {},
    "malformed": {},
    "send_at": {},
    "phone_string": {},
    "iso_timestamps": {},
    "unknown_status": {"status": "queued_v2"},
    "amount_missing": {"mode": "missing"},
    "bad_records": {},
    "total_lies": {"delta": 1000},
    "duplicate_rows": {"n": 5},
    "empty_page": {},
}


@dataclass
class Fault:
    """An injected misbehaviour, applied to the next `remaining` matching requests."""

    kind: str
    endpoint: str
    remaining: int | None
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Return a JSON-friendly description."""
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "count": self.remaining,
            **self.params,
        }


def _check_fault(kind: str, endpoint: str, count: int | None, params: Mapping[str, Any]) -> None:
    """Raise ValueError for a fault the simulator cannot apply."""
    if kind not in FAULT_DEFAULTS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_DEFAULTS)}")
    if endpoint not in FAULT_ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {sorted(FAULT_ENDPOINTS)}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError("count must be a positive integer or null")
    unknown = set(params) - set(FAULT_DEFAULTS[kind])
    if unknown:
        raise ValueError(f"unknown parameters for {kind}: {sorted(unknown)}")
    status = params.get("status")
    if kind == "http_status" and not (isinstance(status, int) and 400 <= status <= 599):
        raise ValueError("http_status needs an integer status within 400..599")


class FaultBook:
    """The active faults and how often each kind was applied (not thread-safe itself)."""

    def __init__(self) -> None:
        self.active: list[Fault] = []
        self.applied: Counter[str] = Counter()

    def add(self, kind: str, count: int | None, endpoint: str, params: Mapping[str, Any]) -> Fault:
        """Validate and register a fault."""
        _check_fault(kind, endpoint, count, params)
        fault = Fault(kind, endpoint, count, {**FAULT_DEFAULTS[kind], **params})
        self.active.append(fault)
        return fault

    def take(self, endpoint: str, kinds: frozenset[str]) -> list[Fault]:
        """Consume the active faults of `kinds` matching a request to `endpoint`."""
        taken = [f for f in self.active if f.kind in kinds and f.endpoint in (endpoint, "any")]
        for f in taken:
            self.applied[f.kind] += 1
            if f.remaining is not None:
                f.remaining -= 1
        self.active = [f for f in self.active if f.remaining is None or f.remaining > 0]
        return taken
