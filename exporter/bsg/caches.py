"""The decoder's caches of shared objects: timestamps, prices, countries and senders.

A page of 500 messages holds a few distinct seconds, prices, countries and senders: each is
parsed once and shared by every message that holds it, which saves both the parsing and the
memory of the tracked messages. One :class:`Caches` belongs to one decoder (one API zone).

Must not import: prometheus_client, httpx, or any exporter module but the records and the
vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from exporter.bsg.wire import EARLIEST, MAX_PRICE_NANOS, CountryCode, Epoch, Price, WireAmount
from exporter.model import NANOS

_MAX_PRICE_DIGITS = 9
"""A price of a billion units or more is not a price: dropped like an unreadable one (it would
overflow the exposition's float, and ``1e999999`` takes minutes to turn into an integer)."""

CACHE_SIZE = 1024
"""Bound of the timestamp, price and country caches (they are cleared when full). A page's
500 messages hold at most 1,500 stamps and a poll reads on in time, so a larger cache finds
little more; full, it cost ~130 bytes an entry, a fixed half megabyte at 4,096."""


class Shared(dict[Any, Any]):
    """A cache of shared objects: ``key -> make(key)``, made once; ``None -> None``.

    Read through ``__getitem__``, so that a column of keys maps without a Python call per
    hit. Bounded: cleared when full (a poll reads recent seconds and few prices and countries,
    so an old entry is seldom needed again).
    """

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self._make = make
        self[None] = None

    def __missing__(self, key: Any) -> Any:
        value = self._make(key)  # raises for a key that makes no sense: the page goes tolerant
        if len(self) >= CACHE_SIZE:
            self.clear()
            self[None] = None
        self[key] = value
        return value


class Stamps(Shared):
    """API timestamp text -> epoch seconds in one zone, parsed once: messages share seconds.

    Zone-less text is in the zone given; text with an offset keeps it. Raises ValueError or
    TypeError for anything else.
    """

    def __init__(self, tz: tzinfo) -> None:
        super().__init__(self._parse)
        self.tz = tz
        # The API's own format, "2025-03-20 05:11:15", is parsed a minute at a time: a sparse
        # account's read has few messages a second, so most of its stamps are parsed, and a
        # whole parse takes twice as long as these checks, a lookup of the minute and an int().
        self._minutes = Shared(self._epoch)

    def _parse(self, text: Any) -> Epoch:
        """Epoch seconds of one timestamp."""
        if type(text) is not str:
            raise TypeError(f"not a timestamp: {text!r}")
        seconds = text[17:]
        if (
            len(text) == 19
            and text[13] == text[16] == ":"
            and seconds.isascii()
            and seconds.isdigit()
            and seconds < "60"
        ):
            # A zone's offset changes on a whole minute, so a minute's seconds follow on.
            return Epoch(self._minutes[text[:16]] + int(seconds))
        return Epoch(self._epoch(text.strip()))

    def _epoch(self, text: str) -> float:
        """Epoch seconds of ISO 8601 text, in the zone when it has no offset; none before 2000."""
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.tz)
        epoch = moment.timestamp()
        if epoch < EARLIEST:
            raise ValueError(f"timestamp before 2000: {text!r}")
        return epoch


PRICE_UNKNOWN = Price(None, None)
"""The price of a message whose amount is not known yet (``value`` null)."""
PRICE_UNUSABLE = Price(None, None)
"""The price of a message whose amount is not a price (told apart by identity): negative,
NaN, above :data:`MAX_PRICE_NANOS`, unreadable, or without a currency."""


def price_of(amount: WireAmount) -> Price:
    """The price of an ``amount``: nano-units and an upper-case currency, or none usable."""
    value = amount.value  # never a bool: the wire types refuse one (True == 1 as a key)
    if value is None:
        return PRICE_UNKNOWN
    code = amount.currency.strip().upper() if amount.currency else ""
    nanos = parse_price_nanos(value) if code else None
    # A negative price would make a cost counter go down, which Prometheus reads as a reset.
    if nanos is None or not 0 <= nanos <= MAX_PRICE_NANOS:
        return PRICE_UNUSABLE
    return Price(nanos, code)


class Caches:
    """The shared objects of one decoder: timestamps in its zone, prices, countries, senders."""

    __slots__ = ("countries", "prices", "senders", "stamps")

    def __init__(self, tz: tzinfo) -> None:
        self.stamps = Stamps(tz)
        self.prices = Shared(price_of)  # shared by both paths of the decoder
        self.countries = Shared(self._country_code)
        self.senders = Shared(str)  # the first equal string seen: senders repeat too

    def _country_code(self, text: Any) -> CountryCode:
        """A record's ``country`` as a code, shared; ValueError when empty (the phone decides)."""
        if type(text) is not str:
            raise TypeError(f"not a country: {text!r}")
        normalised = text.strip().upper()
        if not normalised:
            raise ValueError("empty country")
        code: CountryCode = self.countries.setdefault(normalised, CountryCode(normalised))
        return code

    def timestamp(self, text: str | None) -> Epoch | None:
        """Epoch seconds for API timestamp ``text``, or None when absent or unreadable."""
        if text is None:
            return None
        try:
            epoch: Epoch = self.stamps[text]
        except ValueError:
            return None
        return epoch


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
