"""Turns the exporter's state into Prometheus metric families, at scrape time.

Owns metric names, types, labels and HELP texts. It reads :class:`ExporterState` (a brief copy
under its lock) and never does I/O, so a scrape costs the same whatever the API is doing.

Must not import: httpx, the client, the poller or the web module.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.bsg.records import Balance
from exporter.model import (
    ALL_STATUSES,
    BALANCE_ERROR_REASONS,
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
        yield from _target_families(view.targets)
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


Encoder = Callable[[Collector], bytes]
"""An exposition encoder of prometheus_client, as ``choose_encoder`` returns it."""
_EOF = b"# EOF\n"


class BsgRegistry(CollectorRegistry):
    """The exporter's registry: its :meth:`exposition` renders each target's families once.

    A target's families (its messages, and how its polls go) are hundreds of series that only
    change when a poll of that target ends; yet formatting the thousands of series of all
    targets would be nearly all of a scrape's time. Each target's part is
    rendered once per change and per format, so a poll costs the next scrape one target's
    part. The shared families (API requests, budget, balance, reloads) are rendered on each
    scrape; those of the collectors registered after ours (the process metrics) at most every
    ``others_ttl`` seconds: each of their reads of /proc gave the GIL away, and a poll running
    meanwhile kept it for up to a switch interval each time. The bytes are those
    ``encoder(registry)`` renders (the process metrics from up to ``others_ttl`` earlier), and
    ``encoder(registry)`` still works as before.
    """

    def __init__(self, state: ExporterState, *, others_ttl: float = 1.0) -> None:
        super().__init__(auto_describe=False)
        self.bsg = BsgCollector(state)
        self._others_ttl = others_ttl
        self._ordered: list[Collector] = []  # registration order is exposition order
        self._parts: dict[str, dict[str, tuple[_Version, list[tuple[bytes, bytes]]]]] = {}
        # By format and target, then family: a poll mostly changes values only.
        self._templates: dict[tuple[str, str], dict[str, _Template]] = {}
        self._others: dict[str, tuple[float, bytes]] = {}  # rendered at (monotonic time)
        self._encoders: dict[str, Encoder] = {}  # the formats scraped so far
        # One thread renders the targets' parts at a time. A scrape arriving while a poll's
        # thread renders them serves the parts rendered before that poll published (as if it
        # had come a few milliseconds earlier): waiting, or rendering again against the poll
        # for the GIL, would make the scrape slower.
        self._rendering = threading.Lock()
        self._heads: dict[str, bytes] = {}  # the targets' part last joined, by format
        self.register(self.bsg)
        state.listeners.append(self.render_targets)

    def register(self, collector: Collector) -> None:
        """Add a collector, rendered after ours."""
        super().register(collector)
        self._ordered.append(collector)
        self._others.clear()

    def unregister(self, collector: Collector) -> None:
        """Remove a collector."""
        super().unregister(collector)
        self._ordered.remove(collector)
        self._others.clear()

    def exposition(self, encoder: Encoder, key: str) -> bytes:
        """What ``encoder(self)`` renders; ``key`` names the format (its content type)."""
        self._encoders.setdefault(key, encoder)
        head = self._heads.get(key)
        if self._rendering.acquire(blocking=head is None):
            try:
                view = self.bsg.view()
                head = self._heads[key] = self._targets_part(encoder, key, view.targets)
            finally:
                self._rendering.release()
        else:
            view = self.bsg.view()
        assert head is not None  # a first scrape of a format waits for the lock
        shared = _render(encoder, self.bsg.collect_shared(view))
        others = self._others_part(encoder, key, self._others_ttl)
        return head + shared + others + encoder(_Families(()))  # OpenMetrics' "# EOF"

    def _others_part(self, encoder: Encoder, key: str, ttl: float) -> bytes:
        """The families of the other collectors, rendered anew once older than ``ttl``."""
        now = time.monotonic()
        others = self._others.get(key)
        if others is None or not 0 <= now - others[0] < ttl:
            families = (m for c in list(self._ordered) if c is not self.bsg for m in c.collect())
            others = (now, _render(encoder, families))
            self._others[key] = others
        return others[1]

    def render_targets(self) -> None:
        """Render the changed targets' families in every format scraped so far.

        Called in the poller's thread as a poll publishes: the next scrape then only joins
        bytes. Rendered in the scrape's thread instead, they made it wait for the GIL behind
        the next poll (docs/performance.md).
        """
        with self._rendering:
            targets = self.bsg.view().targets
            for key, encoder in list(self._encoders.items()):
                self._heads[key] = self._targets_part(encoder, key, targets)
        for key, encoder in list(self._encoders.items()):
            # Early, so that while polls run, scrapes do not read /proc (each read gives the
            # GIL away, to get it back only after the poll's next switch interval).
            self._others_part(encoder, key, self._others_ttl / 2)

    def _targets_part(self, encoder: Encoder, key: str, targets: dict[str, TargetStatus]) -> bytes:
        """Every target's families, each target's samples rendered once per change."""
        if not targets:
            return _render(encoder, _target_families({}))
        previous = self._parts.get(key, {})
        parts: dict[str, tuple[_Version, list[tuple[bytes, bytes]]]] = {}
        for name, status in targets.items():
            version = _version(status)
            part = previous.get(name)
            if part is None or not _same(part[0], version):
                templates = self._templates.setdefault((key, name), {})
                rendered = b"".join(
                    templates.setdefault(family.name, _Template()).render(encoder, family)
                    for family in _target_families({name: status})
                )
                part = (version, _split_families(rendered))
            parts[name] = part
        self._parts[key] = parts  # targets no longer configured are dropped
        for stale in [k for k in self._templates if k[0] == key and k[1] not in parts]:
            del self._templates[stale]
        # Every target renders the same families in the same order: join them family by family.
        blocks = [part[1] for part in parts.values()]
        joined: list[bytes] = []
        for index, (header, _) in enumerate(blocks[0]):
            joined.append(header)
            joined.extend(families[index][1] for families in blocks)
        return b"".join(joined)


_Version = tuple[TargetSnapshot, bool, float | None, tuple[int, ...], float, int]
"""What a target's families are rendered from: its snapshot (immutable, compared by identity),
whether it is up, its last success, its poll durations and its page-total mismatches."""


def _version(status: TargetStatus) -> _Version:
    """The version of a target's families (of a copy: the durations are copied)."""
    durations = status.durations
    return (
        status.snapshot,
        status.up,
        status.last_success,
        tuple(durations.counts),
        durations.total,
        status.total_mismatches,
    )


