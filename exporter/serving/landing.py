"""The landing page: a status page a person reads without Grafana, as plain server-side HTML.

Owns turning :class:`ExporterState` into HTML: per target, up or down, the age of the last good
poll, the window's status mix, delivery and failure ratios, delivery latency percentiles, cost
per currency, pending messages; and the account balance. No JavaScript: it must read in any
browser, in a terminal browser and in a screenshot.

Must not import: httpx, prometheus_client, the client, the poller or the web server; and it does
no I/O: ``render_landing`` is a pure function of the state and the time it is given.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.model import (
    DELIVERED_STATUSES,
    EXPIRED,
    FAILED_STATUSES,
    FINAL_STATUSES,
    NANOS,
    PENDING_STATUSES,
)
from exporter.stats import ExporterState
from exporter.tracking.counts import Histogram
from exporter.tracking.snapshot import channel_of

if TYPE_CHECKING:
    from exporter.tracking.snapshot import TargetSnapshot

QUANTILES = (0.5, 0.95, 0.99)
# Colours of the status mix bar, by status group; anything else is "other final".
GROUP_COLOURS = {
    "delivered": "#2da44e",
    "failed + undelivered": "#cf222e",
    EXPIRED: "#bf8700",
    "other final": "#8250df",
    "pending": "#8c959f",
}
NONE = "&ndash;"
"""What a cell shows when there is nothing to show (HTML: every formatter returns HTML)."""


@dataclass(frozen=True, slots=True)
class Mix:
    """Messages of the window by status group, and the ratios the page shows."""

    by_status: Mapping[str, int]

    @property
    def total(self) -> int:
        """Messages in the window."""
        return sum(self.by_status.values())

    @property
    def final(self) -> int:
        """Messages in the window with a final status."""
        return sum(n for s, n in self.by_status.items() if s in FINAL_STATUSES)

    def count(self, statuses: Iterable[str]) -> int:
        """Messages in any of ``statuses``."""
        return sum(self.by_status.get(s, 0) for s in statuses)

    def ratio(self, statuses: Iterable[str]) -> float | None:
        """Share of the final messages in ``statuses``; None without final messages."""
        return self.count(statuses) / self.final if self.final else None

    def groups(self) -> dict[str, int]:
        """Counts per colour group of the mix bar, in display order."""
        groups = dict.fromkeys(GROUP_COLOURS, 0)
        for status, n in self.by_status.items():
            groups[_group(status)] += n
        return groups


def _group(status: str) -> str:
    """The mix bar's group of a status."""
    if status in DELIVERED_STATUSES:
        return "delivered"
    if status in FAILED_STATUSES:
        return "failed + undelivered"
    if status == EXPIRED:
        return EXPIRED
    return "other final" if status in FINAL_STATUSES else "pending"


def quantile(q: float, histogram: Histogram) -> float | None:
    """Estimate a quantile from the buckets, interpolating linearly like histogram_quantile.

    None without observations; the highest finite bound when the quantile falls in +Inf.
    """
    count = sum(histogram.counts)
    if not count or not histogram.bounds:
        return None
    rank = q * count
    below = 0
    for index, bucket in enumerate(histogram.counts):
        if below + bucket >= rank and bucket:
            if index == len(histogram.bounds):
                return histogram.bounds[-1]
            lower = histogram.bounds[index - 1] if index else 0.0
            upper = histogram.bounds[index]
            return lower + (upper - lower) * (rank - below) / bucket
        below += bucket
    return histogram.bounds[-1]


def merged(histograms: Iterable[Histogram]) -> Histogram | None:
    """The sum of histograms with the same bounds (None when there are none)."""
    total: Histogram | None = None
    for histogram in histograms:
        if total is None:
            total = histogram.copy()
            continue
        if histogram.bounds != total.bounds:
            continue  # cannot happen within one exporter: one bucket list for every channel
        total.counts = [a + b for a, b in zip(total.counts, histogram.counts, strict=True)]
        total.total += histogram.total
    return total


