"""Message state of one target: what is pending, what is final, and what was counted.

Owns the counting contract: a message is counted once, at the first poll that sees it in a final
status; on a cold start, messages already final are the baseline; later final-status changes are
counted as changes, never as new messages; pending messages are re-checked on an age-based
schedule (:mod:`.schedule`) until final, or abandoned after their validity, and only swept on
it while the delivery-report feed, whose progress the tracker keeps too, is trusted. The
messages live in a :class:`~exporter.tracking.table.MessageTable`, the counters in
:mod:`.codec`'s records, series keys come from :mod:`.series`; each poll saves all of it in the
:class:`~exporter.tracking.store.StateStore` in one transaction, so a crash never loses or repeats
a count. Snapshots (:mod:`.snapshot`) are immutable copies for the collector.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module outside tracking but
the API's records, the config's records, the vocabulary and the defaults.
"""

from __future__ import annotations

import json
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from itertools import compress
from operator import attrgetter
from typing import TypeVar, cast

import structlog

from exporter.bsg.staged import StagedMessages
from exporter.bsg.wire import Message, is_final
from exporter.config.schema import MetricsConfig, PollConfig, TargetConfig
from exporter.defaults import DEFAULT_VALIDITY_HOURS
from exporter.model import DEFAULT_CHANNEL, FINAL_STATUSES, MISSING_VALUE
from exporter.tracking.codec import Counters, Progress, dump, restore
from exporter.tracking.counts import Histogram, add_to
from exporter.tracking.feed import FeedSchedule
from exporter.tracking.schedule import FeedRead, FeedResult, Recheck, mark_run, tiers_due
from exporter.tracking.series import SeriesKeys
from exporter.tracking.snapshot import SEP, ApplyResult, TargetSnapshot, channel_of
from exporter.tracking.store import StateStore
from exporter.tracking.table import Final, MessageTable, Row, minute_runs
from exporter.tracking.tally import tally_finals
from exporter.tracking.window import WindowCounts

T = TypeVar("T")
PRUNE_MARGIN = 300.0
"""Seconds a final message is kept after leaving the window, so a read whose window start is
rounded to whole seconds can never show it to the tracker as a new message."""
READ_OVERLAP = 10.0
"""Seconds each read of new messages reaches back before the cursor: a row that shows up in the
API a little late, with an older created_at, is still found (known rows cost nothing more)."""
RESUME_OVERLAP = 50
"""Rows re-read when an unfinished read resumes, in case a row moved (known rows are free)."""
COMPACT_MIN_CHANGES = 100_000
"""Changes saved before a snapshot replaces a target's chunks, however small its table."""

log = structlog.get_logger("exporter.tracking.tracker")
_NOTHING_DUE = Recheck()
_DEFAULT_POLL = PollConfig()
_DEFAULT_METRICS = MetricsConfig()


class Standing(IntEnum):
    """Where a tracked message stands in the counting contract."""

    PENDING = 0
    COUNTED = 1
    BASELINE = 2  # final at the cold start: never counted, never counted as a change


@dataclass(slots=True)
class _Batch:
    """Tallies of one apply."""

    new: int = 0
    finalized: int = 0
    changes: int = 0
    ignored: int = 0


