"""The landing page as a person sees it: rendered by the real exporter, read in headless Chromium.

The exporter runs in-process on a simulated clock against the simulator, so the page and
/metrics show the same state: the page's numbers are checked against known messages and
against the metrics scraped at the same moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.config.schema import parse_config
from exporter.serving.landing import fmt_duration, fmt_money, quantile, render_landing
from exporter.simulator import (
    CampaignProfile,
    ManualClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
)
from exporter.stats import ExporterState
from exporter.tracking.counts import Histogram
from tests import chromium
from tests.harness import InProcessExporter, Samples, TargetSpec, config_yaml, series, value

KEY = "test_landing_0123456789abcdef"
START = 1_780_000_000.0
TARGETS: list[TargetSpec] = [
    {"name": "all", "window": "1h"},
    {"name": "c22", "campaign_id": 22, "window": "1h"},
]


@pytest.fixture
def page_state(tmp_path: Path) -> Iterator[tuple[InProcessExporter, ManualClock]]:
    """Two targets after a baseline, a cycle of known outcomes, and a cycle where one fails."""
    clock = ManualClock(start=START)
    profile = TrafficProfile(
        campaigns=(CampaignProfile(campaign_id=21, rate=0.0), CampaignProfile(22, rate=0.0))
    )
    sim = Simulator(profile, clock=clock, seed=3, api_keys=(KEY,))
    with SimulatorServer(sim) as server:
        text = config_yaml(server.url, TARGETS, interval="60s")
        text = text.replace("  timeout: 5s\n", "  timeout: 5s\n  max_retries: 0\n")
        exporter = InProcessExporter(parse_config(text, environ={"BSG_API_KEY": KEY}), clock.now)
        try:
            ids = sim.create_messages(
                [{"campaign_id": 21, "type": "sms", "status": "sent"}] * 10
                + [{"campaign_id": 21, "type": "viber", "status": "sent"}] * 2
                + [{"campaign_id": 22, "type": "sms", "status": "sent"}] * 3
            )
            exporter.cycle()  # the baseline: all 15 pending, none counted
            clock.advance(30)
            outcomes = ["delivered"] * 6 + ["failed"] * 2 + ["undelivered", "sent"]
            outcomes += ["delivered", "sent", "delivered", "expired", "failed"]
            for message_id, status in zip(ids, outcomes, strict=True):
                if status != "sent":
                    sim.set_status(message_id, status)
            exporter.cycle()
            clock.advance(60)
            # the next messages request fails for good: the first target polled goes down
            sim.add_fault("http_status", count=1, status=503, endpoint="messages")
            exporter.cycle()
            yield exporter, clock
        finally:
            exporter.close()


def window_ratio(samples: Samples, target: str, statuses: tuple[str, ...]) -> str:
    """A window ratio computed from the metrics, formatted as the page formats it."""
    final = {"delivered", "read", "expired", "failed", "undelivered", "unknown"}
    window = series(samples, "bsg_window_messages", target=target)
    counted = sum(v for labels, v in window.items() if dict(labels)["status"] in final)
    chosen = sum(v for labels, v in window.items() if dict(labels)["status"] in statuses)
    return f"{chosen / counted * 100:.1f} %"


@pytest.mark.skipif(not chromium.available(), reason="scripts/test.sh installs chromium")
def test_landing_page_in_chromium_shows_each_target(
    page_state: tuple[InProcessExporter, ManualClock], tmp_path: Path
) -> None:
    exporter, _ = page_state
    samples = exporter.samples()
    raw = httpx.get(f"{exporter.url}/", timeout=10).text
    assert "<script" not in raw  # nothing needs JavaScript

    dom = chromium.Tables(chromium.dump_dom(f"{exporter.url}/", tmp_path / "profile-dom"))
    text = dom.visible_text()
    assert "test_ API key" in text and "these numbers mean nothing" in text
    rows = {row["Target"]: row for row in dom.table_with("Last good poll")}
    assert rows.keys() == {"all", "c22"}
    up = {t: value(samples, "bsg_up", target=t) for t in rows}
    assert sorted(up.values()) == [0.0, 1.0], up  # exactly one target failed its last poll
    for target, row in rows.items():
        if up[target]:
            assert row["State"] == "UP" and row["Last good poll"] == "just now"
            assert row["Last error"] == ""
        else:
            assert row["State"] == "DOWN" and row["Last good poll"] == "1 min 0 s ago"
            assert "503" in row["Last error"] or "server" in row["Last error"], row
        window = series(samples, "bsg_window_messages", target=target)
        assert row["In window"] == f"{sum(window.values()):.0f}"
        assert row["Delivered (of final)"] == window_ratio(samples, target, ("delivered", "read"))
        assert row["Failed + undelivered (of final)"] == window_ratio(
            samples, target, ("failed", "undelivered")
        )
        # every delivery took 30 s: all in the (10 s, 30 s] bucket, interpolated linearly
        assert row["Latency p50 / p95 / p99"] == "20.0 s / 29.0 s / 29.8 s"
        by_currency: dict[str, float] = {}
        for labels, amount in series(samples, "bsg_message_cost_total", target=target).items():
            currency = dict(labels)["currency"]
            by_currency[currency] = by_currency.get(currency, 0.0) + amount
        assert row["Cost"] == " | ".join(
            f"{amount:,.4f} {currency}"
            for currency, amount in sorted(by_currency.items())
            if amount
        )
    # the known outcomes: 8 delivered, 3 failed, 1 undelivered, 1 expired, 2 still sent
    assert rows["all"]["In window"] == "15"
    assert (
        rows["all"]["Delivered (of final)"] == "61.5 %"
        and rows["all"]["Failed + undelivered (of final)"] == "30.8 %"
    )
    assert rows["c22"]["In window"] == "3" and rows["c22"]["Pending"] == "0"
    assert rows["c22"]["Delivered (of final)"] == "33.3 %"
    assert rows["all"]["Pending"].startswith("2 (oldest ")
    assert "delivered 8 (53.3 %)" in text and "failed + undelivered 4 (26.7 %)" in text
    assert "pending 2 (13.3 %)" in text and "expired 1 (6.7 %)" in text
    assert "other final" not in text  # empty groups stay out of the legend
    # each figure says what it is a share of: 8 of 13 final messages, 8 of all 15
    assert "Shares of all 15 messages in the window, pending included." in text
    assert "Pending messages have no final status yet" in text
    channels = dom.table_with("Channel")  # the first target's channels: all
    assert [(r["Channel"], r["In window"]) for r in channels] == [("sms", "13"), ("viber", "2")]
    balances = dom.table_with("Credit limit")
    for row in balances:
        balance = value(samples, "bsg_account_balance", currency=row["Currency"])
        assert row["Balance"] == f"{balance:,.2f}"
    assert [r["Currency"] for r in balances] == ["EUR"]

    shot = chromium.screenshot(
        f"{exporter.url}/", tmp_path / "profile-shot", chromium.ARTIFACTS / "landing.png"
    )
    assert chromium.png_size(shot) == (1280, 900)
    assert len(shot) > 20_000  # a blank page compresses to a few KB


def test_a_state_that_never_polled_renders_without_errors() -> None:
    state = ExporterState(targets={}, version="1.2.3", test_key=False)
    page = render_landing(state, "/metrics", START)
    assert "0 of 0 up" in page and "not read yet" in page and "test_" not in page


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, [0, 4, 0], 1.5),  # bounds 1, 2: the middle of (1, 2]
        (0.95, [0, 4, 0], 1.95),
        (0.5, [2, 2, 0], 1.0),  # exactly the bound between two buckets
        (0.99, [0, 0, 3], 2.0),  # in +Inf: the highest finite bound, as histogram_quantile
        (0.5, [0, 0, 0], None),
    ],
)
def test_quantile_interpolates_like_histogram_quantile(
    q: float, counts: list[int], expected: float | None
) -> None:
    histogram = Histogram((1.0, 2.0))
    histogram.counts = counts
    got = quantile(q, histogram)
    assert got == (None if expected is None else pytest.approx(expected))


def test_formats() -> None:
    assert [fmt_duration(s) for s in (0.25, 4.21, 200, 7500, 3 * 86400 + 4 * 3600)] == [
        "250 ms",
        "4.2 s",
        "3 min 20 s",
        "2 h 5 min",
        "3 d 4 h",
    ]
    assert fmt_money({"UAH": 105_000_000, "EUR": 250 * 10**9, "PLN": 0}) == (
        "250.00 EUR<br>0.1050 UAH"
    )
    assert fmt_money({}) == "&ndash;"
