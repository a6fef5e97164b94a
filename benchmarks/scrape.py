"""Scrape benchmark: /metrics latency while polls run, and resident memory per tracked message.

Run: ``.venv/bin/python benchmarks/scrape.py`` (``--help`` for the knobs). Two child processes,
each doing only its part, so that what is measured is theirs alone:

* **serve**: the exporter's real ``WebServer`` on loopback, over the real registry (the
  ``BsgCollector`` plus the process, platform and GC collectors, as ``exporter.app`` builds it),
  with ``--targets`` trackers on a real ``StateStore`` (a file in a temporary directory), every
  one with 4 channels, all 13 statuses and 5 currencies, so several thousand series. A poller
  thread applies pages to the trackers back to back (``Decoder.page`` -> ``apply`` -> ``snapshot``
  -> published under the state's lock, as the poller does) while this process, the driver,
  scrapes ``/metrics`` over HTTP/1.1 keep-alive and times each scrape from request to last byte:
  first with the poller idle, then with it running; as Prometheus asks (OpenMetrics, gzip) and
  as plain text.
* **memory**: a fresh process that only ingests ``--messages`` messages (pages the driver wrote
  to a file, read one poll of ``--poll-pages`` pages at a time, as the request budget cuts a
  cold read, each poll committed in chunks of ``COLD_CHUNK_PAGES`` pages, as the poller
  commits a cold read) into one tracker with a 72 h window, then reports its VmRSS and the
  state file.
  The memory its polls' reads and their garbage used mostly stays with the process, so a third
  process, **load**, then only loads that state file (a restart) and reports its VmRSS: what the
  tracked messages themselves take.

The pages are synthetic but shaped like the API's (every field of a row, the simulator's kind of
status mix). Every number printed is measured in the run; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import logging
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec
import structlog
from lines import read_line, send_line

START = 1_780_000_000.0
HOUR = 3600.0
WINDOW = 72 * HOUR
LIMIT = 500
CHANNELS = ("sms", "viber", "whatsapp", "rcs")
COUNTRIES = {"UA": "UAH", "PL": "PLN", "DE": "EUR", "GB": "GBP", "US": "USD"}
STATUS_MIX = {
    "delivered": 0.80,
    "read": 0.08,
    "undelivered": 0.02,
    "failed": 0.015,
    "not_viber_user": 0.015,
    "expired": 0.01,
    "not_service_user": 0.005,
    "unknown": 0.005,
    "sent": 0.03,
    "accepted": 0.01,
    "sending": 0.005,
    "scheduled": 0.0025,
    "moderation": 0.0025,
}
PENDING = {"sent", "accepted", "sending", "scheduled", "moderation"}
ACCEPT_PROMETHEUS = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


# --- synthetic pages ---------------------------------------------------------------------


class Pages:
    """Pages of ``GET /api/messages`` with ids and creation times that only grow."""

    def __init__(self, seed: int, start: float, per_second: float) -> None:
        self.rng = random.Random(seed)
        self.next_id = 4_419_393_338
        self.created = start
        self.gap = 1.0 / per_second
        self.statuses = list(STATUS_MIX)
        self.weights = list(STATUS_MIX.values())

    def page(self) -> bytes:
        """The next page of 500 rows."""
        rng, rows = self.rng, []
        statuses = rng.choices(self.statuses, self.weights, k=LIMIT)
        for status in statuses:
            self.next_id += rng.randint(1, 3)
            self.created += self.gap
            country = rng.choice(tuple(COUNTRIES))
            channel = CHANNELS[rng.randrange(len(CHANNELS))]
            sent = None if status in ("scheduled", "moderation") else self.created + rng.random()
            done = None
            if status not in PENDING and sent is not None:
                done = sent + rng.expovariate(1 / 20.0)
            rows.append(
                {
                    "id": self.next_id,
                    "campaign_id": 101,
                    "reference_id": None,
                    "type": channel,
                    "source": "rest",
                    "text": f"Your verification code is {rng.randrange(10**6):06d}",
                    "phone": 380_000_000_000 + rng.randrange(10**9),
                    "validity": 72,
                    "status": status,
                    "amount": {
                        "value": f"{0.01 * (1 + rng.randrange(5)):.7f}",
                        "currency": COUNTRIES[country],
                    },
                    "sender": "testsms",
                    "created_at": _stamp(self.created),
                    "sent_at": _stamp(sent),
                    "delivered_at": _stamp(done),
                    "country": country,
                    "parts": 1,
                }
            )
        meta = {"page": {"total": 10**7, "offset": 0, "limit": LIMIT}}
        return msgspec.json.encode({"data": rows, "meta": meta})


def _stamp(t: float | None) -> str | None:
    """A zone-less API timestamp (UTC)."""
    return None if t is None else datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- child: serve ------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:  # noqa: PLR0915 - set-up, poller and loop
    """Serve /metrics over trackers a poller thread keeps applying pages to."""
    from exporter.app import _registry  # noqa: PLC0415 - children import the exporter only
    from exporter.bsg.decode import Decoder  # noqa: PLC0415
    from exporter.config.schema import TargetConfig  # noqa: PLC0415
    from exporter.runtime import COLLECTION_PAUSE, tune_process  # noqa: PLC0415
    from exporter.serving.server import WebServer  # noqa: PLC0415
    from exporter.stats import ExporterState, TargetStatus  # noqa: PLC0415
    from exporter.tracking.store import StateStore  # noqa: PLC0415
    from exporter.tracking.tracker import TargetTracker  # noqa: PLC0415

    tune_process()  # as the exporter's main does
    tmp = tempfile.TemporaryDirectory()
    store = StateStore(str(Path(tmp.name) / "bsg-exporter.db"))
    names = [f"target-{i}" for i in range(args.targets)]
    trackers = {name: TargetTracker(store, TargetConfig(name, WINDOW, None)) for name in names}
    sources = {name: Pages(i, START - 2 * HOUR, 2.0) for i, name in enumerate(names)}
    clock = {"now": START}
    decoder = Decoder(UTC)  # the client's
    for name, tracker in trackers.items():  # a baseline, then a poll of counted messages
        for at in (START - 2 * HOUR, START):
            tracker.apply(decoder.page(sources[name].page(), tracker.labels).messages, at)
    state = ExporterState(
        targets={n: TargetStatus(snapshot=t.snapshot(START)) for n, t in trackers.items()},
        version="bench",
        test_key=False,
    )
    registry = _registry(state, process_metrics=True)
    server = WebServer("127.0.0.1:0", registry, state, clock=lambda: clock["now"])
    server.start()
    running = threading.Event()
    stop = threading.Event()
    durations: list[float] = []

    def poller() -> None:
        """Poll every target in turn, back to back, while running."""
        while not stop.is_set():
            if not running.wait(0.05):
                continue
            for name, tracker in trackers.items():
                started = time.perf_counter()
                clock["now"] += 1.0
                now = clock["now"]
                pages = [decoder.page(sources[name].page(), tracker.labels) for _ in range(2)]
                messages = [m for page in pages for m in page.messages]
                with COLLECTION_PAUSE:  # as the poller holds it
                    tracker.apply(messages, now, read_to=now)
                snapshot = tracker.snapshot(now)
                took = time.perf_counter() - started
                state.publish_success(name, snapshot, at=now, duration=took, mismatches=0)
                durations.append(time.perf_counter() - started)

    thread = threading.Thread(target=poller, name="poller", daemon=True)
    thread.start()
    reply({"port": server.port})
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "poll":
            durations.clear()
            running.set() if command["on"] else running.clear()
            reply({"ok": True})
        elif command["cmd"] == "stats":
            reply({"polls": list(durations)})
        else:
            break
    stop.set()
    running.clear()
    thread.join()
    server.stop()
    store.close()
    tmp.cleanup()


_REPLIES: list[IO[str]] = []
"""A child's channel to the driver: its original stdout (logs go to stderr)."""


