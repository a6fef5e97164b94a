"""The collector on a fresh registry: names, types, labels and values, byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exporter.bsg.wire import Balance, CountryCode, Epoch, Message
from exporter.config.schema import MetricsConfig, TargetConfig
from exporter.model import FINAL_STATUSES
from exporter.serving import collector as collector_module
from exporter.serving import exposition as exposition_module
from exporter.serving.collector import BsgCollector
from exporter.serving.exposition import BsgRegistry, Encoder, _Template
from exporter.stats import ExporterState, TargetStatus
from exporter.tracking.counts import Histogram
from exporter.tracking.store import MEMORY, StateStore
from exporter.tracking.tracker import TargetTracker
from tests.harness import price

NOW = 1_780_000_000.0
PL = CountryCode("PL")


def ago(seconds: float) -> Epoch:
    """The API timestamp ``seconds`` before NOW, as the decoder hands it over."""
    return Epoch(NOW - seconds)


def build_state() -> ExporterState:
    """A state with one target that counted a few messages."""
    tracker = TargetTracker(
        StateStore(MEMORY),
        TargetConfig("otp", 3600, None),
        metrics=MetricsConfig((1.0, 10.0), (1.0,)),
    )
    tracker.apply([], NOW)
    tracker.apply(
        [
            Message(
                1, "delivered", "viber", 7, ago(30), ago(29), ago(25), price(75_000_000, "EUR")
            ),
            Message(2, "failed", "sms", 7, ago(20), ago(19), None, price(10_000_000, "UAH")),
            Message(3, "sent", "sms", 7, ago(10), ago(9)),
        ],
        NOW,
    )
    tracker.apply([Message(1, "read", "viber", 7, ago(30), ago(29), ago(25))], NOW)
    status = TargetStatus(snapshot=tracker.snapshot(NOW), up=True, polled_once=True)
    status.last_success = NOW
    status.durations.observe(0.3)
    tracker.record_failure("timeout")
    tracker.record_failure("timeout")
    status.snapshot = tracker.snapshot(NOW)
    state = ExporterState(targets={"otp": status}, version="1.2.3", test_key=False)
    state.api.observe_request("messages", "200", 0.02)
    state.api.observe_request("messages", "timeout", 10.0)
    state.publish_balance(Balance(balance=-50.25, credit=125.0, currency="EUR"))
    return state


def exposition(state: ExporterState) -> str:
    """The text exposition of a fresh registry holding only our collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BsgCollector(state))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_gauges_and_histograms_have_the_contracted_shape() -> None:
    text = exposition(build_state())
    got = samples(text)

    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, tuple(sorted(labels.items())))

    assert got[key("bsg_messages_total", target="otp", channel="viber", status="delivered")] == 1
    assert got[key("bsg_messages_total", target="otp", channel="sms", status="failed")] == 1
    assert got[key("bsg_messages_total", target="otp", channel="sms", status="expired")] == 0
    assert got[key("bsg_messages_submitted_total", target="otp", channel="sms")] == 2
    assert got[
        key(
            "bsg_message_cost_total",
            target="otp",
            channel="viber",
            status="delivered",
            currency="EUR",
        )
    ] == pytest.approx(0.075)
    assert (
        got[
            key(
                "bsg_final_status_changes_total",
                target="otp",
                from_status="delivered",
                to_status="read",
            )
        ]
        == 1
    )
    assert got[key("bsg_window_messages", target="otp", channel="viber", status="read")] == 1
    assert got[key("bsg_window_messages", target="otp", channel="sms", status="sent")] == 1
    assert got[key("bsg_window_messages", target="otp", channel="sms", status="other")] == 0
    assert got[key("bsg_oldest_pending_message_age_seconds", target="otp")] == 10
    assert (
        got[key("bsg_delivery_latency_seconds_bucket", target="otp", channel="viber", le="10.0")]
        == 1
    )
    assert (
        got[key("bsg_delivery_latency_seconds_bucket", target="otp", channel="viber", le="1.0")]
        == 0
    )
    assert got[key("bsg_delivery_latency_seconds_count", target="otp", channel="sms")] == 0
    assert got[key("bsg_send_delay_seconds_count", target="otp", channel="sms")] == 1
    assert got[key("bsg_up", target="otp")] == 1
    assert got[key("bsg_last_poll_success_timestamp_seconds", target="otp")] == NOW
    assert got[key("bsg_poll_errors_total", target="otp", reason="timeout")] == 2
    assert got[key("bsg_poll_errors_total", target="otp", reason="decode")] == 0
    assert got[key("bsg_records_rejected_total", target="otp", reason="missing_id")] == 0
    assert got[key("bsg_api_requests_total", endpoint="messages", code="timeout")] == 1
    assert got[key("bsg_api_request_duration_seconds_count", endpoint="messages")] == 2
    assert got[key("bsg_account_balance", currency="EUR")] == -50.25
    assert got[key("bsg_account_credit", currency="EUR")] == 125
    assert got[key("bsg_exporter_build_info", version="1.2.3", test_key="false")] == 1
    assert "# TYPE bsg_messages_total counter" in text
    assert "# TYPE bsg_window_messages gauge" in text
    assert "# TYPE bsg_delivery_latency_seconds histogram" in text


