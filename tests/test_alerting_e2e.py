"""The alerts and the dashboard against a real Prometheus and Alertmanager.

Two BSG accounts, each a simulator: account "shop" watched by an HA pair of exporters, account
"bank" by one (real processes, polling every second). Debian's Prometheus scrapes the three
every second, with the `account` label on their scrape targets and prometheus/rules.yml and
alerts.yml loaded (test copies with shorter windows and `for:` durations, derived from the real
files), and sends to Debian's Alertmanager running prometheus/alertmanager.yml as is. The pair
must record one replica's rate, not twice it; a failure spike on one account must page for
that account only, once, and stop paging when it ends; every PromQL expression of the rules
and the dashboard must run and find data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.simulator import (
    DEMO_API_KEY,
    CampaignProfile,
    RealClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
)
from tests.harness import ExporterProcess, config_yaml, free_port

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
DASHBOARD = ROOT / "grafana" / "dashboards" / "bsg-delivery.json"
# Test windows: long enough for several 1 s scrapes, short enough to react within seconds.
WINDOWS = {"5m": "15s", "15m": "30s"}
FOR = "2s"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (Path(PROMETHEUS).exists() and Path(ALERTMANAGER).exists()),
        reason="scripts/test.sh installs prometheus and prometheus-alertmanager",
    ),
]


def shorten(expr: str) -> str:
    """The expression with the test's range windows (a rate over 5m reacts in minutes)."""
    return re.sub(r"\[(\d+[smhd])\]", lambda m: f"[{WINDOWS.get(m.group(1), m.group(1))}]", expr)


