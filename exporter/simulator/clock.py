"""Clocks that drive the simulator: real, manual (tests) and scaled (fast demos)."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the simulated wall-clock time as epoch seconds."""

    def now(self) -> float:
        """Return the current simulated time in epoch seconds."""
        ...


class RealClock:
    """The system wall clock."""

    def now(self) -> float:
        """Return time.time()."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to; thread-safe."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the current manual time."""
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        """Move the clock forward by `seconds` and return the new time."""
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward; use set() to rewind")
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> None:
        """Jump to the absolute time `t`."""
        with self._lock:
            self._t = float(t)


class ScaledClock:
    """Simulated time that runs `speed` times faster than real time, from `start`."""

    def __init__(self, speed: float = 60.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = time.time() if start is None else float(start)
        # monotonic so that NTP steps of the host do not make simulated time jump
        self._origin = time.monotonic()

    def now(self) -> float:
        """Return start + elapsed real time * speed."""
        return self._start + (time.monotonic() - self._origin) * self.speed
