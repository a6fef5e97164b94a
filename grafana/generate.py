"""Builds the on-call dashboard of bsg-exporter, the mixin's dashboards/bsg-delivery.json.

``python mixin/render.py`` calls it and renders the mixin (grafana/dashboards/ among its files);
commit what it writes, a test fails when the committed files differ. Plain Python builds the
JSON (no Grafana SDK): the output depends on this file only, so it is byte-for-byte reproducible.

Most queries read the mixin's recording rules (prometheus/rules.yml), so the dashboard and the
alerts show the same numbers; load those rules into the Prometheus the dashboard reads.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _jsonnet

Json = dict[str, Any]

OUTPUT = Path(__file__).resolve().parent.parent / "mixin" / "dashboards" / "bsg-delivery.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'job="bsg"'
"""The mixin's default selector (mixin/config.libsonnet); the mixin puts its own in its place."""
REPLICAS = "instance, pod"
"""The labels that tell replicas of one account apart: merged by max, never summed."""
# Selectors of the template variables; "All" expands to .* (allValue below), which also matches
# series without the label (targets with no account, or a mixin whose bsgGroupLabels drop it).
# Recorded series are per account, replicas merged: they have no instance, and the rules
# selected them already. Raw series carry the mixin's selector and filter by instance too.
GROUP = 'job=~"$job", account=~"$account"'
T = f'{GROUP}, target=~"$target"'
TC = f'{T}, channel=~"$channel"'
RAW = f'{SELECTOR}, {GROUP}, instance=~"$instance"'
TR = f'{RAW}, target=~"$target"'
TCR = f'{TR}, channel=~"$channel"'
ALERTS = f'ALERTS{{alertname=~"Bsg.*", alertstate="firing", {GROUP}}}'
GRID_WIDTH = 24
CONFIG = Path(__file__).resolve().parent.parent / "mixin" / "config.libsonnet"


def _thresholds() -> dict[str, float]:
    """The alert thresholds of the mixin's default config (its numeric settings)."""
    config = json.loads(_jsonnet.evaluate_snippet("config", f"({CONFIG.read_text()})._config"))
    return {name: value for name, value in config.items() if isinstance(value, (int, float))}


THRESHOLDS = _thresholds()
"""The mixin's defaults: a threshold line is ``vector(<default>)``, which the mixin replaces
with the configured value (mixin/dashboards.libsonnet)."""


def threshold(name: str) -> str:
    """The PromQL of the alert threshold ``name`` of mixin/config.libsonnet, for a line."""
    return f"vector({THRESHOLDS[name]:g})"


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel, with its legend."""

    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False


@dataclass
class Panel:
    """A panel before layout: kind, title, queries and the few options that vary."""

    kind: str
    title: str
    description: str
    queries: list[Query]
    width: int
    height: int
    unit: str = "short"
    options: Json = field(default_factory=dict)
    defaults: Json = field(default_factory=dict)
    overrides: list[Json] = field(default_factory=list)


def stat(
    title: str,
    description: str,
    query: Query,
    *,
    unit: str = "short",
    thresholds: list[tuple[float | None, str]] | None = None,
    mappings: list[Json] | None = None,
    width: int = 3,
) -> Panel:
    """A single-number panel coloured by thresholds."""
    steps = thresholds or [(None, "green")]
    defaults: Json = {
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in steps],
        },
        "color": {"mode": "thresholds"},
        "decimals": 2 if unit in ("percentunit", "currency") else None,
    }
    if mappings:
        defaults["mappings"] = mappings
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return Panel("stat", title, description, [query], width, 4, unit, options, defaults)


def timeseries(
    title: str,
    description: str,
    queries: list[Query],
    *,
    unit: str = "short",
    width: int = 12,
    stacked: bool = False,
    max_value: float | None = None,
    overrides: list[Json] | None = None,
) -> Panel:
    """A time series graph; ``stacked`` stacks the series as areas."""
    custom: Json = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 30 if stacked else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
    }
    defaults: Json = {"custom": custom, "color": {"mode": "palette-classic"}}
    if max_value is not None:
        defaults["min"] = 0
        defaults["max"] = max_value
    options = {
        "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return Panel(
        "timeseries",
        title,
        description,
        queries,
        width,
        8,
        unit,
        options,
        defaults,
        overrides or [],
    )


def threshold_override(name: str) -> Json:
    """Draw the series named ``name`` (a threshold) as a dashed red line."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


UP_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]


