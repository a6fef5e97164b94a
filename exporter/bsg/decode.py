"""Decoding the API's bodies into records: the fast typed path and the tolerant one.

An ordinary page is decoded and checked by msgspec, then made into :class:`Message` objects
that share their timestamps, prices and countries through the :class:`Decoder`'s caches. The
real API disagrees with its own documents (``sent_at`` or ``send_at``, ``phone`` as int or
string, zone-less or ISO 8601 timestamps, ``amount`` missing), so any other page is decoded
again tolerantly: every documented variant is accepted, and only records that make no sense are
rejected, each counted by reason.

Must not import: prometheus_client, httpx, or any exporter module but the records, the caches,
the country table and the vocabulary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, tzinfo
from functools import partial
from itertools import repeat
from operator import attrgetter, is_
from types import GenericAlias
from typing import Any

import msgspec

from exporter.bsg.caches import PRICE_UNUSABLE, Caches, Shared
from exporter.bsg.countries import country_of
from exporter.bsg.wire import (
    MAX_DEPTH,
    MAX_ID,
    MAX_VALIDITY_HOURS,
    Balance,
    Channel,
    CountryCode,
    DecodeError,
    Message,
    MessageId,
    MessagePage,
    Page,
    Status,
    ValidityHours,
    WireAmount,
    WireBalance,
    WireMessage,
    WireMeta,
    WirePage,
    WireToken,
    normalize_channel,
    normalize_status,
)
from exporter.model import (
    BAD_CREATED_AT,
    BAD_ID,
    BAD_PRICE,
    DEFAULT_CHANNEL,
    LABEL_DIMENSIONS,
    MISSING_ID,
    MISSING_STATUS,
    NOT_AN_OBJECT,
)


class _WireRow(msgspec.Struct, gc=False):
    """A record of an ordinary page: :class:`Message`'s fields by their JSON names, as sent.

    msgspec checks them in C (numeric text is accepted for numbers); timestamps, price,
    country and sender are turned into shared objects by :class:`PageDecoder` afterwards.
    """

    id: MessageId
    status: Status
    type: Channel = DEFAULT_CHANNEL
    campaign_id: int | None = None
    created_at: str | None = None
    sent_at: str | None = None
    delivered_at: str | None = None
    amount: WireAmount | None = None
    validity: ValidityHours | None = None
    country: str | None = None
    sender: str | None = None
    # The documentation page's name for sent_at: the fast path would read such a message as
    # never sent, so a page that uses it fails the type and takes the tolerant path.
    send_at: None = None


_WIRE_DECODER = msgspec.json.Decoder(WirePage)
_BALANCE_DECODER = msgspec.json.Decoder(WireBalance)
_TOKEN_DECODER = msgspec.json.Decoder(WireToken)


class Decoder:
    """The decoding of one API zone: its caches of shared objects and a fast path per set of
    label fields read. A client keeps one for its life."""

    def __init__(self, tz: tzinfo) -> None:
        self.caches = Caches(tz)
        self._fast: dict[frozenset[str], PageDecoder] = {}

    def fast(self, labels: Collection[str] = LABEL_DIMENSIONS) -> PageDecoder:
        """The fast path that reads the label fields in ``labels`` (made on first use)."""
        key = frozenset(labels)
        decoder = self._fast.get(key)
        if decoder is None:
            decoder = self._fast[key] = PageDecoder(self.caches, key)
        return decoder

    def page(self, body: bytes, labels: Collection[str] = LABEL_DIMENSIONS) -> Page:
        """Decode a ``GET /api/messages`` body; bad records are counted, a bad envelope raises.

        An ordinary page takes the fast path (:class:`PageDecoder`), which reads the label
        fields in ``labels`` only. A page with anything else in it (a status in capitals, an id
        as text with spaces, a missing country, ``send_at`` for ``sent_at``...) is decoded
        again, record by record, tolerantly.
        """
        try:
            fast = self.fast(labels).decode(body)
        except msgspec.ValidationError:  # a DecodeError too: it comes first
            return _decode_page_tolerantly(body, self.caches)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # msgspec checks UTF-8 as it reads each string: a bad byte inside one raises
            # UnicodeDecodeError, which must be a bad answer (retried), not a crash of the poll.
            raise DecodeError(f"malformed JSON: {exc}") from None
        if "country" in labels and None in map(_COUNTRY, fast.data):
            # the country is derived from the phone number by the tolerant path
            return _decode_page_tolerantly(body, self.caches)
        data = fast.data
        page = Page(data, len(data), _page_total(fast.meta), limit=_page_limit(fast.meta))
        bad = _bad_prices(data)
        if bad:
            page.rejected[BAD_PRICE] = bad
        return page


def decode_page(body: bytes, tz: tzinfo, labels: Collection[str] = LABEL_DIMENSIONS) -> Page:
    """Decode one page with a :class:`Decoder` of its own, for one-off reads (a client keeps
    one decoder, and with it the shared objects, from page to page)."""
    return Decoder(tz).page(body, labels)


class PageDecoder:
    """The fast path of one zone: msgspec decodes and checks a page's rows in C, then shared
    timestamps, prices, countries and senders replace the text, a column at a time.

    msgspec can make these shared objects itself only by calling a Python hook for each field
    (five a message), which cost more than the decoding. A dict lookup mapped over a column
    costs a few tens of nanoseconds; the rows' own strings live only while their page is read.
    The label fields (:data:`LABEL_DIMENSIONS`) not in ``labels`` are not read at all: None.
    """

    def __init__(self, caches: Caches, labels: frozenset[str]) -> None:
        self.caches = caches
        shared: dict[str, Shared] = {
            "created_at": caches.stamps,
            "sent_at": caches.stamps,
            "delivered_at": caches.stamps,
            "amount": caches.prices,
            "country": caches.countries,
            "sender": caches.senders,
        }
        row = _row_type(labels)
        # Message's fields in order, each as a function of a page's rows; read from the row
        # by their JSON names.
        self._columns = tuple(
            _column(name, shared.get(name)) if name in row.__struct_fields__ else _absent
            for name in Message.__struct_encode_fields__
        )
        self._decoder = msgspec.json.Decoder(_page_type(row), strict=False)

    def decode(self, body: bytes) -> MessagePage:
        """Decode a page whose every record fits :class:`_WireRow`; ValidationError otherwise."""
        page = self._decoder.decode(body)
        rows = page.data
        try:
            messages = list(map(Message, *[column(rows) for column in self._columns]))
        except (ValueError, TypeError) as exc:  # a timestamp it cannot read, a blank country
            raise msgspec.ValidationError(str(exc)) from None
        return MessagePage(messages, page.meta)


def _bad_prices(messages: list[Message]) -> int:
    """How many of ``messages`` were sent with a price that is not one."""
    return sum(map(is_, map(_AMOUNT, messages), repeat(PRICE_UNUSABLE)))


def _row_type(labels: frozenset[str]) -> type[Any]:
    """:class:`_WireRow` without the label fields that are not in ``labels``."""
    fields = msgspec.structs.fields(_WireRow)
    if all(field.name in labels for field in fields if field.name in LABEL_DIMENSIONS):
        return _WireRow
    kept = [
        (field.name, field.type) if field.required else (field.name, field.type, field.default)
        for field in fields
        if field.name not in LABEL_DIMENSIONS or field.name in labels
    ]
    return msgspec.defstruct("_WireRow", kept, gc=False, module=__name__)


def _page_type(row: type[Any]) -> type[Any]:
    """A page of ``row`` records."""
    return msgspec.defstruct(
        "_RowPage",
        [("data", GenericAlias(list, (row,))), ("meta", WireMeta | None, None)],
        module=__name__,
    )


def _column(name: str, shared: Shared | None) -> Callable[[list[Any]], Iterable[Any]]:
    """The column of a field, shared through ``shared`` when given."""
    get = attrgetter(name)
    if shared is None:
        return partial(map, get)
    share = shared.__getitem__
    return lambda rows: map(share, map(get, rows))


def _absent(rows: list[Any]) -> Iterable[None]:
    """The column of a field not read."""
    return repeat(None)


_COUNTRY = attrgetter("country")
_AMOUNT = attrgetter("amount")


def _decode_page_tolerantly(body: bytes, caches: Caches) -> Page:
    """Decode a page record by record, normalising what the fast path refused."""
    try:
        wire = _WIRE_DECODER.decode(body)
    except msgspec.ValidationError:
        return _decode_page_slowly(body, caches)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"malformed JSON: {exc}") from None
    page = Page([], len(wire.data), _page_total(wire.meta), limit=_page_limit(wire.meta))
    _convert_rows(zip(wire.data, repeat(_NOTHING_DROPPED)), caches, page)
    return page


def _decode_page_slowly(body: bytes, caches: Caches) -> Page:
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
    page = Page([], len(rows), _page_total(meta), limit=_page_limit(meta))
    wires: list[tuple[WireMessage, frozenset[str]]] = []
    for item in rows:
        wire = _salvage_record(item)
        if isinstance(wire, str):
            _reject(page, wire)
        else:
            wires.append(wire)
    _convert_rows(wires, caches, page)
    return page


_NOTHING_DROPPED: frozenset[str] = frozenset()


def _salvage_record(item: Any) -> tuple[WireMessage, frozenset[str]] | str:
    """Convert one loose record, dropping fields of the wrong type (and naming them); a reason
    string on failure."""
    if not isinstance(item, dict):
        return NOT_AN_OBJECT
    try:
        return msgspec.convert(item, WireMessage, strict=False), _NOTHING_DROPPED
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
    dropped = frozenset(name for name in WireMessage.__struct_fields__ if name in item) - set(kept)
    return msgspec.convert(kept, WireMessage, strict=False), dropped


def _page_total(meta: WireMeta | None) -> int | None:
    """``meta.page.total`` when the answer carries it."""
    if meta is None or meta.page is None:
        return None
    return meta.page.total


def _page_limit(meta: WireMeta | None) -> int | None:
    """``meta.page.limit`` when the answer carries a positive one."""
    if meta is None or meta.page is None or meta.page.limit is None:
        return None
    return meta.page.limit if meta.page.limit > 0 else None


def _reject(page: Page, reason: str) -> None:
    """Count one unusable record."""
    page.rejected[reason] = page.rejected.get(reason, 0) + 1


def _convert_rows(
    wires: Iterable[tuple[WireMessage, frozenset[str]]], caches: Caches, page: Page
) -> None:
    """Turn wire rows (each with the fields salvaging dropped) into messages, counting the ones
    that cannot be used, and the prices that are not ones (their messages are kept)."""
    for wire, dropped in wires:
        message = to_message(wire, caches, dropped)
        if isinstance(message, str):
            _reject(page, message)
            continue
        if message.amount is PRICE_UNUSABLE or "amount" in dropped:
            _reject(page, BAD_PRICE)
        page.messages.append(message)


def to_message(
    wire: WireMessage, caches: Caches, dropped: frozenset[str] = _NOTHING_DROPPED
) -> Message | str:
    """Build a :class:`Message` from a wire row (salvaging ``dropped`` some fields of the
    wrong type), or return why it cannot be used."""
    msg_id = _as_int(wire.id)
    if msg_id is None or msg_id <= 0 or msg_id > MAX_ID:
        return MISSING_ID if wire.id is None else BAD_ID
    if wire.status is None or not wire.status.strip():
        return MISSING_STATUS
    parse = caches.timestamp
    created = parse(wire.created_at)
    if "created_at" in dropped or (created is None and wire.created_at is not None):
        return BAD_CREATED_AT  # before 2000 or unreadable: no window could place it
    sent = wire.sent_at if wire.sent_at is not None else wire.send_at
    return Message(
        id=msg_id,
        status=normalize_status(wire.status),
        channel=normalize_channel(wire.type),
        campaign_id=_as_int(wire.campaign_id),
        created_at=created,
        sent_at=parse(sent),
        delivered_at=parse(wire.delivered_at),
        amount=caches.prices[wire.amount],
        validity_hours=_validity(wire.validity),
        country=_country(wire.country.strip().upper() if wire.country else country_of(wire.phone)),
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


def _country(code: str | None) -> CountryCode | None:
    """A derived or normalised code as the type messages hold."""
    return None if code is None else CountryCode(code)


def _validity(hours: int | None) -> int | None:
    """The validity in hours when it is plausible; None (the default applies) otherwise."""
    return hours if hours is not None and 0 < hours <= MAX_VALIDITY_HOURS else None


def decode_balance(body: bytes) -> Balance:
    """Decode a ``GET /api/accounts/balance`` body."""
    try:
        wire = _BALANCE_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise DecodeError(f"bad balance answer: {exc}") from None
    balance = _as_float(wire.data.balance)
    if balance is None:
        shown = "none" if wire.data.balance is None else "not a finite number"
        raise DecodeError(f"bad balance answer: balance {shown}")
    if not wire.data.currency:
        raise DecodeError("bad balance answer: no currency")
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
    except (ValueError, OverflowError):  # OverflowError: an int of hundreds of digits
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


_ESCAPES = re.compile(rb'\\[\\"]')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_BRACKETS = bytes.maketrans(b"{}", b"[]")


def nested_too_deeply(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Tell whether the JSON of ``body`` nests deeper than ``limit`` levels.

    msgspec and json recurse once a level, typed or not, skipping unknown fields too, and stop
    only at the interpreter's recursion limit (RecursionError, at a depth that depends on the
    caller's stack). So the depth is measured first, in C-speed passes (a third of msgspec's
    decode time on a page of 500): the escapes that could hide a quote go, then everything but
    brackets and quotes, then the strings, and each ``replace`` of ``[]`` peels one level.
    Brackets left unmatched (a body cut short) count as levels: a decoder descends into them.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:
        body = _ESCAPES.sub(b"", body)
    # Two adjacent quotes end one string and start the next, or make an empty one: dropping
    # them leaves every bracket inside or outside a string as it was.
    kept = body.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[::2])  # the odd parts are inside strings
    kept = kept.translate(_BRACKETS)
    for depth in range(limit + 1):
        shorter = kept.replace(b"[]", b"")
        if len(shorter) == len(kept):
            return depth + kept.count(b"[") > limit
        kept = shorter
    return True
