"""Message state of one target: what is pending, what is final, and what was counted.

Owns the counting contract: a message is counted once, at the first poll that sees it in a final
status; on a cold start, messages already final are the baseline; later final-status changes are
counted as changes, never as new messages. It also keeps the counters and histograms that follow
from counting, and builds immutable snapshots for the collector.

Must not import: prometheus_client, httpx, or the client, poller, collector and web modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from exporter.bsg.records import DELIVERED_STATUSES, Message, is_final
from exporter.stats import Histogram, add_to

PRUNE_MARGIN = 300.0
"""Seconds a final message is kept after leaving the window, so a read whose window start is
rounded to whole seconds can never show it to the tracker as a new message."""


class State(IntEnum):
    """Where a tracked message stands in the counting contract."""

    PENDING = 0
    COUNTED = 1
    BASELINE = 2  # final at the cold start: never counted, never counted as a change


class Tracked:
    """What the tracker keeps of one message."""

    __slots__ = ("channel", "created_at", "state", "status")

    def __init__(self, status: str, channel: str, created_at: float, state: State) -> None:
        self.status = status
        self.channel = channel
        self.created_at = created_at
        self.state = state


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one poll changed."""

    new: int
    finalized: int
    changes: int
    ignored: int


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """A target's counters and gauges at the end of a poll, for the collector."""

    name: str
    channels: tuple[str, ...]
    messages: Mapping[tuple[str, str], int]
    submitted: Mapping[str, int]
    cost_nanos: Mapping[tuple[str, str, str], int]
    changes: Mapping[tuple[str, str], int]
    delivery_latency: Mapping[str, Histogram]
    send_delay: Mapping[str, Histogram]
    window: Mapping[tuple[str, str], int]
    oldest_pending_age: float
    tracked: int
    pending: int


