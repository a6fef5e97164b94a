"""The delivery-report feed: ``GET /api/messages?sort=delivered&way=desc``, newest report first.

Every message that got a delivery report since the last pass comes in ``reports / 500``
requests, whatever its age, instead of range re-reads over thousands of messages already
final. How the API orders by report time is undocumented (where messages without one go,
which field it sorts by, what offset paging does as reports arrive), so the feed is a hint: a
pass checks the order row by row, and tells the first disorder it finds instead of trusting
it. Rows repeated by reports arriving during the pass are deduplicated by id.

Must not import: httpx, prometheus_client, or any exporter module outside ``exporter.bsg`` but
the vocabulary and the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo

from exporter.bsg.errors import BudgetExhaustedError
from exporter.bsg.paging import MessagePass, PageReader, page_size, pass_params
from exporter.bsg.wire import Message
from exporter.defaults import FEED_MAX_PAGES
from exporter.model import LABEL_DIMENSIONS, NULL_FIRST, RISING, UNPROVEN

MAX_UNPROVEN_PAGES = 20
"""Pages without any report that a pass reads before it gives up telling the order: with the
documented order, messages without a report all come after the reports."""


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """A pass over the reports of messages created in ``[start, end]``, newest first, down to
    report time ``since``; without ``since``, one page, to learn where the reports stand."""

    start: float
    end: float
    since: float | None
    campaign_id: int | None = None
    labels: tuple[str, ...] = LABEL_DIMENSIONS
    max_pages: int = FEED_MAX_PAGES  # reached before getting to ``since``: not ``reached``


@dataclass(slots=True)
class ReportPass(MessagePass):
    """What one feed pass read, and whether its order held."""

    top: float | None = None  # the latest report time read: where the next pass may stop
    disorder: str | None = None  # the first way the order broke (a vocabulary reason), if any
    reached: bool = False  # read down to ``since``, or to the last report

    @property
    def trusted(self) -> bool:
        """True when the pass read every report since its mark, in an order that held."""
        return self.reached and self.disorder is None and self.complete


class _Order:
    """Follows report times down a pass: each no later than the one above, none after a
    message without one."""

    __slots__ = ("disorder", "last", "seen_null", "top")

    def __init__(self) -> None:
        self.top: float | None = None
        self.last: float | None = None
        self.seen_null = False
        self.disorder: str | None = None

    def follow(self, messages: list[Message]) -> None:
        """Check the next page's messages, in the order the API sent them."""
        for message in messages:
            reported = message.delivered_at
            if reported is None:
                self.seen_null = True
                continue
            if self.seen_null:
                self.disorder = NULL_FIRST
                return
            if self.last is not None and reported > self.last:
                self.disorder = RISING
                return
            if self.top is None:
                self.top = reported
            self.last = reported

    @property
    def past_reports(self) -> bool:
        """True once a message without a report follows reports: the reports are all read."""
        return self.seen_null and self.last is not None


def read_reports(get_page: PageReader, query: ReportQuery, tz: tzinfo) -> ReportPass:
    """Read the reports of ``query``, newest first, checking their order page by page.

    Stops at the first report older than ``since``, at the first message without a report
    after reports, at a short page, or at the first disorder (whose messages are still good
    to use: each is what the API says of it).
    """
    created = (query.start, query.end)
    params = pass_params(("delivered", "desc"), created, query.campaign_id, tz)
    result = ReportPass()
    order = _Order()
    while True:
        try:
            page = get_page({**params, "page[offset]": result.next_offset}, query.labels)
        except BudgetExhaustedError:
            result.complete = False
            break
        result.add_page(page)
        result.next_offset += page.rows
        order.follow(page.messages)
        if _pass_ends(order, query, result, page.rows < page_size(page) or not page.rows):
            break
    result.top, result.disorder = order.top, order.disorder
    return result


def _pass_ends(order: _Order, query: ReportQuery, result: ReportPass, last_page: bool) -> bool:
    """Tell whether the pass stops after its latest page, noting whether it read far enough."""
    if order.disorder is not None:
        return True
    below = order.last is not None and query.since is not None and order.last < query.since
    if last_page or below or order.past_reports or query.since is None:
        result.reached = True
        return True
    if order.last is None and result.pages >= MAX_UNPROVEN_PAGES:
        order.disorder = UNPROVEN
        return True
    if result.pages >= query.max_pages:
        result.ended_early = True
        return True
    return False
