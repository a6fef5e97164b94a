"""Typed records of the BSG One API and their tolerant decoding.

Owns the wire shapes (msgspec structs), the status and channel vocabularies, and the parsing of
timestamps and prices. The real API disagrees with its own documents (``sent_at`` or ``send_at``,
``phone`` as int or string, zone-less or ISO 8601 timestamps, ``amount`` missing), so decoding
accepts every documented variant and rejects only records it cannot make sense of.

Must not import: prometheus_client, httpx, or any other exporter module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from exporter.bsg.countries import country_of

FINAL_STATUSES: tuple[str, ...] = (
    "delivered",
    "read",
    "expired",
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
CHANNELS: tuple[str, ...] = ("sms", "viber", "hlr", "rcs", "whatsapp")
DELIVERED_STATUSES = frozenset({"delivered", "read"})

_FINAL = frozenset(FINAL_STATUSES)
_KNOWN_STATUSES = frozenset(PENDING_STATUSES) | _FINAL
_KNOWN_CHANNELS = frozenset(CHANNELS)
NANOS = 1_000_000_000
"""Prices are summed as integer nano-units so that millions of additions stay exact."""
MAX_ID = 2**63 - 1
"""SQLite's largest INTEGER: a larger id could not be stored, and would fail every poll."""
_MAX_PRICE_DIGITS = 9
"""A price of a billion units or more is not a price: dropped like an unreadable one (it would
overflow the exposition's float, and ``1e999999`` takes minutes to turn into an integer)."""
_MAX_VALIDITY_HOURS = 24 * 366 * 10
"""A validity beyond ten years is not one (``hours * 3600.0`` of a 400-digit int overflows)."""


def is_final(status: str) -> bool:
    """Tell whether a normalised status is final."""
    return status in _FINAL


def normalize_status(raw: str) -> str:
    """Map a status string onto the documented vocabulary, or ``other``."""
    status = raw.strip().lower()
    return status if status in _KNOWN_STATUSES else OTHER


def normalize_channel(raw: str | None) -> str:
    """Map a message ``type`` onto the documented channels, or ``other``."""
    if raw is None:
        return "sms"  # the documentation page calls ``type`` "Campaign type: sms"
    channel = raw.strip().lower()
    return channel if channel in _KNOWN_CHANNELS else OTHER


class WireAmount(msgspec.Struct):
    """``amount`` as sent: value is documented as a decimal string, accepted as a number too."""

    value: str | int | float | None = None
    currency: str | None = None


class WireMessage(msgspec.Struct):
    """One row of ``GET /api/messages`` as sent; only the fields the exporter uses."""

    id: int | str | None = None
    status: str | None = None
    type: str | None = None
    campaign_id: int | str | None = None
    created_at: str | None = None
    sent_at: str | None = None
    send_at: str | None = None  # the documentation page's name for sent_at
    delivered_at: str | None = None
    amount: WireAmount | None = None
    validity: int | None = None
    country: str | None = None
    sender: str | None = None
    phone: int | str | None = None  # only read to derive a missing country, never kept


class WirePageMeta(msgspec.Struct):
    """``meta.page`` of a list answer."""

    total: int | None = None
    offset: int | None = None
    limit: int | None = None


class WireMeta(msgspec.Struct):
    """``meta`` of a list answer."""

    page: WirePageMeta | None = None


class WirePage(msgspec.Struct):
    """A whole ``GET /api/messages`` answer, decoded in one go on the fast path."""

    data: list[WireMessage]
    meta: WireMeta | None = None


class WireBalanceData(msgspec.Struct):
    """``data`` of ``GET /api/accounts/balance``."""

    balance: float | int | str | None = None
    currency: str | None = None
    credit: float | int | str | None = None


class WireBalance(msgspec.Struct):
    """A whole balance answer."""

    data: WireBalanceData


class WireToken(msgspec.Struct):
    """The answer of login and refresh."""

    bearer: str


