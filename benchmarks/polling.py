"""Polling benchmark: the exporter's poller and the simple full-window poller, same traffic.

Run: ``.venv/bin/python benchmarks/polling.py`` (``--help`` for the knobs). The simulator (and
its ManualClock) runs in this process and serves both pollers over loopback HTTP; each poller
runs in its own process (``benchmarks/pollers.py``), driven cycle by cycle, so that its resident
memory is its own. Simulated time only moves between cycles: hours of traffic take minutes.
Every number printed is measured in the run; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lines import read_line, send_line

from exporter.bsg.caches import parse_price_nanos
from exporter.bsg.wire import is_final, normalize_channel, normalize_status
from exporter.defaults import DEFAULT_RECHECK, FEED_SWEEP_FACTOR
from exporter.simulator import (
    DELIVERED_SORTS,
    CampaignProfile,
    ManualClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
    status_at,
)

START = 1_780_000_000.0
DAY = 86400.0
HOUR = 3600.0
WORKER = Path(__file__).with_name("pollers.py")


def traffic(per_day: float, window: float) -> TrafficProfile:
    """A day of history, then steady traffic: OTP, marketing and alerts (50/30/20)."""
    rate = per_day / DAY
    # Validity (6h, 12h) keeps every message's whole life inside the 24h window: the 2% that
    # never get a report turn "expired" while both pollers still read them.
    return TrafficProfile(
        campaigns=(
            CampaignProfile(
                campaign_id=101,
                rate=rate * 0.5,
                channels={"sms": 0.7, "viber": 0.3},
                countries={"UA": 0.6, "PL": 0.2, "DE": 0.1, "GB": 0.1},
                validity_hours=6,
                text="Your verification code is {code}",
                reference_ids=True,
            ),
            CampaignProfile(
                campaign_id=102,
                rate=rate * 0.3,
                countries={"UA": 0.3, "PL": 0.2, "DE": 0.2, "GB": 0.1, "US": 0.1, "FR": 0.1},
                validity_hours=12,
                source="web",
                max_parts=2,
            ),
            CampaignProfile(
                campaign_id=103,
                rate=rate * 0.2,
                channels={"whatsapp": 0.6, "sms": 0.4},
                countries={"US": 0.5, "GB": 0.3, "DE": 0.2},
                validity_hours=6,
                reference_ids=True,
            ),
        ),
        backfill=window,  # the window starts full: the steady state is what is measured
    )


@dataclass
class Run:
    """What the driver learnt from one poller's process, cycle by cycle."""

    name: str
    proc: subprocess.Popen[str]
    base_rss_kb: int = 0
    polls: list[float] = field(default_factory=list)  # completed polls
    cold_polls: list[float] = field(default_factory=list)  # completed polls of the baseline
    failed: int = 0
    counts: list[tuple[int, float, str]] = field(default_factory=list)
    requests: list[Counter[str]] = field(default_factory=list)  # per cycle
    steady: list[bool] = field(default_factory=list)  # per cycle: after the baseline
    breakdown: Counter[str] = field(default_factory=Counter)  # steady cycles only
    tracked: int = 0
    max_backlog: int = 0
    short_polls: int = 0
    trusted_polls: int = 0  # polls that ended with the report feed trusted
    disorders: int = 0  # report feed passes found out of order, at the last poll
    rss_kb: list[int] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    cold_after: bool = True  # still in the baseline after the last cycle
    before_restart: dict[str, Any] = field(default_factory=dict)

    def send(self, command: Mapping[str, Any]) -> None:
        """Send one command line."""
        send_line(self.proc, command)

    def receive(self) -> dict[str, Any]:
        """Read one reply line."""
        return read_line(self.proc, f"{self.name} poller")

    def record(self, now: float, reply: Mapping[str, Any]) -> None:
        """Fold one cycle's reply in."""
        requests = Counter(reply.get("requests", {}))
        steady = bool(reply["ok"]) and not reply["cold"]
        self.requests.append(requests)
        self.steady.append(steady)
        self.cold_after = bool(reply.get("cold_after", reply["cold"]))
        if not reply["ok"]:
            self.failed += 1
            return
        self.polls.append(now)
        if reply["cold"]:
            self.cold_polls.append(now)
        else:
            self.breakdown.update(reply.get("breakdown", {}))
        self.counts.extend((int(i), float(t), str(s)) for i, t, s in reply["counts"])
        self.tracked = int(reply["tracked"])
        self.max_backlog = max(self.max_backlog, int(reply.get("backlog", 0)))
        self.short_polls += bool(reply.get("budget_short"))
        self.trusted_polls += bool(reply.get("feed_trusted"))
        self.disorders = int(reply.get("feed_disorders", 0))
        self.rss_kb.append(int(reply["rss_kb"]))


