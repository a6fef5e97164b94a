"""The simulated BSG account: lazy traffic, explicit messages, faults, tokens, ground truth."""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, tzinfo
from functools import lru_cache
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from .clock import Clock
from .explicit import build_explicit
from .faults import ENDPOINTS, Fault, FaultBook
from .reports import ReportIndex, check_delivered_sort, check_reportless
from .store import Message, MessageStore, Selection
from .tokens import TokenStore
from .traffic import (
    FINAL_STATUSES,
    SCENARIOS,
    UNPRICED_STATUSES,
    CampaignProfile,
    TrafficProfile,
    build_timeline,
    convert,
    price_of,
    random_phone,
)

DEMO_API_KEY = "live_demo_0123456789abcdef"
FIRST_ID = 4_419_393_338


class _Arrivals:
    """One campaign's Poisson arrival process and its attribute draws."""

    def __init__(self, profile: CampaignProfile, seed: int) -> None:
        self.profile = profile
        self.rng = random.Random(f"{seed}/campaign/{profile.campaign_id}")
        self._channels = list(profile.channels)
        self._channel_cum = _cumulative(profile.channels.values())
        self._countries = list(profile.countries)
        self._country_cum = _cumulative(profile.countries.values())

    def gap(self) -> float:
        """Seconds until the next arrival."""
        return self.rng.expovariate(self.profile.rate)

    def draw(self) -> tuple[str, str, int, int]:
        """Draw (channel, country, parts, phone) of the next message."""
        rng = self.rng
        channel = self._channels[bisect_right(self._channel_cum, rng.random())]
        country = self._countries[bisect_right(self._country_cum, rng.random())]
        parts = 1
        if channel == "sms" and self.profile.max_parts > 1:
            parts += int(rng.random() * self.profile.max_parts)
        return channel, country, parts, random_phone(rng, country)


def _cumulative(weights: Iterable[float]) -> list[float]:
    """Normalized cumulative weights, the last one nudged above 1 for bisect."""
    ws = list(weights)
    total, acc, out = sum(ws), 0.0, []
    for w in ws:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0 + 1e-9
    return out


@lru_cache(maxsize=4096)
def _price(country: str, channel: str, parts: int) -> tuple[str, str]:
    """Cached price_of(): most messages share a handful of prices."""
    return price_of(country, channel, parts)


