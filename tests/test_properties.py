"""Property tests (hypothesis) of the decoder and the tracker, and a short fuzz of the decoder.

The decoder must turn any bytes into a page or a DecodeError, never crash, and never hand the
rest of the exporter a value it cannot store or expose. The tracker must keep its counters
monotonic, count each message at most once, and keep the window gauges' sum equal to the
messages it tracks, whatever it is shown, in whatever order, with failures and restarts between.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.bsg.decode import decode_balance, decode_page, decode_token
from exporter.bsg.wire import Channel, DecodeError, Epoch, Message, Page, Status, is_final
from exporter.config.schema import MetricsConfig, PollConfig, RecheckTier, TargetConfig
from exporter.model import ALL_STATUSES, CHANNELS, LABEL_DIMENSIONS, OTHER
from exporter.tracking.snapshot import TargetSnapshot
from exporter.tracking.store import MEMORY, StateStore
from exporter.tracking.tracker import TargetTracker
from tests.harness import price

FUZZ = settings(
    max_examples=3000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SHAPED = settings(FUZZ, max_examples=1000)
PROPS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SQLITE_MAX_INT = 2**63 - 1
ZONES = [UTC, ZoneInfo("Europe/Kyiv"), ZoneInfo("Pacific/Kiritimati")]

# --- the decoder ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
timestamps = st.one_of(
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["", "soon", "2025-02-30 00:00:00", "0000-00-00 00:00:00", "9999-12-31"]),
    json_values,
)
numbers_as_text = st.one_of(
    st.integers().map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["1e999999999", "-1e99999", "0x10", "²", "١٢٣", "9" * 5000, " 42 ", "NaN"]),
)
record_fields: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.integers(min_value=-5, max_value=2**66), numbers_as_text, json_values),
    "status": st.one_of(
        st.sampled_from([*ALL_STATUSES, " Delivered ", "queued_v2", ""]), json_values
    ),
    "type": st.one_of(st.sampled_from([*CHANNELS, "pigeon", None]), json_values),
    "campaign_id": st.one_of(st.integers(), numbers_as_text, json_values),
    "phone": st.one_of(st.integers(), numbers_as_text, json_values),
    "validity": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), json_values),
    "created_at": timestamps,
    "sent_at": timestamps,
    "send_at": timestamps,
    "delivered_at": timestamps,
    "amount": st.one_of(
        st.fixed_dictionaries(
            {
                "value": st.one_of(numbers_as_text, st.floats(), st.integers()),
                "currency": st.text(max_size=4),
            }
        ),
        json_values,
    ),
    "country": st.one_of(st.sampled_from(["UA", " de ", ""]), json_values),
    "sender": json_values,
}
records = st.one_of(
    st.fixed_dictionaries({}, optional=record_fields),
    json_values,
)
pages = st.fixed_dictionaries(
    {"data": st.lists(records, max_size=6)},
    optional={"meta": st.one_of(json_values, st.fixed_dictionaries({"page": json_values}))},
)


def check_page(page: Page) -> None:
    """What the rest of the exporter relies on in a decoded page."""
    assert page.rows == len(page.messages) + page.dropped  # a bad_price record is still used
    assert set(page.rejected) <= {
        "missing_id",
        "bad_id",
        "missing_status",
        "not_an_object",
        "bad_created_at",
        "bad_price",
    }
    assert page.total is None or isinstance(page.total, int)
    for message in page.messages:
        check_message(message)


def check_message(message: Message) -> None:
    """A decoded message fits the store and the exposition."""
    assert isinstance(message.id, int) and 0 < message.id <= SQLITE_MAX_INT
    assert message.status in ALL_STATUSES and message.status.strip()
    assert message.channel in (*CHANNELS, OTHER)
    for moment in (message.created_at, message.sent_at, message.delivered_at):
        assert moment is None or (isinstance(moment, float) and math.isfinite(moment))
    if message.cost_nanos is not None:
        assert isinstance(message.cost_nanos, int) and message.currency
        float(message.cost_nanos)  # exposed as a float: must not overflow
        assert abs(message.cost_nanos) < 10**18  # and summed in the store as an int64 fits
    assert message.validity_hours is None or isinstance(message.validity_hours, int)


def decode_or_reject(body: bytes, tz: Any = UTC) -> Page | None:
    """Decode a body: a Page, or None for a DecodeError; any other exception fails the test."""
    try:
        page = decode_page(body, tz)
    except DecodeError:
        return None
    check_page(page)
    return page


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_crash_the_decoders(body: bytes) -> None:
    decode_or_reject(body)
    for decode in (decode_balance, decode_token):
        with contextlib.suppress(DecodeError):
            decode(body)


@SHAPED
@given(pages, st.sampled_from(ZONES))
def test_fuzz_json_shaped_pages_decode_or_raise_decode_error(page: dict[str, Any], tz: Any) -> None:
    decode_or_reject(msgspec.json.encode(page), tz)


VALID_RECORD = {
    "id": 4419393338,
    "campaign_id": 11,
    "type": "sms",
    "phone": 380972920000,
    "status": "delivered",
    "amount": {"value": "0.0100000", "currency": "eur"},
    "created_at": "2025-03-20 05:11:15",
    "sent_at": "2025-03-20 05:11:16",
    "delivered_at": "2025-03-20 05:11:21",
    "validity": 72,
    "country": "UA",
}


def plausible(over: dict[str, Any]) -> dict[str, Any]:
    """A valid record with some fields changed."""
    return {**VALID_RECORD, **over}


plausible_records = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(min_value=1, max_value=10**6),
        "status": st.sampled_from(["delivered", "sent", "failed", "other", "Delivered"]),
        "country": st.sampled_from(["UA", " pl ", "", None]),
        "sender": st.sampled_from(["Shop", "", None, 5]),
        "validity": st.sampled_from([1, 72, 0, None]),
        "created_at": st.sampled_from(["2025-03-20 05:12:15", "2025-03-20T07:11:15+02:00", None]),
        "amount": st.sampled_from([None, {"value": "0.02", "currency": "uah"}]),
    },
).map(plausible)


@SHAPED
@given(
    st.lists(st.one_of(plausible_records, plausible_records, records), max_size=6),
    st.sampled_from([(), ("country",), ("sender",)]),
)
def test_a_target_reads_the_same_messages_whatever_its_labels(
    rows: list[Any], labels: tuple[str, ...]
) -> None:
    """Reading fewer label fields changes those fields only: not which records are used."""
    body = msgspec.json.encode({"data": rows})
    full = decode_or_reject(body)
    try:
        lean = decode_page(body, UTC, labels)
    except DecodeError:
        assert full is None
        return
    assert full is not None
    check_page(lean)
    unread = {name: None for name in LABEL_DIMENSIONS if name not in labels}
    assert [msgspec.structs.replace(m, **unread) for m in lean.messages] == [
        msgspec.structs.replace(m, **unread) for m in full.messages
    ]
    assert (lean.rows, lean.total, lean.rejected) == (full.rows, full.total, full.rejected)


@FUZZ
@given(
    st.integers(min_value=0, max_value=400),
    st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=4),
)
def test_fuzz_truncated_and_corrupted_pages(cut: int, flips: list[tuple[int, int]]) -> None:
    body = bytearray(
        json.dumps({"data": [VALID_RECORD] * 2, "meta": {"page": {"total": 2}}}).encode()
    )
    for position, byte in flips:
        body[position % len(body)] = byte
    decode_or_reject(bytes(body[: len(body) - cut % len(body)]))


@PROPS
@given(
    st.sampled_from([k for k in record_fields if k not in ("id", "status")]),
    json_values,
)
def test_a_drifting_field_never_costs_the_record(name: str, drift: Any) -> None:
    """Any value of any field other than id and status leaves a usable message."""
    page = decode_or_reject(msgspec.json.encode({"data": [{**VALID_RECORD, name: drift}]}))
    assert page is not None
    if name == "created_at" and not page.messages:  # unreadable: no window could place it
        assert page.rejected == {"bad_created_at": 1}
        return
    [message] = page.messages
    assert message.id == VALID_RECORD["id"] and message.status == "delivered"


@PROPS
@given(st.integers(min_value=SQLITE_MAX_INT + 1, max_value=2**80))
def test_ids_beyond_sqlite_integers_are_rejected(msg_id: int) -> None:
    for wire in (msg_id, str(msg_id)):
        page = decode_or_reject(msgspec.json.encode({"data": [{**VALID_RECORD, "id": wire}]}))
        assert page is not None and page.rejected == {"bad_id": 1}


@pytest.mark.parametrize("value", ["1e999999999", "-1e99999", "1e30", 1e300, "Infinity"])
def test_absurd_prices_are_dropped_not_fatal(value: Any) -> None:
    record = {**VALID_RECORD, "amount": {"value": value, "currency": "EUR"}}
    page = decode_or_reject(msgspec.json.encode({"data": [record]}))
    assert page is not None
    [message] = page.messages
    assert message.cost_nanos is None and message.currency is None


POISON = {
    "id as a superscript digit": {"id": "\u00b2"},
    "id of 5000 digits": {"id": "9" * 5000},
    "id beyond int64": {"id": 2**63},
    "price of 1e999999999": {"amount": {"value": "1e999999999", "currency": "EUR"}},
    "price of 1e99999": {"amount": {"value": "1e99999", "currency": "EUR"}},
    "validity of 400 digits": {"validity": 10**400},
    "negative validity": {"validity": -5},
}


@pytest.mark.parametrize("override", POISON.values(), ids=list(POISON))
def test_a_poison_record_never_fails_the_poll(override: dict[str, Any]) -> None:
    """One absurd record is rejected or tamed; the tracker stores and exposes the rest."""
    body = msgspec.json.encode(
        {"data": [{**VALID_RECORD, **override}, {**VALID_RECORD, "id": 7, "status": "sent"}]}
    )
    page = decode_or_reject(body)
    assert page is not None and 7 in {m.id for m in page.messages}
    tracker = new_tracker(StateStore(MEMORY), count_existing=True)
    now = 1_742_447_600.0
    tracker.apply(page.messages, now)
    snap = tracker.snapshot(now)
    assert snap.tracked == len(page.messages) and snap.pending == 1
    assert all(math.isfinite(float(v)) for v in snap.cost_nanos.values())


def test_invalid_utf8_inside_a_string_is_a_decode_error() -> None:
    body = json.dumps({"data": [VALID_RECORD]}).encode().replace(b'"sms"', b'"\x80ms"')
    with pytest.raises(DecodeError):
        decode_page(body, UTC)
    with pytest.raises(DecodeError):
        decode_balance(b'{"data": {"balance": 1, "currency": "\x80"}}')
    with pytest.raises(DecodeError):
        decode_token(b'{"bearer": "\x80"}')


# --- the tracker ------------------------------------------------------------------------------

NOW = 1_780_000_000.0
WINDOW = 3600.0
STEP = 60.0


@dataclass(frozen=True)
class Seen:
    """One observation of a message by a poll."""

    id: int
    status: Status
    channel: Channel
    age: int  # seconds before the poll's start that it was created, or -1 for no created_at
    cost: int | None

    def message(self, created: float) -> Message:
        """As the decoder would hand it over."""
        delivered = self.status in ("delivered", "read")
        return Message(
            id=self.id,
            status=self.status,
            channel=self.channel,
            created_at=None if self.age < 0 else Epoch(created),
            sent_at=Epoch(created + 1) if self.age >= 0 else None,
            delivered_at=Epoch(created + 5) if delivered and self.age >= 0 else None,
            amount=price(self.cost, "EUR"),
        )


observations = st.builds(
    Seen,
    id=st.integers(min_value=1, max_value=25),
    status=st.sampled_from(ALL_STATUSES),
    channel=st.sampled_from([*CHANNELS, OTHER]),
    age=st.integers(min_value=-1, max_value=1800),
    cost=st.none() | st.integers(min_value=0, max_value=10**8),
)


@dataclass(frozen=True)
class Poll:
    """One step: a poll's reads, or a poll that fails in the store, or a restart."""

    seen: list[Seen]
    checked: list[int]
    kind: str  # "ok", "fail" (the store fails mid-transaction) or "restart"