def test_every_final_status_has_a_series_for_every_channel_seen() -> None:
    got = samples(exposition(build_state()))
    for channel in ("sms", "viber"):
        for status in FINAL_STATUSES:
            assert (
                "bsg_messages_total",
                (("channel", channel), ("status", status), ("target", "otp")),
            ) in got


def test_a_fresh_target_exposes_zero_series_for_sms() -> None:
    tracker = TargetTracker(
        StateStore(MEMORY), TargetConfig("all", 60, None), metrics=MetricsConfig((1.0,), (1.0,))
    )
    state = ExporterState(
        targets={"all": TargetStatus(snapshot=tracker.snapshot(NOW))}, version="x", test_key=True
    )
    text = exposition(state)
    got = samples(text)
    assert got[("bsg_up", (("target", "all"),))] == 0
    assert sum(v for (n, _), v in got.items() if n == "bsg_messages_total") == 0
    assert len([n for (n, _) in got if n == "bsg_messages_total"]) == len(FINAL_STATUSES)
    assert "bsg_last_poll_success_timestamp_seconds{" not in text
    assert got[("bsg_exporter_build_info", (("test_key", "true"), ("version", "x")))] == 1


def test_no_label_carries_message_data() -> None:
    text = exposition(build_state())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= {
                "target",
                "channel",
                "status",
                "currency",
                "from_status",
                "to_status",
                "reason",
                "endpoint",
                "code",
                "version",
                "test_key",
                "le",
            }