def overview() -> list[Panel]:
    """The top row: the numbers an on-call person reads first."""
    return [
        stat(
            "Targets up",
            "Targets whose last poll of the BSG API completed on at least one replica.",
            Query(f"sum(max without ({REPLICAS}) (bsg_up{{{TR}}}))", instant=True),
            thresholds=[(None, "red"), (1, "green")],
        ),
        stat(
            "Firing alerts",
            "bsg alerts firing now (prometheus/alerts.yml). See Alertmanager for details.",
            Query(f"count({ALERTS}) or vector(0)", instant=True),
            thresholds=[(None, "green"), (1, "red")],
        ),
        stat(
            "Final messages / min",
            "Messages that reached a final status per minute, last 5 minutes.",
            Query(f"sum(target_channel:bsg_messages:rate5m{{{TC}}}) * 60", instant=True),
        ),
        stat(
            "Delivered",
            "Share of final statuses that are delivered or read, last 5 minutes.",
            Query(
                f'sum(target_channel_status:bsg_messages:rate5m{{{TC}, status=~"delivered|read"}})'
                f" / sum(target_channel:bsg_messages:rate5m{{{TC}}})",
                instant=True,
            ),
            unit="percentunit",
            thresholds=[(None, "red"), (0.8, "orange"), (0.9, "green")],
        ),
        stat(
            "Failed + undelivered",
            "Share of final statuses that are failed or undelivered, last 5 minutes. "
            "Alert BsgHighFailureRatio pages above its threshold (the mixin's bsgFailureRatio).",
            Query(
                f"sum(target_channel:bsg_messages_failed:rate5m{{{TC}}})"
                f" / sum(target_channel:bsg_messages:rate5m{{{TC}}})",
                instant=True,
            ),
            unit="percentunit",
            thresholds=[(None, "green"), (0.05, "orange"), (0.1, "red")],
        ),
        stat(
            "Delivery p95 (worst)",
            "The highest delivery latency p95 (sent to delivered) of the selected targets "
            "and channels, last 5 minutes.",
            Query(
                f"max(target_channel:bsg_delivery_latency_seconds:p95_rate5m{{{TC}}})",
                instant=True,
            ),
            unit="s",
            thresholds=[(None, "green"), (300, "orange"), (900, "red")],
        ),
        stat(
            "Oldest pending",
            "Age of the oldest message without a final status (any selected target).",
            Query(f"max(target:bsg_oldest_pending_message_age_seconds:min{{{T}}})", instant=True),
            unit="s",
            thresholds=[(None, "green"), (3600, "orange"), (21600, "red")],
        ),
        stat(
            "Balance",
            "Account balance per currency, from /api/accounts/balance.",
            Query(
                f"currency:bsg_account_balance:min{{{GROUP}}}",
                "{{account}} {{currency}}",
                instant=True,
            ),
            unit="none",
            thresholds=[(None, "red"), (50, "green")],
        ),
    ]


def delivery() -> list[Panel]:
    """Volume, status mix and ratios per target and channel."""
    return [
        timeseries(
            "Final statuses / min by status",
            "Messages reaching each final status per minute (each message counted once).",
            [
                Query(
                    f"sum by (status) (target_channel_status:bsg_messages:rate5m{{{TC}}}) * 60",
                    "{{status}}",
                )
            ],
            stacked=True,
        ),
        timeseries(
            "Volume / min by target and channel",
            "Final statuses (solid) and newly submitted messages per minute.",
            [
                Query(
                    f"target_channel:bsg_messages:rate5m{{{TC}}} * 60",
                    "final {{target}}/{{channel}}",
                ),
                Query(
                    f"sum by (target, channel) (max without ({REPLICAS}) "
                    f"(rate(bsg_messages_submitted_total{{{TCR}}}[$__rate_interval]))) * 60",
                    "submitted {{target}}/{{channel}}",
                ),
            ],
        ),
        timeseries(
            "Delivery ratio",
            "Share of final statuses that are delivered or read, per target and channel.",
            [
                Query(
                    f"target_channel:bsg_messages_delivered:ratio_rate5m{{{TC}}}",
                    "{{target}}/{{channel}}",
                )
            ],
            unit="percentunit",
            max_value=1,
            width=8,
        ),
        timeseries(
            "Failed + undelivered ratio",
            "Share of final statuses that are failed or undelivered; the dashed line is the "
            "alert threshold (the mixin's bsgFailureRatio).",
            [
                Query(
                    f"target_channel:bsg_messages_failed:ratio_rate5m{{{TC}}}",
                    "{{target}}/{{channel}}",
                ),
                Query(threshold("bsgFailureRatio"), "threshold"),
            ],
            unit="percentunit",
            width=8,
            overrides=[threshold_override("threshold")],
        ),
        timeseries(
            "Expired ratio",
            "Share of final statuses that are expired (no delivery report within the validity).",
            [
                Query(
                    f"target_channel:bsg_messages_expired:ratio_rate5m{{{TC}}}",
                    "{{target}}/{{channel}}",
                )
            ],
            unit="percentunit",
            width=8,
        ),
        Panel(
            "bargauge",
            "Status mix in the window",
            "Messages created inside each target's window, by their last known status "
            "(pending ones included).",
            [
                Query(
                    f"sum by (status) (max without ({REPLICAS}) "
                    f"(bsg_window_messages{{{TCR}}})) > 0",
                    "{{status}}",
                    instant=True,
                )
            ],
            24,
            6,
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "orientation": "vertical",
                "displayMode": "gradient",
                "showUnfilled": True,
            },
            defaults={"color": {"mode": "palette-classic"}},
        ),
    ]