polls = st.builds(
    Poll,
    seen=st.lists(observations, max_size=12),
    checked=st.lists(st.integers(min_value=1, max_value=30), max_size=5),
    kind=st.sampled_from(["ok", "ok", "ok", "fail", "restart"]),
)


@dataclass
class Model:
    """The counting contract, written the plain way."""

    count_existing: bool
    cold: bool = True
    created: dict[int, float] = field(default_factory=dict)
    channel: dict[int, str] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    baseline: set[int] = field(default_factory=set)
    counted: Counter[tuple[str, str]] = field(default_factory=Counter)
    counted_ids: set[int] = field(default_factory=set)
    submitted: Counter[str] = field(default_factory=Counter)
    cost: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency: Counter[str] = field(default_factory=Counter)

    def apply(self, seen: Iterable[Seen], now: float) -> None:
        """Fold one poll's observations in (the last one of an id wins within a poll)."""
        for obs in {o.id: o for o in seen}.values():
            if obs.id not in self.status:
                self.created[obs.id] = now if obs.age < 0 else now - obs.age
                self.channel[obs.id] = obs.channel
                self.status[obs.id] = obs.status
                if not self.cold:
                    self.submitted[obs.channel] += 1
                if is_final(obs.status):
                    if self.cold and not self.count_existing:
                        self.baseline.add(obs.id)
                    else:
                        self._count(obs)
            elif not is_final(self.status[obs.id]):
                self.status[obs.id] = obs.status
                if is_final(obs.status):
                    self._count(obs)
            elif is_final(obs.status) and obs.status != self.status[obs.id]:
                if obs.id in self.counted_ids:
                    self.changes[(self.status[obs.id], obs.status)] += 1
                self.status[obs.id] = obs.status
        self.cold = False

    def _count(self, obs: Seen) -> None:
        """Count a message at its first final status."""
        channel = self.channel[obs.id]
        assert obs.id not in self.counted_ids
        self.counted_ids.add(obs.id)
        self.counted[(channel, obs.status)] += 1
        if obs.cost is not None:
            self.cost[(channel, obs.status, "EUR")] += obs.cost
        if obs.status in ("delivered", "read") and obs.age >= 0:
            self.latency[channel] += 1

    def window(self) -> Counter[tuple[str, str]]:
        """Messages by channel and last known status (all stay inside the window)."""
        return Counter((self.channel[i], s) for i, s in self.status.items())


