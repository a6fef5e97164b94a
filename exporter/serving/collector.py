"""Turns the exporter's state into Prometheus metric families, at scrape time.

Owns metric names, types, labels and HELP texts; rendering them to bytes, and caching what a
poll did not change, is :mod:`.exposition`'s. It reads :class:`ExporterState` (a brief copy
under its lock) and never does I/O, so a scrape costs the same whatever the API is doing.

Must not import: httpx, the client, the polling package or the web server; nothing that does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.bsg.wire import Balance
from exporter.model import (
    ALL_STATUSES,
    BALANCE_ERROR_REASONS,
    FEED_DISORDERS,
    FINAL_STATUSES,
    NANOS,
    POLL_ERROR_REASONS,
    REJECT_REASONS,
)
from exporter.stats import ExporterState, StateView, TargetStatus
from exporter.tracking.counts import Histogram
from exporter.tracking.snapshot import SEP, TargetSnapshot

_REFRESH = " Refreshed once per poll interval."


class BsgCollector(Collector):
    """A custom collector over :class:`ExporterState`."""

    def __init__(self, state: ExporterState) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        """Nothing up front: the families are built at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Build every family from a consistent copy of the state."""
        view = self.view()
        yield from target_families(view.targets)
        yield from self.collect_shared(view)

    def view(self) -> StateView:
        """A consistent copy of the state."""
        return self._state.view()

    def collect_shared(self, view: StateView) -> Iterator[Metric]:
        """The families after the targets' ones: the API, the account, reloads, the build."""
        yield from _api_families(self._state)
        yield from _account_families(view.balances, view.balance_errors)
        yield from _reload_families(view)
        yield _build_info(view)


def target_families(targets: dict[str, TargetStatus]) -> Iterator[Metric]:
    """The families of the targets: their messages, then how their polls go."""
    yield from _message_families([status.snapshot for status in targets.values()])
    yield from _poll_families(targets)
    yield from _feed_families([status.snapshot for status in targets.values()])


def _message_families(snapshots: list[TargetSnapshot]) -> Iterator[Metric]:
    """The families that come from the trackers' counting."""
    families = _MessageFamilies()
    for snap in snapshots:
        families.add(snap)
    yield from families.all()
    yield _histograms(
        "bsg_delivery_latency_seconds",
        "delivered_at - sent_at of messages counted as delivered or read." + _REFRESH,
        ((snap.name, snap.delivery_latency) for snap in snapshots),
    )
    yield _histograms(
        "bsg_send_delay_seconds",
        "sent_at - created_at of messages counted in bsg_messages_total." + _REFRESH,
        ((snap.name, snap.send_delay) for snap in snapshots),
    )


class _MessageFamilies:
    """The counter and gauge families filled from target snapshots."""

    def __init__(self) -> None:
        self.messages = CounterMetricFamily(
            "bsg_messages",
            "Messages that reached a final status, each counted once." + _REFRESH,
            labels=["target", "channel", "status"],
        )
        self.submitted = CounterMetricFamily(
            "bsg_messages_submitted",
            "Messages first seen after the exporter's baseline." + _REFRESH,
            labels=["target", "channel"],
        )
        self.cost = CounterMetricFamily(
            "bsg_message_cost",
            "Sum of amount.value of the messages counted in bsg_messages_total, per currency."
            + _REFRESH,
            labels=["target", "channel", "status", "currency"],
        )
        self.changes = CounterMetricFamily(
            "bsg_final_status_changes",
            "Final statuses that changed after the message was counted." + _REFRESH,
            labels=["target", "from_status", "to_status"],
        )
        self.window = GaugeMetricFamily(
            "bsg_window_messages",
            "Messages created inside the target's window, by last known status." + _REFRESH,
            labels=["target", "channel", "status"],
        )
        self.abandoned = CounterMetricFamily(
            "bsg_messages_abandoned",
            "Messages still pending after their validity plus a grace period: no longer polled,"
            " never counted in bsg_messages_total." + _REFRESH,
            labels=["target", "channel", "last_status"],
        )
        self.overflow = CounterMetricFamily(
            "bsg_label_values_overflow",
            'Messages whose extra label value was reported as "other": the target\'s'
            " max_label_values was reached." + _REFRESH,
            labels=["target", "label"],
        )
        self.oldest = GaugeMetricFamily(
            "bsg_oldest_pending_message_age_seconds",
            "Age of the oldest message not yet in a final status (0 when none)." + _REFRESH,
            labels=["target"],
        )

    def add(self, snap: TargetSnapshot) -> None:
        """Add one target; every final status has a series for every series seen."""
        target = snap.name
        for series in snap.series:
            labels = _series_labels(snap, series)
            for status in FINAL_STATUSES:
                count = snap.messages.get((series, status), 0)
                _sample(self.messages, "_total", {**labels, "status": status}, count)
            _sample(self.submitted, "_total", labels, snap.submitted.get(series, 0))
            for status in ALL_STATUSES:
                count = snap.window.get((series, status), 0)
                _sample(self.window, "", {**labels, "status": status}, count)
        for (series, status, currency), nanos in sorted(snap.cost_nanos.items()):
            labels = {**_series_labels(snap, series), "status": status, "currency": currency}
            _sample(self.cost, "_total", labels, nanos / NANOS)
        for (from_status, to_status), count in sorted(snap.changes.items()):
            self.changes.add_metric([target, from_status, to_status], count)
        for (series, last_status), count in sorted(snap.abandoned.items()):
            labels = {**_series_labels(snap, series), "last_status": last_status}
            _sample(self.abandoned, "_total", labels, count)
        for label in snap.label_names:
            overflow = snap.overflow.get(label, 0)
            self.overflow.add_metric([target, label], overflow)
        self.oldest.add_metric([target], snap.oldest_pending_age)

    def all(self) -> tuple[Metric, ...]:
        """Every family, in exposition order."""
        return (
            self.messages,
            self.submitted,
            self.cost,
            self.changes,
            self.abandoned,
            self.window,
            self.oldest,
            self.overflow,
        )


