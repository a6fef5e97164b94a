"""Traffic profiles, scenarios, country prices and per-message status timelines."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

PENDING_STATUSES = frozenset({"scheduled", "moderation", "accepted", "sending", "sent"})
FINAL_STATUSES = frozenset(
    {
        "delivered",
        "read",
        "expired",
        "failed",
        "undelivered",
        "unknown",
        "not_viber_user",
        "not_service_user",
    }
)
STATUSES = PENDING_STATUSES | FINAL_STATUSES
# statuses before a price is known: the API shows `amount: null` for them
UNPRICED_STATUSES = frozenset({"scheduled", "moderation"})
CHANNELS = ("sms", "viber", "rcs", "whatsapp", "hlr")


@dataclass(frozen=True, slots=True)
class Country:
    """Phone numbering and the per-part SMS price of one destination country."""

    prefix: int
    digits: int
    price: float
    currency: str


COUNTRIES: dict[str, Country] = {
    "UA": Country(380, 9, 0.0100000, "UAH"),
    "PL": Country(48, 9, 0.0420000, "PLN"),
    "DE": Country(49, 10, 0.0750000, "EUR"),
    "GB": Country(44, 10, 0.0350000, "GBP"),
    "US": Country(1, 10, 0.0079000, "USD"),
    "FR": Country(33, 9, 0.0700000, "EUR"),
    "KZ": Country(7, 10, 12.5000000, "KZT"),
    "MD": Country(373, 8, 0.9000000, "MDL"),
}
# explicit messages may name any country: price them like a pricey EU route
FALLBACK_COUNTRY = Country(999, 9, 0.0500000, "EUR")
# fixed rates into EUR, to charge every message in the account currency
EUR_RATES: dict[str, float] = {
    "EUR": 1.0,
    "UAH": 0.022,
    "PLN": 0.23,
    "GBP": 1.17,
    "USD": 0.92,
    "KZT": 0.0019,
    "MDL": 0.052,
}
# price of one part relative to an SMS part on the same route
CHANNEL_PRICE_FACTOR: dict[str, float] = {
    "sms": 1.0,
    "viber": 0.5,
    "rcs": 0.8,
    "whatsapp": 1.2,
    "hlr": 0.1,
}


def country_info(code: str) -> Country:
    """Return the table entry for an ISO country code, or a fallback."""
    return COUNTRIES.get(code, FALLBACK_COUNTRY)


def price_of(country: str, channel: str, parts: int) -> tuple[str, str]:
    """Return (decimal string value, currency) of a message, as the API prints it."""
    info = country_info(country)
    value = info.price * CHANNEL_PRICE_FACTOR.get(channel, 1.0) * parts
    return f"{value:.7f}", info.currency


def convert(value: float, currency: str, to: str) -> float:
    """Convert between currencies with the fixed table (unknown currencies count 1:1)."""
    return value * EUR_RATES.get(currency, 1.0) / EUR_RATES.get(to, 1.0)


def random_phone(rng: random.Random, country: str) -> int:
    """Draw a plausible phone number (digits only, with the country prefix)."""
    info = country_info(country)
    span = int(10**info.digits)
    # subscriber numbers rarely start with a low digit
    return info.prefix * span + span // 2 + int(rng.random() * (span // 2))


def _weights(name: str, weights: Mapping[str, float], allowed: frozenset[str] | None) -> None:
    """Validate a weight table (non-empty, positive, known keys)."""
    if not weights or any(w <= 0 for w in weights.values()):
        raise ValueError(f"{name}: weights must be non-empty and positive")
    if allowed is not None and not set(weights) <= allowed:
        raise ValueError(f"{name}: unknown keys {sorted(set(weights) - allowed)}")


@dataclass(frozen=True)
class CampaignProfile:
    """One campaign's automatic traffic: Poisson arrivals over channels and countries."""

    campaign_id: int
    rate: float
    channels: Mapping[str, float] = field(default_factory=lambda: {"sms": 1.0})
    countries: Mapping[str, float] = field(default_factory=lambda: {"UA": 1.0})
    validity_hours: int = 72
    sender: str = "testsms"
    source: str = "rest"
    text: str = "Your code is {code}"
    reference_ids: bool = False
    max_parts: int = 1

    def __post_init__(self) -> None:
        """Reject profiles the simulator cannot run."""
        if self.rate < 0 or not math.isfinite(self.rate):
            raise ValueError("rate must be a finite number >= 0")
        if not 1 <= self.validity_hours <= 72:
            raise ValueError("validity_hours must be within 1..72")
        if self.max_parts < 1:
            raise ValueError("max_parts must be >= 1")
        _weights("channels", self.channels, frozenset(CHANNELS))
        _weights("countries", self.countries, None)