def new_tracker(store: StateStore, count_existing: bool) -> TargetTracker:
    """A one-hour tracker re-checking every poll, over ``store``."""
    return TargetTracker(
        store,
        TargetConfig("t", WINDOW, None),
        poll=PollConfig(recheck=(RecheckTier(30 * 86400.0, 0.001),)),
        metrics=MetricsConfig((1, 10, 100), (1, 10)),
        count_existing_on_start=count_existing,
    )


def refuse_writes(store: StateStore, refuse: bool) -> None:
    """Make the store's connection refuse writes (SQLITE_READONLY), or accept them again."""
    store._db.execute(f"PRAGMA query_only = {'ON' if refuse else 'OFF'}")


def counters_of(snap: TargetSnapshot) -> dict[str, dict[Any, float]]:
    """Every counter of a snapshot, flattened."""
    return {
        "messages": dict(snap.messages),
        "submitted": dict(snap.submitted),
        "cost": dict(snap.cost_nanos),
        "changes": dict(snap.changes),
        "latency": {k: h.count for k, h in snap.delivery_latency.items()},
        "send_delay": {k: h.count for k, h in snap.send_delay.items()},
        "rejected": dict(snap.rejected),
    }


def view(snap: TargetSnapshot) -> tuple[Any, ...]:
    """What a snapshot exposes, comparable with ``==``."""
    return (counters_of(snap), dict(snap.window), snap.tracked, snap.pending)


