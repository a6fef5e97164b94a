"""The Grafana dashboard: built by grafana/generate.py, rendered by the mixin, committed, and
true to the rules of Grafana's dashboard linter (re-implemented here: the Go tool is not)."""

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


def exprs() -> list[tuple[str, str]]:
    """(panel title, query) of every query of every panel."""
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, label matchers) of every series an expression selects by name."""
    return re.findall(r"\b([A-Za-z_:][\w:]*)\{([^}]*)\}", expr)


def test_the_mixin_source_is_what_the_generator_builds() -> None:
    generate = generator()
    assert generate.OUTPUT.read_text() == generate.render(), (
        f"{generate.OUTPUT} is out of date: run python mixin/render.py"
    )


def test_a_stable_uid_and_title() -> None:
    assert (board()["uid"], board()["title"]) == ("bsg-delivery", "BSG SMS delivery")


def test_template_variables_and_datasource_everywhere() -> None:
    variables = {v["name"]: v for v in board()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "account", "instance", "target", "channel"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "account", "instance", "target", "channel"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"]["uid"] == "${datasource}"
        if name == "target":  # targets overlap: summed together, a message would count twice
            assert not variable["multi"] and not variable["includeAll"], name
        else:
            assert variable["multi"] and variable["includeAll"], name
            assert variable["allValue"] == ".*", name  # matches series without the label too
        assert variable["refresh"] == 2, name  # reloaded when the time range changes
        assert f", {name})" in variable["query"]["query"], name
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_query_is_filtered_by_job_account_and_instance() -> None:
    for title, expr in exprs():
        chosen = selectors(expr)
        assert chosen or re.fullmatch(r"vector\([\d.]+\)", expr), (title, expr)  # a threshold line
        for metric, matchers in chosen:
            assert 'job=~"$job"' in matchers and 'account=~"$account"' in matchers, (title, metric)
            if ":" not in metric and metric != "ALERTS":  # recorded series merge the replicas
                assert 'instance=~"$instance"' in matchers, (title, metric)


def test_every_rate_uses_the_rate_interval() -> None:
    for title, expr in exprs():
        ranges = re.findall(r"\[([^\]]+)\]", expr)
        assert all(r == "$__rate_interval" for r in ranges), (title, ranges)
        assert ranges or not re.search(r"\b(rate|increase|irate)\(", expr), title


def test_counters_are_read_through_rate_or_increase() -> None:
    for title, expr in exprs():
        for found in re.finditer(r"\b(bsg_\w+_(?:total|bucket))\{", expr):
            before = expr[: found.start()]
            assert before.endswith(("rate(", "increase(")), (title, found.group(1))


def test_replicas_are_shown_once_never_summed() -> None:
    for title, expr in exprs():
        for match in re.finditer(r"\b(sum|count)(?: by \(([^)]*)\))? \(", expr):
            inner = expr[match.end() :]
            raw = re.match(r"(?:rate|increase)\(bsg_\w+\{|bsg_\w+\{", inner)
            if raw:  # summing raw series: per instance, or over replicas merged first
                assert "instance" in (match.group(2) or ""), (title, expr)
            elif inner.startswith("max without ("):
                assert inner.startswith("max without (instance, pod) ("), (title, expr)


def test_every_panel_has_a_title_a_description_and_a_unit() -> None:
    for panel in panels():
        assert panel["title"].strip() and panel["description"].strip(), panel["id"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


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