def fmt_duration(seconds: float | None) -> str:
    """A short human duration: 850 ms, 4.2 s, 3 min 20 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None or math.isnan(seconds):
        return NONE
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def fmt_ratio(ratio: float | None) -> str:
    """A percentage with one decimal, or a dash."""
    return NONE if ratio is None else f"{ratio * 100:.1f} %"


def fmt_money(nanos_by_currency: Mapping[str, int]) -> str:
    """Amounts per currency, by currency code, or a dash."""
    # SMS prices are fractions of a cent: small sums keep four decimals
    parts = [
        f"{nanos / NANOS:,.{2 if nanos >= 100 * NANOS else 4}f} {html.escape(currency)}"
        for currency, nanos in sorted(nanos_by_currency.items())
        if nanos
    ]
    return "<br>".join(parts) or NONE


def fmt_age(now: float, moment: float | None) -> str:
    """How long ago ``moment`` was."""
    if moment is None:
        return "never"
    age = now - moment
    return "just now" if age < 1 else f"{fmt_duration(age)} ago"


@dataclass(frozen=True, slots=True)
class _Target:
    """What the page shows of one target, copied out of the state under its lock."""

    name: str
    up: bool
    last_success: float | None
    last_error: str | None
    snapshot: TargetSnapshot


def render_landing(state: ExporterState, telemetry_path: str, now: float) -> str:
    """The whole page for the state as of ``now``."""
    view = state.view()
    targets = [
        _Target(name, s.up, s.last_success, s.last_error, s.snapshot)
        for name, s in view.targets.items()
    ]
    balances = list(view.balances.values())
    version, test_key = view.version, view.test_key
    warning = (
        '<p class="warn">This exporter uses a <b>test_</b> API key: the API returns random '
        "data and these numbers mean nothing.</p>"
        if test_key
        else ""
    )
    up = sum(t.up for t in targets)
    summary = "\n".join(_summary_row(t, now) for t in targets)
    details = "\n".join(_details(t.name, t.snapshot) for t in targets)
    balance_rows = "\n".join(
        f"<tr><td>{html.escape(b.currency)}</td><td class=num>{b.balance:,.2f}</td>"
        f"<td class=num>{NONE if b.credit is None else f'{b.credit:,.2f}'}</td></tr>"
        for b in balances
    )
    return _PAGE.format(
        version=html.escape(version),
        warning=warning,
        metrics=html.escape(telemetry_path, quote=True),
        up=up,
        count=len(targets),
        overall="up" if up == len(targets) else "down",
        summary=summary,
        details=details,
        balances=balance_rows or '<tr><td colspan=3 class="muted">not read yet</td></tr>',
    )


def _window_mix(snapshot: TargetSnapshot, channel: str | None = None) -> Mix:
    """The window's status counts, for one channel or all of them."""
    by_status: dict[str, int] = {}
    for (series, status), n in snapshot.window.items():
        if channel is None or channel_of(series) == channel:
            by_status[status] = by_status.get(status, 0) + n
    return Mix(by_status)


def _cost(snapshot: TargetSnapshot, channel: str | None = None) -> dict[str, int]:
    """Cost of the counted messages per currency, for one channel or all."""
    by_currency: dict[str, int] = {}
    for (series, _status, currency), nanos in snapshot.cost_nanos.items():
        if channel is None or channel_of(series) == channel:
            by_currency[currency] = by_currency.get(currency, 0) + nanos
    return by_currency


def _latency(snapshot: TargetSnapshot, channel: str | None = None) -> str:
    """p50 / p95 / p99 of the delivery latency as one cell."""
    chosen = [h for ch, h in snapshot.delivery_latency.items() if channel is None or ch == channel]
    histogram = merged(chosen)
    if histogram is None or not histogram.count:
        return NONE
    return " / ".join(fmt_duration(quantile(q, histogram)) for q in QUANTILES)


def _summary_row(target: _Target, now: float) -> str:
    """One row of the summary table."""
    snapshot = target.snapshot
    mix = _window_mix(snapshot)
    state = "up" if target.up else "down"
    failure = mix.ratio(FAILED_STATUSES)
    failure_class = " bad" if failure is not None and failure >= 0.1 else ""
    pending, oldest = snapshot.pending, snapshot.oldest_pending_age
    error = html.escape(target.last_error or "")
    return (
        f'<tr><td><a href="#target-{html.escape(target.name)}">{html.escape(target.name)}</a></td>'
        f'<td><span class="badge {state}">{state.upper()}</span></td>'
        f"<td class=age>{fmt_age(now, target.last_success)}</td>"
        f"<td class=num>{mix.total:,}</td>"
        f"<td class=num>{fmt_ratio(mix.ratio(DELIVERED_STATUSES))}</td>"
        f"<td class='num{failure_class}'>{fmt_ratio(failure)}</td>"
        f"<td class=num>{_latency(snapshot)}</td>"
        f"<td class=num>{pending:,}{f' (oldest {fmt_duration(oldest)})' if pending else ''}</td>"
        f"<td class=num>{fmt_money(_cost(snapshot))}</td>"
        f"<td class=err>{error}</td></tr>"
    )


def _mix_bar(mix: Mix) -> str:
    """A stacked bar of the window's status groups, with its legend (pure CSS)."""
    groups = mix.groups()
    total = sum(groups.values())
    if not total:
        return '<p class="muted">No messages in the window yet.</p>'
    segments = "".join(
        f'<span style="width:{n / total * 100:.2f}%;background:{GROUP_COLOURS[g]}"'
        f' title="{g}: {n}"></span>'
        for g, n in groups.items()
        if n
    )
    legend = " ".join(
        f'<span class="key"><i style="background:{GROUP_COLOURS[g]}"></i>{g} {n:,} '
        f"({n / total * 100:.1f} %)</span>"
        for g, n in groups.items()
        if n
    )
    note = f'<p class="muted">Shares of all {total:,} messages in the window, pending included.</p>'
    return f'<div class="bar">{segments}</div><p class="legend">{legend}</p>{note}'