def start(name: str, setup: Mapping[str, Any]) -> Run:
    """Start one poller process and wait until it is ready."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    run = Run(name, proc)
    run.send({"kind": name, **setup})
    run.base_rss_kb = int(run.receive()["base_rss_kb"])
    return run


def finish(run: Run) -> None:
    """Ask a poller for its final counters and let it exit."""
    run.send({"cmd": "finish"})
    run.final = run.receive()
    run.proc.wait(timeout=60)
    run.finished = True


def restart(run: Run, setup: Mapping[str, Any]) -> None:
    """Stop a poller's process and start a new one on the same state file, as a redeploy would.

    A Python process keeps most of the memory its biggest read ever used (the baseline reads the
    whole window): the restarted process shows what the steady state itself needs.
    """
    finish(run)
    run.before_restart = {**run.final, "base_rss_kb": run.base_rss_kb, "tracked": run.tracked}
    fresh = start(run.name, setup)
    run.proc, run.base_rss_kb, run.finished, run.final = fresh.proc, fresh.base_rss_kb, False, {}


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


# --- checking against the ground truth --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Truth:
    """What the analysis needs of one message of the simulator's ground truth."""

    created: float
    channel: str
    final_at: float | None  # first final status
    history: tuple[tuple[float, str], ...]
    price: tuple[int, str] | None


def index_truth(truth: Mapping[str, Any]) -> dict[int, Truth]:
    """The truth by message id."""
    rows: dict[int, Truth] = {}
    for message in truth["messages"]:
        history = tuple((float(t), normalize_status(s)) for t, s in message["history"])
        final_at = next((t for t, s in history if is_final(s)), None)
        amount = message["amount"]
        price = None
        if amount:
            nanos = parse_price_nanos(amount["value"])
            price = None if nanos is None else (nanos, str(amount["currency"]).upper())
        rows[int(message["id"])] = Truth(
            float(message["created_at"]),
            normalize_channel(message["type"]),
            final_at,
            history,
            price,
        )
    return rows


