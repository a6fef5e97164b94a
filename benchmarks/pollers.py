"""Poller processes of the polling benchmark: the exporter's real poller, and the simple one.

Run by ``benchmarks/polling.py`` as ``python benchmarks/pollers.py``, one process per poller, so
that each process's resident memory is its poller's alone (the simulator lives in the driver).
The driver sends one JSON line per cycle on stdin (``{"cmd": "cycle", "now": t}``), and the
process answers one JSON line on its original stdout; logs and everything else go to stderr.
Simulated time is the ``now`` of the cycle: the driver's ManualClock does not move within one.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any, TextIO
from unittest import mock

import structlog
from structlog.typing import EventDict, WrappedLogger

import exporter.app
from exporter.app import App, build_app
from exporter.bsg.client import BsgClient
from exporter.bsg.errors import BsgError
from exporter.bsg.paging import MessagePass, MessageQuery
from exporter.bsg.reports import ReportPass, ReportQuery
from exporter.bsg.wire import Message, is_final
from exporter.config.schema import parse_config
from exporter.simulator import DEMO_API_KEY
from exporter.stats import ApiStats
from exporter.tracking.tracker import TargetTracker

TARGET = "all"
AGE_TIERS = ((600.0, "<10m"), (3600.0, "10m-1h"), (21600.0, "1h-6h"))
"""Age bands of the default re-check tiers, to attribute re-check requests."""

Reply = dict[str, Any]


def memory_kb() -> tuple[int, int]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def age_band(age: float) -> str:
    """The re-check tier an age falls in."""
    return next((name for limit, name in AGE_TIERS if age < limit), ">6h")


def requests_by_endpoint(stats: ApiStats) -> Counter[str]:
    """Requests sent so far per endpoint, whatever their outcome."""
    totals: Counter[str] = Counter()
    for (endpoint, _code), count in stats.copy()[0].items():
        totals[endpoint] += count
    return totals


class SimplePoller:
    """The previous design: every cycle re-reads the whole window and counts what turned final.

    It uses the real BsgClient (``page[limit]=500``, sorted by id, ``filter[to]`` fixed for the
    pass) and keeps, per message in the window, only whether it was already final when seen.
    """

    def __init__(self, url: str, window: float) -> None:
        self.now = 0.0
        self.window = window
        self.stats = ApiStats()
        self.client = BsgClient(
            url, DEMO_API_KEY, tz=UTC, observer=self.stats, clock=lambda: self.now
        )
        self.final: dict[int, bool] = {}  # message id -> already final (counted or baseline)
        self.cold = True
        self.counted: Counter[tuple[str, str]] = Counter()
        self.cost: Counter[tuple[str, str, str]] = Counter()
        self.submitted: Counter[str] = Counter()

    def cycle(self, now: float) -> Reply:
        """One cycle: the whole window, then the balance (as the previous design did)."""
        self.now = now
        counts: list[tuple[int, float, str]] = []
        try:
            read = self.client.read_messages(MessageQuery(now - self.window, now))
        except BsgError as exc:
            return {"ok": False, "error": exc.reason, "cold": self.cold, "counts": []}
        self._apply(read, now, counts)
        pages = read.pages
        del read  # the pass holds every message of the window: free it before measuring
        try:
            self.client.read_balance()
        except BsgError as exc:
            print(f"simple: balance failed: {exc.reason}", file=sys.stderr)
        was_cold, self.cold = self.cold, False
        return {
            "ok": True,
            "cold": was_cold,
            "counts": counts,
            "tracked": len(self.final),
            "pending": sum(1 for done in self.final.values() if not done),
            "breakdown": {"window": pages},
        }

    def _apply(self, read: MessagePass, now: float, counts: list[tuple[int, float, str]]) -> None:
        """Count the messages seen final for the first time; forget what left the window."""
        known = self.final
        seen: dict[int, bool] = {}
        for message in read.messages.values():
            before = known.get(message.id)
            if before is None and not self.cold:
                self.submitted[message.channel] += 1
            final = bool(before) or is_final(message.status)
            if final and not before and not self.cold:
                self._count(message)
                counts.append((message.id, now, message.status))
            seen[message.id] = final
        # The window only slides forward: a message that left it never comes back.
        self.final = seen

    def _count(self, message: Message) -> None:
        """Add one message to the counters."""
        self.counted[(message.channel, message.status)] += 1
        if message.cost_nanos is not None and message.currency:
            self.cost[(message.channel, message.status, message.currency)] += message.cost_nanos

    def finish(self) -> Reply:
        """The final counters."""
        self.client.close()
        return {
            "counted": [[*k, v] for k, v in self.counted.items()],
            "cost": [[*k, v] for k, v in self.cost.items()],
            "submitted": dict(self.submitted),
            "state_bytes": 0,
        }

    def requests(self) -> Counter[str]:
        """Requests sent so far per endpoint."""
        return requests_by_endpoint(self.stats)


class OurPoller:
    """The exporter's real app (``build_app``) with the product's default config, except the
    window (24h) and the interval; its state in an SQLite file, as in production."""

    def __init__(self, url: str, window: float, interval: float, state_path: str) -> None:
        self.now = 0.0
        self.state_path = state_path
        self._counts: list[tuple[int, float, str]] = []
        self._breakdown: Counter[str] = Counter()
        self._first_read = True
        text = (
            f"api:\n  url: {url}\n  key: ${{BSG_API_KEY}}\n"
            f"poll:\n  interval: {int(interval)}s\n"
            f"targets:\n  - name: {TARGET}\n    window: {int(window)}s\n"
        )
        config = parse_config(text, environ={"BSG_API_KEY": DEMO_API_KEY})
        trackers: list[TargetTracker] = []
        on_count = self._on_count

        class CountingTracker(TargetTracker):
            """The product's tracker, told of every count (the one hook the benchmark adds)."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, on_count=on_count, **kwargs)
                trackers.append(self)

        # build_app wires the trackers itself: hand it ours without touching its code.
        with mock.patch.object(exporter.app, "TargetTracker", CountingTracker):
            self.app: App = build_app(
                config,
                stop=threading.Event(),
                clock=lambda: self.now,
                process_metrics=False,
                state_path=state_path,
            )
        self.tracker = trackers[0]
        self._observe_reads()

    def _on_count(self, message: Message, now: float) -> None:
        """Remember a count until its poll is known to have completed."""
        self._counts.append((message.id, now, message.status))

    def _observe_reads(self) -> None:
        """Attribute every request to what asked for it: new messages, or re-checks by age."""
        client = self.app.client
        read_messages, read_message = client.read_messages, client.read_message

        def observed_range(query: MessageQuery) -> MessagePass:
            result = read_messages(query)
            if self._first_read:  # the poller reads new messages first, then re-checks
                # It may start earlier to take young re-checks along: say from how far back.
                kind = f"new messages, read from {age_band(self.now - query.start)} ago"
            else:
                kind = f"range re-check {age_band(self.now - query.start)}"
            self._first_read = False
            self._breakdown[kind] += result.pages
            return result

        def observed_lookup(message_id: int) -> Message | None:
            found = read_message(message_id)
            age = None if found is None or found.created_at is None else found.created_at
            band = "?" if age is None else age_band(self.now - age)
            self._breakdown[f"lookup {band}"] += 1
            return found

        read_reports = client.read_reports

        def observed_feed(query: ReportQuery) -> ReportPass:
            result = read_reports(query)
            self._breakdown["report feed"] += result.pages
            return result

        # Observation only: the poller calls these through the client instance.
        client.read_messages = observed_range  # type: ignore[method-assign]
        client.read_message = observed_lookup  # type: ignore[method-assign]
        client.read_reports = observed_feed  # type: ignore[method-assign]

    def cycle(self, now: float) -> Reply:
        """One cycle of the real poller (the target, then the balance)."""
        self.now = now
        self._counts, self._breakdown, self._first_read = [], Counter(), True
        was_cold = self.tracker.cold
        self.app.poller.run_cycle()
        status = self.app.state.targets[TARGET]
        ok = status.up and status.last_success == now
        snapshot = status.snapshot
        return {
            "ok": ok,
            "cold": was_cold,
            "cold_after": self.tracker.cold,
            # A failed poll rolls its counts back: only a completed one's are real.
            "counts": self._counts if ok else [],
            "tracked": snapshot.tracked,
            "pending": snapshot.pending,
            "backlog": snapshot.backlog,
            "breakdown": dict(self._breakdown),
            "feed_trusted": snapshot.feed_trusted,
            "feed_disorders": sum(snapshot.feed_disorders.values()),
        }

    def finish(self) -> Reply:
        """The final counters and the size of the state file."""
        snapshot = self.app.state.targets[TARGET].snapshot
        self.app.close()
        size = sum(
            os.path.getsize(self.state_path + suffix)
            for suffix in ("", "-wal", "-shm")
            if os.path.exists(self.state_path + suffix)
        )
        return {
            "counted": [[*k, v] for k, v in snapshot.messages.items()],
            "cost": [[*k, v] for k, v in snapshot.cost_nanos.items()],
            "submitted": dict(snapshot.submitted),
            "state_bytes": size,
        }

    def requests(self) -> Counter[str]:
        """Requests sent so far per endpoint."""
        return requests_by_endpoint(self.app.state.api)


