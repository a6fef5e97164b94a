"""The cardinality guard: extra label dimensions per target, capped, with the overflow counted."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

from exporter.config.schema import parse_config
from exporter.simulator import DEMO_API_KEY, ManualClock, SimulatorServer
from tests.harness import InProcessExporter, TargetSpec, config_yaml, series, value
from tests.test_e2e_counting import START, traffic

EXTRA = "    labels: [country]\n    max_label_values: 3\n"


def test_values_beyond_the_cap_become_other_and_are_counted() -> None:
    clock = ManualClock(start=START)
    sim = traffic(clock, scenario="paused")
    with SimulatorServer(sim) as server:
        targets: list[TargetSpec] = [
            {"name": "all", "window": "1h"},
            {"name": "plain", "window": "1h"},
        ]
        # only the first target gets the extra label
        text = config_yaml(server.url, targets).replace(
            "  - name: all\n    window: 1h\n", "  - name: all\n    window: 1h\n" + EXTRA
        )
        exporter = InProcessExporter(
            parse_config(text, environ={"BSG_API_KEY": DEMO_API_KEY}), clock.now
        )
        try:
            exporter.cycle()
            countries = ["UA", "PL", "DE", "GB", "US", "UA", "FR", "PL"]
            ids = sim.create_messages(
                [{"campaign_id": 11, "country": c, "status": "sent"} for c in countries]
            )
            clock.advance(60)
            exporter.cycle()
            for msg_id in ids:
                sim.set_status(msg_id, "delivered")
            clock.advance(60)
            exporter.cycle()
            samples = exporter.samples()
            got = {
                dict(k)["country"]: v
                for k, v in series(
                    samples, "bsg_messages_total", target="all", status="delivered"
                ).items()
                if v
            }
            assert got == {"UA": 2, "PL": 2, "DE": 1, "other": 3}  # GB, US, FR over the cap
            assert (
                value(samples, "bsg_label_values_overflow_total", target="all", label="country")
                == 3
            )
            plain = series(samples, "bsg_messages_total", target="plain", status="delivered")
            assert all("country" not in dict(k) for k in plain)
            assert sum(plain.values()) == 8
            window: Counter[str] = Counter()
            for k, v in series(samples, "bsg_window_messages", target="all").items():
                window[dict(k)["country"]] += int(v)
            assert window == Counter({"UA": 2, "PL": 2, "DE": 1, "other": 3})
            text_out = exporter.scrape()
        finally:
            exporter.close()
    promtool = shutil.which("promtool")
    assert promtool
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text_out, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
