"""Plain counting containers: a fixed-bucket histogram and counts kept in dicts.

Owns nothing but the arithmetic; the tracker keeps them, the collector and status page read
them.

Must not import: prometheus_client, httpx, or any other exporter module.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import TypeVar

K = TypeVar("K")


class Histogram:
    """A fixed-bucket histogram: per-bucket counts (not cumulative) and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.counts: list[int] = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Add one observation; ``le`` buckets include their bound."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        """The number of observations."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs, ending with ``+Inf``, as the exposition wants."""
        running = 0
        buckets: list[tuple[str, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((_le(bound), running))
        return buckets

    def copy(self) -> Histogram:
        """An independent copy."""
        clone = Histogram(())
        clone.bounds = self.bounds
        clone.counts = list(self.counts)
        clone.total = self.total
        return clone


def _le(bound: float) -> str:
    """Format a bucket bound the way prometheus_client does (``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def add_to(counts: dict[K, int], key: K, amount: int = 1) -> None:
    """Increment a counter held in a dict."""
    counts[key] = counts.get(key, 0) + amount


def add_counts(counts: dict[K, int], more: Mapping[K, int]) -> None:
    """Add counts (a Counter, say) into a dict of counts."""
    for key, count in more.items():
        add_to(counts, key, count)