def reply(obj: dict[str, Any]) -> None:
    """One JSON line to the driver."""
    _REPLIES[0].write(json.dumps(obj) + "\n")
    _REPLIES[0].flush()


# --- child: memory -----------------------------------------------------------------------


def memory_kb() -> tuple[int, int]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def read_pages(path: Path) -> Iterator[bytes]:
    """The length-prefixed pages of a file, one at a time."""
    with path.open("rb") as file:
        while header := file.read(4):
            yield file.read(struct.unpack("<I", header)[0])


def memory(args: argparse.Namespace) -> None:
    """Ingest the pages of ``args.pages_file`` as a cold read, then report the memory."""
    from exporter.bsg.decode import Decoder  # noqa: PLC0415
    from exporter.bsg.paging import MessagePass  # noqa: PLC0415
    from exporter.config.schema import TargetConfig  # noqa: PLC0415
    from exporter.defaults import COLD_CHUNK_PAGES  # noqa: PLC0415
    from exporter.runtime import COLLECTION_PAUSE  # noqa: PLC0415
    from exporter.tracking.store import StateStore  # noqa: PLC0415
    from exporter.tracking.tracker import TargetTracker  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.state_file or Path(tmp) / "bsg-exporter.db")

        def load(store: StateStore) -> TargetTracker:
            """The one tracker, from the state file (a restart loads it again)."""
            return TargetTracker(store, TargetConfig("all", WINDOW, None))

        store = StateStore(str(path))
        tracker = load(store)
        base_kb = memory_kb()[0]
        pages = read_pages(Path(args.pages_file))
        decoder = Decoder(UTC)  # the client's
        now = START
        while True:  # every poll is cold: the poller commits it a chunk at a time
            read = MessagePass()
            for _, body in zip(range(min(args.poll_pages, COLD_CHUNK_PAGES)), pages, strict=False):
                read.add_page(decoder.page(body, tracker.labels))
            if not read.pages:
                break
            with COLLECTION_PAUSE:  # as the poller holds it
                tracker.apply(read.messages, now, resume=(now - WINDOW, 0), cursor=None)
            del read
        tracker.apply([], now, read_to=now)  # the read of new messages got to the end
        snapshot = tracker.snapshot(now)
        rss_kb, peak_kb = memory_kb()
        state_bytes = sum(
            os.path.getsize(f"{path}{suffix}")
            for suffix in ("", "-wal", "-shm")
            if os.path.exists(f"{path}{suffix}")
        )
        started = time.perf_counter()  # a restart: the state file loaded anew
        load(StateStore(str(path))).snapshot(now)
        load_s = time.perf_counter() - started
        reply(
            {
                "tracked": snapshot.tracked,
                "pending": snapshot.pending,
                "base_kb": base_kb,
                "rss_kb": rss_kb,
                "peak_kb": peak_kb,
                "state_bytes": state_bytes,
                "load_s": load_s,
            }
        )
        store.close()


