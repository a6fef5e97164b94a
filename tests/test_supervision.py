"""The poll loop is supervised: dead or stuck, the exporter says so and exits to be restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.liveness import Liveness, stall_limit
from exporter.simulator import DEMO_API_KEY, SimulatorServer, start_demo
from tests.harness import config_yaml, free_port

# Started as `python -c`: the real main, with one part of the poll loop replaced by a fault.
_WRAPPER = """
import sys, threading, time
import exporter.app, exporter.polling.poller
fault = sys.argv[1]
def dies(self):
    raise SystemExit("injected: the poll loop ends")
def hangs(self):
    with self.lock:
        threading.Event().wait()
if fault == "dies":
    exporter.polling.poller.Poller.run_cycle = dies
elif fault == "hangs":
    exporter.polling.poller.Poller.run_cycle = hangs
    exporter.app._stall_limit = lambda config: float(sys.argv[2])
from exporter.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


class FakeClock:
    """A monotonic clock that moves when told."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_liveness_turns_unhealthy_after_the_stall_limit_and_on_failure() -> None:
    clock = FakeClock()
    liveness = Liveness(30.0, clock=clock)
    clock.t += 29
    assert liveness.check() == (True, "")
    liveness.beat()
    clock.t += 29
    assert liveness.check()[0]
    clock.t += 2
    healthy, reason = liveness.check()
    assert not healthy and "no progress for 31s" in reason
    liveness.beat()
    assert liveness.check()[0]
    liveness.fail("poll loop died: SystemExit")
    liveness.fail("a second reason is not kept")
    liveness.beat()  # a beat does not bring a dead loop back
    assert liveness.check() == (False, "poll loop died: SystemExit")


def test_the_stall_limit_covers_the_interval_and_the_longest_request() -> None:
    assert stall_limit(60.0, 70.0) > 130.0


@pytest.fixture
def demo() -> Iterator[SimulatorServer]:
    """The demo simulator, served over loopback."""
    server = start_demo()
    try:
        yield server
    finally:
        server.stop()


def _start(
    tmp_path: Path, url: str, fault: str, limit: float = 2.0
) -> tuple[subprocess.Popen[str], int]:
    """The exporter with ``fault`` in its poll loop (a hang is stuck after ``limit`` seconds);
    returns the process and its port."""
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml(url, [{"name": "all"}], interval="1s"))
    port = free_port()
    argv = [
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.format=json",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, fault, str(limit), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "BSG_API_KEY": DEMO_API_KEY},
    )
    return proc, port


def _health(port: int) -> tuple[int, str]:
    """The status and body of /-/healthy, 599 when nothing answers."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=2)
    except httpx.HTTPError:
        return 599, ""
    return response.status_code, response.text


def _wait_for(port: int, status: int, timeout: float) -> str:
    """Wait until /-/healthy answers ``status``; return its body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = _health(port)
        if code == status:
            return body
        time.sleep(0.1)
    raise AssertionError(f"/-/healthy never answered {status}")


@pytest.mark.parametrize(("fault", "reason"), [("dies", "died"), ("hangs", "stuck")])
def test_a_dead_or_stuck_poll_loop_turns_healthy_503_and_exits_non_zero(
    tmp_path: Path, demo: SimulatorServer, fault: str, reason: str
) -> None:
    proc, port = _start(tmp_path, demo.url, fault)
    try:
        body = _wait_for(port, 503, 20)
        assert reason in body
        code = proc.wait(timeout=20)
    finally:
        proc.kill()
        output = proc.communicate()[0]
    assert code == 1, output
    assert '"exporter_unhealthy"' in output and '"level": "error"' in output


def test_sigterm_stops_within_seconds_while_the_poll_hangs_and_a_reload_waits(
    tmp_path: Path, demo: SimulatorServer
) -> None:
    proc, port = _start(tmp_path, demo.url, "hangs", limit=600)
    try:
        _wait_for(port, 200, 20)
        proc.send_signal(signal.SIGHUP)  # the reload waits for the poll that never ends
        time.sleep(1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        took = time.monotonic() - started
    finally:
        proc.kill()
        output = proc.communicate()[0]
    assert code == 0, output
    assert took < 8, took