def test_promtool_finds_nothing_to_complain_about() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/test.sh (Debian package prometheus)"
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition(build_state()).encode(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "" and result.stderr.decode().strip() == ""


@pytest.mark.parametrize(
    "accept",
    ["", "text/plain;version=1.0.0;escaping=allow-utf-8", "application/openmetrics-text"],
)
def test_the_cached_exposition_is_byte_for_byte_the_full_one(accept: str) -> None:
    state = build_state()
    other = _tracker("all", labels=("country",))
    other.apply(
        [Message(8, "read", "viber", 7, ago(9), ago(8), ago(2), price(5, "PLN"), None, PL)],
        NOW,
    )
    state.targets["all"] = TargetStatus(snapshot=other.snapshot(NOW))
    registry = BsgRegistry(state)
    registry.register(_Extra())  # another collector, after ours, as the process metrics are
    encoder, content_type = choose_encoder(accept)
    first = registry.exposition(encoder, content_type)
    assert first == encoder(registry)
    assert registry.exposition(encoder, content_type) == first  # served from the cache
    # A poll of one target publishes: its part changes, the other's comes from the cache.
    tracker = _tracker("otp")
    tracker.apply([Message(9, "sent", "rcs", 7, ago(5))], NOW)
    state.publish_failure("otp", tracker.snapshot(NOW), duration=0.5, error="timeout")
    second = registry.exposition(encoder, content_type)
    assert second != first
    assert second == encoder(registry)
    # A reload drops a target.
    kept = {name: s.snapshot for name, s in state.targets.items() if name != "otp"}
    state.replace_targets(kept, test_key=False, budget=None)
    assert registry.exposition(encoder, content_type) == encoder(registry)
    state.replace_targets({}, test_key=False, budget=None)
    assert registry.exposition(encoder, content_type) == encoder(registry)


def _tracker(name: str, labels: tuple[str, ...] = ()) -> TargetTracker:
    """A tracker over a store of its own."""
    return TargetTracker(
        StateStore(MEMORY),
        TargetConfig(name, 3600, None, labels=labels),
        metrics=MetricsConfig((1.0,), (1.0,)),
    )


class _Extra(Collector):
    """Another collector, registered after ours: its family must come after the cached ones."""

    def collect(self) -> list[Metric]:
        """One gauge."""
        return [GaugeMetricFamily("extra", "Another collector's family.", value=1.0)]


def test_other_collectors_are_rendered_at_most_once_per_ttl() -> None:
    counting = _Counting()
    for ttl, collected in ((0.0, 3), (3600.0, 1)):
        counting.collected = 0
        registry = BsgRegistry(build_state(), others_ttl=ttl)
        registry.register(counting)
        encoder, content_type = choose_encoder("")
        bodies = {registry.exposition(encoder, content_type) for _ in range(3)}
        assert counting.collected == collected
        assert len(bodies) == collected  # fresh values when rendered, else the cached ones


class _Counting(Collector):
    """A gauge of how many times it was collected (process metrics change like that)."""

    def __init__(self) -> None:
        self.collected = 0

    def collect(self) -> list[Metric]:
        """One gauge, one more each time."""
        self.collected += 1
        return [GaugeMetricFamily("collected", "Collections.", value=float(self.collected))]


def test_a_publish_renders_the_scraped_formats_before_the_next_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = build_state()
    registry = BsgRegistry(state)
    encoder, content_type = choose_encoder("application/openmetrics-text")
    registry.exposition(encoder, content_type)  # a scrape: the format is known from now on
    tracker = _tracker("otp")
    tracker.apply([Message(9, "delivered", "rcs", 7, ago(5), ago(4), ago(1))], NOW)
    state.publish_success("otp", tracker.snapshot(NOW), at=NOW, duration=0.1, mismatches=0)
    rendered: list[object] = []
    real_render = exposition_module._render

    def recording(encoder: Encoder, families: Iterable[Metric]) -> bytes:
        rendered.append((encoder, families))
        return real_render(encoder, families)

    monkeypatch.setattr(exposition_module, "_render", recording)
    body = registry.exposition(encoder, content_type)
    assert body == encoder(registry)
    assert len(rendered) == 1  # only the shared families: the targets' parts were ready


def test_a_scrape_during_a_render_serves_the_parts_rendered_before_it() -> None:
    state = build_state()
    registry = BsgRegistry(state)
    encoder, content_type = choose_encoder("")
    before = registry.exposition(encoder, content_type)
    tracker = _tracker("otp")
    tracker.apply([Message(9, "delivered", "rcs", 7, ago(5), ago(4), ago(1))], NOW)
    state.targets["otp"].snapshot = tracker.snapshot(NOW)  # published, not rendered yet
    with registry._rendering:  # a poll's thread renders the new values: the scrape does not wait
        assert registry.exposition(encoder, content_type) == before
    after = registry.exposition(encoder, content_type)
    assert after != before
    assert after == encoder(registry)


def _families(values: list[float], extra_label: str = "") -> list[Metric]:
    """A counter, a gauge with odd label values and a histogram, holding ``values``."""
    counter = CounterMetricFamily("bsg_things", "Things.", labels=["target", "status"])
    counter.add_metric(["otp", "sent"], values[0])
    gauge = GaugeMetricFamily("bsg_level", 'A "level"\\ of\nthings.', labels=["target", "what"])
    for index, value in enumerate(values[1:]):
        gauge.add_metric(["otp", f'a "b" \\ {index}\n{extra_label}'], value)
    histogram = HistogramMetricFamily("bsg_wait_seconds", "Waits.", labels=["target"])
    histogram.add_metric(["otp"], [("1.0", 1), ("+Inf", 3)], sum_value=values[0])
    return [counter, gauge, histogram]


@pytest.mark.parametrize(
    "accept",
    ["", "text/plain;version=1.0.0;escaping=allow-utf-8", "application/openmetrics-text"],
)
def test_a_template_renders_what_the_encoder_renders_and_spares_it(accept: str) -> None:
    encoder, _ = choose_encoder(accept)
    calls: list[int] = []

    def counting(collector: Collector) -> bytes:
        calls.append(1)
        return encoder(collector)

    templates: defaultdict[str, _Template] = defaultdict(_Template)
    rounds = [
        [1.0, 0.0, -0.0, 2.5],
        [2.0, float("nan"), float("inf"), -1e20],  # only values changed: no encoder call
        [3.0, 1e-7, 123456789.0, -0.0],
    ]
    for values in rounds:
        for family in _families(values):
            rendered = templates[family.name].render(counting, family)
            assert rendered == exposition_module._render(encoder, [family])
    assert len(calls) == 3  # once per family
    _, changed, _ = _families([4.0, 1.0, 2.0, 3.0], extra_label="new")  # a new label value
    rendered = templates[changed.name].render(counting, changed)
    assert rendered == exposition_module._render(encoder, [changed])
    assert len(calls) == 4


def test_a_sample_with_a_timestamp_is_never_templated() -> None:
    encoder, _ = choose_encoder("")
    template = exposition_module._Template()
    for value in (1.0, 2.0):
        gauge = GaugeMetricFamily("bsg_level", "Level.", labels=["target"])
        gauge.add_metric(["otp"], value, timestamp=1_700_000_000 + value)
        assert template.render(encoder, gauge) == exposition_module._render(encoder, [gauge])


@pytest.mark.parametrize("bounds", [(0.5, 1.0, 10.0), (), (-1.0, 0.0, 2.5)])
def test_histogram_samples_are_those_prometheus_client_adds(bounds: tuple[float, ...]) -> None:
    histogram = Histogram(bounds)
    for value in (-3.0, 0.0, 0.5, 0.7, 2.0, 99.0):
        histogram.observe(value)
    ours = HistogramMetricFamily("h", "help", labels=["target", "channel"])
    collector_module._add_histogram(ours, {"target": "t", "channel": "sms"}, histogram)
    theirs = HistogramMetricFamily("h", "help", labels=["target", "channel"])
    theirs.add_metric(["t", "sms"], buckets=histogram.cumulative(), sum_value=histogram.total)
    assert ours.samples == theirs.samples
    assert [list(s.labels) for s in ours.samples] == [list(s.labels) for s in theirs.samples]
