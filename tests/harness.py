"""Test harness: the exporter in-process on a simulated clock, or as a real process.

Both talk HTTP over loopback to a SimulatorServer, and both are read through /metrics, as
Prometheus would read them. ``expected_counts`` turns the simulator's ground truth into the
counters the counting contract promises.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Required, TypedDict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import App, build_app
from exporter.bsg.caches import parse_price_nanos
from exporter.bsg.wire import Price, is_final, normalize_channel, normalize_status
from exporter.config.schema import Config, parse_config
from exporter.serving.server import WebServer
from exporter.simulator import status_at

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class TargetSpec(TypedDict, total=False):
    """A target of :func:`config_yaml`: its name, and its window and campaign when given."""

    name: Required[str]
    window: str
    campaign_id: int


def price(nanos: int | None, currency: str | None) -> Price | None:
    """The price of a message costing ``nanos`` nano-units."""
    return None if nanos is None else Price(nanos, currency)


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return {lbl: v for (n, lbl), v in samples.items() if n == name and wanted <= lbl}


def config_yaml(
    url: str,
    targets: Iterable[TargetSpec],
    *,
    interval: str = "60s",
    count_existing: bool = False,
    extra: str = "",
    state_path: str = ":memory:",
    recheck_every: str | None = "1ms",
    max_requests_per_minute: int = 0,
    report_feed: bool = True,
) -> str:
    """A config file's text for the simulator at ``url``; the key comes from BSG_API_KEY.

    By default every pending message is re-checked every cycle (``recheck_every`` below the
    interval), which is what lets the tests predict each count exactly from the ground truth.
    """
    lines = [
        "api:",
        f"  url: {url}",
        "  key: ${BSG_API_KEY}",
        "  timeout: 5s",
        f"  max_requests_per_minute: {max_requests_per_minute}",
        "poll:",
        f"  interval: {interval}",
        f"  report_feed: {'true' if report_feed else 'false'}",
    ]
    if recheck_every is not None:
        lines += ["  recheck:", f"    - {{max_age: 30d, every: {recheck_every}}}"]
    lines += ["state:", f"  path: {state_path!r}", "targets:"]
    for target in targets:
        lines.append(f"  - name: {target['name']}")
        lines.append(f"    window: {target.get('window', '1h')}")
        if target.get("campaign_id") is not None:
            lines.append(f"    campaign_id: {target['campaign_id']}")
    lines.append(f"count_existing_on_start: {'true' if count_existing else 'false'}")
    return "\n".join(lines) + "\n" + extra


class InProcessExporter:
    """The real app (client, poller, trackers, collector, web) driven cycle by cycle."""

    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.stop = threading.Event()
        self.app: App = build_app(config, stop=self.stop, clock=clock, process_metrics=False)
        self.web = WebServer("127.0.0.1:0", self.app.registry, self.app.state, clock=clock)
        self.web.start()
        self.url = f"http://127.0.0.1:{self.web.port}"

    def cycle(self) -> None:
        """Run one poll cycle (every target, then the balance)."""
        self.app.poller.run_cycle()

    def scrape(self) -> str:
        """GET /metrics over HTTP."""
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def samples(self) -> Samples:
        """The scraped samples."""
        return parse_samples(self.scrape())

    def close(self) -> None:
        """Stop serving and close the client and the store."""
        self.stop.set()
        self.web.stop()
        self.app.close()


def in_process(
    url: str, targets: Iterable[TargetSpec], key: str, clock: Callable[[], float], **kw: Any
) -> InProcessExporter:
    """An in-process exporter for the simulator at ``url``."""
    text = config_yaml(url, targets, **kw)
    return InProcessExporter(parse_config(text, environ={"BSG_API_KEY": key}), clock)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ExporterProcess:
    """``python -m exporter`` as a child process, logging JSON to a file."""

    workdir: Path
    config_text: str | None
    key: str
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The exporter's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the process's stderr goes."""
        return self.workdir / f"exporter-{self.port}.log"

    def start(self, wait: bool = True) -> ExporterProcess:
        """Start the process; with ``wait``, return once /-/healthy answers."""
        cmd = [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{self.port}"]
        if self.config_text is not None:
            config = self.workdir / "config.yaml"
            config.write_text(self.config_text)
            cmd.append(f"--config.file={config}")
        cmd += ["--log.format=json", "--log.level=debug", *self.args]
        env = {**os.environ, "BSG_API_KEY": self.key}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        if wait:
            self.wait_until(lambda: self.get("/-/healthy").status_code == 200, 20)
        return self

    def get(self, path: str) -> httpx.Response:
        """GET a path; a connection failure reads as a 599."""
        try:
            return httpx.get(self.url + path, timeout=5)
        except httpx.HTTPError:
            return httpx.Response(599)

    def samples(self) -> Samples:
        """The scraped samples."""
        response = self.get("/metrics")
        assert response.status_code == 200, response.status_code
        return parse_samples(response.text)

    def polls(self) -> int:
        """Target polls so far, all targets together."""
        return int(sum(series(self.samples(), "bsg_poll_duration_seconds_count").values()))

    def wait_polls(self, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` more polls (summed over targets) have finished."""
        goal = self.polls() + count
        self.wait_until(lambda: self.polls() >= goal, timeout)

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Poll ``condition`` until true; fail with the log tail on timeout or early exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"exporter exited {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        """Send ``sig`` and wait; returns the exit status and the seconds it took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def log(self) -> str:
        """Everything the process wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Expected:
    """The counters the contract promises for one target."""

    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    submitted: Counter[str] = field(default_factory=Counter)
    cost_nanos: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    window: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency_count: Counter[str] = field(default_factory=Counter)
    latency_sum: Counter[str] = field(default_factory=Counter)


def expected_counts(
    truth: Mapping[str, Any],
    polls: list[float],
    *,
    window: float,
    campaign_id: int | None = None,
    count_existing: bool = False,
) -> Expected:
    """What a target must show after polls at ``polls`` (all complete, in order)."""
    expected = Expected()
    last = polls[-1]
    for message in truth["messages"]:
        if campaign_id is not None and message["campaign_id"] != campaign_id:
            continue
        _expect_message(expected, message, polls, window, count_existing)
        current = status_at(message["history"], last)
        if current is not None and last - window <= message["created_at"] <= last:
            channel = normalize_channel(message["type"])
            expected.window[(channel, normalize_status(current))] += 1
    return expected


def _expect_message(
    expected: Expected,
    message: Mapping[str, Any],
    polls: list[float],
    window: float,
    count_existing: bool,
) -> None:
    """Add one message's contribution to the counters."""
    created = message["created_at"]
    first = next((i for i, p in enumerate(polls) if p - window <= created <= p), None)
    if first is None:
        return
    channel = normalize_channel(message["type"])
    if first > 0:
        expected.submitted[channel] += 1
    for index in range(first, len(polls)):
        status = status_at(message["history"], polls[index])
        if status is None or not is_final(normalize_status(status)):
            continue
        if index == 0 and not count_existing:
            return  # the baseline
        expected.messages[(channel, status)] += 1
        amount = message.get("amount")
        if amount:
            nanos = parse_price_nanos(amount["value"]) or 0
            expected.cost_nanos[(channel, status, amount["currency"].upper())] += nanos
        if status in ("delivered", "read") and message["delivered_at"] and message["sent_at"]:
            expected.latency_count[channel] += 1
            expected.latency_sum[channel] += max(0.0, message["delivered_at"] - message["sent_at"])
        return


def assert_matches(
    samples: Samples, target: str, expected: Expected, *, window_by_finality: bool = False
) -> None:
    """Compare a target's scraped counters with the expectation, series by series.

    ``window_by_finality`` compares the window gauge by channel and final or pending only: a
    poller that re-reads pending and final messages rarely (the report feed) learns of a move
    between two pending statuses, or two final ones, later.
    """
    got_messages = {
        (dict(lbl)["channel"], dict(lbl)["status"]): v
        for lbl, v in series(samples, "bsg_messages_total", target=target).items()
        if v
    }
    assert got_messages == dict(expected.messages)
    got_submitted = {
        dict(lbl)["channel"]: v
        for lbl, v in series(samples, "bsg_messages_submitted_total", target=target).items()
        if v
    }
    assert got_submitted == dict(expected.submitted)
    got_cost = {
        (dict(lbl)["channel"], dict(lbl)["status"], dict(lbl)["currency"]): v
        for lbl, v in series(samples, "bsg_message_cost_total", target=target).items()
    }
    want_cost = {k: v / 1e9 for k, v in expected.cost_nanos.items()}
    assert got_cost.keys() == want_cost.keys()
    for key, want in want_cost.items():
        assert abs(got_cost[key] - want) <= 1e-9 * max(1.0, abs(want)), key
    got_window = {
        (dict(lbl)["channel"], dict(lbl)["status"]): v
        for lbl, v in series(samples, "bsg_window_messages", target=target).items()
        if v
    }
    if window_by_finality:
        assert _by_finality(got_window) == _by_finality(expected.window)
    else:
        assert got_window == dict(expected.window)
    for channel, count in expected.latency_count.items():
        labels = {"target": target, "channel": channel}
        assert value(samples, "bsg_delivery_latency_seconds_count", **labels) == count
        got_sum = value(samples, "bsg_delivery_latency_seconds_sum", **labels)
        assert abs(got_sum - expected.latency_sum[channel]) < 1e-6


def _by_finality(window: Mapping[tuple[str, str], float]) -> dict[tuple[str, bool], float]:
    """Window counts by channel and whether the status is final."""
    merged: dict[tuple[str, bool], float] = {}
    for (channel, status), count in window.items():
        key = (channel, is_final(status))
        merged[key] = merged.get(key, 0.0) + count
    return {key: count for key, count in merged.items() if count}