def nonzero(counts: dict[Any, float]) -> dict[Any, float]:
    """Only the keys with a value."""
    return {k: v for k, v in counts.items() if v}


@PROPS
@given(st.lists(polls, min_size=1, max_size=10), st.booleans())
def test_any_sequence_of_observations_keeps_the_counting_contract(
    steps: list[Poll], count_existing: bool
) -> None:
    store = StateStore(MEMORY)
    tracker = new_tracker(store, count_existing)
    model = Model(count_existing)
    before = counters_of(tracker.snapshot(NOW))
    for index, step in enumerate(steps):
        now = NOW + STEP * index
        if step.kind == "restart":
            tracker = new_tracker(store, count_existing)
        elif step.kind == "fail":
            saved = view(tracker.snapshot(now))
            refuse_writes(store, True)
            with pytest.raises(sqlite3.OperationalError):
                tracker.apply([s.message(now - s.age) for s in step.seen], now)
            refuse_writes(store, False)
            assert view(tracker.snapshot(now)) == saved  # a failed poll changes nothing
        else:
            tracker.apply([s.message(now - s.age) for s in step.seen], now, checked=step.checked)
            model.apply(step.seen, now)
        snap = tracker.snapshot(now)
        after = counters_of(snap)
        for name, counts in before.items():  # counters never go down
            for key, count in counts.items():
                assert after[name].get(key, 0) >= count, (name, key)
        before = after
        # each message counted at most once, and exactly as the contract says
        assert nonzero(after["messages"]) == dict(model.counted)
        assert sum(after["messages"].values()) <= len(model.status)
        assert nonzero(after["submitted"]) == dict(model.submitted)
        assert nonzero(after["cost"]) == nonzero(dict(model.cost))
        assert nonzero(after["changes"]) == dict(model.changes)
        assert nonzero(after["latency"]) == dict(model.latency)
        # the window gauges add up to the messages tracked
        assert sum(snap.window.values()) == snap.tracked == len(model.status)
        assert nonzero(dict(snap.window)) == dict(model.window())
        pending = sum(1 for s in model.status.values() if not is_final(s))
        assert snap.pending == pending
    store.close()


@PROPS
@given(st.lists(st.lists(observations, max_size=10), min_size=2, max_size=6))
def test_showing_a_poll_twice_changes_nothing(steps: list[list[Seen]]) -> None:
    """Reads repeated (a retried poll, duplicate rows, overlapping reads) never count twice."""
    once, twice = new_tracker(StateStore(MEMORY), False), new_tracker(StateStore(MEMORY), False)
    for index, seen in enumerate(steps):
        now = NOW + STEP * index
        batch = [s.message(now - s.age) for s in seen]
        once.apply(batch, now)
        twice.apply(batch + batch, now)
        twice.apply(batch, now)
        assert view(twice.snapshot(now)) == view(once.snapshot(now))