class Message(msgspec.Struct, frozen=True, gc=False):
    """A message as the exporter understands it: normalised labels, epoch seconds, nano prices."""

    id: int
    status: str
    channel: str
    campaign_id: int | None = None
    created_at: float | None = None
    sent_at: float | None = None
    delivered_at: float | None = None
    cost_nanos: int | None = None
    currency: str | None = None
    validity_hours: int | None = None
    country: str | None = None
    sender: str | None = None


@dataclass(slots=True)
class Page:
    """One decoded page: the usable messages, what was rejected and why, and the paging meta."""

    messages: list[Message]
    rows: int
    total: int | None
    rejected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Balance:
    """The account balance and credit limit, in the account currency."""

    balance: float
    credit: float | None
    currency: str


class DecodeError(ValueError):
    """An answer whose body is not the JSON shape the API documents."""


_PAGE_DECODER = msgspec.json.Decoder(WirePage)
_BALANCE_DECODER = msgspec.json.Decoder(WireBalance)
_TOKEN_DECODER = msgspec.json.Decoder(WireToken)


def decode_page(body: bytes, tz: tzinfo) -> Page:
    """Decode a ``GET /api/messages`` body; bad records are counted, a bad envelope raises."""
    try:
        wire = _PAGE_DECODER.decode(body)
    except msgspec.ValidationError:
        return _decode_page_slowly(body, tz)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec checks UTF-8 as it reads each string: a bad byte inside one raises
        # UnicodeDecodeError, which must be a bad answer (retried), not a crash of the poll.
        raise DecodeError(f"malformed JSON: {exc}") from None
    page = Page(messages=[], rows=len(wire.data), total=_page_total(wire.meta))
    _convert_rows(wire.data, tz, page)
    return page