def latency() -> list[Panel]:
    """Delivery latency percentiles, its heatmap, and stuck messages."""
    return [
        timeseries(
            "Delivery latency percentiles",
            "sent_at to delivered_at of messages delivered in the last 5 minutes. The dashed "
            "line is BsgSlowDelivery's p95 threshold (which it compares over 30 minutes).",
            [
                Query(
                    f"target_channel:bsg_delivery_latency_seconds:{p}_rate5m{{{TC}}}",
                    f"{p} {{{{target}}}}/{{{{channel}}}}",
                )
                for p in ("p50", "p95", "p99")
            ]
            + [Query(threshold("bsgLatencyP95Seconds"), "p95 threshold")],
            unit="s",
            width=9,
            overrides=[threshold_override("p95 threshold")],
        ),
        Panel(
            "heatmap",
            "Delivery latency heatmap",
            "How many messages were delivered in each latency bucket over time.",
            [
                Query(
                    f"sum by (le) (max without ({REPLICAS}) "
                    f"(increase(bsg_delivery_latency_seconds_bucket{{{TCR}}}[$__rate_interval])))",
                    "{{le}}",
                    heatmap=True,
                )
            ],
            9,
            8,
            unit="s",
            options={
                "calculate": False,
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                "yAxis": {"unit": "s"},
                "rowsFrame": {"layout": "auto"},
                "tooltip": {"show": True, "yHistogram": True},
                "legend": {"show": True},
            },
        ),
        timeseries(
            "Oldest pending message",
            "Age of each target's oldest message without a final status; the dashed line is "
            "BsgStuckMessages' threshold.",
            [
                Query(f"target:bsg_oldest_pending_message_age_seconds:min{{{T}}}", "{{target}}"),
                Query(threshold("bsgStuckMessageAgeSeconds"), "threshold"),
            ],
            unit="s",
            width=6,
            overrides=[threshold_override("threshold")],
        ),
    ]


def money() -> list[Panel]:
    """Cost per currency and the account balance."""
    return [
        timeseries(
            "Cost / hour by currency",
            "Sum of the prices of messages counted per hour, per price currency.",
            [
                Query(
                    "sum by (currency) "
                    f"(target_channel_currency:bsg_message_cost:rate5m{{{TC}}}) * 3600",
                    "{{currency}}",
                )
            ],
            unit="none",
        ),
        timeseries(
            "Account balance and credit",
            "Balance (can go negative down to the credit limit) and credit limit per currency.",
            [
                Query(f"currency:bsg_account_balance:min{{{GROUP}}}", "balance {{currency}}"),
                Query(
                    f"max without ({REPLICAS}) (bsg_account_credit{{{RAW}}})", "credit {{currency}}"
                ),
                Query(
                    f"currency:bsg_balance_low_threshold:effective{{{GROUP}}}",
                    "low threshold {{currency}}",
                ),
            ],
            unit="none",
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": "low threshold.*"},
                    "properties": threshold_override("")["properties"],
                }
            ],
        ),
    ]