class TargetTracker:
    """The message state and counters of one target."""

    def __init__(
        self,
        name: str,
        window: float,
        *,
        count_existing_on_start: bool = False,
        delivery_latency_buckets: Sequence[float],
        send_delay_buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.window = window
        self.cold = True
        self._count_existing = count_existing_on_start
        self._latency_buckets = tuple(delivery_latency_buckets)
        self._send_buckets = tuple(send_delay_buckets)
        self._messages: dict[int, Tracked] = {}
        self._horizon = float("-inf")
        self._channels: set[str] = set()
        self._counted: dict[tuple[str, str], int] = {}
        self._submitted: dict[str, int] = {}
        self._cost: dict[tuple[str, str, str], int] = {}
        self._changes: dict[tuple[str, str], int] = {}
        self._latency: dict[str, Histogram] = {}
        self._send_delay: dict[str, Histogram] = {}
        self._add_channel("sms")

    def apply(self, messages: Iterable[Message], now: float) -> ApplyResult:
        """Fold one poll's reads into the state; the first call sets the baseline."""
        new = finalized = changes = ignored = 0
        if self.cold:
            # Nothing older than the baseline's window was ever seen: such a message showing up
            # later (a read widened for stragglers) is not new, and must not be counted.
            self._horizon = now - self.window
        for message in messages:
            tracked = self._messages.get(message.id)
            if tracked is None:
                outcome = self._first_sight(message, now)
                new += outcome != _IGNORED
                finalized += outcome == _COUNTED_NOW
                ignored += outcome == _IGNORED
            elif tracked.state is State.PENDING:
                finalized += self._update_pending(tracked, message)
            else:
                changes += self._update_final(tracked, message)
        self.cold = False
        self._prune(now)
        return ApplyResult(new=new, finalized=finalized, changes=changes, ignored=ignored)

    def pending_before(self, moment: float) -> list[tuple[int, float]]:
        """``(id, created_at)`` of pending messages created before ``moment``, oldest first."""
        found = [
            (msg_id, t.created_at)
            for msg_id, t in self._messages.items()
            if t.state is State.PENDING and t.created_at < moment
        ]
        return sorted(found, key=lambda item: item[1])

    def snapshot(self, now: float) -> TargetSnapshot:
        """Copy the counters and compute the window gauges as of ``now``."""
        window_start = now - self.window
        window: dict[tuple[str, str], int] = {}
        oldest_pending: float | None = None
        pending = 0
        for tracked in self._messages.values():
            if tracked.state is State.PENDING:
                pending += 1
                if oldest_pending is None or tracked.created_at < oldest_pending:
                    oldest_pending = tracked.created_at
            if tracked.created_at >= window_start:
                key = (tracked.channel, tracked.status)
                window[key] = window.get(key, 0) + 1
        return TargetSnapshot(
            name=self.name,
            channels=tuple(sorted(self._channels)),
            messages=dict(self._counted),
            submitted=dict(self._submitted),
            cost_nanos=dict(self._cost),
            changes=dict(self._changes),
            delivery_latency={k: h.copy() for k, h in self._latency.items()},
            send_delay={k: h.copy() for k, h in self._send_delay.items()},
            window=window,
            oldest_pending_age=max(0.0, now - oldest_pending)
            if oldest_pending is not None
            else 0.0,
            tracked=len(self._messages),
            pending=pending,
        )

    def _first_sight(self, message: Message, now: float) -> int:
        """Start tracking a message never seen before; return what happened to it."""
        created_at = message.created_at if message.created_at is not None else now
        if created_at < self._horizon:
            # Already pruned, or older than the baseline: a read reaching back that far must
            # not count it.
            return _IGNORED
        final = is_final(message.status)
        if self.cold and final and not self._count_existing:
            state = State.BASELINE
        else:
            state = State.PENDING
        if not self.cold:
            add_to(self._submitted, message.channel)
        if message.channel not in self._channels:
            self._add_channel(message.channel)
        tracked = Tracked(message.status, message.channel, created_at, state)
        self._messages[message.id] = tracked
        if final and state is State.PENDING:
            self._count(tracked, message)
            return _COUNTED_NOW
        return _TRACKED

    def _update_pending(self, tracked: Tracked, message: Message) -> int:
        """Follow a pending message; count it when it turns final. Returns 1 if counted."""
        tracked.status = message.status
        if not is_final(message.status):
            return 0
        self._count(tracked, message)
        return 1

    def _update_final(self, tracked: Tracked, message: Message) -> int:
        """Note a final status that changed after counting. Returns 1 if a change was counted."""
        if message.status == tracked.status or not is_final(message.status):
            return 0  # a final status never goes back to pending: keep the final one
        if tracked.state is State.COUNTED:
            add_to(self._changes, (tracked.status, message.status))
        tracked.status = message.status
        return int(tracked.state is State.COUNTED)

    def _count(self, tracked: Tracked, message: Message) -> None:
        """Count a message that just reached a final status, with its cost and latencies."""
        tracked.state = State.COUNTED
        channel, status = message.channel, message.status
        add_to(self._counted, (channel, status))
        if message.cost_nanos is not None and message.currency:
            add_to(self._cost, (channel, status, message.currency), message.cost_nanos)
        sent = message.sent_at
        if status in DELIVERED_STATUSES and sent is not None and message.delivered_at is not None:
            # Clock skew between the provider's systems can order the two stamps wrongly.
            self._latency[channel].observe(max(0.0, message.delivered_at - sent))
        if sent is not None and message.created_at is not None:
            self._send_delay[channel].observe(max(0.0, sent - message.created_at))

    def _add_channel(self, channel: str) -> None:
        """Start the zero-valued series of a channel seen for the first time."""
        self._channels.add(channel)
        self._latency[channel] = Histogram(self._latency_buckets)
        self._send_delay[channel] = Histogram(self._send_buckets)

    def _prune(self, now: float) -> None:
        """Forget final messages that left the window: no range read returns them again."""
        horizon = now - self.window - PRUNE_MARGIN
        if horizon <= self._horizon:
            return
        self._horizon = horizon
        stale = [
            msg_id
            for msg_id, t in self._messages.items()
            if t.state is not State.PENDING and t.created_at < horizon
        ]
        for msg_id in stale:
            del self._messages[msg_id]


_IGNORED, _TRACKED, _COUNTED_NOW = 0, 1, 2