@dataclass(frozen=True)
class TrafficProfile:
    """All campaigns of the simulated account, plus pre-generated history."""

    campaigns: tuple[CampaignProfile, ...]
    backfill: float = 0.0
    scenario: str = "steady"

    def __post_init__(self) -> None:
        """Reject unknown scenarios, duplicate campaigns and negative backfill."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}")
        if self.backfill < 0:
            raise ValueError("backfill must be >= 0")
        ids = [c.campaign_id for c in self.campaigns]
        if len(ids) != len(set(ids)):
            raise ValueError("campaign ids must be unique")


_DEMO_RATES = (1.0, 0.5, 0.2)


def demo_profile(rate: float | None = None, backfill: float = 3600.0) -> TrafficProfile:
    """Three campaigns (OTP, marketing, alerts); `rate` is their total messages/s."""
    scale = 1.0 if rate is None else rate / sum(_DEMO_RATES)
    otp, marketing, alerts = (r * scale for r in _DEMO_RATES)
    return TrafficProfile(
        campaigns=(
            CampaignProfile(
                campaign_id=58982653,
                rate=otp,
                channels={"sms": 0.7, "viber": 0.3},
                countries={"UA": 0.6, "PL": 0.2, "DE": 0.1, "GB": 0.1},
                validity_hours=1,
                sender="BSGVerify",
                text="Your verification code is {code}",
                reference_ids=True,
            ),
            CampaignProfile(
                campaign_id=58982654,
                rate=marketing,
                countries={"UA": 0.3, "PL": 0.2, "DE": 0.2, "GB": 0.1, "US": 0.1, "FR": 0.1},
                validity_hours=24,
                sender="ShopNews",
                source="web",
                text="Spring sale: -20% on everything this weekend only. Reply STOP to opt out",
                max_parts=2,
            ),
            CampaignProfile(
                campaign_id=58982655,
                rate=alerts,
                channels={"whatsapp": 0.6, "sms": 0.4},
                countries={"US": 0.5, "GB": 0.3, "DE": 0.2},
                validity_hours=6,
                sender="AlertBot",
                text="Alert {code}: disk usage above threshold",
                reference_ids=True,
            ),
        ),
        backfill=backfill,
    )


@dataclass(frozen=True, slots=True)
class Scenario:
    """Outcome weights and delivery-latency scale for messages created under it."""

    delivered: float = 0.95
    undelivered: float = 0.015
    failed: float = 0.01
    unknown: float = 0.005
    expired: float = 0.02
    scheduled: float = 0.02
    moderation: float = 0.01
    latency_scale: float = 1.0
    arrivals: bool = True

    def outcome(self, rng: random.Random) -> str:
        """Draw the final outcome of one message."""
        r = rng.random() * (
            self.delivered + self.undelivered + self.failed + self.unknown + self.expired
        )
        for name, weight in (
            ("delivered", self.delivered),
            ("undelivered", self.undelivered),
            ("failed", self.failed),
            ("unknown", self.unknown),
        ):
            if r < weight:
                return name
            r -= weight
        return "expired"


SCENARIOS: dict[str, Scenario] = {
    "steady": Scenario(),
    "failure_spike": Scenario(delivered=0.575, undelivered=0.2, failed=0.2),
    "slow_dlr": Scenario(latency_scale=30.0),
    "paused": Scenario(arrivals=False),
}


@dataclass(frozen=True, slots=True)
class ChannelModel:
    """How a channel deviates from plain SMS: non-users, read receipts, speed."""

    non_user_status: str | None = None
    non_user_share: float = 0.0
    read_share: float = 0.0
    latency_median: float = 4.0


CHANNEL_MODELS: dict[str, ChannelModel] = {
    "sms": ChannelModel(),
    "viber": ChannelModel("not_viber_user", 0.10, 0.5, 3.0),
    "whatsapp": ChannelModel("not_service_user", 0.05, 0.6, 2.0),
    "rcs": ChannelModel("not_service_user", 0.15, 0.4, 3.0),
    "hlr": ChannelModel(latency_median=1.0),
}


@dataclass(frozen=True, slots=True)
class Timeline:
    """A message's status transitions (whole epoch seconds, non-decreasing)."""

    times: tuple[float, ...]
    statuses: tuple[str, ...]
    sent_at: float | None
    delivered_at: float | None


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    """Draw from a log-uniform distribution on [low, high]."""
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _final_delay(rng: random.Random, outcome: str, channel: ChannelModel, sc: Scenario) -> float:
    """Seconds from `sent` to the delivery report of the given outcome."""
    if outcome == "delivered":
        if rng.random() < 0.05:  # the slow tail: operators that batch their reports
            return _log_uniform(rng, 600.0, 10800.0)
        return rng.lognormvariate(math.log(channel.latency_median * sc.latency_scale), 0.8)
    if outcome == "undelivered":
        return rng.uniform(60.0, 1200.0) * sc.latency_scale
    if outcome == "failed":
        return rng.uniform(1.0, 30.0)
    return _log_uniform(rng, 1800.0, 6 * 3600.0)  # unknown: the operator gave up


