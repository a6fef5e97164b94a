"""Ingest benchmark: the exporter's decode, tracker and metrics path against two references.

Run: ``.venv/bin/python benchmarks/ingest.py`` (``--help`` for the knobs). The simulator renders
the API pages first (500 messages each, its realistic fields and status mix), then each path
reads the same pages in this process, with no network, on one core:

* **ours**: ``Decoder.page`` (reading the label fields of the target, ``--labels``, none by
  default, as the poller asks) -> ``MessagePass``/``PollReads`` (as the client and the poller
  merge pages) -> ``TargetTracker.apply`` on a real ``StateStore`` (a file in a temporary
  directory, the product default) -> ``snapshot`` -> published into ``ExporterState`` -> one
  render of ``/metrics`` per poll, with the registry ``exporter.app`` builds, as
  ``exporter.serving.server`` renders;
* **baseline**: ``json.loads``, walking the dicts, and a ``prometheus_client``
  ``Counter.labels(...).inc()`` / ``Histogram.observe()`` per final message, one render per poll;
* **ceiling**: decoding alone, with msgspec, into the exporter's wire structs (``WirePage``:
  every field as sent, no checks or conversions); ``typed`` is printed beside it for
  reference: decoding into the typed records the way ``Decoder.page`` does
  (``Decoder.fast``: msgspec, then our shared timestamps, prices, countries and
  senders; every label field read); and ``floor``: the least any tracker written in Python
  does per message, with nothing of the exporter's own: msgspec decodes the fields an
  unlabelled target reads (unchecked), each id is looked up and remembered with its creation
  time, and new ones are counted by channel and status. No dedupe within a poll, pending
  messages, costs, histograms, window, persistence or /metrics: every correct tracker is
  slower, and whatever time per message a goal allows beyond the floor's is all the rest of
  a tracker has.

Two phases, like a big account's first hours: **cold**, the first poll of a 72 h window (every
message is new; the final ones are the baseline), cut into polls of ``--poll-pages`` pages as
the request budget cuts it; then **steady**, one poll per simulated minute, each reading the
minute's new messages (counted when final) and re-reading the previous minute's (the re-check
of young pending messages). Every number printed is measured in the run; progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from operator import attrgetter, not_
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram
from prometheus_client.exposition import choose_encoder

from exporter.app import _registry
from exporter.bsg.caches import Stamps
from exporter.bsg.decode import Decoder
from exporter.bsg.paging import MessagePass
from exporter.bsg.wire import WireAmount, WirePage
from exporter.config.schema import TargetConfig
from exporter.defaults import DEFAULT_DELIVERY_LATENCY_BUCKETS, DEFAULT_SEND_DELAY_BUCKETS
from exporter.model import DELIVERED_STATUSES, FINAL_STATUSES, LABEL_DIMENSIONS
from exporter.polling.poller import PollReads
from exporter.runtime import COLLECTION_PAUSE
from exporter.simulator import CampaignProfile, ManualClock, Simulator, TrafficProfile
from exporter.simulator.render import PageRenderer
from exporter.stats import ExporterState, TargetStatus
from exporter.tracking.store import StateStore
from exporter.tracking.tracker import TargetTracker

START = 1_780_000_000.0
HOUR = 3600.0
DAY = 24 * HOUR
WINDOW = 72 * HOUR
LIMIT = 500
TARGET = "all"


def traffic(per_day: float, backfill: float) -> TrafficProfile:
    """A big account: OTP, marketing and alerts over four channels and five currencies."""
    rate = per_day / DAY
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
                channels={"sms": 0.8, "rcs": 0.2},
                countries={"UA": 0.3, "PL": 0.2, "DE": 0.2, "GB": 0.1, "US": 0.2},
                validity_hours=24,
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
        backfill=backfill,
    )


@dataclass
class Poll:
    """The pages one poll reads: new messages, then a range re-check."""

    now: float
    start: float  # created_at the read of new messages started at
    new: list[bytes]
    recheck: list[bytes] = field(default_factory=list)
    last: bool = True  # the read of new messages got to the end (else it resumes)

    @property
    def pages(self) -> int:
        """Pages of this poll."""
        return len(self.new) + len(self.recheck)


@dataclass
class Phase:
    """A named run of polls and how many messages its pages hold."""

    name: str
    polls: list[Poll]
    messages: int


def render_pages(sim: Simulator, start: float, end: float) -> tuple[list[bytes], int]:
    """The pages of ``GET /api/messages`` for ``[start, end]`` at the clock's now, and rows."""
    pages: list[bytes] = []
    rows_total = offset = 0
    while True:
        now, total, rows = sim.query(date_from=start, date_to=end, offset=offset, limit=LIMIT)
        if not rows:
            return pages, rows_total
        data = PageRenderer(sim, now, {}).records(rows)
        meta = {"page": {"total": total, "offset": offset, "limit": LIMIT}}
        pages.append(msgspec.json.encode({"data": data, "meta": meta}))
        rows_total += len(rows)
        offset += LIMIT


