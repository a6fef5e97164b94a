"""Renders the mixin into the plain files: Prometheus rules and alerts, the Grafana dashboard,
and the Kubernetes PrometheusRule, ServiceMonitor and dashboards ConfigMap.

Run ``python mixin/render.py`` after changing the mixin or ``grafana/generate.py`` and commit
what it writes; ``--check`` only compares (exit 1 when a file is out of date), as a test does.
The dashboard is built in Python (``grafana/generate.py``) into ``mixin/dashboards/``, where the
mixin takes it; everything else comes from the jsonnet (the ``jsonnet`` wheel from PyPI).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import _jsonnet
import yaml

MIXIN = Path(__file__).resolve().parent
ROOT = MIXIN.parent
SOURCE_NOTE = "Rendered from mixin/ by mixin/render.py: edit the mixin, not this file."
RULES_NOTE = f"""\
# Recording rules shared by the Grafana dashboard and the alerts (alerts.yml).
# {SOURCE_NOTE}
# Names follow level:metric:operations; every aggregation keeps the group labels (job, account)
# and merges replicas (instance, pod) by max, so an HA pair counts once and accounts stay apart.
# Thresholds are written into the alerts (alerts.yml): set them in mixin/config.libsonnet.
"""
ALERTS_NOTE = f"""\
# Alerts on SMS delivery health and on the exporter itself.
# {SOURCE_NOTE}
# Each alert's runbook is a section of the README; its thresholds come from mixin/config.libsonnet.
"""
K8S_NOTE = f"# {SOURCE_NOTE}\n"


class _Dumper(yaml.SafeDumper):
    """YAML as people write it: multi-line strings as blocks, lists indented under keys."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        """Indent block sequences under their key."""
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """A string, as a literal block when it spans lines."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


KEY_ORDER = ("name", "record", "alert", "expr", "for", "labels", "annotations", "rules")
"""Rule keys as people write them (jsonnet sorts an object's keys)."""
ANNOTATION_ORDER = ("summary", "description", "runbook_url")


def rule_file(doc: dict[str, Any]) -> dict[str, Any]:
    """A rule file's groups with each rule's keys in the usual order."""

    def ordered(item: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
        return {key: item[key] for key in sorted(item, key=order.index)}

    def rule(item: dict[str, Any]) -> dict[str, Any]:
        item = ordered(item, KEY_ORDER)
        if "annotations" in item:
            item["annotations"] = ordered(item["annotations"], ANNOTATION_ORDER)
        return item

    groups = [
        {"name": group["name"], "rules": [rule(r) for r in group["rules"]]}
        for group in doc["groups"]
    ]
    return {"groups": groups}


def to_yaml(doc: Any) -> str:
    """One YAML document."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


def dashboard_source() -> str:
    """The dashboard as grafana/generate.py builds it (the mixin's dashboards/ file)."""
    spec = importlib.util.spec_from_file_location("generate", ROOT / "grafana" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate"] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    text: str = module.render()
    return text


def evaluate(dashboard: str, overrides: str = "{}") -> dict[str, Any]:
    """The mixin's outputs, with ``dashboard`` as its dashboards/ file and ``overrides`` added."""
    snippet = f"""
      local mixin = (import 'mixin.libsonnet') + {overrides};
      {{
        rules: mixin.prometheusRules,
        alerts: mixin.prometheusAlerts,
        dashboards: mixin.grafanaDashboards,
        config: mixin._config,
      }}
    """

    def imports(base: str, rel: str) -> tuple[str, bytes]:
        """The mixin's files, with the dashboard as built now (not as committed)."""
        path = (Path(base) / rel).resolve()
        if path == MIXIN / "dashboards" / "bsg-delivery.json":
            return str(path), dashboard.encode()
        return str(path), path.read_bytes()

    result: dict[str, Any] = json.loads(
        _jsonnet.evaluate_snippet(str(MIXIN / "render.jsonnet"), snippet, import_callback=imports)
    )
    return result


def outputs() -> dict[Path, str]:
    """Every rendered file and its text."""
    dashboard = dashboard_source()
    mixin = evaluate(dashboard)
    boards = {
        name: json.dumps(board, indent=2, sort_keys=True) + "\n"
        for name, board in mixin["dashboards"].items()
    }
    files = {
        MIXIN / "dashboards" / "bsg-delivery.json": dashboard,
        ROOT / "prometheus" / "rules.yml": RULES_NOTE + to_yaml(rule_file(mixin["rules"])),
        ROOT / "prometheus" / "alerts.yml": ALERTS_NOTE + to_yaml(rule_file(mixin["alerts"])),
        ROOT / "contrib" / "kubernetes" / "prometheus-rule.yaml": K8S_NOTE
        + to_yaml(prometheus_rule(mixin)),
        ROOT / "contrib" / "kubernetes" / "service-monitor.yaml": K8S_NOTE
        + to_yaml(service_monitor()),
        ROOT / "contrib" / "kubernetes" / "dashboards.yaml": K8S_NOTE
        + to_yaml(dashboards_config_map(boards)),
    }
    files.update({ROOT / "grafana" / "dashboards" / name: text for name, text in boards.items()})
    return files


def prometheus_rule(mixin: dict[str, Any]) -> dict[str, Any]:
    """The rules and alerts as a prometheus-operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "bsg-exporter",
            "labels": {
                "app.kubernetes.io/name": "bsg-exporter",
                "prometheus": "k8s",
                "role": "alert-rules",
            },
        },
        "spec": {
            "groups": rule_file(mixin["rules"])["groups"] + rule_file(mixin["alerts"])["groups"]
        },
    }


def service_monitor() -> dict[str, Any]:
    """A ServiceMonitor for the Service of bsg-exporter.yaml: job bsg, and the account label."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "bsg-exporter", "labels": {"app.kubernetes.io/name": "bsg-exporter"}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "bsg-exporter"}},
            "endpoints": [
                {
                    "port": "metrics",
                    "interval": "15s",
                    "relabelings": [
                        # the mixin's default selector is job="bsg"
                        {"action": "replace", "targetLabel": "job", "replacement": "bsg"},
                        # one account per Deployment: name it (one ServiceMonitor per account)
                        {"action": "replace", "targetLabel": "account", "replacement": "main"},
                    ],
                }
            ],
        },
    }


def dashboards_config_map(boards: dict[str, str]) -> dict[str, Any]:
    """The dashboards as a ConfigMap that Grafana's sidecar loads (label grafana_dashboard)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "bsg-exporter-dashboards",
            "labels": {"app.kubernetes.io/name": "bsg-exporter", "grafana_dashboard": "1"},
        },
        "data": boards,
    }


def main() -> int:
    """Write every rendered file; with ``--check``, only compare (exit 1 when out of date)."""
    stale = []
    for path, text in outputs().items():
        if "--check" in sys.argv[1:]:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    for path in stale:
        print(
            f"{path.relative_to(ROOT)} is out of date: run python mixin/render.py", file=sys.stderr
        )
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
