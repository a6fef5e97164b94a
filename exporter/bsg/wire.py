"""The API's records: wire shapes (msgspec structs), the typed message and their vocabulary.

Owns what a page, a message, a price, a balance and a token look like, as sent and as the
exporter keeps them, and the checks that are types (an id is a positive int64, a status is one
of the documented ones). Decoding bodies into them is :mod:`.decode`'s.

Must not import: prometheus_client, httpx, or any exporter module but the vocabulary and the
country table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, cast

import msgspec

from exporter.model import (
    CHANNELS,
    DEFAULT_CHANNEL,
    FINAL_STATUSES,
    KEPT_REJECTS,
    NANOS,
    OTHER,
    PENDING_STATUSES,
)

_FINAL = frozenset(FINAL_STATUSES)
_KNOWN_STATUSES = frozenset(PENDING_STATUSES) | _FINAL
_KNOWN_CHANNELS = frozenset(CHANNELS)
MAX_ID = 2**63 - 1
"""SQLite's largest INTEGER: a larger id could not be stored, and would fail every poll."""
MAX_VALIDITY_HOURS = 24 * 366 * 10
"""A validity beyond ten years is not one (``hours * 3600.0`` of a 400-digit int overflows)."""
MAX_PRICE_NANOS = 10**6 * NANOS
"""The dearest plausible price of one message: a million units of its currency. A long
WhatsApp or RCS message costs well under a dollar, under 100,000 units even of the weakest
account currencies (UZS, IRR at market rates); a larger value is an upstream bug or a unit
mix-up, and one would swamp every cost counter it reached."""
EARLIEST = 946_684_800.0
"""2000-01-01 UTC: a timestamp before it is not one (``1970-01-01 00:00:00`` is a zero)."""
MAX_DEPTH = 64
"""Deepest JSON nesting accepted in an answer; the API's own bodies are four levels deep."""
PAGE_LIMIT = 500
"""The API's largest page (``page[limit]``): fewest requests per pass."""


Status = Literal[
    "scheduled", "moderation", "accepted", "sending", "sent", "delivered", "read", "expired",
    "failed", "undelivered", "unknown", "not_viber_user", "not_service_user", "other",
]  # fmt: skip
"""A normalised status: :data:`~exporter.model.ALL_STATUSES` as a type, for the decoder to check
in C (a type needs its literals written out; a test holds the two equal)."""
Channel = Literal["sms", "viber", "hlr", "rcs", "whatsapp", "other"]
"""A normalised channel: :data:`~exporter.model.CHANNELS` and ``other`` (held equal by a test)."""


def is_final(status: str) -> bool:
    """Tell whether a normalised status is final."""
    return status in _FINAL


def normalize_status(raw: str) -> Status:
    """Map a status string onto the documented vocabulary, or ``other``."""
    status = raw.strip().lower()
    return cast(Status, status if status in _KNOWN_STATUSES else OTHER)


def normalize_channel(raw: str | None) -> Channel:
    """Map a message ``type`` onto the documented channels, or ``other``."""
    if raw is None:
        return DEFAULT_CHANNEL
    channel = raw.strip().lower()
    return cast(Channel, channel if channel in _KNOWN_CHANNELS else OTHER)


class Epoch(float):
    """Epoch seconds read from an API timestamp, shared through :class:`Stamps`.

    Arithmetic on it gives plain floats.
    """

    __slots__ = ()


class WireAmount(msgspec.Struct, frozen=True, gc=False):
    """``amount`` as sent: value is documented as a decimal string, accepted as a number too.

    Hashable: the key of its shared :class:`Price`.
    """

    value: str | int | float | None = None
    currency: str | None = None


class Price:
    """A price: exact nano-units and an upper-case currency, both None when it is unusable.

    The page decoder hands out one object per distinct ``amount`` (they repeat endlessly), so
    that a poll's messages share them rather than each holding an object and two strings of
    its own: held for a whole poll, those took VmRSS to 229 B per tracked message.
    """

    __slots__ = ("currency", "nanos")

    def __init__(self, nanos: int | None, currency: str | None) -> None:
        self.nanos = nanos
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Price):
            return NotImplemented
        return (self.nanos, self.currency) == (other.nanos, other.currency)

    def __hash__(self) -> int:
        return hash((self.nanos, self.currency))

    def __repr__(self) -> str:
        return f"Price({self.nanos!r}, {self.currency!r})"


class CountryCode(str):
    """A country code as the exporter labels it (``UA``): shared, like prices."""

    __slots__ = ()


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


MessageId = Annotated[int, msgspec.Meta(gt=0, le=MAX_ID)]
ValidityHours = Annotated[int, msgspec.Meta(gt=0, le=MAX_VALIDITY_HOURS)]


class Message(msgspec.Struct, frozen=True, gc=False):
    """A message as the exporter understands it: normalised labels, epoch seconds, the price.

    The fast path builds it from a :class:`_WireRow`, the same fields by their JSON names (the
    names given here), checked by msgspec; the tolerant path from a :class:`WireMessage`.
    """

    id: MessageId
    status: Status
    channel: Channel = msgspec.field(name="type", default=DEFAULT_CHANNEL)
    campaign_id: int | None = None
    created_at: Epoch | None = None
    sent_at: Epoch | None = None
    delivered_at: Epoch | None = None
    amount: Price | None = None
    validity_hours: ValidityHours | None = msgspec.field(name="validity", default=None)
    country: CountryCode | None = None
    sender: str | None = None

    @property
    def cost_nanos(self) -> int | None:
        """The price in nano-units, or None when it is missing or unreadable."""
        return None if self.amount is None else self.amount.nanos

    @property
    def currency(self) -> str | None:
        """The upper-case currency of the price, or None with no usable price."""
        return None if self.amount is None else self.amount.currency


class MessagePage(msgspec.Struct):
    """A ``GET /api/messages`` answer decoded into messages (the fast path)."""

    data: list[Message]
    meta: WireMeta | None = None


@dataclass(slots=True)
class Page:
    """One decoded page: the usable messages, what was rejected and why, and the paging meta."""

    messages: list[Message]
    rows: int
    total: int | None
    rejected: dict[str, int] = field(default_factory=dict)
    limit: int | None = None  # meta.page.limit: the page size the API says it served

    @property
    def dropped(self) -> int:
        """Rows of the page that gave no message (rejected, and not kept)."""
        return sum(n for reason, n in self.rejected.items() if reason not in KEPT_REJECTS)


@dataclass(frozen=True, slots=True)
class Balance:
    """The account balance and credit limit, in the account currency."""

    balance: float
    credit: float | None
    currency: str


class DecodeError(ValueError):
    """An answer whose body is not the JSON shape the API documents."""