def record_phases(args: argparse.Namespace) -> list[Phase]:
    """Render the cold read and the steady polls from the simulator."""
    backfill = args.cold / (args.per_day / DAY)
    clock = ManualClock(START)
    sim = Simulator(traffic(args.per_day, backfill), clock=clock, seed=args.seed)
    sim.now()
    pages, rows = render_pages(sim, START - WINDOW, START)
    cold = [
        Poll(START, START - WINDOW, pages[i : i + args.poll_pages])
        for i in range(0, len(pages), args.poll_pages)
    ]
    for poll in cold[:-1]:
        poll.last = False
    phases = [Phase("cold", cold, rows)]
    steady: list[Poll] = []
    steady_rows = 0
    previous = START
    for index in range(1, args.steady_polls + 1):
        now = START + index * args.interval
        clock.set(now)
        new, n_new = render_pages(sim, previous, now)
        again, n_again = render_pages(sim, previous - args.interval, previous)
        steady.append(Poll(now, previous, new, again))
        steady_rows += n_new + n_again
        previous = now
    phases.append(Phase("steady", steady, steady_rows))
    return phases


# --- ours --------------------------------------------------------------------------------


def run_ours(
    phases: Sequence[Phase], state_dir: Path, labels: Sequence[str] = ()
) -> dict[str, float]:
    """The exporter's path for a target with extra ``labels``; seconds per phase."""
    store = StateStore(str(state_dir / "bsg-exporter.db"))
    tracker = TargetTracker(store, TargetConfig(TARGET, WINDOW, None, labels=tuple(labels)))
    state = ExporterState(
        targets={TARGET: TargetStatus(snapshot=tracker.snapshot(START))},
        version="bench",
        test_key=False,
    )
    registry = _registry(state, process_metrics=False)  # the registry the exporter builds
    decoder = Decoder(UTC)  # the client's
    times: dict[str, float] = {}
    for phase in phases:
        started = time.perf_counter()
        for poll in phase.polls:
            _our_poll(poll, decoder, tracker, state, registry)
        times[phase.name] = time.perf_counter() - started
    store.close()
    return times


def _our_poll(
    poll: Poll,
    decoder: Decoder,
    tracker: TargetTracker,
    state: ExporterState,
    registry: CollectorRegistry,
) -> None:
    """One poll as the poller runs it: merge the pages, apply, publish, render once."""
    fresh = MessagePass()
    for body in poll.new:
        fresh.add_page(decoder.page(body, tracker.labels))
    reads = PollReads()
    reads.add(fresh, ())
    if poll.recheck:
        again = MessagePass()
        for body in poll.recheck:
            again.add_page(decoder.page(body, tracker.labels))
        reads.add(again, tuple(again.messages))
    if fresh.last_id is not None:
        created = fresh.messages[fresh.last_id].created_at
        reads.cursor = (fresh.last_id, created if created is not None else poll.now)
    if poll.last:
        reads.read_to = poll.now
    else:
        reads.resume = (poll.start, fresh.rows)
    with COLLECTION_PAUSE:  # as the poller holds it
        tracker.apply(
            reads.messages,
            poll.now,
            checked=reads.checked,
            cursor=reads.cursor,
            read_to=reads.read_to,
            resume=reads.resume,
            rejected=reads.rejected,
        )
    snapshot = tracker.snapshot(poll.now)
    state.publish_success(TARGET, snapshot, at=poll.now, duration=0.0, mismatches=0)
    scrape(registry)


def scrape(registry: CollectorRegistry) -> bytes:
    """Render /metrics in the text format, as ``exporter.serving.server`` does."""
    encoder, content_type = choose_encoder("")
    exposition = getattr(registry, "exposition", None)  # the exporter's cached rendering
    if exposition is not None:
        body: bytes = exposition(encoder, content_type)
        return body
    return encoder(registry)


# --- the simple baseline -----------------------------------------------------------------

_FINAL = frozenset(FINAL_STATUSES)