class Simulator:
    """A fake BSG One account whose traffic is a pure function of (profile, seed, clock)."""

    def __init__(
        self,
        profile: TrafficProfile,
        *,
        clock: Clock,
        seed: int = 1,
        api_keys: Iterable[str] = (DEMO_API_KEY,),
        tz: str = "UTC",
        token_ttl: float = 30 * 86400,
        start_balance: float = 1000.0,
        currency: str = "EUR",
        credit: float = 125.0,
        account_id: int = 208,
        retention: float | None = None,
        delivered_sort: str = "mysql",
        reportless: Iterable[str] = (),
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.seed = seed
        self.api_keys = frozenset(api_keys)
        self.tz = tz
        self.zone: tzinfo = UTC if tz.upper() == "UTC" else ZoneInfo(tz)
        self.currency = currency
        self.credit = credit
        self.lock = threading.RLock()
        self.store = MessageStore()
        self.tokens = TokenStore(
            hashlib.sha256(f"bsg-sim/{seed}".encode()).digest(), token_ttl, account_id
        )
        self._balance = start_balance
        self._costs: dict[tuple[str, str], float] = {}
        # long demos would grow without bound: optionally forget messages this old
        self.retention = retention
        self._pruned_at = -math.inf
        self._scenario_name = profile.scenario
        self._id_rng = random.Random(f"{seed}/ids")
        self._next_id = FIRST_ID - 1000 + self._id_rng.randrange(1000)
        self._campaigns = {c.campaign_id: c for c in profile.campaigns}
        self._arrivals = [_Arrivals(c, seed) for c in profile.campaigns]
        self._heap: list[tuple[float, int]] = []
        self._schedule_arrivals(clock.now() - profile.backfill)
        self._faults = FaultBook()
        self._requests: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self._delivered_sort = check_delivered_sort(delivered_sort)
        self._reportless = check_reportless(reportless)

    # --- time and traffic -------------------------------------------------------------

    def now(self) -> float:
        """Bring traffic up to the clock's now and return it."""
        with self.lock:
            now = self.clock.now()
            self._advance(now)
            if self.retention is not None and now - self._pruned_at >= 600:
                self._pruned_at = now
                self.store.prune(now - self.retention)
            return now

    @property
    def scenario(self) -> str:
        """Name of the current scenario."""
        return self._scenario_name

    def set_scenario(self, name: str) -> None:
        """Switch scenario; only messages created from now on follow it."""
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}")
        with self.lock:
            now = self.now()
            was_paused = not SCENARIOS[self._scenario_name].arrivals
            self._scenario_name = name
            if was_paused and SCENARIOS[name].arrivals:
                # arrivals are memoryless: restart every campaign's clock at the unpause
                self._schedule_arrivals(now)

    def _schedule_arrivals(self, start: float) -> None:
        """Draw each campaign's first arrival after `start`."""
        self._heap = [
            (start + a.gap(), i) for i, a in enumerate(self._arrivals) if a.profile.rate > 0
        ]
        heapq.heapify(self._heap)

    def _advance(self, now: float) -> None:
        """Create every automatic message that arrived up to `now`, in time order."""
        if not SCENARIOS[self._scenario_name].arrivals:
            return
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, i = heap[0]
            arrivals = self._arrivals[i]
            self._spawn(arrivals, t)
            heapq.heapreplace(heap, (t + arrivals.gap(), i))

    def _new_id(self) -> int:
        """Next message id: other accounts' traffic leaves small gaps."""
        self._next_id += 1 + int(self._id_rng.random() * 5)
        return self._next_id

    def _spawn(self, arrivals: _Arrivals, t: float) -> None:
        """Create one automatic message arriving at `t`."""
        c = arrivals.profile
        channel, country, parts, phone = arrivals.draw()
        amount = _price(country, channel, parts)
        created = float(math.floor(t))
        m = Message(
            msg_id=self._new_id(),
            campaign_id=c.campaign_id,
            channel=channel,
            country=country,
            created=created,
            validity=c.validity_hours,
            amount=amount,
        )
        m.parts, m.phone, m.source, m.sender = parts, phone, c.source, c.sender
        m.scenario = SCENARIOS[self._scenario_name]
        if c.reference_ids:
            m.reference_id = hashlib.md5(
                f"{self.seed}:{m.id}".encode(), usedforsecurity=False
            ).hexdigest()
        self._charge(amount)
        self.store.add(m)

    def _charge(self, amount: tuple[str, str] | None) -> None:
        """Take a message's price off the balance, in the account currency."""
        if amount is None:
            return
        cost = self._costs.get(amount)
        if cost is None:
            cost = self._costs[amount] = convert(float(amount[0]), amount[1], self.currency)
        self._balance -= cost

    def materialize(self, m: Message) -> Message:
        """Draw a message's private attributes (timeline, phone, text) once."""
        if m.text and (m.timeline is not None or m.history is not None):
            return m
        rng = self._rng(m)
        if m.scenario is not None and m.history is None:
            m.timeline = build_timeline(rng, m.created, m.type, m.scenario, m.validity)
        code = f"{int(rng.random() * 1_000_000):06d}"
        m.phone = m.phone or random_phone(rng, m.country)
        if not m.text:
            c = self._campaigns.get(m.campaign_id)
            m.text = (c.text if c is not None else "Test").replace("{code}", code)
        return m

    def _rng(self, m: Message) -> random.Random:
        """A message's own RNG, seeded by its id: what it does never depends on query order."""
        return random.Random((self.seed << 64) | m.id)

    def state(self, m: Message, now: float) -> tuple[str, float | None, float | None]:
        """Return (status, sent_at, delivered_at) of a message at `now`, as the API shows it."""
        status, sent, done = self.materialize(m).state(now)
        return status, sent, None if status in self._reportless else done

    def shown_amount(self, m: Message, status: str) -> tuple[str, str] | None:
        """The price as the API shows it: unknown while scheduled or in moderation."""
        return None if status in UNPRICED_STATUSES else m.amount

    # --- queries ----------------------------------------------------------------------

    def query(
        self,
        *,
        campaign_id: int | None = None,
        message_id: int | None = None,
        reference_id: str | None = None,
        date_from: float | None = None,
        date_to: float | None = None,
        sort: str = "id",
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[float, int, list[Message]]:
        """Return (now, total, page rows) for a list query; filter[to] never passes now."""
        with self.lock:
            now = self.now()
            sel = self.store.select(
                date_from=date_from,
                date_to=now if date_to is None else min(date_to, now),
                campaign_id=campaign_id,
                message_id=message_id,
                reference_id=reference_id,
            )
            if sort == "id":
                rows = sel.page(offset, limit, descending)
            elif sort == "phone":
                rows = self._by_phone(sel, descending)[offset : offset + limit]
            else:
                rows = self._by_report(sel, descending, now, offset, limit)
            return now, sel.total, [self.materialize(m) for m in rows]

    def _by_phone(self, sel: Selection, descending: bool) -> list[Message]:
        """All rows of a selection ordered by phone (ties by id)."""
        rows = [self.materialize(m) for m in sel.all()]
        rows.sort(key=lambda m: (m.phone, m.id), reverse=descending)
        return rows

    def balance(self) -> dict[str, Any]:
        """The balance answer's data object."""
        with self.lock:
            self.now()
            return {
                "balance": round(self._balance, 7),
                "currency": self.currency,
                "credit": self.credit,
            }

    # --- sort=delivered: the report index and the ways of serving it ---------------------

    def _by_report(
        self, sel: Selection, descending: bool, now: float, offset: int, limit: int
    ) -> list[Message]:
        """One page ordered by delivered_at (ties and NULLs by id), as the sort mode serves it."""
        mode = self._delivered_sort
        if mode == "ignored":
            return sel.page(offset, limit, descending)
        descending = descending and mode != "no_direction"
        want = offset + limit
        small = sel.total <= want  # sorting these rows costs no more than finding them
        if not small:
            self.index_reports()
        reported = (self._sorted_reported if small else self._walk_reported)(sel, now, descending)
        blank = self._unreported(sel, now, descending, small)
        # MySQL puts NULLs first when ascending, last when descending
        first, then = (reported, blank) if mode == "mysql" and descending else (blank, reported)
        rows = list(islice(first, want))
        rows += islice(then, want - len(rows))  # generators: `then` is not drawn if not needed
        return rows[offset:]

    def _sorted_reported(self, sel: Selection, now: float, descending: bool) -> Iterator[Message]:
        """The selection's rows with a report time shown, sorted by (report time, id) either way."""
        shown = [(done, m.id, m) for m in sel.all() if (done := self.state(m, now)[2]) is not None]
        shown.sort(key=lambda row: row[:2], reverse=descending)
        yield from (m for _, _, m in shown)

    def _walk_reported(self, sel: Selection, now: float, descending: bool) -> Iterator[Message]:
        """The selection's rows with a report time shown, in the report index's order."""
        by_id, reportless = self.store.by_id, self._reportless
        for msg_id in self.store.reports.reported(now, descending):
            m = by_id[msg_id]
            if sel.keep(m) and (not reportless or self.state(m, now)[2] is not None):
                yield m

    def _unreported(
        self, sel: Selection, now: float, descending: bool, small: bool
    ) -> Iterator[Message]:
        """The selection's rows with no report time shown (NULLs), by id either way."""
        found = None if small else self.store.reports.unreported(now, self._reportless)
        if found is None:
            rows = [m for m in sel.all() if self.state(m, now)[2] is None]
        else:
            by_id = self.store.by_id
            unique = sorted(set(found))  # a report still to come is listed by status too
            rows = [m for m in map(by_id.__getitem__, unique) if sel.keep(m)]
        yield from reversed(rows) if descending else rows

    def index_reports(self) -> ReportIndex:
        """File every stored message under its report time (benchmarks warm up with this)."""
        with self.lock:
            reports = self.store.reports
            reports.start(self.store.iter_all())
            reports.file((m, *self._report(m)) for m in reports.take_pending())
            return reports

    def _report(self, m: Message) -> tuple[float | None, str]:
        """When a message's report is (or will be) shown, and the status it comes with."""
        if m.history is not None:
            return m.delivered_at, m.history[-1][1]
        tl = m.timeline
        if tl is None and m.scenario is not None:
            # drawn and dropped: a day of kept timelines costs more than redrawing a page's
            tl = build_timeline(self._rng(m), m.created, m.type, m.scenario, m.validity)
        if tl is None:
            return None, ""
        return tl.delivered_at, next((s for s in tl.statuses if s in FINAL_STATUSES), "")

    def sorting(self) -> dict[str, Any]:
        """The sort=delivered mode and the final statuses served without a report time."""
        with self.lock:
            return {"delivered": self._delivered_sort, "reportless": sorted(self._reportless)}

    def set_sorting(
        self, *, delivered: str | None = None, reportless: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """Switch either setting (None keeps it); ValueError, and no change, on a bad value."""
        with self.lock:
            mode = self._delivered_sort if delivered is None else check_delivered_sort(delivered)
            hidden = self._reportless if reportless is None else check_reportless(reportless)
            if hidden != self._reportless:
                for m in self.store.by_id.values():
                    m.rendered = None  # cached records show report times by the old rule
            self._delivered_sort, self._reportless = mode, hidden
            return self.sorting()

    # --- explicit messages --------------------------------------------------------------

    def create_messages(self, specs: Sequence[Mapping[str, Any]]) -> list[int]:
        """Create messages with no automatic timeline; return their ids."""
        with self.lock:
            now = self.now()
            first = self.profile.campaigns[0].campaign_id if self.profile.campaigns else 1
            # build (and so validate) them all before storing any
            messages = [build_explicit(spec, now, self._campaigns, first) for spec in specs]
            ids = []
            for m in messages:
                m.id = self._new_id()
                self._charge(m.amount)
                self.store.add(m)
                ids.append(m.id)
            return ids

    def set_status(self, message_id: int, status: str) -> None:
        """Change a message's status at clock now (it stops following any timeline)."""
        with self.lock:
            now = self.now()
            m = self.store.by_id.get(message_id)
            if m is None:
                raise KeyError(message_id)
            reports = self.index_reports() if self.store.reports.active else None
            if reports is not None:  # its report time may move: file it afresh
                reports.unfile(m, *self._report(m))
            self.materialize(m).freeze(now)
            m.apply_status(float(math.floor(now)), status)
            if reports is not None:
                reports.file([(m, *self._report(m))])

    # --- faults -----------------------------------------------------------------------

    def add_fault(
        self, kind: str, count: int | None = None, endpoint: str = "messages", **params: Any
    ) -> dict[str, Any]:
        """Inject a fault for the next `count` matching requests (None: until cleared), after
        the next `skip` of them when ``params`` says (0: none)."""
        skip = params.pop("skip", 0)
        with self.lock:
            return self._faults.add(kind, count, endpoint, params, skip).describe()

    def clear_faults(self) -> None:
        """Remove every active fault."""
        with self.lock:
            self._faults.active.clear()

    def faults(self) -> list[dict[str, Any]]:
        """Describe the active faults."""
        with self.lock:
            return [f.describe() for f in self._faults.active]

    def take_faults(self, endpoint: str, kinds: frozenset[str]) -> list[Fault]:
        """Consume the active faults of `kinds` matching a request to `endpoint`."""
        with self.lock:
            return self._faults.take(endpoint, kinds)

    def fault_counts(self) -> dict[str, int]:
        """How many times each fault kind was applied."""
        with self.lock:
            return dict(self._faults.applied)

    # --- auth and bookkeeping ---------------------------------------------------------------

    def login(self, api_key: str) -> str | None:
        """Return a new token for a known key, else None."""
        with self.lock:
            return self.tokens.issue(self.now()) if api_key in self.api_keys else None

    def authorized(self, token: str) -> bool:
        """Tell whether a bearer token is accepted now."""
        with self.lock:
            return self.tokens.valid(token, self.now())

    def refresh(self) -> str:
        """Issue a fresh token (the caller has checked the old one)."""
        with self.lock:
            return self.tokens.issue(self.now())

    def expire_tokens(self) -> int:
        """Revoke every token issued so far."""
        with self.lock:
            return self.tokens.revoke_all()

    def count_request(self, endpoint: str) -> None:
        """Count one API request."""
        with self.lock:
            self._requests[endpoint] = self._requests.get(endpoint, 0) + 1

    def request_counts(self) -> dict[str, int]:
        """API requests received per endpoint (login, refresh, messages, balance)."""
        with self.lock:
            return dict(self._requests)

    def stats(self) -> dict[str, Any]:
        """Requests, applied faults and stored messages."""
        with self.lock:
            self.now()
            return {
                "requests": self.request_counts(),
                "faults": self.fault_counts(),
                "messages": len(self.store),
            }

    # --- ground truth -----------------------------------------------------------------

    def truth(self, campaign_id: int | None = None) -> dict[str, Any]:
        """Every message with its current state and history, ordered by id."""
        with self.lock:
            now = self.now()
            rows = [
                self._truth_row(m, now)
                for m in self.store.iter_all()
                if (campaign_id is None or m.campaign_id == campaign_id) and m.created <= now
            ]
            return {
                "now": now,
                "scenario": self._scenario_name,
                "balance": self.balance(),
                "messages": rows,
            }

    def _truth_row(self, m: Message, now: float) -> dict[str, Any]:
        """One message of the truth answer."""
        status, sent, done = self.state(m, now)
        amount = self.shown_amount(m, status)
        return {
            "id": m.id,
            "campaign_id": m.campaign_id,
            "type": m.type,
            "country": m.country,
            "status": status,
            "created_at": m.created,
            "sent_at": sent,
            "delivered_at": done,
            "amount": None if amount is None else {"value": amount[0], "currency": amount[1]},
            "history": [[t, s] for t, s in m.events(now)],
        }


def status_at(history: Iterable[Sequence[Any]], moment: float) -> str | None:
    """A message's status at ``moment`` from its ground-truth history (``[time, status]``
    pairs, as :meth:`Simulator.truth` gives them), None before it existed."""
    current = None
    for when, status in history:
        if when > moment:
            break
        current = status
    return current
