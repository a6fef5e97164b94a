"""Persistent state: counters survive restarts and kill -9, state from another config, bad files."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from exporter.simulator import (
    DEMO_API_KEY,
    ManualClock,
    Simulator,
    SimulatorServer,
)
from exporter.tracking.store import StateError, StateStore
from tests.harness import (
    ExporterProcess,
    TargetSpec,
    assert_matches,
    config_yaml,
    expected_counts,
    in_process,
    series,
    value,
)
from tests.test_e2e_counting import START, TARGETS, traffic

FINALS = ("delivered", "failed", "undelivered", "expired", "unknown")
PRICE = {"value": "0.0100000", "currency": "EUR"}


def test_counters_resume_across_restarts_and_stay_exact(tmp_path: Path) -> None:
    clock = ManualClock(start=START)
    sim = traffic(clock)
    state = str(tmp_path / "state.db")
    polls: list[float] = []
    last = 0.0
    with SimulatorServer(sim) as server:
        for _ in range(3):  # three lives of the exporter on one state file
            exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now, state_path=state)
            try:
                restored = exporter.samples()
                if polls:  # counters come back where they were: Prometheus sees no reset
                    assert value(restored, "bsg_messages_total", **LABELS) == last
                for _ in range(20):
                    exporter.cycle()
                    polls.append(clock.now())
                    clock.advance(60)
                last = value(exporter.samples(), "bsg_messages_total", **LABELS)
            finally:
                exporter.close()
            clock.advance(600)  # down for ten minutes: messages finalize meanwhile
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now, state_path=state)
        try:
            exporter.cycle()
            polls.append(clock.now())
            truth = sim.truth()
            samples = exporter.samples()
            assert_matches(samples, "all", expected_counts(truth, polls, window=3600))
            assert_matches(
                samples, "otp", expected_counts(truth, polls, window=1800, campaign_id=11)
            )
            assert last > 100
        finally:
            exporter.close()


LABELS = {"target": "all", "channel": "sms", "status": "delivered"}


def test_state_from_another_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clock = ManualClock(start=START)
    sim = traffic(clock)
    state = str(tmp_path / "state.db")
    with SimulatorServer(sim) as server:
        first = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now, state_path=state)
        for _ in range(5):
            first.cycle()
            clock.advance(60)
        before = first.samples()
        first.close()
        renamed: list[TargetSpec] = [
            {"name": "all", "window": "1h"},  # kept
            {"name": "otp", "campaign_id": 12, "window": "30m"},  # same name, another campaign
            {"name": "fresh", "window": "1h"},  # new
        ]
        second = in_process(server.url, renamed, DEMO_API_KEY, clock.now, state_path=state)
        try:
            restored = second.samples()
            assert series(restored, "bsg_messages_total", target="all") == series(
                before, "bsg_messages_total", target="all"
            )
            for target in ("otp", "fresh"):  # start cold
                assert sum(series(restored, "bsg_messages_total", target=target).values()) == 0
            second.cycle()
            assert value(second.samples(), "bsg_up", target="fresh") == 1
        finally:
            second.close()
        third = in_process(server.url, TARGETS[:1], DEMO_API_KEY, clock.now, state_path=state)
        third.close()
    logs = capsys.readouterr().out
    assert "state_target_reset" in logs and "campaign_id changed" in logs
    assert "state_target_dropped" in logs
    assert StateStore(state).target_names() == ["all"]


def test_a_corrupt_state_file_is_refused_and_never_deleted(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4096)
    with pytest.raises(StateError, match=r"--state\.reset"):
        StateStore(str(state))
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml("http://127.0.0.1:9", [{"name": "all"}], state_path=str(state)))
    env = {"BSG_API_KEY": DEMO_API_KEY, "PATH": "/usr/bin:/bin"}
    base = [
        sys.executable,
        "-m",
        "exporter",
        f"--config.file={config}",
        "--web.listen-address=127.0.0.1:0",
    ]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert refused.returncode == 1
    assert "state_unusable" in refused.stderr and "--state.reset" in refused.stderr
    assert state.read_bytes().startswith(b"SQLite format 3")  # untouched
    reset = subprocess.Popen([*base, "--state.reset"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(2)
        assert reset.poll() is None  # it runs
    finally:
        reset.send_signal(signal.SIGTERM)
        _, err = reset.communicate(timeout=10)
    assert "state_reset" in err and "exporter_started" in err
    [aside] = tmp_path.glob("state.db.corrupt-*")
    assert aside.read_bytes().startswith(b"SQLite format 3\x00\x13")
    StateStore(str(state)).close()  # a fresh, valid state file took its place


def test_kill_9_mid_poll_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, quiet_simulator: tuple[Simulator, SimulatorServer]
) -> None:
    sim, server = quiet_simulator
    rng = random.Random(9)
    targets: list[TargetSpec] = [
        {"name": "all", "window": "1h"},
        {"name": "c21", "campaign_id": 21, "window": "1h"},
    ]
    config = config_yaml(
        server.url, targets, interval="200ms", state_path=str(tmp_path / "state.db")
    )
    # Slow pages make each poll last long enough for the kills to land inside one.
    sim.add_fault("slow", delay=0.05, endpoint="messages")
    exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
    exporter.wait_polls(2)  # the (empty) baseline
    pending: list[int] = []
    campaign_of: dict[int, int] = {}
    final: dict[int, tuple[int, str]] = {}
    kills = 0
    for round_ in range(6):
        campaigns = [rng.choice((21, 22)) for _ in range(400)]
        ids = sim.create_messages(
            [{"campaign_id": c, "status": "sent", "amount": PRICE} for c in campaigns]
        )
        campaign_of.update(zip(ids, campaigns, strict=True))
        pending += ids
        rng.shuffle(pending)
        for msg_id in pending[:300]:
            final[msg_id] = (campaign_of[msg_id], rng.choice(FINALS))
            sim.set_status(msg_id, final[msg_id][1])
        pending = pending[300:]
        time.sleep(rng.uniform(0.1, 0.9))
        assert exporter.proc is not None
        exporter.proc.send_signal(signal.SIGKILL)
        exporter.proc.wait(timeout=10)
        kills += 1
        exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY, port=exporter.port).start()
        if round_ % 2:
            exporter.wait_polls(1)
    for msg_id in pending:
        final[msg_id] = (campaign_of[msg_id], rng.choice(FINALS))
        sim.set_status(msg_id, final[msg_id][1])
    sim.clear_faults()
    exporter.wait_polls(6)
    samples = exporter.samples()
    exporter.stop()
    assert kills == 6 and len(final) == 2400
    for target, campaign in (("all", None), ("c21", 21)):
        want = Counter(s for c, s in final.values() if campaign is None or c == campaign)
        got = {
            dict(k)["status"]: v
            for k, v in series(samples, "bsg_messages_total", target=target).items()
            if v
        }
        assert got == dict(want), target
        submitted = value(samples, "bsg_messages_submitted_total", target=target, channel="sms")
        assert submitted == sum(want.values())
        cost = sum(series(samples, "bsg_message_cost_total", target=target).values())
        assert cost == pytest.approx(0.01 * sum(want.values()), abs=1e-9)


def test_sqlite_file_is_a_plain_database(tmp_path: Path) -> None:
    """Operators can inspect the state with the sqlite3 shell: it is WAL, with named tables."""
    path = tmp_path / "s.db"
    StateStore(str(path)).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "targets", "chunks"} <= tables