def _epoch(text: str | None) -> float | None:
    """A zone-less API timestamp (UTC here) as epoch seconds."""
    if not text:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def run_baseline(phases: Sequence[Phase]) -> dict[str, float]:
    """json.loads, dict walking, a prometheus_client call per message; seconds per phase."""
    registry = CollectorRegistry(auto_describe=False)
    messages = PromCounter(
        "bsg_messages", "final messages", ["target", "channel", "status"], registry=registry
    )
    cost = PromCounter(
        "bsg_message_cost",
        "cost",
        ["target", "channel", "status", "currency"],
        registry=registry,
    )
    latency = PromHistogram(
        "bsg_delivery_latency_seconds",
        "latency",
        ["target", "channel"],
        buckets=DEFAULT_DELIVERY_LATENCY_BUCKETS,
        registry=registry,
    )
    delay = PromHistogram(
        "bsg_send_delay_seconds",
        "send delay",
        ["target", "channel"],
        buckets=DEFAULT_SEND_DELAY_BUCKETS,
        registry=registry,
    )
    times: dict[str, float] = {}
    for phase in phases:
        started = time.perf_counter()
        for poll in phase.polls:
            for body in (*poll.new, *poll.recheck):
                for record in json.loads(body)["data"]:
                    status = record["status"]
                    if status not in _FINAL:
                        continue
                    channel = record.get("type") or "sms"
                    messages.labels(TARGET, channel, status).inc()
                    amount = record.get("amount")
                    if amount:
                        labels = (TARGET, channel, status, amount["currency"])
                        cost.labels(*labels).inc(float(amount["value"]))
                    sent = _epoch(record.get("sent_at"))
                    created = _epoch(record.get("created_at"))
                    if sent is not None and created is not None:
                        delay.labels(TARGET, channel).observe(max(0.0, sent - created))
                    done = _epoch(record.get("delivered_at"))
                    if status in DELIVERED_STATUSES and sent is not None and done is not None:
                        latency.labels(TARGET, channel).observe(max(0.0, done - sent))
            generate_latest(registry)
        times[phase.name] = time.perf_counter() - started
    return times


# --- the decode-only ceiling ------------------------------------------------------------


def run_ceiling(phases: Sequence[Phase]) -> dict[str, float]:
    """msgspec decoding into the wire structs, nothing else; seconds per phase."""
    return _decode_only(phases, msgspec.json.Decoder(WirePage).decode)


def run_typed(phases: Sequence[Phase]) -> dict[str, float]:
    """msgspec decoding into the typed records, as the decoder's fast path does; seconds per
    phase."""
    return _decode_only(phases, Decoder(UTC).fast().decode)


def _decode_only(phases: Sequence[Phase], decode: Callable[[bytes], object]) -> dict[str, float]:
    """Seconds per phase to decode every page with ``decode``."""
    times: dict[str, float] = {}
    for phase in phases:
        started = time.perf_counter()
        for poll in phase.polls:
            for body in (*poll.new, *poll.recheck):
                decode(body)
        times[phase.name] = time.perf_counter() - started
    return times


# --- the floor ---------------------------------------------------------------------------


class FloorRow(msgspec.Struct, gc=False):
    """The fields the fast path reads for an unlabelled target, without its checks."""

    id: int
    status: str
    type: str = "sms"
    created_at: str | None = None
    sent_at: str | None = None
    delivered_at: str | None = None
    amount: WireAmount | None = None
    validity: int | None = None


class FloorPage(msgspec.Struct):
    """A page of :class:`FloorRow`."""

    data: list[FloorRow]


_ID = attrgetter("id")
_CREATED = attrgetter("created_at")
_KEY = attrgetter("type", "status")


def run_floor(phases: Sequence[Phase]) -> dict[str, float]:
    """The per-message minimum of a Python tracker (see the module docstring); seconds per
    phase."""
    decode = msgspec.json.Decoder(FloorPage).decode
    stamps = Stamps(UTC)
    created_at: dict[int, float | None] = {}  # every id seen, with its creation time
    counts: Counter[tuple[str, str]] = Counter()  # new messages by (channel, status)
    times: dict[str, float] = {}
    for phase in phases:
        started = time.perf_counter()
        for poll in phase.polls:
            for body in (*poll.new, *poll.recheck):
                rows = decode(body).data
                ids = list(map(_ID, rows))
                new = list(map(not_, map(created_at.__contains__, ids)))
                created_at.update(
                    zip(ids, map(stamps.__getitem__, map(_CREATED, rows)), strict=True)
                )
                counts.update(compress(map(_KEY, rows), new))
        times[phase.name] = time.perf_counter() - started
    return times