def build_timeline(
    rng: random.Random, created: float, channel: str, sc: Scenario, validity_hours: int
) -> Timeline:
    """Draw the whole status history of an automatic message, fixed at creation."""
    events: list[tuple[float, str]] = []
    t = created
    r = rng.random()
    if r < sc.scheduled + sc.moderation:
        events.append((t, "scheduled" if r < sc.scheduled else "moderation"))
        t += rng.uniform(10.0, 90.0)
    events.append((t, "accepted"))
    send_delay = rng.uniform(0.5, 3.0)
    sending = t + send_delay * rng.uniform(0.1, 0.6)
    events.append((sending, "sending"))
    outcome = sc.outcome(rng)
    if outcome == "failed" and rng.random() < 0.5:  # rejected before reaching the operator
        events.append((sending + rng.uniform(0.2, 5.0), "failed"))
        return _timeline(events, None)
    sent = t + send_delay
    events.append((sent, "sent"))
    model = CHANNEL_MODELS.get(channel, CHANNEL_MODELS["sms"])
    expiry = created + validity_hours * 3600.0
    if model.non_user_status and rng.random() < model.non_user_share:
        events.append((sent + rng.uniform(1.0, 15.0), model.non_user_status))
        return _timeline(events, sent)
    final = expiry if outcome == "expired" else sent + _final_delay(rng, outcome, model, sc)
    if final >= expiry:  # no report within the validity period
        final, outcome = expiry, "expired"
    events.append((final, outcome))
    if outcome == "delivered" and rng.random() < model.read_share:
        events.append((final + _log_uniform(rng, 60.0, 6 * 3600.0), "read"))
    return _timeline(events, sent)


def _timeline(events: list[tuple[float, str]], sent: float | None) -> Timeline:
    """Quantize events to whole seconds, as the API prints them."""
    times = tuple(float(math.floor(t)) for t, _ in events)
    statuses = tuple(s for _, s in events)
    final_at = next((t for t, s in zip(times, statuses, strict=True) if s in FINAL_STATUSES), None)
    return Timeline(times, statuses, None if sent is None else float(math.floor(sent)), final_at)
