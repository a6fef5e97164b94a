"""The exporter as an operator runs it: a real process, flags, signals, logs and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from exporter.simulator import (
    DEMO_API_KEY,
    Simulator,
    SimulatorServer,
)
from tests.harness import ExporterProcess, TargetSpec, config_yaml, series, value

KEY_ENV = {"BSG_API_KEY": DEMO_API_KEY}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m exporter`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def test_config_check_accepts_the_example(tmp_path: Path) -> None:
    result = run_cli("--config.file=config.example.yaml", "--config.check", env=_env())
    assert result.returncode == 0, result.stderr
    assert "OK (2 targets)" in result.stdout


def test_bad_config_exits_2_naming_every_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "api:\n  key: k\n  timeout: 10\npoll:\n  interval: 1m\n"
        "targets:\n  - name: a\n    window: 30s\n    colour: red\n"
    )
    for extra in ([], ["--config.check"]):
        result = run_cli(f"--config.file={bad}", *extra, env=_env())
        assert result.returncode == 2
        assert result.stderr == (
            f"{bad}: 3 errors\n"
            '  api.timeout: expected a duration like "60s", got 10\n'
            "  targets[0].window: must be at least poll.interval (1m), got 30s\n"
            "  targets[0].colour: unknown key\n"
        )


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli(f"--config.file={tmp_path / 'nope.yaml'}", env=_env())
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


def test_bad_flag_exits_2() -> None:
    assert run_cli("--log.level=loud").returncode == 2
    assert run_cli("--web.telemetry-path=metrics").returncode == 2
    for count in ("-1", "many"):
        result = run_cli(f"--web.max-requests={count}")
        assert result.returncode == 2 and "--web.max-requests" in result.stderr
    for address in ("9746", "localhost:http", "::1:9746", ":70000"):
        result = run_cli(f"--web.listen-address={address}", "--demo", "--config.check")
        assert result.returncode == 2 and "--web.listen-address" in result.stderr, address


def test_demo_needs_no_key_even_with_a_config_that_reads_one(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "BSG_API_KEY"}
    result = run_cli("--demo", "--config.file=config.example.yaml", "--config.check", env=environ)
    assert result.returncode == 0, result.stderr
    assert "OK (2 targets)" in result.stdout
    # without --demo the same config still needs its key
    result = run_cli("--config.file=config.example.yaml", "--config.check", env=environ)
    assert result.returncode == 2 and "BSG_API_KEY" in result.stderr


def test_config_check_warns_about_a_test_key() -> None:
    test_key = {**os.environ, "BSG_API_KEY": "test_0123456789"}
    result = run_cli("--config.file=config.example.yaml", "--config.check", env=test_key)
    assert result.returncode == 0, result.stderr
    assert "test_ key" in result.stderr and "random data" in result.stderr
    assert (
        "test_"
        not in run_cli("--config.file=config.example.yaml", "--config.check", env=_env()).stderr
    )


def test_demo_serves_metrics_that_promtool_accepts_and_stops_on_sigterm(tmp_path: Path) -> None:
    exporter = ExporterProcess(tmp_path, None, DEMO_API_KEY, args=["--demo"]).start()
    try:
        exporter.wait_until(lambda: exporter.get("/-/ready").status_code == 200, 30)
        text = exporter.get("/metrics").text
        parsed = exporter.samples()
        for target in ("all", "otp", "marketing"):
            assert value(parsed, "bsg_up", target=target) == 1
        assert sum(series(parsed, "bsg_window_messages", target="all").values()) > 1000
        assert value(parsed, "bsg_account_credit", currency="EUR") > 0
        assert "process_resident_memory_bytes" in text
        promtool = shutil.which("promtool")
        assert promtool, "scripts/test.sh installs promtool"
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr
        landing = exporter.get("/").text
        assert 'href="/metrics"' in landing and "marketing" in landing
    finally:
        code, took = exporter.stop(signal.SIGTERM)
    assert code == 0 and took < 5
    events = [json.loads(line) for line in exporter.log().splitlines()]
    finished = [e for e in events if e["event"] == "poll_finished"]
    assert (
        finished
        and {"target", "pages", "records", "new", "finalized", "duration_s", "level", "timestamp"}
        <= finished[0].keys()
    )
    assert events[-1]["event"] == "exporter_stopped" and events[-1]["clean"] is True


def test_restart_mid_run_starts_a_new_baseline_and_counts_exactly(
    tmp_path: Path, quiet_simulator: tuple[Simulator, SimulatorServer]
) -> None:
    sim, server = quiet_simulator
    targets: list[TargetSpec] = [
        {"name": "all", "window": "1h"},
        {"name": "c21", "campaign_id": 21, "window": "1h"},
    ]
    config = config_yaml(server.url, targets, interval="300ms")
    first = sim.create_messages(
        [
            {"campaign_id": 21, "status": "sent"},
            {"campaign_id": 21, "status": "delivered"},
            {"campaign_id": 22, "status": "accepted"},
        ]
    )
    exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
    exporter.wait_polls(2)
    sim.set_status(first[0], "delivered")
    sim.set_status(first[2], "failed")
    new = sim.create_messages([{"campaign_id": 21, "type": "viber", "status": "sent"}])
    exporter.wait_polls(4)
    samples = exporter.samples()
    assert (
        value(samples, "bsg_messages_total", target="all", channel="sms", status="delivered") == 1
    )
    assert value(samples, "bsg_messages_total", target="all", channel="sms", status="failed") == 1
    assert value(samples, "bsg_messages_total", target="c21", channel="sms", status="failed") == 0
    assert value(samples, "bsg_messages_submitted_total", target="c21", channel="viber") == 1
    code, _ = exporter.stop(signal.SIGINT)
    assert code == 0

    sim.set_status(new[0], "delivered")  # finalizes while the exporter is down
    later = sim.create_messages([{"campaign_id": 21, "status": "sent"}])
    restarted = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
    restarted.wait_polls(2)
    sim.set_status(later[0], "expired")
    restarted.wait_polls(4)
    samples = restarted.samples()
    counted = {
        (dict(k)["channel"], dict(k)["status"]): v
        for k, v in series(samples, "bsg_messages_total", target="c21").items()
        if v
    }
    # memory-only state: everything final at the restart is the new baseline
    assert counted == {("sms", "expired"): 1}
    assert sum(series(samples, "bsg_messages_submitted_total").values()) == 0
    window = series(samples, "bsg_window_messages", target="all")
    assert sum(window.values()) == 5
    restarted.stop()


def test_api_outage_shows_in_up_and_errors_then_recovers(
    tmp_path: Path, quiet_simulator: tuple[Simulator, SimulatorServer]
) -> None:
    sim, server = quiet_simulator
    config = config_yaml(server.url, [{"name": "all", "window": "1h"}], interval="300ms")
    config = config.replace("  timeout: 5s\n", "  timeout: 5s\n  max_retries: 0\n")
    exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
    try:
        exporter.wait_polls(1)
        sim.add_fault("http_status", status=503, endpoint="any")
        exporter.wait_until(lambda: value(exporter.samples(), "bsg_up", target="all") == 0, 10)
        samples = exporter.samples()
        assert value(samples, "bsg_poll_errors_total", target="all", reason="server_error") >= 1
        assert value(samples, "bsg_api_requests_total", endpoint="messages", code="503") >= 1
        sim.clear_faults()
        ids = sim.create_messages([{"campaign_id": 21, "status": "sent"}])
        sim.set_status(ids[0], "undelivered")
        exporter.wait_until(lambda: value(exporter.samples(), "bsg_up", target="all") == 1, 10)
        exporter.wait_polls(1)
        samples = exporter.samples()
        assert (
            value(samples, "bsg_messages_total", target="all", channel="sms", status="undelivered")
            == 1
        )
    finally:
        exporter.stop()


def test_secrets_never_reach_the_logs_at_debug_level(
    tmp_path: Path, quiet_simulator: tuple[Simulator, SimulatorServer]
) -> None:
    sim, server = quiet_simulator
    config = config_yaml(server.url, [{"name": "all", "window": "1h"}], interval="300ms")
    exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
    try:
        exporter.wait_polls(1)
        sim.expire_tokens()
        sim.add_fault("http_status", status=429, retry_after=0, count=2)
        sim.add_fault("malformed", count=1)
        sim.add_fault("reset", count=1)
        sim.add_fault("http_status", status=503, count=2, endpoint="any")
        sim.add_fault("bad_records", count=1)
        exporter.wait_polls(4)
        pages = [exporter.get(path).text for path in ("/metrics", "/", "/-/ready")]
    finally:
        exporter.stop()
    log = exporter.log()
    assert '"event": "api_login"' in log and '"event": "api_retry"' in log
    for text in (log, *pages):
        assert DEMO_API_KEY not in text
        assert "eyJ" not in text  # every JWT starts with the base64 of '{"'
        assert "Bearer" not in text


def test_listen_address_in_use_exits_1(
    tmp_path: Path, quiet_simulator: tuple[Simulator, SimulatorServer]
) -> None:
    _, server = quiet_simulator
    config = config_yaml(server.url, [{"name": "all", "window": "1h"}])
    first = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
    try:
        second = ExporterProcess(tmp_path, config, DEMO_API_KEY, port=first.port).start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(timeout=20) == 1
        assert "listen_failed" in second.log()
        assert f"cannot listen on 127.0.0.1:{first.port}: Address already in use" in second.log()
    finally:
        first.stop()


def _env() -> dict[str, str]:
    """The environment with the demo key as BSG_API_KEY."""
    return {**os.environ, **KEY_ENV}


def test_sigterm_during_a_slow_poll_exits_within_seconds(
    tmp_path: Path, quiet_simulator: tuple[Simulator, SimulatorServer]
) -> None:
    sim, server = quiet_simulator
    config = config_yaml(server.url, [{"name": "all", "window": "1h"}], interval="300ms")
    exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
    exporter.wait_polls(1)
    sim.add_fault("slow", delay=4.5)
    time.sleep(0.8)  # a poll is now waiting on the slow answer
    code, took = exporter.stop(signal.SIGTERM)
    assert code == 0 and took < 5