# --- the report --------------------------------------------------------------------------


def best(
    runs: dict[str, Callable[[], dict[str, float]]], repeat: int
) -> dict[str, dict[str, float]]:
    """The fastest of ``repeat`` runs of each path, phase by phase.

    The paths take turns, round after round, each round starting one path further (and each
    run after a full collection): the VM's speed drifts by a fifth over minutes, and a path
    run while it was slow, or always after the same other path, must not stand alone.
    """
    results: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            gc.collect()
            results[name].append(runs[name]())
        progress(f"round {round_ + 1} of {repeat} done")
    return {
        name: {phase: min(r[phase] for r in rounds) for phase in rounds[0]}
        for name, rounds in results.items()
    }


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def arguments() -> argparse.Namespace:
    """Command-line knobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=300_000, help="messages of the cold read")
    parser.add_argument("--per-day", type=float, default=2_000_000, help="messages a day")
    parser.add_argument("--steady-polls", type=int, default=60, help="polls after the cold read")
    parser.add_argument("--interval", type=float, default=60.0, help="poll interval, seconds")
    parser.add_argument(
        "--poll-pages", type=int, default=299, help="pages per cold poll (the request budget)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds; each path's best counts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--labels",
        type=label_list,
        default=(),
        help="extra labels of ours' target, comma-separated: country, sender (default none)",
    )
    return parser.parse_args()


def label_list(text: str) -> tuple[str, ...]:
    """``--labels``: extra label dimensions, comma-separated."""
    labels = tuple(filter(None, text.split(",")))
    unknown = set(labels) - set(LABEL_DIMENSIONS)
    if unknown or len(set(labels)) != len(labels):
        raise argparse.ArgumentTypeError(f"each of {', '.join(LABEL_DIMENSIONS)} at most once")
    return labels


def main() -> None:
    """Record the pages, run the three paths, print the comparison."""
    args = arguments()
    wall = time.monotonic()
    phases = record_phases(args)
    pages = sum(poll.pages for phase in phases for poll in phase.polls)
    total = sum(phase.messages for phase in phases)
    size = sum(len(b) for ph in phases for p in ph.polls for b in (*p.new, *p.recheck))
    progress(f"recorded {pages:,} pages, {total:,} rows ({time.monotonic() - wall:.0f}s)")

    def ours_once() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            return run_ours(phases, Path(tmp), args.labels)

    timed = best(
        {
            "ours": ours_once,
            "baseline": lambda: run_baseline(phases),
            "ceiling": lambda: run_ceiling(phases),
            "typed": lambda: run_typed(phases),
            "floor": lambda: run_floor(phases),
        },
        args.repeat,
    )
    print(
        f"ingest benchmark: {total:,} rows in {pages:,} pages of up to {LIMIT} "
        f"({size / pages / 1024:.0f} KiB a page on average), simulator seed {args.seed}, "
        f"{args.per_day:,.0f} messages/day; ours' target labels by "
        f"{', '.join(('channel', *args.labels))}"
    )
    cold, steady = phases
    print(
        f"  cold: the first poll of a {WINDOW / HOUR:g}h window, {cold.messages:,} messages, "
        f"in {len(cold.polls)} poll(s) of up to {args.poll_pages} pages"
    )
    print(
        f"  steady: {len(steady.polls)} polls {args.interval:g}s apart, each reading the new "
        f"messages and re-reading the previous minute's: {steady.messages:,} rows"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {sys.version.split()[0]}; "
        f"one thread, best of {args.repeat} rounds (the paths take turns), time.perf_counter"
    )
    rates: dict[str, float] = {}
    for name, times in timed.items():
        parts = ", ".join(
            f"{ph.name} {ph.messages / times[ph.name]:,.0f}/s ({times[ph.name]:.2f}s)"
            for ph in phases
        )
        rates[name] = total / sum(times.values())
        print(f"{name:>9}: {rates[name]:>10,.0f} messages/s  [{parts}]")
    print(
        f"floor ratio (floor/ceiling): {rates['floor'] / rates['ceiling']:.2f}; "
        f"(ours/typed): {rates['ours'] / rates['typed']:.2f}"
    )
    print(
        f"ingest ratio (ours/baseline): {rates['ours'] / rates['baseline']:.2f}, "
        f"(ours/ceiling): {rates['ours'] / rates['ceiling']:.2f}"
    )


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