@dataclass
class Verdict:
    """The outcome of comparing one poller's counts with the ground truth."""

    problems: list[str] = field(default_factory=list)
    must: int = 0
    in_flight: int = 0
    delays: list[float] = field(default_factory=list)
    delays_hour: list[float] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when nothing disagreed."""
        return not self.problems


def check(  # noqa: PLR0912, PLR0915 - one pass over a million messages, every rule in one place
    run: Run, truth: Mapping[int, Truth], window: float, settle: float
) -> Verdict:
    """Compare a poller's counts, message by message and in total, with the ground truth.

    A message must be counted exactly once when it was pending at the end of the baseline (or
    created after it) and turned final at least ``settle`` before the last poll (a re-check
    period plus an interval: later ones may still wait for their re-check). Counting one that
    was final at the first poll (the baseline) or is not final yet is an error; so is every
    count whose status differs from the truth at the moment it was counted.
    """
    verdict = Verdict()
    first, baseline_end, last = run.polls[0], run.cold_polls[-1], run.polls[-1]
    scope_from = baseline_end - window + 600  # inside the window of every baseline read
    times: dict[int, float] = {}
    counted: Counter[tuple[str, str]] = Counter()
    cost: Counter[tuple[str, str, str]] = Counter()
    for msg_id, moment, status in run.counts:
        if msg_id in times:
            verdict.problems.append(f"message {msg_id} counted twice")
            continue
        times[msg_id] = moment
        row = truth.get(msg_id)
        real = None if row is None else status_at(row.history, moment)
        if row is None or real is None or not is_final(real) or real != status:
            verdict.problems.append(f"message {msg_id} counted {status!r}, truth says {real!r}")
            continue
        counted[(row.channel, real)] += 1
        if row.price is not None:
            cost[(row.channel, real, row.price[1])] += row.price[0]
    submitted: Counter[str] = Counter()
    # created_at is whole seconds: one created at a poll's second may have arrived just after it
    edge: Counter[str] = Counter()
    for msg_id, row in truth.items():
        if not scope_from <= row.created <= last:
            # Between the first poll's window start and the scope, a message may be counted:
            # a short window's baseline reads reach there, later ones no longer do.
            if msg_id in times and row.created < first - window:
                verdict.problems.append(f"message {msg_id} counted from outside the window")
            continue
        # Submitted: created after the baseline moment (the first poll), even while a budget
        # spreads the first read over several polls (README, "How counting works").
        if row.created in (first, last):
            edge[row.channel] += 1
        elif row.created > first:
            submitted[row.channel] += 1
        done = row.final_at
        must = done is not None and baseline_end < done <= last - settle
        may = done is not None and (first < done <= baseline_end or last - settle < done <= last)
        verdict.must += must
        verdict.in_flight += may and done is not None and done > last - settle
        if must and msg_id not in times:
            verdict.problems.append(f"message {msg_id} (final at {done:.0f}) never counted")
        elif msg_id in times and not (must or may):
            verdict.problems.append(f"message {msg_id} counted though final at {done}")
        if msg_id in times and done is not None and row.created > baseline_end:
            delay = times[msg_id] - done
            verdict.delays.append(delay)
            if done - row.created <= HOUR:
                verdict.delays_hour.append(delay)
    got = {(c, s): n for c, s, n in run.final["counted"] if n}
    if got != dict(counted):
        verdict.problems.append(f"messages_total {got} != truth {dict(counted)}")
    got_cost = {(c, s, cur): n for c, s, cur, n in run.final["cost"] if n}
    if got_cost != dict(cost):
        verdict.problems.append(f"cost {got_cost} != truth {dict(cost)}")
    got_submitted = Counter({c: n for c, n in run.final["submitted"].items() if n})
    if got_submitted - submitted - edge or submitted - got_submitted:
        verdict.problems.append(
            f"submitted {dict(got_submitted)} != truth {dict(submitted)} (+ up to {dict(edge)})"
        )
    return verdict


# --- the report --------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def per_hour(run: Run, interval: float) -> tuple[float, Counter[str], int]:
    """API requests per simulated hour over the steady cycles, by endpoint, and their count."""
    cycles = [r for r, steady in zip(run.requests, run.steady, strict=True) if steady]
    total: Counter[str] = Counter()
    for requests in cycles:
        total.update(requests)
    hours = len(cycles) * interval / HOUR
    return (sum(total.values()) / hours if hours else math.nan), total, len(cycles)


def delays(label: str, values: Sequence[float]) -> str:
    """p50/p99/max of counting delays, in seconds."""
    if not values:
        return f"{label}: none"
    return (
        f"{label}: p50 {percentile(values, 0.5):.0f}s, p99 {percentile(values, 0.99):.0f}s, "
        f"max {max(values):.0f}s (n={len(values):,})"
    )


def report(
    runs: Sequence[Run], verdicts: Mapping[str, Verdict], args: argparse.Namespace
) -> list[str]:
    """The lines of the result, one section per poller."""
    lines: list[str] = []
    rates: dict[str, float] = {}
    for run in runs:
        verdict = verdicts[run.name]
        rate, by_endpoint, cycles = per_hour(run, args.interval)
        rates[run.name] = rate
        span = len(run.requests) * args.interval / HOUR
        all_requests = sum(sum(r.values()) for r in run.requests)
        lines.append(f"== {run.name} poller: {len(run.requests)} cycles ({span:g} simulated h)")
        lines.append(
            f"  API requests per hour (steady state, {cycles} cycles after the baseline): "
            f"{rate:,.1f}  [{', '.join(f'{k} {v:,}' for k, v in sorted(by_endpoint.items()))}]"
        )
        last_hour = run.requests[-round(HOUR / args.interval) :]
        if run.name == "ours" and len(run.requests) * args.interval >= 2 * HOUR:
            lines.append(
                "  API requests in the last simulated hour: "
                f"{sum(sum(r.values()) for r in last_hour):,}"
            )
        baseline = sum(
            sum(r.values()) for r, s in zip(run.requests, run.steady, strict=True) if not s
        )
        lines.append(
            f"  baseline: {len(run.cold_polls)} poll(s), {baseline:,} requests; "
            f"all requests incl. baseline: {all_requests:,}; failed polls: {run.failed}"
        )
        if run.name == "ours":
            share = sum(run.breakdown.values()) or 1
            parts = ", ".join(
                f"{k} {v:,} ({100 * v / share:.0f}%)" for k, v in run.breakdown.most_common()
            )
            lines.append(f"  messages requests by purpose (steady state): {parts}")
            lines.append(
                f"  request budget ({args.budget_label}): short in {run.short_polls} poll(s), "
                f"max backlog {run.max_backlog} message(s)"
            )
            lines.append(
                f"  report feed (sort=delivered, simulator order {args.delivered_sort}): trusted "
                f"after {run.trusted_polls} of {len(run.polls)} polls, {run.disorders} disorder(s)"
            )
        lines.append("  " + delays("counting delay, all counted", verdict.delays))
        lines.append(
            "  " + delays("counting delay, final within 1h of creation", verdict.delays_hour)
        )
        result = "yes" if verdict.exact else f"NO ({len(verdict.problems)} problems)"
        lines.append(
            f"  counts equal the ground truth: {result}  ({len(run.counts):,} counted, "
            f"{verdict.must:,} had to be, {verdict.in_flight:,} final in the last "
            f"{args.settle[run.name]:.0f}s may still wait for their re-check)"
        )
        lines.extend(f"    {p}" for p in verdict.problems[:10])
        rss = run.final["rss_kb"] * 1024
        grown = (run.final["rss_kb"] - run.base_rss_kb) * 1024
        tracked = max(run.tracked, 1)
        lines.append(
            f"  memory: {run.tracked:,} tracked messages; VmRSS {rss / 2**20:.1f} MiB = "
            f"{rss / tracked:.0f} B/message ({grown / tracked:.0f} B/message above the "
            f"{run.base_rss_kb / 1024:.1f} MiB before the first poll); peak VmHWM "
            f"{run.final['peak_kb'] / 1024:.1f} MiB"
        )
        if run.before_restart:
            before = run.before_restart
            base, then = before["base_rss_kb"], max(int(before["tracked"]), 1)
            lines.append(
                f"  (the process that read the baseline, restarted on its state file right after "
                f"it: VmRSS {before['rss_kb'] / 1024:.1f} MiB, peak "
                f"{before['peak_kb'] / 1024:.1f} MiB, before its first poll {base / 1024:.1f} MiB; "
                f"above that, for its {then:,} tracked messages: "
                f"{(before['rss_kb'] - base) * 1024 / then:.0f} B/message, peak "
                f"{(before['peak_kb'] - base) * 1024 / then:.0f} B/message)"
            )
        if run.final.get("state_bytes"):
            size = run.final["state_bytes"]
            lines.append(
                f"  state file (SQLite, with WAL): {size / 2**20:.1f} MiB = "
                f"{size / tracked:.0f} B/message"
            )
    lines.append(f"requests ratio (simple/ours): {rates['simple'] / rates['ours']:.1f}")
    bound = args.lower_bound
    lines.append(
        f"lower bound: every message read once when new and once when final, 500 a request, "
        f"plus the balance each cycle: {bound:,.1f} requests/h (ours/bound "
        f"{rates['ours'] / bound:.2f})"
    )
    return lines


def lower_bound(truth: Mapping[int, Truth], start: float, end: float, interval: float) -> float:
    """Requests per hour that reading each message created or final in ``(start, end]`` once,
    500 to a request, plus a balance read a cycle, would take."""
    new = sum(1 for row in truth.values() if start < row.created <= end)
    final = sum(
        1 for row in truth.values() if row.final_at is not None and start < row.final_at <= end
    )
    hours = (end - start) / HOUR
    return ((new + final) / 500 + (end - start) / interval) / hours if hours else math.nan


def arguments() -> argparse.Namespace:
    """Command-line knobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=float, default=1_000_000, help="messages a day")
    parser.add_argument("--hours", type=float, default=6.0, help="simulated hours (our poller)")
    parser.add_argument(
        "--simple-hours", type=float, default=1.0, help="simulated hours of the simple poller"
    )
    parser.add_argument("--window", type=float, default=DAY, help="window, seconds")
    parser.add_argument("--interval", type=float, default=60.0, help="poll interval, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--delivered-sort",
        choices=DELIVERED_SORTS,
        default="mysql",
        help="how the simulator orders sort=delivered (the report feed)",
    )
    parser.add_argument(
        "--reportless",
        default="",
        help="final statuses served without a report time, comma-separated (e.g. expired,unknown)",
    )
    return parser.parse_args()


