"""The delivery-report feed as a target follows it: what the next pass reads, how far the
re-check tiers may lean on it, and what a pass changes in the saved :class:`FeedProgress`.

Must not import: prometheus_client, httpx, sqlite3, or any exporter module outside tracking but
the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.defaults import FEED_OVERLAP, FEED_RETRY_INTERVALS, FEED_SWEEP_FACTOR
from exporter.tracking.codec import FeedProgress
from exporter.tracking.schedule import FeedRead, FeedResult, Sweep


class FeedSchedule:
    """One target's feed over its saved progress; ``on`` is ``poll.report_feed``."""

    __slots__ = ("_on", "_retry", "_slack", "progress")

    def __init__(self, progress: FeedProgress, *, on: bool, interval: float) -> None:
        self.progress = progress
        self._on = on
        self._retry = FEED_RETRY_INTERVALS * interval
        self._slack = interval / 2

    @property
    def trusted(self) -> bool:
        """True while the feed is read and its order has held."""
        return self._on and self.progress.trusted_since is not None

    def ask(self, now: float, oldest: float | None, tier_runs: Sequence[float]) -> FeedRead | None:
        """What the next pass reads, for pending messages created from ``oldest`` (None:
        nothing pending) and tiers that last ran at ``tier_runs`` (empty: not yet)."""
        feed = self.progress
        if not self._on or oldest is None or now < feed.retry_at:
            return None
        if feed.trusted_since is None:
            cover = min(tier_runs) if tier_runs else None
            return FeedRead(oldest, None if cover is None else cover - FEED_OVERLAP, cover)
        if feed.mark is None:
            return FeedRead(oldest, None)
        if now - feed.mark <= FEED_OVERLAP + self._slack:
            return FeedRead(oldest, feed.mark - FEED_OVERLAP)
        # Once the latest report is older than the overlap, one that turns up now with an
        # earlier time is later than the overlap allows: the sweep's. Reports come in whole
        # seconds, so the pass stops below the next second, and a burst of reports in the mark's
        # second is not read again and again while nothing new is reported.
        return FeedRead(oldest, feed.mark + 1)

    def sweep(self, result: FeedResult | None) -> Sweep | None:
        """How the tiers run in a poll whose pass found ``result``; None: as configured."""
        since = None if result is None else self._trusted_from(result)
        return None if since is None else Sweep(FEED_SWEEP_FACTOR, since)

    @property
    def shows_expiries(self) -> bool:
        """True once a pass read an expired message with a report time."""
        return self.progress.expiry_reported

    def follow(self, now: float, result: FeedResult) -> None:
        """Move the mark after a pass in order; after a disorder, stop trusting the feed and
        try it again later (the tiers ran as configured in the same poll).

        A first pass that reached its cover trusts the feed from the cover on, so every tier
        sweeps at once. A pass too long to reach its cover or its mark (the page cap: a long
        stop, a flood of reports) trusts it from now on, so each tier keeps its period until
        it has run once more and reads what lies below.
        """
        feed = self.progress
        if result.disorder is not None:
            feed.mark, feed.trusted_since = None, None
            feed.retry_at = now + self._retry
            return
        feed.expiry_reported = feed.expiry_reported or result.expiry_reported
        if not result.complete or result.top is None:
            return  # cut by the budget: read again from the same mark next time
        if not result.reached:
            feed.mark, feed.trusted_since = result.top, now
            return
        trusted_from = self._trusted_from(result)
        feed.mark = result.top if feed.mark is None else max(feed.mark, result.top)
        if feed.trusted_since is None:
            feed.trusted_since = trusted_from if trusted_from is not None else now

    def _trusted_from(self, result: FeedResult) -> float | None:
        """After ``result``, the moment since which the feed has shown every report; None when
        the poll cannot lean on it."""
        if not result.trusted or (result.top is None and self.progress.mark is None):
            return None
        since = self.progress.trusted_since
        return since if since is not None else result.asked.cover
