"""The monitoring mixin: the committed files are its rendering, and its rules, alerts and
dashboard keep the mixin conventions (group labels kept, replicas merged, annotations)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GROUP = ("job", "account")


@cache
def renderer() -> ModuleType:
    """mixin/render.py as a module (mixin/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bsg_mixin_render", ROOT / "mixin" / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def mixin(overrides: str = "{}") -> dict[str, Any]:
    """The mixin evaluated with ``overrides`` (jsonnet) added to it."""
    render = renderer()
    result: dict[str, Any] = render.evaluate(render.dashboard_source(), overrides)
    return result


def every_rule(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules of every group."""
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_the_committed_files_are_what_the_mixin_renders() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "mixin" / "render.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_check_names_a_file_that_differs(tmp_path: Path, monkeypatch: Any) -> None:
    render = renderer()
    files = render.outputs()
    rules = ROOT / "prometheus" / "rules.yml"
    copy = tmp_path / "rules.yml"
    assert "[5m]" in files[rules]
    copy.write_text(files[rules].replace("[5m]", "[6m]"))
    monkeypatch.setattr(render, "outputs", lambda: {copy: files[rules]})
    monkeypatch.setattr(render, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["render.py", "--check"])
    assert render.main() == 1
    assert copy.read_text() != files[rules]  # --check writes nothing


def aggregations(expr: str) -> list[list[str]]:
    """The label lists of every ``by (...)`` and non-empty ``on (...)`` in an expression."""
    return [
        [label.strip() for label in labels.split(",")]
        for labels in re.findall(r"\b(?:by|on) \(([^)]+)\)", expr)
    ]


@pytest.mark.parametrize(
    "overrides", ["{}", "{_config+:: {bsgGroupLabels: ['cluster', 'account']}}"]
)
def test_every_aggregation_keeps_the_group_labels(overrides: str) -> None:
    rendered = mixin(overrides)
    group = rendered["config"]["bsgGroupLabels"]
    for rule in every_rule(rendered["rules"]) + every_rule(rendered["alerts"]):
        for labels in aggregations(rule["expr"]):
            if labels != ["currency"]:  # the per-currency threshold override has no account
                assert set(group) <= set(labels), (rule.get("record") or rule["alert"], labels)
        assert " without (" not in rule["expr"].replace("max without (instance, pod)", "")


def test_each_replica_is_summed_then_the_replicas_merged_by_max() -> None:
    rendered = mixin()
    for rule in every_rule(rendered["rules"]):
        for function in re.finditer(r"\b(rate|increase)\((bsg_\w+)", rule["expr"]):
            before = rule["expr"][: function.start()]
            summed = re.search(r"max without \(instance, pod\) \(sum by \(([^)]*)\) \($", before)
            assert summed, rule["record"]
            assert summed.group(1).endswith(", instance, pod"), rule["record"]
        raw = re.findall(r"\b(bsg_\w+)\{", rule["expr"])
        if raw and "rate(" not in rule["expr"] and "increase(" not in rule["expr"]:
            assert re.search(r"\b(max|min) by \(", rule["expr"]), rule["record"]


def test_the_selector_reaches_every_raw_series_and_the_dashboard_variables() -> None:
    rendered = mixin('{_config+:: {bsgSelector: \'job="sms", team="ops"\'}}')
    for rule in every_rule(rendered["rules"]) + every_rule(rendered["alerts"]):
        for selector in re.findall(r"\b(?:bsg_\w+|up)\{([^}]*)\}", rule["expr"]):
            assert selector.startswith('job="sms", team="ops"'), rule
    board = rendered["dashboards"]["bsg-delivery.json"]
    variables = board["templating"]["list"]
    queries = {v["name"]: v["query"]["query"] for v in variables if v["type"] == "query"}
    for name in ("job", "account", "instance"):
        assert 'job="sms", team="ops"' in queries[name], name
        assert 'job="bsg"' not in queries[name], name
    for name in ("target", "channel"):
        assert 'job="sms", team="ops"' in queries[name], name
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert 'job="bsg"' not in expr, (panel["title"], expr)
            for metric, matchers in re.findall(r"\b(bsg_[a-z_]+)\{([^}]*)\}", expr):
                assert 'job="sms", team="ops"' in matchers, (panel["title"], metric)


def test_thresholds_and_for_come_from_the_config() -> None:
    rendered = mixin(
        "{_config+:: {bsgFailureRatio: 0.25, bsgBalanceLowByCurrency: {EUR: 7}, bsgAlertFor+: "
        "{BsgSlowDelivery: '42m'}}}"
    )
    records = {r["record"]: r for r in every_rule(rendered["rules"])}
    effective = records["currency:bsg_balance_low_threshold:effective"]["expr"]
    assert '{currency="EUR"}) * 7\nor\n' in effective
    assert effective.endswith('{currency!~"EUR"}) * 50')
    alerts = {a["alert"]: a for a in every_rule(rendered["alerts"])}
    assert "ratio_rate5m > 0.25\n" in alerts["BsgHighFailureRatio"]["expr"]
    assert (
        "(threshold: 25% of at least 20)"
        in alerts["BsgHighFailureRatio"]["annotations"]["description"]
    )
    board = rendered["dashboards"]["bsg-delivery.json"]
    lines = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert "vector(0.25)" in lines and "vector(0.1)" not in lines  # the threshold line
    assert alerts["BsgSlowDelivery"]["for"] == "42m"
    assert alerts["BsgHighFailureRatio"]["for"] == "5m"


def test_annotations_follow_the_mixin_conventions() -> None:
    readme = (ROOT / "README.md").read_text()
    sections = {h.lower() for h in re.findall(r"^### (Bsg\w+)$", readme, flags=re.MULTILINE)}
    rendered = mixin("{_config+:: {bsgRunbookURLBase: 'https://git.example/bsg/README.md'}}")
    for alert in every_rule(rendered["alerts"]):
        name, notes = alert["alert"], alert["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in notes["summary"] and notes["summary"].endswith("."), name
        assert "$value" in notes["description"] or "$labels" in notes["description"], name
        for label in GROUP:
            assert f"$labels.{label}" in notes["description"], (name, label)
        assert notes["runbook_url"] == f"https://git.example/bsg/README.md#{name.lower()}"
        assert name.lower() in sections, f"README has no runbook section for {name}"


def test_kubernetes_files_hold_the_rules_and_the_dashboards() -> None:
    kube = ROOT / "contrib" / "kubernetes"
    rule = yaml.safe_load((kube / "prometheus-rule.yaml").read_text())
    plain = [
        group
        for name in ("rules.yml", "alerts.yml")
        for group in yaml.safe_load((ROOT / "prometheus" / name).read_text())["groups"]
    ]
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == plain
    maps = yaml.safe_load((kube / "dashboards.yaml").read_text())
    assert maps["kind"] == "ConfigMap"
    assert maps["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = ROOT / "grafana" / "dashboards" / "bsg-delivery.json"
    assert maps["data"] == {board.name: board.read_text()}
    monitor = yaml.safe_load((kube / "service-monitor.yaml").read_text())
    service = next(
        doc
        for doc in yaml.safe_load_all((kube / "bsg-exporter.yaml").read_text())
        if doc["kind"] == "Service"
    )
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    set_labels = {r["targetLabel"]: r["replacement"] for r in endpoint["relabelings"]}
    assert set_labels["job"] == "bsg" and "account" in set_labels
