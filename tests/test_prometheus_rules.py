"""The alerting and recording rules, checked and unit-tested by the real promtool and amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "prometheus"
RULE_FILES = [PROM / "rules.yml", PROM / "alerts.yml"]
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning"}


def tool(name: str) -> str:
    """The path of a Prometheus tool that scripts/test.sh installs."""
    path = shutil.which(name)
    assert path, f"{name} missing: scripts/test.sh installs it"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rule file."""
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules_passes_without_lint_warnings() -> None:
    result = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2 and "lint" not in result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert len(UNIT_TESTS) >= 3
    result = run(tool("promtool"), "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    # the unit tests pin the thresholds: a rule file with another threshold must fail them
    copy = tmp_path / "prometheus"
    shutil.copytree(PROM, copy)
    text = (copy / "alerts.yml").read_text()
    assert "ratio_rate5m > 0.1\n" in text
    (copy / "alerts.yml").write_text(text.replace("ratio_rate5m > 0.1\n", "ratio_rate5m > 0.6\n"))
    result = run(tool("promtool"), "test", "rules", str(copy / "tests" / "failures.yml"))
    assert result.returncode != 0 and "BsgHighFailureRatio" in result.stdout + result.stderr


def test_every_alert_has_severity_summary_and_what_to_check_first() -> None:
    alerts = rules(PROM / "alerts.yml")
    assert {a["alert"] for a in alerts} == {
        "BsgHighFailureRatio",
        "BsgFailureSpike",
        "BsgSlowDelivery",
        "BsgStuckMessages",
        "BsgDeliveryReportsStopped",
        "BsgExporterDown",
        "BsgTargetPollFailing",
        "BsgDataStale",
        "BsgBalanceLow",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert "check first" in alert["annotations"]["description"].lower(), alert["alert"]
        assert "for" in alert, alert["alert"]


def test_thresholds_are_written_into_the_alerts_not_recorded_as_constants() -> None:
    # A recorded constant (vector(...)) joined with on () has nothing to match in a global view
    # of several Prometheus servers (each copy carries its own external labels), and two copies
    # of the mixin would record it twice.
    for rule in rules(PROM / "rules.yml"):
        assert "vector(" not in rule["expr"], rule["record"]
    for alert in rules(PROM / "alerts.yml"):
        assert "on () group_left" not in alert["expr"], alert["alert"]
        assert "bsg:" not in alert["expr"], alert["alert"]


def test_recording_rules_follow_level_metric_operations() -> None:
    for rule in rules(PROM / "rules.yml"):
        level, metric, *operations = rule["record"].split(":")
        assert re.fullmatch(r"[a-z_]+", level) and re.fullmatch(r"[a-z0-9_]+", metric), rule
        assert len(operations) <= 1, rule


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in rules(PROM / "alerts.yml")}
    assert names - firing == set() and names - silent == set()


def test_example_prometheus_config_and_alertmanager_config_are_valid() -> None:
    result = run(tool("promtool"), "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml", "alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "bsg" and job["scrape_interval"] == "15s"
    # the rules and the dashboard keep accounts apart by this label
    assert all(static["labels"]["account"] for static in job["static_configs"])
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool comes with prometheus-alertmanager")
    result = run(amtool, "check-config", str(PROM / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_keeps_accounts_apart_and_never_inhibits_across_replicas() -> None:
    config = yaml.safe_load((PROM / "alertmanager.yml").read_text())
    assert {"job", "account", "target"} <= set(config["route"]["group_by"])
    for rule in config["inhibit_rules"]:
        # An inhibition on the target alone let one account's failure silence another's.
        assert {"job", "account", "target"} <= set(rule["equal"]), rule
        # Only an alert that means every replica fails may be silenced by one replica's.
        assert rule["target_matchers"] == ['alertname="BsgDataStale"'], rule