def shortened_rule_files(directory: Path) -> list[Path]:
    """Copies of rules.yml and alerts.yml with shorter windows and `for:` durations."""
    paths = []
    for name in ("rules.yml", "alerts.yml"):
        doc = yaml.safe_load((ROOT / "prometheus" / name).read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule["expr"] = shorten(rule["expr"])
                if "for" in rule:
                    rule["for"] = FOR
        path = directory / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(path)
    return paths


@dataclass
class Daemon:
    """A server binary as a child process, logging to a file, stopped in ``stop``."""

    name: str
    cmd: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> Daemon:
        """Start the process."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=log)
        return self

    def alive(self) -> None:
        """Fail with the log when the process has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def wait_for(what: str, condition: Callable[[], bool], timeout: float, *daemons: Daemon) -> float:
    """Poll ``condition`` every 0.25 s; return the seconds it took, fail after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for daemon in daemons:
            daemon.alive()
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Stack:
    """The running stack's addresses and processes."""

    sims: dict[str, Simulator]  # by account
    exporters: dict[str, list[ExporterProcess]]  # by account: shop's two replicas, bank's one
    prometheus: Daemon
    alertmanager: Daemon
    prom_url: str
    am_url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; fails unless Prometheus accepts it."""
        response = httpx.get(f"{self.prom_url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def am_alerts(self, name: str) -> list[dict[str, Any]]:
        """Active alerts named ``name`` in Alertmanager (v2 API)."""
        try:
            response = httpx.get(f"{self.am_url}/api/v2/alerts", timeout=5)
        except httpx.HTTPError:
            return []
        if response.status_code != 200:
            return []
        alerts: list[dict[str, Any]] = response.json()
        return [a for a in alerts if a["labels"].get("alertname") == name]

    def daemons(self) -> tuple[Daemon, ...]:
        """The server processes to watch while waiting."""
        return self.prometheus, self.alertmanager


def ready(url: str) -> bool:
    """True once ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def profile(rate: float) -> TrafficProfile:
    """One campaign's traffic at ``rate`` messages a second."""
    return TrafficProfile(
        campaigns=(
            CampaignProfile(
                campaign_id=31,
                rate=rate,
                channels={"sms": 0.8, "viber": 0.2},
                countries={"UA": 0.7, "DE": 0.3},
                validity_hours=1,
            ),
        )
    )


ACCOUNTS = {"shop": (20.0, 2), "bank": (10.0, 1)}
"""Each account's traffic (messages a second) and its exporter replicas."""


def prometheus_config(rules: list[Path], am_port: int, exporters: dict[str, list[int]]) -> str:
    """Prometheus scraping every exporter, each account's targets labelled with it."""
    static = [
        {"targets": [f"127.0.0.1:{port}" for port in ports], "labels": {"account": account}}
        for account, ports in exporters.items()
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rules],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "scrape_configs": [{"job_name": "bsg", "static_configs": static}],
    }
    return yaml.safe_dump(config)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Two simulated accounts, three exporters, Alertmanager and Prometheus on loopback."""
    sims = {
        account: Simulator(profile(rate), clock=RealClock(), seed=11 + n)
        for n, (account, (rate, _)) in enumerate(ACCOUNTS.items())
    }
    daemons: list[Daemon] = []
    exporters: dict[str, list[ExporterProcess]] = {account: [] for account in ACCOUNTS}
    with SimulatorServer(sims["shop"]) as shop, SimulatorServer(sims["bank"]) as bank:
        try:
            for account, server in (("shop", shop), ("bank", bank)):
                config = config_yaml(server.url, [{"name": "all", "window": "10m"}], interval="1s")
                for replica in range(ACCOUNTS[account][1]):
                    workdir = tmp_path / f"{account}-{replica}"
                    workdir.mkdir()
                    process = ExporterProcess(workdir, config, DEMO_API_KEY).start()
                    exporters[account].append(process)
            am_port, prom_port = free_port(), free_port()
            alertmanager = Daemon(
                "alertmanager",
                [
                    ALERTMANAGER,
                    f"--config.file={ROOT / 'prometheus' / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",  # no gossip: loopback only, one instance
                ],
                tmp_path / "alertmanager.log",
            ).start()
            daemons.append(alertmanager)
            ports = {account: [e.port for e in group] for account, group in exporters.items()}
            config_text = prometheus_config(shortened_rule_files(tmp_path), am_port, ports)
            (tmp_path / "prometheus.yml").write_text(config_text)
            prometheus = Daemon(
                "prometheus",
                [
                    PROMETHEUS,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path / "prometheus.log",
            ).start()
            daemons.append(prometheus)
            stack = Stack(
                sims,
                exporters,
                prometheus,
                alertmanager,
                f"http://127.0.0.1:{prom_port}",
                f"http://127.0.0.1:{am_port}",
            )
            wait_for("alertmanager", lambda: ready(f"{stack.am_url}/-/ready"), 30, alertmanager)
            wait_for("prometheus", lambda: ready(f"{stack.prom_url}/-/ready"), 30, prometheus)
            yield stack
        finally:
            for daemon in reversed(daemons):
                daemon.stop()
            for process in (p for group in exporters.values() for p in group):
                if process.proc is not None:
                    process.stop()
            for log in ("prometheus.log", "alertmanager.log"):
                if (tmp_path / log).exists():
                    artifacts = ROOT / "test-artifacts" / "alerting-e2e"
                    artifacts.mkdir(parents=True, exist_ok=True)
                    shutil.copy(tmp_path / log, artifacts / log)


def selectors(expr: str) -> set[str]:
    """The metric and recording-rule names an expression reads."""
    stripped = re.sub(r'"[^"]*"', "", expr)  # label values ("bsg" in job="bsg")
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # label matchers
    return set(re.findall(r"[a-zA-Z_:]*bsg[a-zA-Z0-9_:]*", stripped))


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard (panels, annotations, variables)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    for variable in board["templating"]["list"]:
        found = re.fullmatch(r"label_values\((.*), *\w+\)", variable.get("definition", ""))
        if found:
            exprs.append(found.group(1))
    substitutions = {
        "$job": ".+",
        "$account": ".+",
        "$instance": ".+",
        "$target": ".+",
        "$channel": ".+",
        "$__rate_interval": "1m",
    }
    for before, after in substitutions.items():
        exprs = [e.replace(before, after) for e in exprs]
    return exprs


def rule_expressions() -> tuple[list[str], list[str]]:
    """The real files' recording-rule and alert expressions, windows as written."""
    records: list[str] = []
    alerts: list[str] = []
    for name in ("rules.yml", "alerts.yml"):
        doc = yaml.safe_load((ROOT / "prometheus" / name).read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                (alerts if "alert" in rule else records).append(rule["expr"])
    return records, alerts


def value(result: list[dict[str, Any]]) -> float:
    """The one sample of an instant query's result."""
    (sample,) = result
    return float(sample["value"][1])


def recorded_rates_are_one_replicas(stack: Stack) -> None:
    """Each account's recorded final-message rate is what one of its exporters counts."""
    for account in ACCOUNTS:
        selector = f'account="{account}", channel="sms"'
        recorded = value(stack.query(f"target_channel:bsg_messages:rate5m{{{selector}}}"))
        port = stack.exporters[account][0].port
        single = value(
            stack.query(
                f'sum(rate(bsg_messages_total{{{selector}, instance="127.0.0.1:{port}"}}[15s]))'
            )
        )
        assert single > 0 and abs(recorded / single - 1) < 0.2, (account, recorded, single)


def test_failure_spike_pages_through_alertmanager_for_its_account_then_resolves(
    stack: Stack,
) -> None:
    for group in stack.exporters.values():
        group[0].wait_polls(3, timeout=30)
    # about half a test window of counted messages before judging the steady state
    for account in ACCOUNTS:
        wait_for(
            f"steady traffic in {account}'s recorded series",
            lambda account=account: bool(  # type: ignore[misc]
                stack.query(
                    f'target_channel:bsg_messages:increase5m{{account="{account}", '
                    'channel="sms"} > 40'
                )
            ),
            60,
            *stack.daemons(),
        )
    recorded_rates_are_one_replicas(stack)
    # steady traffic fails about 1 % of the time: under the threshold, no alert
    assert stack.query('ALERTS{alertname="BsgHighFailureRatio"}') == []
    assert stack.am_alerts("BsgHighFailureRatio") == []

    stack.sims["shop"].set_scenario("failure_spike")
    took = wait_for(
        "BsgHighFailureRatio for shop's sms in Alertmanager",
        lambda: any(
            a["labels"]["channel"] == "sms" for a in stack.am_alerts("BsgHighFailureRatio")
        ),
        60,
        *stack.daemons(),
    )
    alerts = stack.am_alerts("BsgHighFailureRatio")
    assert {a["labels"]["account"] for a in alerts} == {"shop"}, alerts  # bank stays quiet
    (sms,) = [a for a in alerts if a["labels"]["channel"] == "sms"]  # the pair pages once
    assert sms["labels"] == {
        "alertname": "BsgHighFailureRatio",
        "job": "bsg",
        "account": "shop",
        "target": "all",
        "channel": "sms",
        "severity": "critical",
    }
    assert sms["status"]["state"] == "active" and sms["receivers"] == [{"name": "default"}]
    notes = sms["annotations"]
    assert notes["summary"] == "Many messages reached failed or undelivered."
    assert re.match(
        r"\d+(\.\d+)?% of the sms messages of target all, job bsg, account shop ",
        notes["description"],
    ), notes
    assert notes["runbook_url"].endswith("#bsghighfailureratio")
    ratio = stack.query(
        'target_channel:bsg_messages_failed:ratio_rate5m{account="shop", channel="sms"}'
    )
    assert value(ratio) > 0.1
    print(f"spike to Alertmanager: {took:.1f}s")

    # While the spike is on, every expression of the dashboard and the rules runs and finds
    # data; alert conditions that are false right now must still be valid and read series
    # that exist.
    records, alert_exprs = rule_expressions()
    empty = [e for e in dashboard_queries() + records if not stack.query(e)]
    assert empty == [], empty
    for expr in alert_exprs:
        if stack.query(expr):
            continue
        for name in selectors(expr):
            assert stack.query(f'count({{__name__="{name}"}})'), (name, expr)
    assert stack.query("up") and stack.query('ALERTS{alertname="BsgHighFailureRatio"}')

    stack.sims["shop"].set_scenario("steady")
    took = wait_for(
        "BsgHighFailureRatio to resolve in Alertmanager",
        lambda: not stack.am_alerts("BsgHighFailureRatio"),
        90,
        *stack.daemons(),
    )
    print(f"resolved in Alertmanager: {took:.1f}s after the spike ended")
    firing = stack.query('ALERTS{alertname="BsgHighFailureRatio", alertstate="firing"}')
    assert firing == []