def settle(args: argparse.Namespace, reportless: Sequence[str]) -> float:
    """How long before the last poll a final message must have been counted by ours.

    With the simulator's honest order every final message has a report, which the feed reads at
    the next poll; otherwise the longest re-check period applies: the tiers' own when the feed is
    out of order, the sweep's when it is trusted but some final statuses have no report time.
    """
    longest = max(every for _, every in DEFAULT_RECHECK)
    interval = float(args.interval)
    if args.delivered_sort != "mysql":
        return (longest + 1) * interval
    if reportless:
        return (longest * FEED_SWEEP_FACTOR + 1) * interval
    return 3 * interval


def cycle_all(runs: Iterable[Run], now: float) -> None:
    """One cycle of every running poller at the same simulated instant, in parallel."""
    active = [run for run in runs if not run.finished]
    for run in active:
        run.send({"cmd": "cycle", "now": now})
    for run in active:
        run.record(now, run.receive())


def main() -> None:
    """Run both pollers over the same simulated traffic and print the comparison."""
    args = arguments()
    wall = time.monotonic()
    clock = ManualClock(START)
    reportless = [s for s in args.reportless.split(",") if s]
    sim = Simulator(
        traffic(args.per_day, args.window),
        clock=clock,
        seed=args.seed,
        delivered_sort=args.delivered_sort,
        reportless=reportless,
    )
    sim.now()  # generate the backfilled day before the clock starts
    sim.index_reports()  # the first sort=delivered would otherwise take longer than a timeout
    progress(f"simulator: {len(sim.store):,} messages of history ({time.monotonic() - wall:.0f}s)")
    cycles = round(args.hours * HOUR / args.interval)
    simple_cycles = min(cycles, round(args.simple_hours * HOUR / args.interval))
    args.settle = {"ours": settle(args, reportless), "simple": 0.0}
    args.budget_label = "default max_requests_per_minute 300"
    with SimulatorServer(sim) as server, tempfile.TemporaryDirectory() as tmp:
        setup = {"url": server.url, "window": args.window, "interval": args.interval}
        ours_setup = {**setup, "state": str(Path(tmp) / "bsg-exporter.db")}
        ours = start("ours", ours_setup)
        restarted = False
        simple = start("simple", setup)
        runs = [ours, simple]
        for index in range(cycles):
            if index == simple_cycles and not simple.finished:
                finish(simple)
            cycle_all(runs, clock.now())
            clock.advance(args.interval)
            if not restarted and not ours.cold_after:
                restart(ours, ours_setup)
                restarted = True
            if index % 10 == 9 or index == cycles - 1:
                done = ", ".join(
                    f"{r.name} {sum(sum(c.values()) for c in r.requests):,} req" for r in runs
                )
                simulated = (index + 1) * args.interval / HOUR
                progress(
                    f"cycle {index + 1}/{cycles}, simulated {simulated:.2f} h, "
                    f"wall {time.monotonic() - wall:.0f}s: {done}"
                )
        for run in runs:
            if not run.finished:
                finish(run)
        served = sum(sim.request_counts().values())
    progress(f"ground truth ... (wall {time.monotonic() - wall:.0f}s)")
    truth = index_truth(sim.truth())
    verdicts = {run.name: check(run, truth, args.window, args.settle[run.name]) for run in runs}
    args.lower_bound = lower_bound(truth, ours.cold_polls[-1], ours.polls[-1], args.interval)
    sent = sum(sum(sum(c.values()) for c in run.requests) for run in runs)
    elapsed = time.monotonic() - wall
    print(
        f"polling benchmark: {args.per_day:,.0f} messages/day ({args.per_day / DAY:.2f}/s), "
        f"window {args.window / HOUR:g}h, interval {args.interval:g}s, seed {args.seed}"
    )
    print(
        "traffic: the simulator's steady mix (95% delivered, 5% of them hours late; 1.5% "
        "undelivered, 1% failed, 0.5% unknown within hours, 2% expire); campaigns 50/30/20 "
        "with validity 6h/12h/6h; sms, viber, whatsapp"
    )
    print(
        f"the window starts full: {args.window / HOUR:g}h of traffic backfilled, then "
        f"{args.hours:g} "
        f"simulated hours; both pollers poll at the same simulated instants over loopback HTTP"
    )
    print(
        f"the simple poller runs for real (every cycle reads the whole window through the real "
        f"BsgClient) for the first {simple_cycles * args.interval / HOUR:g} simulated hours "
        f"only: a full-window cycle costs seconds of CPU, so {args.hours:g} h would take "
        "far too long; its per-hour figures come from that span"
    )
    print(
        f"memory: VmRSS of each poller's own process (the simulator runs in the driver), "
        f"at its last cycle; requests: counted by each client's observer; the simulator "
        f"served {served:,} API requests, the pollers sent {sent:,}"
    )
    for line in report(runs, verdicts, args):
        print(line)
    progress(f"done in {elapsed:.0f}s wall (+ report {time.monotonic() - wall - elapsed:.0f}s)")


if __name__ == "__main__":
    main()
