"""Logging set-up: structlog, JSON off a terminal, console on one.

Owns the processors and the level filter. Event names are stable (``poll_finished``,
``poll_failed``, ``api_login``...) so that log queries keep working across versions.

Must not import: any other exporter module.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")


def configure_logging(
    level: str = "info", fmt: str | None = None, stream: TextIO | None = None
) -> None:
    """Send structured logs to stderr at ``level``; ``fmt`` None picks by whether it is a TTY."""
    out = stream or sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # httpx logs every request line at INFO through the standard library; our own api_* events
    # say what matters, and third-party lines must never be the place a secret slips through.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
