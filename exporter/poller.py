"""The polling loop: schedules targets, calls the client, feeds the trackers.

Owns the cycle (every target, then the balance, once per poll interval), the read plan of a
target's poll (its window, plus the pending messages that left it), and the publication of each
poll's outcome into :class:`ExporterState`. A poll that fails changes no tracker: its reads are
dropped whole, so a failure can delay a count but never double it.

Must not import: prometheus_client, or the collector and web modules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from exporter.bsg.client import BsgClient, BsgError, MessagePass, MessageQuery, StoppedError
from exporter.bsg.records import Message
from exporter.config import Config, TargetConfig
from exporter.stats import ExporterState, TargetStatus, add_to
from exporter.tracker import TargetTracker

LOOKUP_LIMIT = 10
"""Pending messages outside the window looked up one by one; more than this widens the range
read instead, since a page of 500 costs the same request as a single lookup."""

log = structlog.get_logger("exporter.poller")


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one target poll did, for its log line."""

    pages: int
    records: int
    lookups: int
    new: int
    finalized: int
    changes: int
    duplicates: int
    rejected: dict[str, int]


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
    ) -> None:
        self._config = config
        self._client = client
        self._state = state
        self._trackers = trackers
        self._stop = stop
        self._clock = clock

    def run(self) -> None:
        """Run cycles until the stop event is set; each starts one interval after the last."""
        interval = self._config.poll.interval
        while not self._stop.is_set():
            started = time.monotonic()
            self.run_cycle()
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def run_cycle(self) -> None:
        """Poll every target, then read the balance."""
        for target in self._config.targets:
            if self._stop.is_set():
                return
            self.poll_target(target)
        if not self._stop.is_set():
            self.poll_balance()

    def poll_target(self, target: TargetConfig) -> bool:
        """Poll one target and publish the outcome; True when the poll completed."""
        tracker = self._trackers[target.name]
        started = time.monotonic()
        try:
            outcome = self._read_and_apply(target, tracker)
        except StoppedError:
            log.info("poll_abandoned", target=target.name, reason="shutdown")
            return False
        except BsgError as exc:
            self._publish_failure(target.name, exc.reason, str(exc), started)
            return False
        except Exception as exc:  # a bug must not end the loop: report it and poll again later
            log.exception("poll_crashed", target=target.name)
            self._publish_failure(target.name, "internal", repr(exc), started)
            return False
        self._publish_success(target.name, tracker, outcome, started)
        return True

    def _read_and_apply(self, target: TargetConfig, tracker: TargetTracker) -> PollOutcome:
        """Read the target's window and stragglers, then fold them into its tracker."""
        now = self._clock()
        window_start = now - target.window
        stragglers = tracker.pending_before(window_start)
        start = window_start
        if len(stragglers) > LOOKUP_LIMIT:
            start = stragglers[0][1]  # one range read from the oldest is cheaper than lookups
            stragglers = []
        read = self._client.read_messages(MessageQuery(start, now, target.campaign_id))
        looked_up = self._look_up(msg_id for msg_id, _ in stragglers if msg_id not in read.messages)
        result = tracker.apply([*read.messages.values(), *looked_up], now)
        return _outcome(read, len(stragglers), result.new, result.finalized, result.changes)

    def _look_up(self, ids: Iterable[int]) -> list[Message]:
        """Fetch pending messages one by one by id."""
        found = []
        for msg_id in ids:
            message = self._client.read_message(msg_id)
            if message is not None:
                found.append(message)
        return found

    def _publish_success(
        self, name: str, tracker: TargetTracker, outcome: PollOutcome, started: float
    ) -> None:
        """Expose the tracker's new values and mark the target up."""
        snapshot = tracker.snapshot(self._clock())
        duration = time.monotonic() - started
        with self._state.lock:
            status = self._state.targets[name]
            status.snapshot = snapshot
            status.up = True
            status.polled_once = True
            status.last_success = self._clock()
            status.durations.observe(duration)
            status.last_error = None
            for reason, count in outcome.rejected.items():
                add_to(status.rejected, reason, count)
        log.info(
            "poll_finished",
            target=name,
            pages=outcome.pages,
            records=outcome.records,
            lookups=outcome.lookups,
            new=outcome.new,
            finalized=outcome.finalized,
            changes=outcome.changes,
            duplicates=outcome.duplicates,
            rejected=sum(outcome.rejected.values()),
            tracked=snapshot.tracked,
            pending=snapshot.pending,
            duration_s=round(duration, 3),
        )

    def _publish_failure(self, name: str, reason: str, error: str, started: float) -> None:
        """Mark the target down and count the failure by reason."""
        duration = time.monotonic() - started
        with self._state.lock:
            status: TargetStatus = self._state.targets[name]
            status.up = False
            status.durations.observe(duration)
            add_to(status.errors, reason)
            status.last_error = error
        log.warning(
            "poll_failed", target=name, reason=reason, error=error, duration_s=round(duration, 3)
        )

    def poll_balance(self) -> None:
        """Read the account balance; a failure keeps the last value and is only logged."""
        try:
            balance = self._client.read_balance()
        except StoppedError:
            return
        except BsgError as exc:
            log.warning("balance_failed", reason=exc.reason, error=str(exc))
            return
        with self._state.lock:
            self._state.balances = {balance.currency: balance}


def _outcome(
    read: MessagePass, lookups: int, new: int, finalized: int, changes: int
) -> PollOutcome:
    """Summarise a poll for its log line."""
    return PollOutcome(
        pages=read.pages,
        records=read.rows,
        lookups=lookups,
        new=new,
        finalized=finalized,
        changes=changes,
        duplicates=read.duplicates,
        rejected=read.rejected,
    )
