"""The polling loop: schedules targets, calls the client, feeds the trackers.

Owns the cycle (every target, then the balance, once per poll interval) and the execution of a
target's read plan: new messages from the cursor, then the due re-checks of pending messages,
within the request budget. A poll that fails changes no tracker: its reads are dropped whole,
so a failure can delay a count but never double it. A poll cut short by the budget keeps what it
read: rows come in id order, so the cursor only moves over what was really read. A cold read
(the baseline) is committed every :data:`~exporter.defaults.COLD_CHUNK_PAGES` pages, each chunk
a poll of its own, and read on in the same cycle: a window's reads are never all held at once.

Must not import: prometheus_client, or the serving package.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import structlog

from exporter.bsg.budget import RequestBudget
from exporter.bsg.client import BsgClient
from exporter.bsg.errors import BsgError, BudgetExhaustedError, ClientError, StoppedError
from exporter.bsg.paging import ChunkedPass, MessagePass, MessageQuery
from exporter.bsg.reports import ReportPass, ReportQuery
from exporter.bsg.staged import StagedMessages
from exporter.config.schema import Config, TargetConfig
from exporter.defaults import COLD_CHUNK_PAGES, FEED_MAX_PAGES
from exporter.model import BUDGET, EXPIRED, INTERNAL, REFUSED, SHUTDOWN, STATE
from exporter.polling.planner import Density, ReadPlan, plan_reads, within_allowance
from exporter.stats import ExporterState
from exporter.tracking.counts import add_counts
from exporter.tracking.schedule import FeedRead, FeedResult, Recheck
from exporter.tracking.snapshot import ApplyResult, TargetSnapshot
from exporter.tracking.store import FILE_ERRORS, WRITE_ERRORS, StateStore
from exporter.tracking.tracker import TargetTracker

log = structlog.get_logger("exporter.polling.poller")


@dataclass(slots=True)
class PollReads:
    """Everything one target poll read."""

    messages: StagedMessages = field(default_factory=StagedMessages)
    checked: set[int] = field(default_factory=set)
    cursor: tuple[int, float] | None = None
    read_to: float | None = None
    resume: tuple[float, int] | None = None
    pages: int = 0
    rows: int = 0
    lookups: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    short: bool = False  # the budget ran out before the plan was done
    total_mismatches: int = 0  # passes whose meta.page.total disagreed with the rows read
    feed: ReportPass | None = None  # the delivery-report feed's pass, when one ran

    def add(self, read: MessagePass, covers: list[int] | tuple[int, ...]) -> None:
        """Merge one pass (its versions win); due messages it covered count as checked."""
        self.messages.extend(read.messages)
        self._tally(read)
        if read.complete and not read.capped:
            self.checked.update(covers)
        else:  # rows come in id order: what it covered up to the last id it read
            last = read.last_id if read.last_id is not None else -1
            self.checked.update(i for i in covers if i <= last)

    def add_reports(self, read: ReportPass) -> None:
        """Merge the feed's pass, read before the others (a message they read again keeps the
        version they read: merge it first)."""
        self.feed = read
        self.messages.extend(read.messages)
        self._tally(read)

    def _tally(self, read: MessagePass) -> None:
        """Add what a pass cost, rejected and found amiss; a pass the budget cut makes it short."""
        self.pages += read.pages
        self.rows += read.rows
        self.duplicates += read.duplicates
        self.total_mismatches += read.total_mismatch
        add_counts(self.rejected, read.rejected)
        self.short = self.short or not read.complete


@dataclass(frozen=True, slots=True)
class _ReadOn:
    """Where a chunked cold read goes on: the poll's moment and plan, and how far it got.

    Every chunk reads with the same ``filter[to]`` from the offset the last one reached, as
    one pass would, and the pass's checks (its page cap, rows that shifted) hold over all the
    chunks; the re-checks planned at the first chunk run with the last one.
    """

    now: float
    plan: ReadPlan
    recheck: Recheck
    offset: int
    sweep: ChunkedPass


class Poller:
    """Polls every target once per interval until stopped."""

    def __init__(
        self,
        config: Config,
        client: BsgClient,
        state: ExporterState,
        trackers: dict[str, TargetTracker],
        *,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
        budget: RequestBudget | None = None,
        store: StateStore | None = None,
        pause: AbstractContextManager[None] | None = None,
        cold_chunk_pages: int = COLD_CHUNK_PAGES,
    ) -> None:
        """``pause`` is held while a tracker applies a poll (the wiring passes the collector's);
        a cold read is committed every ``cold_chunk_pages`` pages."""
        self._config = config
        self._cold_chunk = cold_chunk_pages
        self._pause = pause or nullcontext()
        self._store = store
        self._client = client
        self._state = state
        self._trackers = trackers
        self._stop = stop
        self._clock = clock
        self._budget = budget
        # Held for each target poll: a reload swaps the parts between two polls, never inside one.
        self.lock = threading.RLock()

    def reconfigure(
        self,
        config: Config,
        client: BsgClient,
        trackers: dict[str, TargetTracker],
        budget: RequestBudget | None,
    ) -> None:
        """Use new parts from the next target poll on (takes ``lock``: never inside a poll)."""
        with self.lock:
            self._config, self._client, self._trackers = config, client, trackers
            self._budget = budget

    def run(self) -> None:
        """Run cycles until the stop event is set; each starts one interval after the last."""
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_cycle()
            except Exception:  # a bug outside one target's poll: report it, keep polling
                log.exception("poll_cycle_crashed")
            elapsed = time.monotonic() - started
            self._stop.wait(max(0.0, self._config.poll.interval - elapsed))

    def run_cycle(self) -> None:
        """Poll every target, then read the balance."""
        self._state.liveness.beat()
        with self.lock:
            self._watch_state_file()
        done: set[str] = set()
        while not self._stop.is_set():
            with self.lock:  # the config may change between two polls: look again each time
                targets = [t for t in self._config.targets if t.name not in done]
                if not targets:
                    self.poll_balance()
                    return
                self.poll_target(targets[0], share=len(targets))
                done.add(targets[0].name)
            self._state.liveness.beat()

    def _watch_state_file(self) -> None:
        """Write the state into a new file when the open one was deleted, moved or replaced.

        Every target's state is in memory: a new file holding it loses nothing, where going on
        with the unlinked one would lose everything counted since at the next restart.
        """
        problem = self._store.file_problem() if self._store is not None else None
        if self._store is None or problem is None:
            return
        try:
            aside = self._store.recreate()
            for tracker in self._trackers.values():
                tracker.save_all()
        except FILE_ERRORS as exc:
            log.error("state_file_lost", path=self._store.path, problem=problem, error=str(exc))
            recreated = False
        else:
            log.error(
                "state_file_lost",
                path=self._store.path,
                problem=problem,
                action="re-created from memory",
                foreign_file_moved_to=aside,
            )
            recreated = True
        for tracker in self._trackers.values():
            self._count_state_failure(tracker, problem if recreated else f"{problem}; not saved")

    def _count_state_failure(self, tracker: TargetTracker, problem: str) -> None:
        """Count a state-file failure against a target without marking it down."""
        try:
            tracker.record_failure(STATE)
        except Exception:  # the new file may be unusable too: the count stays in memory
            log.exception("state_write_failed", target=tracker.name)
        self._state.publish_problem(
            tracker.name, tracker.snapshot(self._clock()), f"state file: {problem}"
        )

    def poll_target(self, target: TargetConfig, share: int = 1) -> bool:
        """Poll one target and publish the outcome; True when the poll completed.

        ``share`` is how many targets (this one included) still wait for the cycle's budget.
        A cold read stopped at its chunk's pages is committed, then read on: each chunk is a poll
        of its own (its own transaction and log line) until the read gets to its end or the
        budget is spent. A chunk that fails ends the poll; the chunks before it stay saved, and
        the next cycle resumes where they got to.
        """
        tracker = self._trackers[target.name]
        chunk, read_on = 1, None
        while True:
            completed, read_on = self._poll_chunk(target, tracker, share, chunk, read_on)
            if not completed:
                return False
            if read_on is None or self._stop.is_set():
                return True
            if self._budget is not None and self._budget.remaining() <= 0:
                return True  # the next cycle reads on
            chunk += 1

    def _poll_chunk(
        self,
        target: TargetConfig,
        tracker: TargetTracker,
        share: int,
        chunk: int,
        read_on: _ReadOn | None,
    ) -> tuple[bool, _ReadOn | None]:
        """Poll once (the ``chunk``-th of a cold read, going on from ``read_on``, when given)
        and publish the outcome: whether it completed, and where a cold read goes on."""
        started = time.monotonic()
        try:
            reads, result, after = self._read_and_apply(target, tracker, share, read_on)
        except StoppedError:
            log.info("poll_abandoned", target=target.name, reason=SHUTDOWN)
            return False, None
        except BsgError as exc:
            self._publish_failure(tracker, exc.reason, str(exc), started)
            return False, None
        except WRITE_ERRORS as exc:  # the state file: disk full, read-only, gone
            log.error("state_write_failed", target=target.name, error=str(exc))
            self._publish_failure(tracker, STATE, f"state file: {exc}", started)
            return False, None
        except Exception as exc:  # a bug must not end the loop: report it and poll again later
            log.exception("poll_crashed", target=target.name)
            self._publish_failure(tracker, INTERNAL, repr(exc), started)
            return False, None
        self._publish_success(tracker, reads, result, started, chunk)
        return True, after

    def _read_and_apply(
        self, target: TargetConfig, tracker: TargetTracker, share: int, read_on: _ReadOn | None
    ) -> tuple[PollReads, ApplyResult, _ReadOn | None]:
        """Plan (or go on with a cold read), read, and fold the reads into the tracker in one
        transaction; also where a cold read stopped at its chunk goes on."""
        reads = PollReads()
        feed = report = None
        if read_on is None:
            now = self._clock()
            report, feed = self._read_feed(tracker.feed_read(now), target, now)
            # The feed is read first: whether its order held decides how much the tiers re-read.
            recheck = tracker.rechecks(now, feed)
            start, offset = tracker.next_read(now)
            plan = plan_reads(recheck.due, start, now, tracker.density, resuming=offset > 0)
            read_on = _ReadOn(now, plan, recheck, offset, ChunkedPass(offset))
            if report is not None:
                reads.add_reports(report)
        now, plan, recheck = read_on.now, read_on.plan, read_on.recheck
        sweep = self._execute(
            reads,
            plan,
            target,
            now,
            read_on.offset,
            share=share,
            density=tracker.density,
            sweep=read_on.sweep if tracker.cold else None,
        )
        was_trusted = tracker.feed_trusted
        with self._pause:
            result = tracker.apply(
                reads.messages,
                now,
                checked=reads.checked,
                cursor=reads.cursor,
                read_to=reads.read_to,
                resume=reads.resume,
                rejected=reads.rejected,
                recheck=recheck if sweep is None else None,  # the last chunk runs them
                feed=feed,
            )
        _log_feed(tracker, report, was_trusted)
        if sweep is None or reads.resume is None:  # resume: where the next chunk reads on
            return reads, result, None
        return reads, result, _ReadOn(now, plan, recheck, reads.resume[1], sweep)

    def _read_feed(
        self, ask: FeedRead | None, target: TargetConfig, now: float
    ) -> tuple[ReportPass | None, FeedResult | None]:
        """Read the delivery-report feed as the tracker asks, when it asks; and what to tell
        the tracker of it."""
        if ask is None:
            return None, None
        labels = target.labels
        query = ReportQuery(ask.start, now, ask.since, target.campaign_id, labels, FEED_MAX_PAGES)
        try:
            read = self._client.read_reports(query)
        except ClientError as exc:
            # The feed is an extra: an API that refuses its query keeps the poll going without
            # it, like one that misorders it (any other failure fails the poll, as elsewhere).
            log.warning("report_feed_refused", target=target.name, error=str(exc))
            read = ReportPass(disorder=REFUSED)
        expiry = any(
            m.status == EXPIRED and m.delivered_at is not None for m in read.messages.values()
        )
        return read, FeedResult(ask, read.top, read.disorder, read.reached, read.complete, expiry)

    def _execute(
        self,
        reads: PollReads,
        plan: ReadPlan,
        target: TargetConfig,
        now: float,
        offset: int,
        *,
        share: int,
        density: Density,
        sweep: ChunkedPass | None = None,
    ) -> ChunkedPass | None:
        """Run a plan into ``reads``: the new messages first, then the re-checks the budget
        leaves room for.

        With ``sweep`` (a cold read, so far), the new messages are one chunk of it: when the
        chunk stops at its pages, the re-checks wait for the chunk that reads on to the end.
        Returns the read so far when a chunk is to read on, else None.
        """
        cold, goes_on = sweep is not None, False
        cap = None if sweep is None else sweep.chunk_cap(self._cold_chunk)
        query = MessageQuery(
            plan.new_from, now, target.campaign_id, offset, target.labels, max_pages=cap
        )
        fresh = self._client.read_messages(query)
        reads.add(fresh, plan.new_covers)
        if fresh.last_id is not None:
            created = fresh.messages[fresh.last_id].created_at
            reads.cursor = (fresh.last_id, created if created is not None else now)
        if sweep is not None:
            chunked, sweep = sweep.pages > 0, sweep.after(fresh)
            again = _read_on_from_end(reads, plan, fresh, sweep, chunked=chunked)
            if again is not None:
                return again
            # The pass's own cap over all its chunks: a total that lies must not make a cold
            # read take every request of every cycle.
            goes_on = fresh.complete and fresh.capped and not sweep.exhausted()
        if not fresh.complete or (fresh.ended_early and cold):
            reads.resume = (plan.new_from, fresh.next_offset)
        elif not fresh.ended_early and not fresh.total_mismatch:
            # Only a read that got to its end, with a total that agreed, moves the read position
            # to now; otherwise the next read starts again from the cursor (known rows are free).
            reads.read_to = now
        if goes_on:
            return sweep
        allowance = None
        if self._budget is not None:
            # Keep one request for the balance; share the rest with the targets still to poll.
            allowance = max(0, self._budget.remaining() - 1) // share
        checks, _ = within_allowance(plan.checks, allowance, density)
        for check in checks:
            if reads.short:
                break
            if check.by_range:
                query = MessageQuery(
                    check.start, check.end, target.campaign_id, labels=target.labels
                )
                reads.add(self._client.read_messages(query), check.ids)
            else:
                for msg_id in check.ids:
                    self._look_up(msg_id, reads)
        return None

    def _look_up(self, msg_id: int, reads: PollReads) -> None:
        """Fetch one pending message by id."""
        if reads.short:
            return
        try:
            message = self._client.read_message(msg_id)
        except BudgetExhaustedError:
            reads.short = True
            return
        reads.lookups += 1
        reads.checked.add(msg_id)
        if message is not None:
            reads.messages.add([message])

    def _publish_success(
        self,
        tracker: TargetTracker,
        reads: PollReads,
        result: ApplyResult,
        started: float,
        chunk: int = 1,
    ) -> None:
        """Expose the tracker's new values and mark the target up (``chunk``: which chunk of a
        cold read this poll was, 1 for any other)."""
        snapshot = tracker.snapshot(self._clock())
        duration = time.monotonic() - started
        self._state.publish_success(
            tracker.name,
            snapshot,
            at=self._clock(),
            duration=duration,
            mismatches=reads.total_mismatches,
        )
        self._state.liveness.beat()
        if reads.total_mismatches:
            log.warning(
                "page_total_mismatch",
                target=tracker.name,
                passes=reads.total_mismatches,
                action="paged until a short page; the total is not trusted",
            )
        if reads.rejected:
            log.warning("records_rejected", target=tracker.name, reasons=dict(reads.rejected))
        log.info(
            "poll_finished",
            target=tracker.name,
            pages=reads.pages,
            records=reads.rows,
            lookups=reads.lookups,
            new=result.new,
            finalized=result.finalized,
            changes=result.changes,
            abandoned=result.abandoned,
            duplicates=reads.duplicates,
            rejected=sum(reads.rejected.values()),
            tracked=snapshot.tracked,
            pending=snapshot.pending,
            backlog=snapshot.backlog,
            feed=_feed_word(reads.feed),
            feed_pages=reads.feed.pages if reads.feed is not None else 0,
            budget_short=reads.short,
            chunk=chunk,
            duration_s=round(duration, 3),
        )

    def _publish_failure(
        self, tracker: TargetTracker, reason: str, error: str, started: float
    ) -> None:
        """Mark the target down and count the failure by reason."""
        duration = time.monotonic() - started
        try:
            tracker.record_failure(reason)
        except Exception:  # the state store itself may be what failed (disk full, read-only)
            log.exception("state_write_failed", target=tracker.name)
        try:  # the failure is counted in memory either way: show it
            snapshot: TargetSnapshot | None = tracker.snapshot(self._clock())
        except Exception:
            log.exception("state_read_failed", target=tracker.name)
            snapshot = None
        self._state.publish_failure(tracker.name, snapshot, duration=duration, error=error)
        self._state.liveness.beat()
        log.warning(
            "poll_failed",
            target=tracker.name,
            reason=reason,
            error=error,
            duration_s=round(duration, 3),
        )

    def poll_balance(self) -> None:
        """Read the account balance; a failure keeps the last value and is only logged."""
        try:
            balance = self._client.read_balance()
        except StoppedError:
            return
        except BudgetExhaustedError:
            log.info("balance_skipped", reason=BUDGET)
            return
        except BsgError as exc:
            log.warning("balance_failed", reason=exc.reason, error=str(exc))
            self._state.count_balance_failure(exc.reason)
            return
        except Exception:  # a bug must not end the loop: the targets still get polled
            log.exception("balance_crashed")
            self._state.count_balance_failure(INTERNAL)
            return
        finally:
            self._state.liveness.beat()
        self._state.publish_balance(balance)


def _feed_word(read: ReportPass | None) -> str:
    """How the report feed went in one poll, for its log line."""
    if read is None:
        return "idle"  # off, nothing pending, or waiting to be tried again
    if read.disorder is not None:
        return read.disorder
    return "trusted" if read.trusted else "partial"


def _read_on_from_end(
    reads: PollReads, plan: ReadPlan, fresh: MessagePass, sweep: ChunkedPass, *, chunked: bool
) -> ChunkedPass | None:
    """A chunked cold read whose latest chunk, ``fresh``, got to an empty or short page, and
    that must read on all the same (``reads.resume`` set to where): the pass so far; None when
    it is done, or the chunk did not get to such a page."""
    if not fresh.complete or fresh.ended_early:
        return None
    if chunked and sweep.skipped_rows():
        # Rows shifted between pages, and a repeat that crossed chunks hid it from the chunk's
        # own check: read the pass again from its start, as a pass would be (known rows cost
        # nothing). The read goes on; it is not done.
        log.info("pass_reread", reason="rows shifted between pages", rows=fresh.rows)
        reads.resume = (plan.new_from, sweep.start)
        return sweep.read_again()
    if sweep.ended_short():
        # An empty or short page before the rows the total said: the baseline must not end
        # there, or the rest of the window is counted as new later. Read on; a total that
        # lies costs one page more.
        log.info("pass_read_on", reason="ended before its total", rows=fresh.rows)
        reads.resume = (plan.new_from, fresh.next_offset)
        return sweep.reading_on()
    return None


def _log_feed(tracker: TargetTracker, read: ReportPass | None, was_trusted: bool) -> None:
    """Say when the report feed is found out of order, or in order again."""
    if read is None or read.disorder == REFUSED:  # logged with the API's answer
        return
    if read.disorder is not None:
        log.warning(
            "report_feed_disorder",
            target=tracker.name,
            reason=read.disorder,
            pages=read.pages,
            action="range re-checks on their own schedule; the feed is tried again later",
        )
    elif tracker.feed_trusted and not was_trusted:
        log.info("report_feed_trusted", target=tracker.name, pages=read.pages)