def _decode_page_slowly(body: bytes, tz: tzinfo) -> Page:
    """Salvage a page whose records do not all fit the wire types, one record at a time."""
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # pragma: no cover - as above
        raise DecodeError(f"malformed JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DecodeError("answer has no 'data' list")
    try:
        meta = msgspec.convert(raw.get("meta"), WireMeta | None, strict=False)
    except msgspec.ValidationError:
        meta = None
    rows: list[Any] = raw["data"]
    page = Page(messages=[], rows=len(rows), total=_page_total(meta))
    wires: list[WireMessage] = []
    for item in rows:
        wire = _salvage_record(item)
        if isinstance(wire, str):
            _reject(page, wire)
        else:
            wires.append(wire)
    _convert_rows(wires, tz, page)
    return page


def _salvage_record(item: Any) -> WireMessage | str:
    """Convert one loose record, dropping fields of the wrong type; a reason string on failure."""
    if not isinstance(item, dict):
        return "not_an_object"
    try:
        return msgspec.convert(item, WireMessage, strict=False)
    except msgspec.ValidationError:
        pass
    # Keep what fits: a wrong type in a field the exporter can live without must not cost the
    # whole record (schema drift hits one field at a time).
    kept: dict[str, Any] = {}
    for name in WireMessage.__struct_fields__:
        if name not in item:
            continue
        try:
            msgspec.convert({name: item[name]}, WireMessage, strict=False)
        except msgspec.ValidationError:
            continue
        kept[name] = item[name]
    return msgspec.convert(kept, WireMessage, strict=False)


def _page_total(meta: WireMeta | None) -> int | None:
    """``meta.page.total`` when the answer carries it."""
    if meta is None or meta.page is None:
        return None
    return meta.page.total


def _reject(page: Page, reason: str) -> None:
    """Count one unusable record."""
    page.rejected[reason] = page.rejected.get(reason, 0) + 1


def _convert_rows(wires: Iterable[WireMessage], tz: tzinfo, page: Page) -> None:
    """Turn wire rows into messages, counting the ones that cannot be used.

    The ordinary row (an int id, a documented status and type in lower case, a price and
    country seen before) takes a fast path that does what :func:`to_message` does with dict
    lookups instead of calls: they were 40% of the exporter's ingest time (benchmarks/ingest.py).
    Any other row goes through :func:`to_message` itself.
    """
    parse = TimestampParser(tz)
    stamps = parse.cache
    append = page.messages.append
    statuses, channels, prices, countries = _STATUS_OF, _CHANNEL_OF, _PRICES, _COUNTRIES
    for wire in wires:
        msg_id, status, channel = wire.id, statuses.get(wire.status), channels.get(wire.type)
        if type(msg_id) is not int or status is None or channel is None or not 0 < msg_id <= MAX_ID:
            message = to_message(wire, parse)
            if isinstance(message, str):
                _reject(page, message)
            else:
                append(message)
            continue
        amount = wire.amount
        if amount is None:
            price = _NO_PRICE
        else:
            key = (amount.value, amount.currency)
            cached_price = prices.get(key)
            if cached_price is None:
                cached_price = _price(amount)
                # Only text values: True == 1 as a dict key, but a bool is no price.
                if type(amount.value) is str and len(prices) < _CACHE_SIZE:
                    prices[key] = cached_price
            price = cached_price
        country = wire.country
        if country:
            code = countries.get(country)
            if code is None:
                code = country.strip().upper()
                if len(countries) < _CACHE_SIZE:
                    countries[country] = code
        else:
            code = country_of(wire.phone)
        campaign = wire.campaign_id
        created_text, done_text = wire.created_at, wire.delivered_at
        sent_text = wire.sent_at if wire.sent_at is not None else wire.send_at
        created = stamps.get(created_text, _MISSING)
        sent = stamps.get(sent_text, _MISSING)
        delivered = stamps.get(done_text, _MISSING)
        validity = wire.validity
        append(
            Message(
                msg_id,
                status,
                channel,
                campaign if type(campaign) is int or campaign is None else _as_int(campaign),
                parse(created_text) if created is _MISSING else created,  # type: ignore[arg-type]
                parse(sent_text) if sent is _MISSING else sent,  # type: ignore[arg-type]
                parse(done_text) if delivered is _MISSING else delivered,  # type: ignore[arg-type]
                price[0],
                price[1],
                validity if validity is None or 0 < validity <= _MAX_VALIDITY_HOURS else None,
                code,
                wire.sender,
            )
        )


_STATUS_OF: dict[str | None, str] = {s: s for s in _KNOWN_STATUSES}
"""The fast path's statuses: exactly as documented (anything else takes the slow path)."""
_CHANNEL_OF: dict[str | None, str] = {None: "sms", **{c: c for c in CHANNELS}}
"""The fast path's channels: a missing ``type`` is sms, as in :func:`normalize_channel`."""
_CACHE_SIZE = 4096
"""Bound of the price and country caches (an account has a few dozen of each)."""
_NO_PRICE: tuple[int | None, str | None] = (None, None)
_PRICES: dict[tuple[Any, Any], tuple[int | None, str | None]] = {}
"""``(amount.value, amount.currency)`` -> :func:`_price`'s answer: prices repeat endlessly."""
_COUNTRIES: dict[str, str] = {}
"""A record's ``country`` -> the normalised code."""


def to_message(wire: WireMessage, parse: TimestampParser) -> Message | str:
    """Build a :class:`Message` from a wire row, or return why it cannot be used."""
    msg_id = _as_int(wire.id)
    if msg_id is None or msg_id <= 0 or msg_id > MAX_ID:
        return "missing_id" if wire.id is None else "bad_id"
    if wire.status is None or not wire.status.strip():
        return "missing_status"
    cost_nanos, currency = _price(wire.amount)
    sent = wire.sent_at if wire.sent_at is not None else wire.send_at
    return Message(
        id=msg_id,
        status=normalize_status(wire.status),
        channel=normalize_channel(wire.type),
        campaign_id=_as_int(wire.campaign_id),
        created_at=parse(wire.created_at),
        sent_at=parse(sent),
        delivered_at=parse(wire.delivered_at),
        cost_nanos=cost_nanos,
        currency=currency,
        validity_hours=_validity(wire.validity),
        country=wire.country.strip().upper() if wire.country else country_of(wire.phone),
        sender=wire.sender,
    )


def _as_int(value: int | str | None) -> int | None:
    """An integer id sent as a number or as a numeric string."""
    if isinstance(value, int):
        return value
    # ASCII digits only, and few: str.isdigit() accepts "²", which int() refuses, and int()
    # refuses more than 4300 digits; either would fail the whole page, poll after poll.
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 20:
            return int(text)
    return None


def _validity(hours: int | None) -> int | None:
    """The validity in hours when it is plausible; None (the default applies) otherwise."""
    return hours if hours is not None and 0 < hours <= _MAX_VALIDITY_HOURS else None


def _price(amount: WireAmount | None) -> tuple[int | None, str | None]:
    """``amount`` as exact nano-units and an upper-case currency, or ``(None, None)``."""
    if amount is None or amount.value is None or not amount.currency:
        return None, None
    nanos = parse_price_nanos(amount.value)
    if nanos is None:
        return None, None
    return nanos, amount.currency.strip().upper()


def parse_price_nanos(value: str | int | float) -> int | None:
    """Parse a decimal price (``"0.0100000"``) into integer nano-units, exactly."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value * NANOS if abs(value) < 10**_MAX_PRICE_DIGITS else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = repr(value)
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        return None
    # adjusted() is the exponent of the leading digit: checked before any arithmetic, which
    # could raise decimal.Overflow ("1e999999999") or take minutes ("1e999999").
    if not amount.is_finite() or (amount and amount.adjusted() >= _MAX_PRICE_DIGITS):
        return None
    return int(amount.scaleb(9))


class TimestampParser:
    """Parse API timestamps into epoch seconds; zone-less ones are in the configured zone."""

    __slots__ = ("_tz", "cache")

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        # Messages of a page share few distinct seconds; caching them skips most parsing.
        # Public, and None in it, so that the page's fast path looks up without a call.
        self.cache: dict[str | None, float | None] = {None: None}

    def __call__(self, text: str | None) -> float | None:
        """Epoch seconds for ``text``, or None when absent or unreadable."""
        cached = self.cache.get(text, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        assert text is not None  # None is always in the cache
        value = self._parse(text)
        if len(self.cache) < _CACHE_SIZE:
            self.cache[text] = value
        return value

    def _parse(self, text: str) -> float | None:
        """Parse one timestamp, uncached."""
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._tz)
        return moment.timestamp()


_MISSING = object()


def decode_balance(body: bytes) -> Balance:
    """Decode a ``GET /api/accounts/balance`` body."""
    try:
        wire = _BALANCE_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise DecodeError(f"bad balance answer: {exc}") from None
    balance = _as_float(wire.data.balance)
    if balance is None or not wire.data.currency:
        raise DecodeError("bad balance answer: no balance or currency")
    return Balance(
        balance=balance,
        credit=_as_float(wire.data.credit),
        currency=wire.data.currency.strip().upper(),
    )


def _as_float(value: float | int | str | None) -> float | None:
    """A finite number sent as a number or a numeric string."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def decode_token(body: bytes) -> str:
    """The bearer token of a login or refresh answer."""
    try:
        token = _TOKEN_DECODER.decode(body).bearer
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        raise DecodeError("login answer has no 'bearer' string") from None
    if not token:
        raise DecodeError("login answer has an empty 'bearer'")
    return token


def format_api_time(epoch: float, tz: tzinfo) -> str:
    """Format epoch seconds as the API's ``Y-m-d H:i:s`` in the API's zone."""
    return datetime.fromtimestamp(int(epoch), tz).strftime("%Y-%m-%d %H:%M:%S")
