"""Logging: JSON off a terminal, console on one, and the level filter."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from exporter.logs import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Leave structlog as other tests expect it."""
    yield
    structlog.reset_defaults()


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_json_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("info", None, stream=out)
    structlog.get_logger("t").info("poll_finished", target="otp", pages=2)
    structlog.get_logger("t").debug("api_retry")
    [line] = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "poll_finished" and event["target"] == "otp" and event["pages"] == 2
    assert event["level"] == "info" and event["timestamp"].endswith("Z")


def test_console_on_a_terminal_and_debug_level() -> None:
    out = FakeTTY()
    configure_logging("debug", None, stream=out)
    structlog.get_logger("t").debug("api_retry", attempt=1)
    text = out.getvalue()
    assert "api_retry" in text and "attempt" in text
    assert not text.lstrip().startswith("{")


def test_format_flag_overrides_the_terminal_guess() -> None:
    out = FakeTTY()
    configure_logging("warning", "json", stream=out)
    structlog.get_logger("t").info("hidden")
    structlog.get_logger("t").warning("poll_failed", reason="timeout")
    assert json.loads(out.getvalue())["reason"] == "timeout"