def quiet_logs(events: list[dict[str, Any]]) -> None:
    """Keep the exporter's poll_finished lines (budget facts), print only warnings, to stderr."""

    def capture(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if event.get("event") == "poll_finished":
            events.append(dict(event))
        if method in ("debug", "info"):
            raise structlog.DropEvent
        return event

    structlog.configure(
        processors=[capture, structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def serve(setup: dict[str, Any], replies: TextIO) -> None:
    """Answer the driver's commands until it asks for the final counters."""
    events: list[dict[str, Any]] = []
    quiet_logs(events)
    poller: SimplePoller | OurPoller
    if setup["kind"] == "simple":
        poller = SimplePoller(setup["url"], setup["window"])
    else:
        poller = OurPoller(setup["url"], setup["window"], setup["interval"], setup["state"])
    base_rss, _ = memory_kb()

    def send(reply: Reply) -> None:
        print(json.dumps(reply), file=replies, flush=True)

    send({"base_rss_kb": base_rss})
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "finish":
            rss, peak = memory_kb()
            send({**poller.finish(), "rss_kb": rss, "peak_kb": peak})
            return
        before = poller.requests()
        reply = poller.cycle(float(command["now"]))
        reply["requests"] = dict(poller.requests() - before)
        reply["rss_kb"], reply["peak_kb"] = memory_kb()
        logged = events[-1] if events else {}
        reply["budget_short"] = bool(logged.get("budget_short", False))
        events.clear()
        send(reply)


def main() -> None:
    """Entry point of a poller process: replies on the original stdout, the rest on stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    serve(json.loads(sys.stdin.readline()), replies)


if __name__ == "__main__":
    main()
