"""Message storage with the indexes the list endpoint needs (created_at, campaign, id, report)."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable

from .reports import ReportIndex
from .traffic import FINAL_STATUSES, Scenario, Timeline

Event = tuple[float, str]


class Message:
    """One stored message; automatic ones compute their timeline lazily."""

    __slots__ = (
        "amount",
        "campaign_id",
        "country",
        "created",
        "delivered_at",
        "history",
        "id",
        "parts",
        "phone",
        "reference_id",
        "rendered",
        "scenario",
        "sender",
        "sent_at",
        "source",
        "text",
        "timeline",
        "type",
        "validity",
    )

    def __init__(
        self,
        *,
        msg_id: int,
        campaign_id: int,
        channel: str,
        country: str,
        created: float,
        validity: int,
        amount: tuple[str, str] | None,
    ) -> None:
        self.id = msg_id
        self.campaign_id = campaign_id
        self.type = channel
        self.country = country
        self.created = created
        self.validity = validity
        self.amount = amount
        self.parts = 1
        self.reference_id: str | None = None
        self.source = "rest"
        self.sender = "testsms"
        self.text = ""
        self.phone = 0  # 0 = not drawn yet
        self.scenario: Scenario | None = None  # set for automatic messages only
        self.timeline: Timeline | None = None
        # explicit (manual) messages keep a mutable history instead of a timeline
        self.history: list[Event] | None = None
        self.sent_at: float | None = None
        self.delivered_at: float | None = None
        # the API record as JSON and the [from, until) times it stays right (render.py)
        self.rendered: tuple[float, float, bytes] | None = None

    @property
    def manual(self) -> bool:
        """True for messages whose status only changes through set_status()."""
        return self.history is not None

    def state(self, now: float) -> tuple[str, float | None, float | None]:
        """Return (status, sent_at, delivered_at) as seen at `now`."""
        if self.history is not None:
            return self.history[-1][1], self.sent_at, self.delivered_at
        tl = self.timeline
        if tl is None:
            raise RuntimeError("timeline not materialized")
        idx = max(bisect_right(tl.times, now) - 1, 0)
        sent = tl.sent_at if tl.sent_at is not None and tl.sent_at <= now else None
        done = tl.delivered_at if tl.delivered_at is not None and tl.delivered_at <= now else None
        return tl.statuses[idx], sent, done

    def steady(self, now: float) -> tuple[float, float] | None:
        """The ``[from, until)`` span around `now` in which state() stays the same, if known."""
        tl = self.timeline
        if self.history is not None or tl is None:
            return None  # manual messages change whenever set_status() is called
        # state() changes only at timeline events; sent_at and delivered_at are event times too
        marks = [*tl.times, *(t for t in (tl.sent_at, tl.delivered_at) if t is not None)]
        start = max((t for t in marks if t <= now), default=-math.inf)
        return start, min((t for t in marks if t > now), default=math.inf)

    def events(self, now: float) -> list[Event]:
        """Return the status transitions up to `now` (all of them for manual messages)."""
        if self.history is not None:
            return list(self.history)
        tl = self.timeline
        if tl is None:
            raise RuntimeError("timeline not materialized")
        return [(t, s) for t, s in zip(tl.times, tl.statuses, strict=True) if t <= now]

    def freeze(self, now: float) -> None:
        """Turn an automatic message into a manual one, keeping what happened so far."""
        if self.history is not None:
            return
        _, self.sent_at, self.delivered_at = self.state(now)
        self.rendered = None
        self.history = self.events(now)
        self.timeline = None

    def apply_status(self, t: float, status: str) -> None:
        """Record a manual status change at `t` (whole seconds)."""
        if self.history is None:
            raise RuntimeError("freeze() the message first")
        self.history.append((t, status))
        final = status in FINAL_STATUSES
        if (final or status == "sent") and self.sent_at is None:
            self.sent_at = t
        if final and self.delivered_at is None:
            self.delivered_at = t


class Selection:
    """The id-ordered rows matching a query: a contiguous run plus a few stragglers."""

    def __init__(
        self,
        base: list[Message],
        lo: int,
        hi: int,
        extra: list[Message],
        keep: Callable[[Message], bool],
    ) -> None:
        self._base, self._lo, self._hi = base, lo, max(lo, hi)
        self._extra = sorted(extra, key=lambda m: m.id)
        self.keep = keep  # the query's filters, for rows found through another index

    @property
    def total(self) -> int:
        """Number of matching rows."""
        return self._hi - self._lo + len(self._extra)

    def all(self) -> list[Message]:
        """Materialize every matching row, in id order."""
        rows = self._base[self._lo : self._hi]
        if self._extra:
            rows = sorted(rows + self._extra, key=lambda m: m.id)
        return rows

    def page(self, offset: int, limit: int, descending: bool) -> list[Message]:
        """Return one page in id order (or reversed) without materializing the rest."""
        if self._extra:
            rows = self.all()
            if descending:
                rows.reverse()
            return rows[offset : offset + limit]
        if not descending:
            start = self._lo + offset
            return self._base[start : min(start + limit, self._hi)]
        end = self._hi - offset  # exclusive, walking down from the newest row
        start = max(end - limit, self._lo)
        return self._base[start:end][::-1] if end > start else []


class MessageStore:
    """All messages, indexed by id, reference, creation time, campaign and report time."""

    def __init__(self) -> None:
        self.by_id: dict[int, Message] = {}
        self.by_ref: dict[str, list[Message]] = {}
        # rows whose created_at does not go backwards: bisectable by time
        self._seq: list[Message] = []
        self._seq_created: list[float] = []
        self._camp_seq: dict[int, list[Message]] = {}
        self._camp_created: dict[int, list[float]] = {}
        # explicitly backdated rows, scanned linearly (tests create only a few)
        self._late: list[Message] = []
        self.reports = ReportIndex()
        self.last_id = 0

    def __len__(self) -> int:
        """Number of stored messages."""
        return len(self.by_id)

    def add(self, m: Message) -> None:
        """Store a message; ids must grow with every call."""
        if m.id <= self.last_id:
            raise ValueError("message ids must increase")
        self.last_id = m.id
        self.by_id[m.id] = m
        self.reports.added(m)
        if m.reference_id is not None:
            self.by_ref.setdefault(m.reference_id, []).append(m)
        if self._seq_created and m.created < self._seq_created[-1]:
            self._late.append(m)
            return
        self._seq.append(m)
        self._seq_created.append(m.created)
        self._camp_seq.setdefault(m.campaign_id, []).append(m)
        self._camp_created.setdefault(m.campaign_id, []).append(m.created)

    def prune(self, before: float) -> int:
        """Forget messages created before `before`; return how many were dropped."""
        cut = bisect_left(self._seq_created, before)
        dropped = self._seq[:cut]
        del self._seq[:cut], self._seq_created[:cut]
        for cid, times in self._camp_created.items():
            k = bisect_left(times, before)
            del times[:k], self._camp_seq[cid][:k]
        dropped += [m for m in self._late if m.created < before]
        self._late = [m for m in self._late if m.created >= before]
        self.reports.drop(dropped)
        for m in dropped:
            del self.by_id[m.id]
            if m.reference_id is not None:
                kept = [r for r in self.by_ref[m.reference_id] if r is not m]
                if kept:
                    self.by_ref[m.reference_id] = kept
                else:
                    del self.by_ref[m.reference_id]
        return len(dropped)

    def iter_all(self) -> Iterable[Message]:
        """Every message in id order."""
        return sorted(self.by_id.values(), key=lambda m: m.id) if self._late else self._seq

    def select(
        self,
        *,
        date_from: float | None,
        date_to: float,
        campaign_id: int | None = None,
        message_id: int | None = None,
        reference_id: str | None = None,
    ) -> Selection:
        """Rows matching all given filters, with created_at within [date_from, date_to]."""
        lo_t = -math.inf if date_from is None else date_from

        def keep(m: Message) -> bool:
            return (
                lo_t <= m.created <= date_to
                and (campaign_id is None or m.campaign_id == campaign_id)
                and (reference_id is None or m.reference_id == reference_id)
                and (message_id is None or m.id == message_id)
            )

        if message_id is not None or reference_id is not None:
            if message_id is not None:
                hit = self.by_id.get(message_id)
                candidates = [hit] if hit is not None else []
            else:
                candidates = self.by_ref.get(reference_id or "", [])
            return Selection([], 0, 0, [m for m in candidates if keep(m)], keep)
        if campaign_id is None:
            base, times = self._seq, self._seq_created
        else:
            base = self._camp_seq.get(campaign_id, [])
            times = self._camp_created.get(campaign_id, [])
        lo = 0 if date_from is None else bisect_left(times, date_from)
        hi = bisect_right(times, date_to)
        return Selection(base, lo, hi, [m for m in self._late if keep(m)], keep)
