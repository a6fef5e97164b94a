"""Whether the poll loop is alive and making progress, for /-/healthy and the supervisor.

Owns the heartbeat (the poller beats after each API request, target poll and cycle), the stall
limit, and the verdict. It runs nothing itself: the main thread asks it, on its own schedule.

Must not import: prometheus_client, httpx, or any other exporter module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

APPLY_SLACK = 60.0
"""Seconds allowed on top of the interval and the longest request: folding a large cold read
into a tracker and saving it is CPU and disk work with no request in between."""


class Liveness:
    """The poll loop's heartbeat and, once it is found dead or stuck, the reason why."""

    def __init__(self, stall_limit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stall_limit = stall_limit
        self._last_beat = clock()
        self._failure: str | None = None

    @property
    def stall_limit(self) -> float:
        """Seconds without a beat after which the loop counts as stuck."""
        return self._stall_limit

    def set_stall_limit(self, seconds: float) -> None:
        """Use a new limit (a reload changed the interval or the request timeouts)."""
        with self._lock:
            self._stall_limit = seconds

    def beat(self) -> None:
        """The loop made progress: a request ended, a poll ended, or a cycle began."""
        now = self._clock()
        with self._lock:
            self._last_beat = now

    def fail(self, reason: str) -> None:
        """The loop is dead (or found stuck): healthy answers no from now on."""
        with self._lock:
            if self._failure is None:
                self._failure = reason

    def check(self) -> tuple[bool, str]:
        """``(True, "")`` while the loop lives and beats; else False and the reason."""
        now = self._clock()
        with self._lock:
            if self._failure is not None:
                return False, self._failure
            silent = now - self._last_beat
            if silent > self._stall_limit:
                return False, (
                    f"poll loop stuck: no progress for {silent:.0f}s "
                    f"(limit {self._stall_limit:.0f}s)"
                )
        return True, ""


def stall_limit(interval: float, longest_request: float) -> float:
    """How long the loop may go without a beat: a whole wait between cycles, then the longest
    a single request can take (its deadline, retries and waits), then the apply slack."""
    return interval + longest_request + APPLY_SLACK