def _status_table(mix: Mix) -> str:
    """Every status with messages in the window, final ones first."""
    ordered = [s for s in (*FINAL_STATUSES, *PENDING_STATUSES) if mix.by_status.get(s)]
    ordered += sorted(s for s in mix.by_status if s not in ordered and mix.by_status[s])
    if not ordered:
        return ""
    head = "".join(f"<th>{html.escape(s)}</th>" for s in ordered)
    cells = "".join(f"<td class=num>{mix.by_status[s]:,}</td>" for s in ordered)
    return f'<table class="statuses"><tr>{head}</tr><tr>{cells}</tr></table>'


def _details(name: str, snapshot: TargetSnapshot) -> str:
    """A target's section: status mix of the window, and one row per channel."""
    mix = _window_mix(snapshot)
    rows = []
    for channel in snapshot.channels:
        ch_mix = _window_mix(snapshot, channel)
        counted = sum(n for (s, _), n in snapshot.messages.items() if channel_of(s) == channel)
        if not ch_mix.total and not counted:
            continue
        rows.append(
            f"<tr><td>{html.escape(channel)}</td><td class=num>{ch_mix.total:,}</td>"
            f"<td class=num>{fmt_ratio(ch_mix.ratio(DELIVERED_STATUSES))}</td>"
            f"<td class=num>{fmt_ratio(ch_mix.ratio(FAILED_STATUSES))}</td>"
            f"<td class=num>{fmt_ratio(ch_mix.ratio((EXPIRED,)))}</td>"
            f"<td class=num>{_latency(snapshot, channel)}</td>"
            f"<td class=num>{counted:,}</td>"
            f"<td class=num>{fmt_money(_cost(snapshot, channel))}</td></tr>"
        )
    table = (
        "<table><tr><th>Channel</th><th>In window</th><th>Delivered (of final)</th>"
        "<th>Failed + undelivered (of final)</th><th>Expired (of final)</th>"
        "<th>Latency p50 / p95 / p99</th>"
        "<th>Counted final</th><th>Cost</th></tr>\n" + "\n".join(rows) + "</table>"
        if rows
        else ""
    )
    anchor = html.escape(name)
    return (
        f'<section id="target-{anchor}"><h3>{anchor}</h3>'
        f"{_mix_bar(mix)}{_status_table(mix)}{table}</section>"
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>BSG Exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em 2em; max-width: 78em; color: #1f2328; }}
h1 {{ margin-bottom: .2em; }} h2 {{ margin-top: 1.4em; }} h3 {{ margin: 1.2em 0 .4em; }}
table {{ border-collapse: collapse; margin: .4em 0; }}
td, th {{ border: 1px solid #d0d7de; padding: .3em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.bad {{ color: #cf222e; font-weight: bold; }}
td.err {{ color: #cf222e; max-width: 20em; }} td.age {{ white-space: nowrap; }}
.badge {{ display: inline-block; padding: .1em .6em; border-radius: 1em; color: #fff;
  font-weight: bold; font-size: .9em; }}
.badge.up {{ background: #1a7f37; }} .badge.down {{ background: #cf222e; }}
.warn {{ background: #fff3cd; padding: .6em; border: 1px solid #e0c36c; }}
.muted {{ color: #656d76; }}
.bar {{ display: flex; height: 1.2em; width: 100%; max-width: 60em; border-radius: 3px;
  overflow: hidden; background: #eaeef2; }}
.bar span {{ display: block; height: 100%; }}
.legend {{ margin: .3em 0; font-size: .9em; }}
.key {{ margin-right: 1.2em; white-space: nowrap; }}
.key i {{ display: inline-block; width: .8em; height: .8em; margin-right: .3em;
  border-radius: 2px; vertical-align: -0.05em; }}
table.statuses td, table.statuses th {{ font-size: .85em; }}
</style></head>
<body>
<h1>BSG Exporter</h1>
<p class="muted">Prometheus exporter for SMS delivery health on the BSG One API, version
{version}. Ratios and the status mix cover the messages created in each target's window: a
ratio "of final" is a share of the window's messages that reached a final status, the status
mix a share of all of them. Pending messages have no final status yet (accepted, sent,
scheduled, ...): they are read again until they reach one or outlive their validity. Latency,
counts and cost cover the messages counted since the exporter started.</p>
{warning}
<p><a href="{metrics}">Metrics</a> &middot; <a href="/-/healthy">Health</a>
 &middot; <a href="/-/ready">Readiness</a></p>
<h2>Targets: <span class="badge {overall}">{up} of {count} up</span></h2>
<table>
<tr><th>Target</th><th>State</th><th>Last good poll</th><th>In window</th>
<th>Delivered (of final)</th><th>Failed + undelivered (of final)</th>
<th>Latency p50 / p95 / p99</th><th>Pending</th><th>Cost</th>
<th>Last error</th></tr>
{summary}
</table>
{details}
<h2>Account balance</h2>
<table>
<tr><th>Currency</th><th>Balance</th><th>Credit limit</th></tr>
{balances}
</table>
</body></html>
"""