def _series_labels(snap: TargetSnapshot, series: str) -> dict[str, str]:
    """Label values of a series key: target, channel, then the target's extra labels."""
    channel, *extra = series.split(SEP)
    return {
        "target": snap.name,
        "channel": channel,
        **dict(zip(snap.label_names, extra, strict=True)),
    }


def _sample(family: Metric, suffix: str, labels: dict[str, str], value: float) -> None:
    """Add a sample with its own label set (targets may carry different extra labels)."""
    family.add_sample(family.name + suffix, labels, value)


def _histograms(
    name: str,
    documentation: str,
    series: Iterable[tuple[str, Mapping[str, Histogram]]],
) -> HistogramMetricFamily:
    """One histogram family over targets and channels."""
    family = HistogramMetricFamily(name, documentation, labels=["target", "channel"])
    for target, histograms in series:
        for channel, histogram in sorted(histograms.items()):
            _add_histogram(family, {"target": target, "channel": channel}, histogram)
    return family


def _add_histogram(family: Metric, labels: dict[str, str], histogram: Histogram) -> None:
    """Add a histogram's samples as ``HistogramMetricFamily.add_metric`` does.

    Without building each bucket's labels from lists, which a steady poll paid for every
    histogram it published.
    """
    name, samples = family.name, family.samples
    buckets = histogram.cumulative()
    samples.extend(Sample(name + "_bucket", {**labels, "le": le}, count) for le, count in buckets)
    if not histogram.bounds or histogram.bounds[0] >= 0:  # else no sum nor count, as there
        samples.append(Sample(name + "_count", dict(labels), buckets[-1][1]))
        samples.append(Sample(name + "_sum", dict(labels), histogram.total))


def _poll_families(targets: dict[str, TargetStatus]) -> Iterator[Metric]:
    """The families that describe the polls themselves."""
    up = GaugeMetricFamily(
        "bsg_up", "1 when the target's last poll completed, else 0.", labels=["target"]
    )
    last = GaugeMetricFamily(
        "bsg_last_poll_success_timestamp_seconds",
        "Unix time at the end of the target's last completed poll.",
        labels=["target"],
    )
    durations = HistogramMetricFamily(
        "bsg_poll_duration_seconds", "Duration of target polls.", labels=["target"]
    )
    errors = CounterMetricFamily(
        "bsg_poll_errors", "Failed target polls by reason.", labels=["target", "reason"]
    )
    rejected = CounterMetricFamily(
        "bsg_records_rejected",
        "API records skipped because they could not be used (no id, no status).",
        labels=["target", "reason"],
    )
    backlog = GaugeMetricFamily(
        "bsg_poll_backlog_messages",
        "Pending messages whose re-check was due but left for a later cycle (request budget).",
        labels=["target"],
    )
    mismatches = CounterMetricFamily(
        "bsg_page_total_mismatches",
        "Passes over /api/messages whose meta.page.total disagreed with the rows read "
        "(paging goes by the rows, never by the total).",
        labels=["target"],
    )
    for name, status in targets.items():
        up.add_metric([name], 1.0 if status.up else 0.0)
        mismatches.add_metric([name], status.total_mismatches)
        if status.last_success is not None:
            last.add_metric([name], status.last_success)
        _add_histogram(durations, {"target": name}, status.durations)
        snap = status.snapshot
        for reason in _with_known(snap.errors, POLL_ERROR_REASONS):
            errors.add_metric([name, reason], snap.errors.get(reason, 0))
        for reason in _with_known(snap.rejected, REJECT_REASONS):
            rejected.add_metric([name, reason], snap.rejected.get(reason, 0))
        backlog.add_metric([name], snap.backlog)
    yield from (up, last, durations, errors, rejected, backlog, mismatches)


