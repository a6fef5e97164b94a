"""Decoding quirks of the BSG API: every documented variant in, the same typed record out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import msgspec
import pytest

from exporter.bsg.caches import CACHE_SIZE, Caches, Stamps, parse_price_nanos
from exporter.bsg.decode import (
    Decoder,
    PageDecoder,
    _decode_page_tolerantly,
    decode_balance,
    decode_page,
    decode_token,
    format_api_time,
    nested_too_deeply,
)
from exporter.bsg.wire import (
    Channel,
    DecodeError,
    Message,
    Status,
    normalize_channel,
    normalize_status,
)
from exporter.model import ALL_STATUSES, CHANNELS, LABEL_DIMENSIONS, OTHER

SAMPLE = {  # the provider's own sample from openapi.yaml
    "id": 4419393338,
    "campaign_id": 58982653,
    "reference_id": None,
    "type": "sms",
    "source": "web",
    "text": "Test",
    "phone": 380981171206,
    "validity": 72,
    "status": "delivered",
    "amount": {"value": "0.0100000", "currency": "UAH"},
    "sender": "testsms",
    "created_at": "2025-03-20 05:11:15",
    "sent_at": "2025-03-20 05:11:16",
    "delivered_at": "2025-03-20 05:11:21",
    "country": "UA",
    "parts": 1,
}
T0 = datetime(2025, 3, 20, 5, 11, 15, tzinfo=UTC).timestamp()


def page(*records: Any, total: int | None = None) -> bytes:
    """A page body around ``records``."""
    meta = {"page": {"total": len(records) if total is None else total, "offset": 0, "limit": 500}}
    return json.dumps({"data": list(records), "meta": meta}).encode()


def test_provider_sample_decodes_to_epoch_seconds_and_nanos() -> None:
    decoded = decode_page(page(SAMPLE), UTC)
    assert decoded.rows == 1 and decoded.total == 1 and decoded.rejected == {}
    [message] = decoded.messages
    assert message.id == 4419393338  # above 2**32
    assert message.status == "delivered" and message.channel == "sms"
    assert message.campaign_id == 58982653
    assert (message.created_at, message.sent_at, message.delivered_at) == (T0, T0 + 1, T0 + 6)
    assert message.cost_nanos == 10_000_000 and message.currency == "UAH"
    assert message.country == "UA" and message.validity_hours == 72


def test_send_at_is_read_as_sent_at() -> None:
    record = {**SAMPLE, "send_at": SAMPLE["sent_at"]}
    del record["sent_at"]
    [message] = decode_page(page(record), UTC).messages
    assert message.sent_at == T0 + 1


def test_phone_as_string_and_null_reference_are_accepted() -> None:
    [message] = decode_page(page({**SAMPLE, "phone": "380981171206"}), UTC).messages
    assert message.id == SAMPLE["id"]


def test_iso_timestamps_with_offsets() -> None:
    record = {
        **SAMPLE,
        "created_at": "2025-03-20T07:11:15+02:00",
        "sent_at": "2025-03-20T05:11:16.000+00:00",
        "delivered_at": "2025-03-20T05:11:21Z",
    }
    [message] = decode_page(page(record), UTC).messages
    assert (message.created_at, message.sent_at, message.delivered_at) == (T0, T0 + 1, T0 + 6)


def test_zone_less_timestamps_use_the_configured_zone() -> None:
    [message] = decode_page(page(SAMPLE), ZoneInfo("Europe/Kyiv")).messages
    assert message.created_at == T0 - 2 * 3600  # Kyiv is UTC+2 in March


@pytest.mark.parametrize(
    "amount", [None, {"value": None, "currency": "UAH"}, {}, {"value": "0", "currency": " "}]
)
def test_missing_or_null_amount(amount: Any) -> None:
    record = {**SAMPLE, "amount": amount}
    [message] = decode_page(page(record), UTC).messages
    assert message.cost_nanos is None and message.currency is None
    record.pop("amount")
    [message] = decode_page(page(record), UTC).messages
    assert message.cost_nanos is None


def test_unknown_status_and_channel_become_other() -> None:
    [message] = decode_page(page({**SAMPLE, "status": "queued_v2", "type": "pigeon"}), UTC).messages
    assert message.status == "other" and message.channel == "other"
    assert normalize_status(" Delivered ") == "delivered"
    assert normalize_channel(None) == "sms"


def test_unusable_records_are_skipped_and_counted() -> None:
    no_id = {k: v for k, v in SAMPLE.items() if k != "id"}
    no_status = {**SAMPLE, "id": 2, "status": None}
    bad_id = {**SAMPLE, "id": "abc"}
    decoded = decode_page(page(no_id, no_status, bad_id, "junk", {**SAMPLE, "id": 3}), UTC)
    assert [m.id for m in decoded.messages] == [3]
    assert decoded.rejected == {
        "missing_id": 1,
        "missing_status": 1,
        "bad_id": 1,
        "not_an_object": 1,
    }
    assert decoded.rows == 5


def test_a_field_of_the_wrong_type_costs_only_that_field() -> None:
    record = {**SAMPLE, "validity": "many", "country": 7, "id": "17", "campaign_id": "5"}
    [message] = decode_page(page(record), UTC).messages
    assert message.id == 17 and message.campaign_id == 5
    assert message.validity_hours is None
    assert message.country == "UA"  # the bad field is dropped; derived from the number instead
    assert message.status == "delivered"


def test_unreadable_timestamp_becomes_none() -> None:
    [message] = decode_page(page({**SAMPLE, "delivered_at": "soon"}), UTC).messages
    assert message.delivered_at is None and message.created_at == T0


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"data": [', b"[]", b'{"meta": {}}', b'{"data": 5}', b"<html>502</html>"],
)
def test_bad_envelopes_raise(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_page(body, UTC)


def test_missing_meta_gives_no_total() -> None:
    decoded = decode_page(json.dumps({"data": [SAMPLE]}).encode(), UTC)
    assert decoded.total is None and len(decoded.messages) == 1


@pytest.mark.parametrize(
    ("value", "nanos"),
    [
        ("0.0100000", 10_000_000),
        ("0.10", 100_000_000),
        ("12", 12_000_000_000),
        (0.0079, 7_900_000),
        (3, 3_000_000_000),
        ("-0.5", -500_000_000),
        ("abc", None),
        ("NaN", None),
        (float("inf"), None),
    ],
)
def test_price_parsing_is_exact(value: Any, nanos: int | None) -> None:
    assert parse_price_nanos(value) == nanos


def test_a_million_prices_sum_exactly() -> None:
    total = sum(parse_price_nanos("0.0100000") or 0 for _ in range(1_000_000))
    assert total == 10_000 * 10**9  # float addition would be off in the last digits


def test_the_timestamp_cache_parses_once_and_handles_none() -> None:
    parse = Caches(UTC).timestamp
    assert parse(None) is None
    assert parse("2025-03-20 05:11:15") == parse("2025-03-20 05:11:15") == T0


def test_format_api_time_round_trips_in_the_zone() -> None:
    kyiv = ZoneInfo("Europe/Kyiv")
    assert format_api_time(T0, UTC) == "2025-03-20 05:11:15"
    assert format_api_time(T0, kyiv) == "2025-03-20 07:11:15"


def test_balance_and_token() -> None:
    balance = decode_balance(b'{"data": {"balance": -50.25, "currency": "usd", "credit": 125}}')
    assert (balance.balance, balance.credit, balance.currency) == (-50.25, 125.0, "USD")
    with pytest.raises(DecodeError):
        decode_balance(b'{"data": {"currency": "USD"}}')
    assert decode_token(b'{"bearer": "abc.def.ghi"}') == "abc.def.ghi"
    with pytest.raises(DecodeError):
        decode_token(b'{"token": "x"}')


@pytest.mark.parametrize(
    ("phone", "country"),
    [(380981171206, "UA"), ("447700900123", "GB"), ("+4915112345678", "DE"), (12025550123, "US"),
     ("77011234567", "KZ"), (79161234567, "RU"), ("999", None), ("abc", None), (None, None)],
)  # fmt: skip
def test_country_is_derived_from_the_number_when_absent(phone: Any, country: str | None) -> None:
    record = {**SAMPLE, "phone": phone}
    del record["country"]
    [message] = decode_page(page(record), UTC).messages
    assert message.country == country
    assert "phone" not in Message.__struct_fields__  # the number itself is never kept


def test_the_api_country_wins_and_sender_is_kept() -> None:
    [message] = decode_page(page({**SAMPLE, "country": "pl", "sender": "Shop"}), UTC).messages
    assert message.country == "PL" and message.sender == "Shop"


def test_the_vocabulary_types_are_the_vocabularies() -> None:
    assert set(get_args(Status)) == set(ALL_STATUSES)
    assert set(get_args(Channel)) == {*CHANNELS, OTHER}


ODD = [  # each sends its page the tolerant way, which must read it as documented
    {"status": "Delivered"},
    {"type": None},
    {"id": " 17 "},
    {"country": ""},
    {"amount": {"value": ["0.01"], "currency": "UAH"}},
    {"validity": 0},
    {"send_at": "2025-03-20 05:11:16", "sent_at": None},
    {"campaign_id": "c-5"},
]


@pytest.mark.parametrize("odd", ODD, ids=lambda odd: next(iter(odd)))
def test_an_odd_record_costs_its_page_the_fast_path_not_its_fields(odd: dict[str, Any]) -> None:
    clean = {**SAMPLE, "id": 2}
    body = page(clean, {**SAMPLE, **odd})
    assert fast_path(body) is None
    first, second = decode_page(body, UTC).messages
    assert first == decode_page(page(clean), UTC).messages[0]  # the clean one, unchanged
    assert second.id in (SAMPLE["id"], 17) and second.channel == "sms"
    assert second.status == "delivered" and second.country == "UA"
    assert second.sent_at == T0 + 1 and second.created_at == T0


def fast_path(body: bytes) -> list[Message] | None:
    """The messages of the fast path, or None when it gives the page up."""
    try:
        messages = Decoder(UTC).fast().decode(body).data
    except msgspec.ValidationError:
        return None
    return None if any(m.country is None for m in messages) else messages


def test_the_fast_path_and_the_tolerant_path_agree_on_ordinary_pages() -> None:
    records = [
        {**SAMPLE, "id": 1},
        {**SAMPLE, "id": 2, "status": "sent", "delivered_at": None, "amount": None},
        {**SAMPLE, "id": "3", "type": "viber", "validity": None, "campaign_id": "9"},
        {**SAMPLE, "id": 4, "created_at": "2025-03-20T07:11:15+02:00", "sender": None},
    ]
    body = page(*records)
    fast = decode_page(body, UTC)
    assert fast.messages == fast_path(body)  # it took the fast path
    assert fast.messages == _decode_page_tolerantly(body, Caches(UTC)).messages
    assert [m.cost_nanos for m in fast.messages] == [10_000_000, None, 10_000_000, 10_000_000]


def test_prices_and_countries_are_shared_and_normalised_on_the_fast_path() -> None:
    body = page({**SAMPLE, "id": 1, "country": " pl"}, {**SAMPLE, "id": 2, "country": "pl"})
    first, second = fast_path(body) or []
    assert first.country == second.country == "PL" and first.country is second.country
    assert first.amount is second.amount  # one object for every equal amount
    assert (first.cost_nanos, first.currency) == (10_000_000, "UAH")
    odd = page({**SAMPLE, "amount": {"value": "abc", "currency": "uah"}})
    [message] = fast_path(odd) or []
    assert message.cost_nanos is None and message.currency is None  # unreadable: no price


def test_each_decoder_owns_its_caches_and_shares_objects_from_page_to_page() -> None:
    first, other = Decoder(UTC), Decoder(UTC)
    [a] = first.page(page({**SAMPLE, "id": 1})).messages
    [b] = first.page(page({**SAMPLE, "id": 2})).messages
    [c] = other.page(page({**SAMPLE, "id": 3})).messages
    assert a.amount is b.amount and a.country is b.country  # one client: shared across pages
    assert c.amount == a.amount and c.amount is not a.amount  # nothing held process-wide
    assert len(other.caches.prices) == len(first.caches.prices) == 2  # None and the one price


def test_the_fast_path_reads_right_across_its_caches_filling_up() -> None:
    decoder = PageDecoder(Caches(UTC), frozenset(LABEL_DIMENSIONS))
    stamps = [format_api_time(T0 + i, UTC) for i in range(2 * CACHE_SIZE + 7)]
    for start in range(0, len(stamps), 500):
        indices = range(start, min(start + 500, len(stamps)))
        records = [
            {**SAMPLE, "id": i + 1, "created_at": stamps[i], "delivered_at": None} for i in indices
        ]
        messages = decoder.decode(page(*records)).data
        assert [m.created_at for m in messages] == [T0 + i for i in indices]
        assert {m.delivered_at for m in messages} == {None}  # None survives each clearing
    assert len(decoder.caches.stamps) <= CACHE_SIZE


@pytest.mark.parametrize("labels", [(), ("country",), ("sender",), ("country", "sender")])
def test_the_fast_path_reads_the_label_fields_of_the_target_only(labels: tuple[str, ...]) -> None:
    body = page({**SAMPLE, "id": 1, "sender": "Shop"}, {**SAMPLE, "id": 2, "sender": "Shop"})
    everything = decode_page(body, UTC).messages
    messages = decode_page(body, UTC, labels).messages
    assert [m.country for m in messages] == ["UA" if "country" in labels else None] * 2
    assert [m.sender for m in messages] == ["Shop" if "sender" in labels else None] * 2
    unlabelled = {"country": None, "sender": None}
    assert [msgspec.structs.replace(m, **unlabelled) for m in messages] == [
        msgspec.structs.replace(m, **unlabelled) for m in everything
    ]
    assert everything[0].sender is everything[1].sender  # shared, like countries


def test_a_missing_country_costs_the_fast_path_only_when_it_is_a_label() -> None:
    record = {**SAMPLE}
    del record["country"]
    [unlabelled] = decode_page(page(record), UTC, ("sender",)).messages
    assert unlabelled.country is None and unlabelled.sender == "testsms"
    assert Decoder(UTC).fast(("sender",)).decode(page(record)).data == [unlabelled]
    [labelled] = decode_page(page(record), UTC, ("country",)).messages
    assert labelled.country == "UA"  # derived from the number, the tolerant way


@pytest.mark.parametrize("zone", ["UTC", "Europe/Kyiv", "America/St_Johns", "Australia/Lord_Howe"])
def test_stamps_read_a_minute_at_a_time_agree_with_a_whole_parse(zone: str) -> None:
    tz = ZoneInfo(zone)
    step = 7919.0  # seconds: a spread over 2025
    moments = [datetime(2025, 1, 1, tzinfo=UTC).timestamp() + step * i for i in range(4000)]
    changes = [
        datetime.fromtimestamp(m, tz).replace(tzinfo=None)
        for m in moments
        if tz.utcoffset(datetime.fromtimestamp(m, UTC))
        != tz.utcoffset(datetime.fromtimestamp(m + step, UTC))
    ]
    # Every wall-clock minute (with varying seconds) around each offset change: the hour
    # skipped, the hour repeated.
    walls = [c + timedelta(minutes=k, seconds=k % 60) for c in changes for k in range(-300, 300)]
    texts = {datetime.fromtimestamp(m, tz).strftime("%Y-%m-%d %H:%M:%S") for m in moments}
    texts |= {wall.strftime("%Y-%m-%d %H:%M:%S") for wall in walls}
    texts |= {f"2025-{month:02d}-15T12:34:56" for month in range(1, 13)}
    stamps = Stamps(tz)
    for text in sorted(texts):
        whole = datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()
        assert stamps[text] == whole, text
    assert changes or zone == "UTC"


@pytest.mark.parametrize(
    "text", ["2025-03-20 05:11:60", "2025-03-20 05:11:5x", "2025-02-30 05:11:15"]
)
def test_stamps_refuse_what_a_whole_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        Stamps(UTC)[text]


ODD_PAGE = {**SAMPLE, "id": 99, "status": "Delivered"}  # sends its page the tolerant way


@pytest.mark.parametrize(
    "value", ["-0.0100000", -1, "NaN", "Infinity", "1000000.5", 10**400, "abc", ["0.01"]]
)
@pytest.mark.parametrize("tolerant", [False, True], ids=["fast", "tolerant"])
def test_a_price_that_is_not_one_keeps_its_message_and_is_counted(
    value: Any, tolerant: bool
) -> None:
    record = {**SAMPLE, "amount": {"value": value, "currency": "UAH"}}
    body = page(record, ODD_PAGE) if tolerant else page(record)
    decoded = decode_page(body, UTC)
    message = decoded.messages[0]
    assert message.id == SAMPLE["id"] and message.status == "delivered"  # still counted
    assert message.cost_nanos is None and message.currency is None  # never a negative cost
    assert decoded.rejected == {"bad_price": 1}
    assert decoded.dropped == 0 and decoded.rows == len(decoded.messages)


def test_a_price_without_a_currency_is_counted_and_an_unknown_one_is_not() -> None:
    no_currency = {**SAMPLE, "amount": {"value": "0.01", "currency": None}}
    unknown = {**SAMPLE, "id": 2, "amount": {"value": None, "currency": "UAH"}}
    decoded = decode_page(page(no_currency, unknown), UTC)
    assert len(decoded.messages) == 2 and decoded.rejected == {"bad_price": 1}
    dearest = decode_page(page({**SAMPLE, "amount": {"value": "1e6", "currency": "X"}}), UTC)
    assert dearest.messages[0].cost_nanos == 10**15 and not dearest.rejected  # the bound


@pytest.mark.parametrize(
    "created_at", ["1970-01-01 00:00:00", "1999-12-31T23:59:59Z", "soon", "", 17000000]
)
@pytest.mark.parametrize("tolerant", [False, True], ids=["fast", "tolerant"])
def test_a_created_at_before_2000_or_unreadable_drops_the_record_and_is_counted(
    created_at: Any, tolerant: bool
) -> None:
    body = page(*[{**SAMPLE, "id": 5, "created_at": created_at}, *([ODD_PAGE] if tolerant else [])])
    decoded = decode_page(body, UTC)
    assert [m.id for m in decoded.messages] == ([99] if tolerant else [])
    assert decoded.rejected == {"bad_created_at": 1} and decoded.dropped == 1


def test_a_missing_created_at_is_not_a_bad_one() -> None:
    [message] = decode_page(page({**SAMPLE, "created_at": None}), UTC).messages
    assert message.created_at is None  # the tracker takes it as seen now


def test_nesting_depth_is_measured_outside_strings() -> None:
    assert not nested_too_deeply(page(SAMPLE))
    assert not nested_too_deeply(b"[" * 64 + b"]" * 64)
    assert nested_too_deeply(b"[" * 65 + b"]" * 65)
    assert nested_too_deeply(b'{"a":' * 65 + b"1" + b"}" * 65)
    assert nested_too_deeply(b"[" * 100_000)  # cut short: a decoder would still descend
    brackets = json.dumps({"text": "[[[{{{" * 50 + '"\\' + "]]]" * 50}).encode()
    assert not nested_too_deeply(brackets)  # inside a string they are text
    assert not nested_too_deeply(json.dumps([["x]"] * 100] * 2).encode())
    escaped = json.dumps({"a": ['\\"[' * 40]}).encode()
    assert not nested_too_deeply(escaped)
    deep_after_text = json.dumps({"t": "]" * 100}).encode()[:-1] + b"," + b'"x":' + b"[" * 70
    assert nested_too_deeply(deep_after_text + b"]" * 70 + b"}")
    assert not nested_too_deeply(b"")


def test_the_status_and_channel_types_spell_the_vocabulary() -> None:
    # The decoder checks statuses and channels by these Literal types, which must be written
    # out; they may not drift from exporter.model.
    assert sorted(get_args(Status)) == sorted(ALL_STATUSES)
    assert sorted(get_args(Channel)) == sorted((*CHANNELS, OTHER))
