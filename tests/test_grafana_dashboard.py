"""The Grafana dashboard: generated from grafana/generate.py, committed, and consistent."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "bsg-delivery.json"


def generator() -> ModuleType:
    """grafana/generate.py as a module (grafana/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bsg_grafana_generate", ROOT / "grafana" / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def board() -> dict[str, Any]:
    """The committed dashboard."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    """Every panel that is not a row."""
    return [p for p in board()["panels"] if p["type"] != "row"]


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text() == generator().render(), (
        "grafana/dashboards/bsg-delivery.json is out of date: run python grafana/generate.py"
    )


def test_template_variables_and_datasource_everywhere() -> None:
    variables = {v["name"]: v for v in board()["templating"]["list"]}
    assert variables.keys() == {"datasource", "target", "channel"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("target", "channel"):
        assert variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    everything = board()["panels"]
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in everything:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_the_on_call_overview_is_all_there() -> None:
    titles = " | ".join(p["title"].lower() for p in panels())
    for wanted in (
        "volume",
        "by status",
        "delivery ratio",
        "failed + undelivered",
        "expired",
        "latency percentiles",
        "heatmap",
        "oldest pending",
        "cost",
        "balance",
        "target up",
        "poll errors",
        "api requests",
        "status mix",
    ):
        assert wanted in titles, wanted
    heatmap = next(p for p in panels() if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap"
    assert "bsg_delivery_latency_seconds_bucket" in heatmap["targets"][0]["expr"]
    percentiles = next(p for p in panels() if "percentiles" in p["title"])
    exprs = " ".join(t["expr"] for t in percentiles["targets"])
    assert all(f":{p}_rate5m" in exprs for p in ("p50", "p95", "p99"))


def test_queries_read_only_exported_metrics_and_recorded_rules() -> None:
    readme = (ROOT / "README.md").read_text()
    exported = set(re.findall(r"^\| `(bsg_\w+)` \|", readme, flags=re.MULTILINE))
    assert "bsg_messages_total" in exported
    recorded = {
        rule["record"]
        for group in yaml.safe_load((ROOT / "prometheus" / "rules.yml").read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    known = exported | recorded | {"ALERTS"}
    for panel in panels():
        for target in panel["targets"]:
            expr = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]', "", target["expr"])
            names = set(re.findall(r"[A-Za-z_:][\w:]*", expr))
            metrics = {n for n in names if "bsg" in n or n == "ALERTS"}
            for name in metrics:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in known or base in known, (panel["title"], name)
            assert (
                "$__rate_interval" in target["expr"]
                or "[" not in target["expr"]
                or any(":" in m for m in metrics)
            ), panel["title"]