def _feed_families(snapshots: list[TargetSnapshot]) -> Iterator[Metric]:
    """The families of the delivery-report feed: whether it is trusted, and its disorders."""
    trusted = GaugeMetricFamily(
        "bsg_report_feed_trusted",
        "1 while the delivery-report feed (sort=delivered) is read and its order holds, so "
        "pending messages are only swept by range re-checks; 0 when they are re-read on the "
        "poll.recheck schedule (the feed is off, not proven yet, or found out of order).",
        labels=["target"],
    )
    disorders = CounterMetricFamily(
        "bsg_report_feed_disorders",
        "Passes over the delivery-report feed found out of order, by how; each one fell back "
        "to the poll.recheck schedule in the same poll.",
        labels=["target", "reason"],
    )
    for snap in snapshots:
        trusted.add_metric([snap.name], 1.0 if snap.feed_trusted else 0.0)
        for reason in _with_known(snap.feed_disorders, FEED_DISORDERS):
            disorders.add_metric([snap.name, reason], snap.feed_disorders.get(reason, 0))
    yield from (trusted, disorders)


def _with_known(counts: Mapping[str, int], known: tuple[str, ...]) -> list[str]:
    """The known label values (each has a series from the first scrape) and any others seen."""
    return [*known, *sorted(set(counts) - set(known))]


def _api_families(state: ExporterState) -> Iterator[Metric]:
    """The families of API requests."""
    requests, durations = state.api.copy()
    counts = CounterMetricFamily(
        "bsg_api_requests",
        "BSG API requests by endpoint and outcome (HTTP status, timeout or connection_error).",
        labels=["endpoint", "code"],
    )
    for (endpoint, code), count in sorted(requests.items()):
        counts.add_metric([endpoint, code], count)
    latency = HistogramMetricFamily(
        "bsg_api_request_duration_seconds", "BSG API request latency.", labels=["endpoint"]
    )
    for endpoint, histogram in sorted(durations.items()):
        _add_histogram(latency, {"endpoint": endpoint}, histogram)
    yield from (counts, latency)
    if state.budget is not None:
        yield GaugeMetricFamily(
            "bsg_api_budget_remaining",
            "API requests left in the current sliding minute (api.max_requests_per_minute).",
            value=state.budget.remaining(),
        )


def _account_families(
    balances: Mapping[str, Balance], errors: Mapping[str, int]
) -> Iterator[Metric]:
    """Balance and credit from the last good balance read, and the reads that failed."""
    balance = GaugeMetricFamily(
        "bsg_account_balance",
        "Account balance from /api/accounts/balance (can be negative)." + _REFRESH,
        labels=["currency"],
    )
    credit = GaugeMetricFamily(
        "bsg_account_credit", "Account credit limit." + _REFRESH, labels=["currency"]
    )
    for currency, value in sorted(balances.items()):
        balance.add_metric([currency], value.balance)
        if value.credit is not None:
            credit.add_metric([currency], value.credit)
    failed = CounterMetricFamily(
        "bsg_balance_errors",
        "Balance reads that failed, by reason; the balance shown is the last good one.",
        labels=["reason"],
    )
    for reason in _with_known(errors, BALANCE_ERROR_REASONS):
        failed.add_metric([reason], errors.get(reason, 0))
    yield from (balance, credit, failed)


def _reload_families(state: StateView) -> Iterator[Metric]:
    """Whether the last configuration reload worked, and when one last did."""
    yield GaugeMetricFamily(
        "bsg_exporter_config_last_reload_successful",
        "1 when the last configuration reload (SIGHUP or POST /-/reload) succeeded, else 0.",
        value=1.0 if state.reload_ok else 0.0,
    )
    yield GaugeMetricFamily(
        "bsg_exporter_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.",
        value=state.reload_success,
    )


def _build_info(state: StateView) -> Metric:
    """The constant build-info gauge."""
    info = GaugeMetricFamily(
        "bsg_exporter_build_info",
        'Always 1; test_key="true" when the API key is a test key (random data).',
        labels=["version", "test_key"],
    )
    info.add_metric([state.version, "true" if state.test_key else "false"], 1.0)
    return info