def _same(cached: _Version, current: _Version) -> bool:
    """True when a target's families would render the same (the same snapshot object)."""
    return cached[0] is current[0] and cached[1:] == current[1:]


class _Families(Collector):
    """Given families, as a collector an encoder can render."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        """The families."""
        return self._families


def _render(encoder: Encoder, families: Iterable[Metric]) -> bytes:
    """Families as ``encoder`` renders them, without OpenMetrics' "# EOF" line (more follows)."""
    return encoder(_Families(families)).removesuffix(_EOF)


class _Template:
    """Renders a family as an encoder does, reusing its text while only values change.

    prometheus_client's encoders sort and escape every sample's labels, and a poll changes
    mostly values: rendering a target's samples afresh was a large share of a steady poll
    (docs/performance.md). So the encoder renders a family once per
    shape (its header, its samples' names and labels), and each sample line is kept up to
    its value; later renders of that shape only format the values, as the encoder does. A
    template is used only once rebuilding the encoder's own output from it gave the same
    bytes.
    """

    __slots__ = ("_lines", "_shape", "_slots")

    def __init__(self) -> None:
        self._shape: tuple[object, list[object]] | None = None
        self._lines: list[str] = []  # the rendered lines, each sample line without its value
        self._slots: list[int] = []  # the index in _lines of each sample's line

    def render(self, encoder: Encoder, family: Metric) -> bytes:
        """What ``_render(encoder, [family])`` returns."""
        shape, values = _shape(family)
        if shape is not None and shape == self._shape:
            return self._fill(values)
        body = _render(encoder, [family])
        self._shape = None
        if shape is not None and self._learn(body, values):
            self._shape = shape
        return body

    def _learn(self, body: bytes, values: list[float]) -> bool:
        """Keep ``body``'s lines as a template; False when it cannot reproduce them."""
        lines = body.decode().splitlines(keepends=True)
        slots = [i for i, line in enumerate(lines) if not line.startswith("#")]
        if len(slots) != len(values):
            return False
        for index in slots:  # "name{labels} value\n": no timestamps or exemplars (see _shape)
            lines[index] = lines[index][: lines[index].rindex(" ") + 1]
        self._lines, self._slots = lines, slots
        return self._fill(values) == body

    def _fill(self, values: list[float]) -> bytes:
        """The template with ``values`` in its sample lines."""
        lines = self._lines.copy()
        for index, value in zip(self._slots, values, strict=True):
            lines[index] = f"{lines[index]}{_go_float(value)}\n"
        return "".join(lines).encode()


def _shape(family: Metric) -> tuple[tuple[object, list[object]] | None, list[float]]:
    """What the text of ``family`` depends on, but its values; and the values in order.

    The shape is None when a sample carries more than a value (a timestamp, an exemplar, a
    native histogram): no template then.
    """
    samples: list[object] = []
    values: list[float] = []
    for sample in family.samples:
        if sample.timestamp is not None or sample.exemplar or sample.native_histogram:
            return None, values
        samples.append((sample.name, sample.labels))
        values.append(sample.value)
    return ((family.name, family.type, family.documentation, family.unit), samples), values


_float_text: Callable[[float], str] = floatToGoString  # how both encoders write a value
_GO_FLOATS: dict[float, str] = {}
"""Their answers: counts and bucket values repeat from one render to the next."""


def _go_float(value: float) -> str:
    """``floatToGoString(value)``, cached."""
    if not value:  # -0.0 == 0.0 as a key, but is written "-0.0"
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    text = _GO_FLOATS.get(value)
    if text is None:
        text = _float_text(value)
        if len(_GO_FLOATS) >= 65536:
            _GO_FLOATS.clear()
        _GO_FLOATS[value] = text
    return text


def _split_families(body: bytes) -> list[tuple[bytes, bytes]]:
    """``(header lines, sample lines)`` of each family of a rendered exposition.

    A family starts at its ``# HELP`` line; no sample line starts with "#", and a newline in
    a label value or a HELP text is escaped, so the split is exact.
    """
    families: list[tuple[bytes, bytes]] = []
    for index, block in enumerate(body.split(b"\n# HELP ")):
        text = block if index == 0 else b"# HELP " + block
        if not text.endswith(b"\n"):
            text += b"\n"  # the split took the newline of every block but the last
        end = 0
        while text.startswith(b"#", end):
            end = text.index(b"\n", end) + 1
        families.append((text[:end], text[end:]))
    return families


def _target_families(targets: dict[str, TargetStatus]) -> Iterator[Metric]:
    """The families of the targets: their messages, then how their polls go."""
    yield from _message_families([status.snapshot for status in targets.values()])
    yield from _poll_families(targets)


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