def health() -> list[Panel]:
    """The exporter's own health: polls, errors, API requests."""
    return [
        timeseries(
            "Target up",
            "1 when the target's last poll completed, 0 when it failed, per replica.",
            [Query(f"bsg_up{{{TR}}}", "{{instance}} {{target}}")],
            width=6,
            max_value=1,
        ),
        timeseries(
            "Time since last good poll",
            "Seconds since each target's last completed poll, per replica (BsgDataStale fires "
            "when every replica is above the mixin's bsgStaleSeconds).",
            [
                Query(
                    f"time() - bsg_last_poll_success_timestamp_seconds{{{TR}}}",
                    "{{instance}} {{target}}",
                )
            ],
            unit="s",
            width=6,
        ),
        timeseries(
            "Poll errors / min by reason",
            "Failed polls per minute, by reason (auth, rate_limited, server_error, ...).",
            [
                Query(
                    "sum by (instance, target, reason) "
                    f"(rate(bsg_poll_errors_total{{{TR}}}[$__rate_interval])) * 60",
                    "{{instance}} {{target}} {{reason}}",
                )
            ],
            width=6,
        ),
        timeseries(
            "Poll duration p95",
            "95th percentile of the duration of a target's poll.",
            [
                Query(
                    "histogram_quantile(0.95, sum by (instance, target, le) "
                    f"(rate(bsg_poll_duration_seconds_bucket{{{TR}}}[$__rate_interval])))",
                    "{{instance}} {{target}}",
                )
            ],
            unit="s",
            width=6,
        ),
        timeseries(
            "API requests / min by endpoint and code",
            "Requests to the BSG API per minute by outcome: HTTP status, timeout or "
            "connection_error.",
            [
                Query(
                    "sum by (instance, endpoint, code) "
                    f"(rate(bsg_api_requests_total{{{RAW}}}[$__rate_interval])) * 60",
                    "{{instance}} {{endpoint}} {{code}}",
                )
            ],
            stacked=True,
        ),
        timeseries(
            "API request latency p95",
            "95th percentile of BSG API request durations, by endpoint.",
            [
                Query(
                    "histogram_quantile(0.95, sum by (instance, endpoint, le) "
                    f"(rate(bsg_api_request_duration_seconds_bucket{{{RAW}}}[$__rate_interval])))",
                    "{{instance}} {{endpoint}}",
                )
            ],
            unit="s",
        ),
    ]


ROWS: list[tuple[str, Callable[[], list[Panel]]]] = [
    ("Overview", overview),
    ("Delivery", delivery),
    ("Latency and stuck messages", latency),
    ("Cost and balance", money),
    ("Exporter health", health),
]


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    """The JSON of one panel at a grid position."""
    defaults = {"unit": panel.unit, **panel.defaults}
    targets = []
    for index, query in enumerate(panel.queries):
        target: Json = {
            "datasource": DATASOURCE,
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "refId": chr(ord("A") + index),
            "range": not query.instant,
            "instant": query.instant,
        }
        if query.heatmap:
            target["format"] = "heatmap"
        targets.append(target)
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {
            "defaults": {k: v for k, v in defaults.items() if v is not None},
            "overrides": panel.overrides,
        },
        "options": panel.options,
        "targets": targets,
    }


def layout() -> list[Json]:
    """Rows and their panels, placed left to right and wrapped at the grid's width."""
    panels: list[Json] = []
    y = 0
    next_id = 1
    for title, build in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in build():
            if x + panel.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(render_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return panels


def variable(name: str, label: str, query: str) -> Json:
    """A multi-value query variable with an All option matching everything."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def one_of(variable: Json) -> Json:
    """``variable`` with one value at a time: targets overlap (``all`` holds ``otp``), and a
    panel that sums over several would count a message once for each target it is in."""
    single = {k: v for k, v in variable.items() if k not in ("allValue", "current")}
    return {**single, "multi": False, "includeAll": False}


def build_dashboard() -> Json:
    """The whole dashboard."""
    return {
        "uid": "bsg-delivery",
        "title": "BSG SMS delivery",
        "description": "SMS delivery health on the BSG One API, from bsg-exporter "
        "(built by grafana/generate.py, rendered by mixin/render.py: edit those, not this file).",
        "tags": ["bsg", "sms", "bsg-exporter"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {
            "list": [
                {
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                    "builtIn": 1,
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                },
                {
                    "name": "bsg alerts",
                    "enable": True,
                    "hide": False,
                    "iconColor": "red",
                    "datasource": DATASOURCE,
                    "expr": ALERTS,
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{target}} {{channel}} {{currency}}",
                    "step": "60s",
                },
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "refresh": 1,
                    "current": {},
                    "hide": 0,
                },
                variable("job", "Job", f"label_values(bsg_up{{{SELECTOR}}}, job)"),
                variable(
                    "account",
                    "Account",
                    f'label_values(bsg_up{{{SELECTOR}, job=~"$job"}}, account)',
                ),
                variable(
                    "instance",
                    "Instance",
                    f"label_values(bsg_up{{{SELECTOR}, {GROUP}}}, instance)",
                ),
                one_of(variable("target", "Target", f"label_values(bsg_up{{{RAW}}}, target)")),
                variable(
                    "channel",
                    "Channel",
                    f"label_values(bsg_messages_total{{{TR}}}, channel)",
                ),
            ]
        },
        "panels": layout(),
    }


def render() -> str:
    """The dashboard as the committed file's text."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    """Write the dashboard file; with ``--check``, only compare (exit 1 when out of date)."""
    text = render()
    if "--check" in sys.argv[1:]:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python mixin/render.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