class TargetTracker:
    """The message state and counters of one target, persisted in a :class:`StateStore`."""

    def __init__(
        self,
        store: StateStore,
        target: TargetConfig,
        *,
        poll: PollConfig = _DEFAULT_POLL,
        metrics: MetricsConfig = _DEFAULT_METRICS,
        count_existing_on_start: bool = False,
        on_count: Callable[[Message, float], None] | None = None,
    ) -> None:
        """The tracker of ``target``, loaded from ``store``; ``on_count`` hears every count."""
        self.name = target.name
        self.window = target.window
        self.campaign_id = target.campaign_id
        self.labels = tuple(target.labels)
        self._max_values = target.max_label_values
        self._store = store
        # Stored series keys have the shape of the labels: other labels mean starting over.
        self._identity = json.dumps({"campaign_id": self.campaign_id, "labels": list(self.labels)})
        self._count_existing = count_existing_on_start
        self._latency_buckets = tuple(metrics.delivery_latency_buckets)
        self._send_buckets = tuple(metrics.send_delay_buckets)
        self._recheck = tuple(poll.recheck)  # (max_age, every) pairs
        self._grace = poll.abandon_grace
        self._feed_on = poll.report_feed
        # A re-check due within half an interval is done now, not a whole cycle late.
        self._interval = poll.interval
        self._slack = poll.interval / 2
        self._on_count = on_count  # told of every count with the poll's now (benchmarks)
        self._c = Counters()
        self._p = Progress()
        self._read_labels = attrgetter("channel", *self.labels)  # the fields labelled by
        self._table = MessageTable()
        self._window = WindowCounts(self._table, self.window)
        self._backlog = 0
        self._load()

    @property
    def cold(self) -> bool:
        """True until the first poll completed: its final messages are the baseline."""
        return self._p.cold

    def next_read(self, now: float) -> tuple[float, int]:
        """Where the read of new messages starts: ``(created_at, offset)``.

        An unfinished read resumes at the offset it reached (rows come in id order and new ones
        are only appended, so offsets stay put; a campaign sent in one second cannot stall it).
        Otherwise the read starts a little before the last one ended, else at the window.
        """
        window_start = now - self.window
        if self._p.resume is not None:
            start, offset = self._p.resume
            if start >= window_start:
                return start, max(0, offset - RESUME_OVERLAP)
        last = self._p.cursor_created
        if self._p.read_to is not None:
            last = self._p.read_to if last is None else max(last, self._p.read_to)
        if last is None:
            return window_start, 0
        return max(window_start, last - READ_OVERLAP), 0

    @property
    def feed_trusted(self) -> bool:
        """True while the delivery-report feed is read and its order has held."""
        return self._feed.trusted

    def feed_read(self, now: float) -> FeedRead | None:
        """What the report feed should read this poll; None when there is nothing to follow,
        the feed is off, or it waits to be tried again after a disorder."""
        runs = self._p.tier_runs if len(self._p.tier_runs) == len(self._recheck) else ()
        return self._feed.ask(now, self._table.oldest_pending(), runs)

    def rechecks(self, now: float, feed: FeedResult | None = None) -> Recheck:
        """The pending messages whose re-check is due, most overdue first, and their tiers.

        Each tier is re-checked as a whole, every ``every``: all its pending messages fall due
        in the same poll, so one range read covers them (a tier re-checked message by message
        would be due in slivers, every poll, each sliver costing a read over the whole stretch).
        Messages the budget left over from an earlier poll come first. After a ``feed`` pass
        that read every report since the last one, in order, the tiers only sweep.
        """
        table = self._table
        due = table.due(now)  # the backlog, and last reads before abandoning
        sweep = self._feed.sweep(feed)
        # Messages whose validity just ended, not read since: the outcome is due now, unless
        # the feed shows expiries (the API gives them a report time); then they are read only
        # once, as they would be abandoned.
        shown = sweep is not None and self._feed.shows_expiries
        due += table.validity_ended(now + (self._slack if shown else self._grace))
        tiers = tiers_due(self._recheck, self._p.tier_runs, now, self._slack, sweep)
        lower = 0.0
        for index, (max_age, _every) in enumerate(self._recheck):
            if index in tiers:
                last = index == len(self._recheck) - 1
                after = float("-inf") if last else now - max_age
                due += table.pending_created_between(after, now - lower)
            lower = max_age
        unique: dict[int, float] = {}
        for msg_id, created in due:
            unique.setdefault(msg_id, created)
        return Recheck(tuple(unique.items()), frozenset(tiers))

    def density(self, start: float, end: float) -> int:
        """Messages seen created in ``[start, end]`` (whole minutes): what a range read costs."""
        return self._p.density.between(int(start // 60), int(end // 60))

    def apply(
        self,
        messages: Mapping[int, Message] | Iterable[Message],
        now: float,
        *,
        checked: Iterable[int] = (),
        cursor: tuple[int, float] | None = None,
        read_to: float | None = None,
        resume: tuple[float, int] | None = None,
        rejected: Mapping[str, int] | None = None,
        recheck: Recheck | None = None,
        feed: FeedResult | None = None,
    ) -> ApplyResult:
        """Fold one poll's reads into the state and save it, all in one transaction.

        ``messages`` staged (as the poller's reads hold them), by id, or any iterable of them
        in which the last version of an id counts; they are applied a batch at a time, and a
        staging is emptied as they are (its memory goes while the table's grows).
        ``recheck`` is what :meth:`rechecks` asked this poll to re-read: its tiers count as
        run, and what of it ``checked`` lacks is the backlog; None: this poll re-read nothing
        on schedule (the backlog stays).
        ``feed`` is what this poll's report feed pass found, if one ran.
        """
        if not isinstance(messages, StagedMessages):
            messages = StagedMessages(
                messages.values() if isinstance(messages, Mapping) else messages
            )
        batch = _Batch()
        checked = set(checked)
        try:
            with self._store.transaction():
                abandoned = self._apply(messages, now, checked, batch)
                self._advance(now, cursor, read_to, resume, rejected or {})
                self._finish_tiers(now, checked, recheck or _NOTHING_DUE)
                if feed is not None:
                    self._follow_feed(now, feed)
                self._save()
        except BaseException:
            self._reload_keeping_failures()
            raise
        if recheck is not None:
            self._backlog = len(recheck.left_unread(checked))
        return ApplyResult(batch.new, batch.finalized, batch.changes, batch.ignored, abandoned)

    def record_failure(self, reason: str) -> None:
        """Count a failed poll, persisted like every other counter (when the store can)."""
        add_to(self._c.errors, reason)
        with self._store.transaction():
            self._save()

    def save_all(self) -> None:
        """Write the whole state anew (a state file re-created under a running exporter)."""
        self._table.take_changes()  # the snapshot holds them
        with self._store.transaction():
            self._store.replace_chunks(self.name, self._table.snapshot())
            self._store.save_target(self.name, self._identity, dump(self._c, self._p))

    def _reload_keeping_failures(self) -> None:
        """Drop what a failed apply did in memory (the store is the truth), except the failed
        polls counted while the store refused writes: they happened, and are saved later."""
        errors = dict(self._c.errors)
        self._load()
        for reason, count in errors.items():
            self._c.errors[reason] = max(count, self._c.errors.get(reason, 0))

    def snapshot(self, now: float) -> TargetSnapshot:
        """Copy the counters and gauges as of ``now``."""
        self._window.slide(now)
        oldest = self._table.oldest_pending()
        c = self._c
        return TargetSnapshot(
            name=self.name,
            label_names=self.labels,
            series=tuple(sorted(c.series)),
            channels=tuple(sorted(c.latency)),
            overflow=dict(c.overflow),
            messages=dict(c.counted),
            submitted=dict(c.submitted),
            cost_nanos=dict(c.cost),
            changes=dict(c.changes),
            abandoned=dict(c.abandoned),
            delivery_latency={k: h.copy() for k, h in c.latency.items()},
            send_delay={k: h.copy() for k, h in c.send_delay.items()},
            window=self._window.counts(),
            errors=dict(c.errors),
            rejected=dict(c.rejected),
            feed_trusted=self.feed_trusted,
            feed_disorders=dict(c.disorders),
            oldest_pending_age=max(0.0, now - oldest) if oldest is not None else 0.0,
            tracked=len(self._table),
            pending=self._table.pending,
            backlog=self._backlog,
        )

    def _apply(
        self, messages: StagedMessages, now: float, checked: Iterable[int], batch: _Batch
    ) -> int:
        """Update rows and counters for what was read; returns the number abandoned."""
        if self._p.cold and self._p.horizon == float("-inf"):
            # Nothing older than the baseline's window was ever seen: such a message showing up
            # later (a read widened for stragglers) is not new, and must not be counted.
            self._p.horizon = now - self.window
            self._p.baseline_started = now
        self._window.slide(now)
        # A batch at a time: what a poll read is never all decoded at once (one id each).
        for part in messages.take_batches():
            self._fold(part, now, batch)
        table = self._table
        for msg_id in checked:  # asked for: look again on schedule (returned or not)
            row = table.row(msg_id)
            if row is not None:
                next_check = self._next_check(row, now)
                if next_check != row.next_check:
                    row.next_check = next_check
                    table.update(row)
        return self._abandon(now)

    def _fold(self, messages: list[Message], now: float, batch: _Batch) -> None:
        """Update rows and counters for these messages (one of each id)."""
        table = self._table
        if table.isdisjoint(list(map(_ID, messages))):  # a cold read: all new
            fresh = messages
        else:
            fresh = []
            for message in messages:
                entry = table.get(message.id)
                if entry is None:
                    fresh.append(message)
                elif type(entry) is Row:
                    self._update_pending(entry, message, now, batch)
                elif entry.status != message.status:  # else a re-read of a final message
                    # type() is not narrowed like isinstance(), which costs more in this loop
                    self._update_final(entry, message, batch)  # type: ignore[arg-type]
        if fresh:
            self._first_sights(fresh, now, batch)

    def _first_sights(self, fresh: list[Message], now: float, batch: _Batch) -> None:
        """Start tracking messages never seen before.

        Done column by column with builtins (map, zip, Counter) rather than message by
        message: a cold read passes here for every message of the window, and a Python loop
        over them would be most of the tracker's time. Only what differs
        per message (a pending one, a count, a baseline decided by the delivery time) is
        left to Python loops, over just those messages.
        """
        created: list[float | None] = list(map(_CREATED, fresh))
        # None is not among them when min() runs
        earliest = None if None in created else min(created)  # type: ignore[type-var]
        if earliest is None or earliest < self._p.horizon:
            fresh, created = self._admit(fresh, created, now, batch)
            if not fresh:
                return
            earliest = None
        times = cast(list[float], created)
        if earliest is None:
            earliest = min(times)
        keys = self._keys_of(fresh)
        counts = Counter(keys)
        for series in sorted({series for series, _ in counts} - self._c.series):
            self._add_series(series)
        # The baseline (see _baseline_until): None is every message while cold, none after.
        until = self._baseline_until(now)
        baseline = list(map(until.__ge__, times)) if self._p.cold and until != math.inf else None
        self._count_sights(keys, counts, (times, earliest), baseline)
        finals = {key: key[1] in _FINAL for key in counts}
        if not all(finals.values()):
            final = list(map(finals.__getitem__, keys))
            for message, at, (series, _) in compress(
                zip(fresh, times, keys, strict=True), map(operator.not_, final)
            ):
                self._first_pending(message, at, series)
            fresh, times, keys = _kept(fresh, final), _kept(times, final), _kept(keys, final)
            baseline = None if baseline is None else _kept(baseline, final)
            batch.new += final.count(False)
        if not self._p.cold:
            entries = self._first_counted(fresh, keys, now, batch)
        elif baseline is None and not self._count_existing:
            entries = list(map(_Finals(self._table, _BASELINE).__getitem__, keys))
        else:
            entries = self._first_final_while_cold(fresh, keys, (baseline, until), now, batch)
        self._table.add_finals(list(map(_ID, fresh)), times, entries)
        batch.new += len(fresh)

    def _keys_of(self, fresh: list[Message]) -> list[tuple[str, str]]:
        """The (series, status) of each message."""
        if not self.labels:
            return list(map(_CHANNEL_STATUS, fresh))
        series = map(self._series_keys.__getitem__, map(self._read_labels, fresh))
        return list(zip(series, map(_STATUS, fresh), strict=True))

    def _count_sights(
        self,
        keys: list[tuple[str, str]],
        counts: Counter[tuple[str, str]],
        times: tuple[list[float], float],
        baseline: list[bool] | None,
    ) -> None:
        """Add new messages to the submitted counts, the density and the window counts.

        ``times`` are their creation times, and the earliest of them.
        """
        created, earliest = times
        if not self._p.cold or baseline is not None:
            after = (
                counts
                if baseline is None
                else Counter(compress(keys, map(operator.not_, baseline)))
            )
            for (series, _), count in after.items():
                add_to(self._c.submitted, series, count)
        for minute, first, end in minute_runs(created):
            self._p.density.add(minute, end - first)
        self._window.add_new(keys, counts, created, earliest)

    def _admit(
        self, fresh: list[Message], created: list[float | None], now: float, batch: _Batch
    ) -> tuple[list[Message], list[float | None]]:
        """Drop messages older than the horizon (already pruned, or older than the baseline);
        a message without a creation time is taken as created now."""
        horizon = self._p.horizon
        kept: list[Message] = []
        times: list[float | None] = []
        for message, at in zip(fresh, created, strict=True):
            moment = now if at is None else at
            if moment < horizon:
                batch.ignored += 1
            else:
                kept.append(message)
                times.append(moment)
        return kept, times

    def _first_counted(
        self, fresh: list[Message], keys: list[tuple[str, str]], now: float, batch: _Batch
    ) -> list[Final]:
        """Count final messages first seen after the baseline; their table entries."""
        self._tally_all(fresh, keys, now)
        batch.finalized += len(fresh)
        return list(map(_Finals(self._table, _COUNTED).__getitem__, keys))

    def _first_final_while_cold(
        self,
        fresh: list[Message],
        keys: list[tuple[str, str]],
        cut: tuple[list[bool] | None, float],
        now: float,
        batch: _Batch,
    ) -> list[Final]:
        """Sort final messages seen while cold into the baseline and the counted ones.

        ``cut`` is whether each was created in the baseline (None: all were), and the moment
        up to which a delivery report keeps it there.
        """
        baseline, until = cut
        baseline_finals = _Finals(self._table, _BASELINE)
        counted_finals = _Finals(self._table, _COUNTED)
        counts_existing = self._count_existing
        entries: list[Final] = []
        counted: list[Message] = []
        counted_keys: list[tuple[str, str]] = []
        for index, (message, key) in enumerate(zip(fresh, keys, strict=True)):
            reported = message.delivered_at
            in_baseline = baseline is None or baseline[index]
            if in_baseline and not counts_existing and (reported is None or reported <= until):
                entries.append(baseline_finals[key])
            else:
                counted.append(message)
                counted_keys.append(key)
                entries.append(counted_finals[key])
        self._tally_all(counted, counted_keys, now)
        batch.finalized += len(counted)
        return entries

    def _first_pending(self, message: Message, created_at: float, series: str) -> None:
        """Start following a message first seen pending."""
        # No re-check time of its own: its tier decides (see due()).
        deadline = created_at + self._lifetime(message)
        row = Row(message.id, created_at, series, message.status, None, deadline)
        self._table.add_pending(row)

    def _baseline_until(self, now: float) -> float:
        """While cold, the baseline is what was created, and final, up to this moment.

        That is, up to the start of the first read: everything during the first poll itself
        (where a clock ahead of ours must not turn baseline into counts). When the request
        budget spreads that read over several polls, a message created after it began is new
        like any other, and so is one whose delivery report came after it began: it was
        pending at the baseline moment.
        """
        started = self._p.baseline_started
        return math.inf if started is None or now <= started else started

    def _update_pending(self, row: Row, message: Message, now: float, batch: _Batch) -> None:
        """Follow a pending message; count it when it turns final."""
        status = message.status
        if is_final(status):
            self._window.move(row.created_at, row.series, row.status, status)
            row.status = status
            self._tally(row.series, message, now)
            self._table.finalize(row, self._table.final(row.series, status, _COUNTED))
            batch.finalized += 1
            return
        next_check = self._next_check(row, now)
        if status == row.status and next_check == row.next_check:
            return  # nothing new: nothing to save
        self._window.move(row.created_at, row.series, row.status, status)
        row.status, row.next_check = status, next_check
        self._table.update(row)

    def _update_final(self, entry: Final, message: Message, batch: _Batch) -> None:
        """Note a final status that changed after counting."""
        if message.status == entry.status or not is_final(message.status):
            return  # a final status never goes back to pending: keep the final one
        if entry.state == _COUNTED:
            add_to(self._c.changes, (entry.status, message.status))
            batch.changes += 1
        created_at: float | None = message.created_at
        if created_at is None:
            created_at = self._table.created_at(message.id)
        if created_at is not None:
            self._window.move(created_at, entry.series, entry.status, message.status)
        self._table.change_final(
            message.id, self._table.final(entry.series, message.status, entry.state)
        )

    def _tally(self, series: str, message: Message, now: float) -> None:
        """Add a message that just reached a final status to the counters of ``series``."""
        self._tally_all([message], [(series, message.status)], now)

    def _tally_all(self, messages: list[Message], keys: list[tuple[str, str]], now: float) -> None:
        """Count messages that just reached a final status, under their (series, status)."""
        if self._on_count is not None:
            for message in messages:
                self._on_count(message, now)
        tally_finals(self._c, messages, keys, bool(self.labels))

    def _abandon(self, now: float) -> int:
        """Stop following pending messages past validity plus grace; count them by last status."""
        expired = self._table.expired(now)
        for row in expired:
            add_to(self._c.abandoned, (row.series, row.status))
            self._window.add(row.created_at, row.series, row.status, -1)
        self._table.abandon(expired)
        return len(expired)

    def _advance(
        self,
        now: float,
        cursor: tuple[int, float] | None,
        read_to: float | None,
        resume: tuple[float, int] | None,
        rejected: Mapping[str, int],
    ) -> None:
        """Move the cursor and the horizon, prune what left the window, count rejects."""
        p = self._p
        if resume is None:
            # The baseline is complete once a read of new messages got to the end: a budget
            # too small for a big window spreads the baseline over several polls.
            p.cold = False
        if cursor is not None and (p.cursor_id is None or cursor[0] > p.cursor_id):
            p.cursor_id, p.cursor_created = cursor
        if read_to is not None:
            p.read_to = read_to
        p.resume = resume
        horizon = now - self.window - PRUNE_MARGIN
        if horizon > p.horizon:
            p.horizon = horizon
            self._table.prune(horizon)
        oldest = self._table.oldest_pending()
        keep_from = int(min(p.horizon, oldest if oldest is not None else p.horizon) // 60)
        p.density.keep_from(keep_from)
        for reason, count in rejected.items():
            add_to(self._c.rejected, reason, count)

    def _follow_feed(self, now: float, result: FeedResult) -> None:
        """Fold a feed pass into its progress; count a disorder."""
        if result.disorder is not None:
            add_to(self._c.disorders, result.disorder)
        self._feed.follow(now, result)

    def _next_check(self, row: Row, now: float) -> float | None:
        """A still-pending message's own re-check time, after it was just read.

        Normally none: its tier decides (see :meth:`due`). Once its validity is over, the API
        reports the outcome (expired) at any moment, so it is read once more right before it
        would be abandoned, whatever its tier's period.
        """
        if row.deadline is not None and row.deadline - self._grace <= now:
            return row.deadline
        return None

    def _finish_tiers(self, now: float, checked: set[int], recheck: Recheck) -> None:
        """Mark the tiers that were due as run; due messages left unread become the backlog."""
        mark_run(self._recheck, self._p.tier_runs, recheck.tiers, now)
        self._table.mark_backlog(recheck.left_unread(checked), now)

    def _lifetime(self, message: Message) -> float:
        """Seconds after creation at which a still-pending message is abandoned."""
        hours = message.validity_hours or DEFAULT_VALIDITY_HOURS
        return hours * 3600.0 + self._grace

    def _add_series(self, series: str) -> None:
        """Start the zero-valued series of a series (and its channel) seen for the first time."""
        self._c.series.add(series)
        channel = channel_of(series)
        self._c.latency.setdefault(channel, Histogram(self._latency_buckets))
        self._c.send_delay.setdefault(channel, Histogram(self._send_buckets))

    def _load(self) -> None:
        """Read the saved state, or start cold; a target whose identity changed starts over."""
        self._c, self._p = Counters(), Progress()
        self._table = MessageTable()
        self._window = WindowCounts(self._table, self.window)
        stored = self._store.load_target(self.name)
        if stored is not None and stored[0] != self._identity:
            log.warning("state_target_reset", target=self.name, reason="campaign_id changed")
            self._store.drop_target(self.name)
            stored = None
        if stored is not None:
            restore(self._c, self._p, stored[1], self._latency_buckets, self._send_buckets)
        self._feed = FeedSchedule(self._p.feed, on=self._feed_on, interval=self._interval)
        # Remembers the label values the counters admitted: dropped with them.
        self._series_keys = SeriesKeys(
            self.labels, self._max_values, self._c.label_values, self._c.overflow
        )
        if not self._c.series:
            self._add_series(SEP.join([DEFAULT_CHANNEL, *(MISSING_VALUE for _ in self.labels)]))
        for series in list(self._c.series):
            self._add_series(series)
        for chunk in self._store.chunks(self.name):
            self._table.replay(chunk)
        if self._p.horizon != float("-inf"):
            self._table.prune(self._p.horizon)

    def _save(self) -> None:
        """Write the counters, progress and table changes (inside the poll's transaction).

        The table's chunks are replaced by one snapshot once they hold twice as many changes
        as the table has messages: a load replays at most that, and a message is rewritten
        about once per two changes saved.
        """
        table = self._table
        changes = table.take_changes()
        if table.written > 2 * len(table) + COMPACT_MIN_CHANGES:
            self._store.replace_chunks(self.name, table.snapshot())
        elif changes is not None:
            self._store.append_chunk(self.name, changes)
        self._store.save_target(self.name, self._identity, dump(self._c, self._p))


_FINAL = frozenset(FINAL_STATUSES)
_COUNTED, _BASELINE = int(Standing.COUNTED), int(Standing.BASELINE)
"""The final states as plain ints, as the table keeps and saves them."""


_ID = attrgetter("id")
_CREATED = attrgetter("created_at")
_CHANNEL_STATUS = attrgetter("channel", "status")
_STATUS = attrgetter("status")


class _Finals(dict[tuple[str, str], Final]):
    """The table's shared entries of final messages in one state, by (series, status)."""

    def __init__(self, table: MessageTable, state: int) -> None:
        super().__init__()
        self._table = table
        self._state = state

    def __missing__(self, key: tuple[str, str]) -> Final:
        entry = self[key] = self._table.final(key[0], key[1], self._state)
        return entry


def _kept(items: list[T], keep: list[bool]) -> list[T]:
    """The items whose flag is set."""
    return list(compress(items, keep))