def load(args: argparse.Namespace) -> None:
    """Load the state file the memory child wrote, as a restart does, then report the memory."""
    from exporter.config.schema import TargetConfig  # noqa: PLC0415
    from exporter.tracking.store import StateStore  # noqa: PLC0415
    from exporter.tracking.tracker import TargetTracker  # noqa: PLC0415

    base_kb = memory_kb()[0]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    started = time.perf_counter()
    store = StateStore(args.state_file)
    tracker = TargetTracker(store, TargetConfig("all", WINDOW, None))
    snapshot = tracker.snapshot(START)
    load_s = time.perf_counter() - started
    rss_kb, peak_kb = memory_kb()  # the tracker still held
    reply(
        {
            "tracked": snapshot.tracked,
            "base_kb": base_kb,
            "rss_kb": rss_kb,
            "peak_kb": peak_kb,
            "load_s": load_s,
        }
    )
    del tracker
    store.close()


# --- the driver --------------------------------------------------------------------------


class Child:
    """A child process spoken to in JSON lines."""

    def __init__(self, role: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", role, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: dict[str, Any], answer: bool = True) -> dict[str, Any]:
        """Send a command and read the reply."""
        send_line(self.proc, command)
        return self.receive() if answer else {}

    def receive(self) -> dict[str, Any]:
        """Read one reply line."""
        return read_line(self.proc, "child")


def scrape_times(port: int, count: int, headers: dict[str, str]) -> tuple[list[float], int, int]:
    """Seconds per scrape over one keep-alive connection, the body size and the samples."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: list[float] = []
    size = samples = 0
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        body = response.read()
        times.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
        size = len(body)
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        samples = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
    conn.close()
    return times, size, samples


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def ms(values: Sequence[float]) -> str:
    """p50 / p99 / max in milliseconds."""
    return (
        f"p50 {percentile(values, 0.5) * 1e3:.2f} ms, p99 {percentile(values, 0.99) * 1e3:.2f} ms, "
        f"max {max(values) * 1e3:.2f} ms"
    )


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def write_pages(path: Path, messages: int, seed: int) -> int:
    """Write ``messages`` rows of pages over the 72 h window to ``path``; returns the pages."""
    source = Pages(seed, START - WINDOW, messages / WINDOW)
    count = math.ceil(messages / LIMIT)
    with path.open("wb") as file:
        for _ in range(count):
            body = source.page()
            file.write(struct.pack("<I", len(body)))
            file.write(body)
    return count


def drive(args: argparse.Namespace) -> None:
    """Run both children and print the results."""
    wall = time.monotonic()
    prometheus = {"Accept": ACCEPT_PROMETHEUS, "Accept-Encoding": "gzip"}
    plain = {"Accept": "text/plain"}
    server = Child("serve", "--targets", str(args.targets))
    port = int(server.receive()["port"])
    progress(f"serving on port {port} ({time.monotonic() - wall:.0f}s)")
    results: dict[tuple[str, str], tuple[list[float], int, int]] = {}
    polls: list[float] = []
    for polling in (False, True):
        server.send({"cmd": "poll", "on": polling})
        for fmt, headers in (("prometheus", prometheus), ("text", plain)):
            scrape_times(port, 20, headers)  # warm up
            results[("polling" if polling else "idle", fmt)] = scrape_times(
                port, args.scrapes, headers
            )
        if polling:
            polls = server.send({"cmd": "stats"})["polls"]
        progress(f"scrapes done, polling={polling} ({time.monotonic() - wall:.0f}s)")
    server.send({"cmd": "quit"}, answer=False)
    server.proc.wait(timeout=60)

    with tempfile.TemporaryDirectory() as tmp:
        pages_file = Path(tmp) / "pages.bin"
        pages = write_pages(pages_file, args.messages, args.seed)
        progress(f"{pages:,} pages written ({time.monotonic() - wall:.0f}s)")
        state_file = str(Path(tmp) / "bsg-exporter.db")
        child = Child(
            "memory",
            *("--pages-file", str(pages_file), "--poll-pages", str(args.poll_pages)),
            *("--state-file", state_file),
        )
        mem = child.receive()
        child.proc.wait(timeout=60)
        child = Child("load", "--state-file", state_file)
        loaded = child.receive()
        child.proc.wait(timeout=60)
    progress(f"memory done ({time.monotonic() - wall:.0f}s)")

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    samples = results[("idle", "text")][2]
    print(
        f"scrape benchmark: {args.targets} targets x {len(CHANNELS)} channels, 13 statuses, "
        f"{len(COUNTRIES)} currencies, histograms: {samples:,} samples on /metrics "
        f"(process metrics included)"
    )
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu}, Python {sys.version.split()[0]}; "
        f"{args.scrapes} scrapes per line, one keep-alive connection, request to last byte"
    )
    for (mode, fmt), (times, size, _) in results.items():
        label = "OpenMetrics+gzip" if fmt == "prometheus" else "text/plain"
        print(f"  /metrics {mode:>7}, {label:>16} ({size / 1024:.0f} KiB): {ms(times)}")
    if polls:
        print(
            f"  polls meanwhile: {len(polls)} (1,000 messages each, back to back), "
            f"duration {ms(polls)}"
        )
    tracked = max(1, mem["tracked"])
    rss = mem["rss_kb"] * 1024
    print(
        f"memory after ingesting {args.messages:,} messages (cold read of a 72h window in polls "
        f"of {args.poll_pages} pages): {mem['tracked']:,} tracked ({mem['pending']:,} pending); "
        f"VmRSS {rss / 2**20:.1f} MiB = {rss / tracked:.0f} B/message "
        f"({(mem['rss_kb'] - mem['base_kb']) * 1024 / tracked:.0f} B/message above the "
        f"{mem['base_kb'] / 1024:.1f} MiB before); peak VmHWM {mem['peak_kb'] / 1024:.1f} MiB "
        f"({(mem['peak_kb'] - mem['base_kb']) * 1024 / tracked:.0f} B/message above it)"
    )
    print(
        f"state file (SQLite, with WAL): {mem['state_bytes'] / 2**20:.1f} MiB = "
        f"{mem['state_bytes'] / tracked:.0f} B/message; a restart loads it in {mem['load_s']:.2f} s"
    )
    grown, peak = loaded["rss_kb"] - loaded["base_kb"], loaded["peak_kb"] - loaded["base_kb"]
    print(
        f"a fresh process loading that state file ({loaded['tracked']:,} tracked, in "
        f"{loaded['load_s']:.2f} s): VmRSS {grown / 1024:.1f} MiB above the "
        f"{loaded['base_kb'] / 1024:.1f} MiB before = {grown * 1024 / tracked:.0f} B/message; "
        f"peak VmHWM {peak * 1024 / tracked:.0f} B/message above it"
    )
    p99 = percentile(results[("polling", "prometheus")][0], 0.99)
    print(f"scrape p99 while polling: {p99 * 1e3:.2f} ms; memory: {rss / tracked:.0f} B/message")


def arguments() -> argparse.Namespace:
    """Command-line knobs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=500, help="scrapes per measurement")
    parser.add_argument("--messages", type=int, default=1_000_000, help="for the memory part")
    parser.add_argument("--poll-pages", type=int, default=299, help="pages per cold poll")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--role", choices=("drive", "serve", "memory", "load"), default="drive")
    parser.add_argument("--pages-file", help=argparse.SUPPRESS)
    parser.add_argument("--state-file", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    """Dispatch on the role."""
    args = arguments()
    if args.role != "drive":
        # Replies on a copy of stdout; fd 1 itself goes to stderr, where logs belong.
        _REPLIES.append(os.fdopen(os.dup(1), "w"))
        os.dup2(2, 1)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.role == "serve":
        serve(args)
    elif args.role == "memory":
        memory(args)
    elif args.role == "load":
        load(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
