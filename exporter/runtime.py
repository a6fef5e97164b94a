"""The process's runtime tuning: the GIL switch interval and pauses of the cyclic collector.

Process-wide switches live here, apart from the library modules, and only the entry point
(``__main__``) and the wiring turn them on: :func:`tune_process` once at start-up, and
:data:`COLLECTION_PAUSE` handed to the poller, which holds it while a tracker applies a poll.

Must not import: any other exporter module.
"""

from __future__ import annotations

import gc
import sys
import threading

SWITCH_INTERVAL = 0.001
"""Seconds a thread holds the GIL while another waits for it (Python's default is 0.005)."""


def tune_process() -> None:
    """Let the GIL change hands every :data:`SWITCH_INTERVAL` in this process.

    A scrape's thread gives the GIL up at each socket call and at compression; while a poll
    ran Python in the poller thread, it waited up to a whole interval to get it back each
    time (docs/performance.md). A poll loses a little to the extra hand-overs, far less than
    the network's share of its time.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)


class CollectionPause:
    """Pauses Python's cyclic garbage collector while any tracker applies a poll.

    An apply makes hundreds of thousands of short-lived containers (keys, columns), all freed
    by reference counting when it returns; meanwhile each of them counted towards the next
    collection, and the collections kept walking the tracked state (docs/performance.md).
    Collecting resumes after the last pause ends, if it was on before the first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


COLLECTION_PAUSE = CollectionPause()
"""The one pause of this process (the collector is process-wide: so is its pause)."""
