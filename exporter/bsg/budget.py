"""The API request budget: at most N requests in any sliding minute, shared by every caller.

Must not import: prometheus_client, or any exporter module outside ``exporter.bsg``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

WINDOW = 60.0


class RequestBudget:
    """A sliding-window limit: a request is allowed only if fewer than ``per_minute`` were sent
    in the last 60 seconds, so the limit holds over every minute, not just on average."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def remaining(self) -> int:
        """Requests that may be sent right now."""
        with self._lock:
            self._forget(self._clock())
            return self.per_minute - len(self._sent)

    def try_acquire(self) -> bool:
        """Take one request from the budget; False when it is spent."""
        with self._lock:
            now = self._clock()
            self._forget(now)
            if len(self._sent) >= self.per_minute:
                return False
            self._sent.append(now)
            return True

    def _forget(self, now: float) -> None:
        """Drop requests older than the window."""
        while self._sent and self._sent[0] <= now - WINDOW:
            self._sent.popleft()
