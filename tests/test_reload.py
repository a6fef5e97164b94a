"""Reload: a new config applies between polls, a bad one keeps the last good one."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from exporter.config.schema import parse_config
from exporter.serving.exposition import BsgRegistry
from exporter.simulator import DEMO_API_KEY, ManualClock, SimulatorServer
from tests.harness import ExporterProcess, TargetSpec, config_yaml, in_process, series, value
from tests.test_e2e_counting import START, TARGETS, traffic

ENV = {"BSG_API_KEY": DEMO_API_KEY}


def test_targets_added_and_removed_keep_the_others_state(tmp_path: Path) -> None:
    clock = ManualClock(start=START)
    sim = traffic(clock)
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now)
        try:
            for _ in range(5):
                exporter.cycle()
                clock.advance(60)
            before = exporter.samples()
            kept = series(before, "bsg_messages_total", target="all")
            assert sum(kept.values()) > 0
            new_targets: list[TargetSpec] = [
                TARGETS[0],
                {"name": "c12", "campaign_id": 12, "window": "1h"},
            ]
            text = config_yaml(server.url, new_targets)
            error = exporter.app.reload_with(lambda: parse_config(text, environ=ENV))
            assert error is None
            after = exporter.samples()
            assert series(after, "bsg_messages_total", target="all") == kept
            assert not series(after, "bsg_messages_total", target="otp")  # removed
            assert value(after, "bsg_up", target="c12") == 0  # added, not polled yet
            assert value(after, "bsg_exporter_config_last_reload_successful") == 1
            exporter.cycle()
            polled = exporter.samples()
            assert value(polled, "bsg_up", target="c12") == 1
            assert sum(series(polled, "bsg_messages_total", target="all").values()) >= sum(
                kept.values()
            )
        finally:
            exporter.close()


def test_a_bad_config_keeps_the_last_good_one() -> None:
    clock = ManualClock(start=START)
    sim = traffic(clock)
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS, DEMO_API_KEY, clock.now)
        try:
            exporter.cycle()
            good_at = value(
                exporter.samples(), "bsg_exporter_config_last_reload_success_timestamp_seconds"
            )
            clock.advance(60)
            bad = "api:\n  key: k\ntargets: []\n"
            error = exporter.app.reload_with(lambda: parse_config(bad, environ=ENV))
            assert error is not None and "targets" in error
            exporter.cycle()
            samples = exporter.samples()
            assert value(samples, "bsg_exporter_config_last_reload_successful") == 0
            stamp = "bsg_exporter_config_last_reload_success_timestamp_seconds"
            assert value(samples, stamp) == good_at == START
            assert value(samples, "bsg_up", target="otp") == 1  # still polling the old targets
        finally:
            exporter.close()


def test_sighup_reloads_the_file(tmp_path: Path) -> None:
    clock_sim = traffic(ManualClock(start=START), scenario="paused")
    with SimulatorServer(clock_sim) as server:
        config = config_yaml(server.url, [{"name": "all", "window": "1h"}], interval="200ms")
        exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
        try:
            exporter.wait_polls(1)
            path = tmp_path / "config.yaml"
            path.write_text(config_yaml(server.url, TARGETS, interval="200ms"))
            assert exporter.proc is not None
            exporter.proc.send_signal(signal.SIGHUP)
            exporter.wait_until(lambda: value(exporter.samples(), "bsg_up", target="otp") == 1, 10)
            path.write_text("targets: oops\n")
            exporter.proc.send_signal(signal.SIGHUP)
            reload_ok = "bsg_exporter_config_last_reload_successful"
            exporter.wait_until(lambda: value(exporter.samples(), reload_ok) == 0, 10)
            assert value(exporter.samples(), "bsg_up", target="otp") == 1
        finally:
            code, _ = exporter.stop()
        assert code == 0
        assert '"event": "config_reload_failed"' in exporter.log()


def test_post_reload_is_off_without_the_lifecycle_flag(tmp_path: Path) -> None:
    sim = traffic(ManualClock(start=START), scenario="paused")
    with SimulatorServer(sim) as server:
        config = config_yaml(server.url, [{"name": "all", "window": "1h"}], interval="200ms")
        exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY).start()
        try:
            answer = httpx.post(f"{exporter.url}/-/reload")
            assert (answer.status_code, answer.text) == (403, "Lifecycle API is not enabled.\n")
        finally:
            exporter.stop()


def test_post_reload_applies_or_refuses(tmp_path: Path) -> None:
    sim = traffic(ManualClock(start=START), scenario="paused")
    with SimulatorServer(sim) as server:
        config = config_yaml(server.url, [{"name": "all", "window": "1h"}], interval="200ms")
        args = ["--web.enable-lifecycle"]
        exporter = ExporterProcess(tmp_path, config, DEMO_API_KEY, args=args).start()
        try:
            exporter.wait_polls(1)
            assert httpx.get(f"{exporter.url}/-/reload").status_code == 405
            path = tmp_path / "config.yaml"
            path.write_text(config_yaml(server.url, TARGETS, interval="200ms"))
            answer = httpx.post(f"{exporter.url}/-/reload")
            assert answer.status_code == 200 and answer.text == "Reloaded\n"
            assert ("bsg_up", frozenset({("target", "otp")})) in exporter.samples()  # added
            path.write_text("targets: []\n")
            answer = httpx.post(f"{exporter.url}/-/reload")
            assert answer.status_code == 500 and "targets" in answer.text
            samples = exporter.samples()
            assert value(samples, "bsg_exporter_config_last_reload_successful") == 0
            assert ("bsg_up", frozenset({("target", "otp")})) in samples  # still the good config
            forged = httpx.post(f"{exporter.url}/-/reload", headers={"Origin": "http://evil"})
            assert forged.status_code == 403
        finally:
            exporter.stop()


def test_a_target_added_is_scraped_at_once_even_while_a_poll_renders() -> None:
    clock = ManualClock(start=START)
    sim = traffic(clock, scenario="paused")
    with SimulatorServer(sim) as server:
        exporter = in_process(server.url, TARGETS[:1], DEMO_API_KEY, clock.now)
        try:
            exporter.cycle()
            otp_up = ("bsg_up", frozenset({("target", "otp")}))
            assert otp_up not in exporter.samples()  # the targets' part is rendered, kept
            text = config_yaml(server.url, TARGETS)
            assert exporter.app.reload_with(lambda: parse_config(text, environ=ENV)) is None
            registry = exporter.app.registry
            assert isinstance(registry, BsgRegistry)  # the app's own registry
            # A poll rendering holds this lock: a scrape meanwhile serves the parts rendered
            # last, which the reload must have rendered again.
            with registry._rendering:
                assert otp_up in exporter.samples()
        finally:
            exporter.close()
