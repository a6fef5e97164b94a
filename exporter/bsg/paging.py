"""Reading ``GET /api/messages`` in passes: the query, what a pass read, and the paging rules.

A pass fixes ``filter[to]`` and reads page after page in id order until an empty or short
page; rows that repeat are deduplicated by id, and a pass whose pages shifted under it is read
again. ``meta.page.total`` only bounds how far a pass follows full pages, never ends one.

Must not import: httpx, prometheus_client, or any exporter module outside ``exporter.bsg`` but
the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from operator import attrgetter

import structlog

from exporter.bsg.decode import format_api_time
from exporter.bsg.errors import BudgetExhaustedError
from exporter.bsg.staged import StagedMessages
from exporter.bsg.wire import PAGE_LIMIT, Page
from exporter.model import KEPT_REJECTS, LABEL_DIMENSIONS

_MAX_EXTRA_PAGES = 20
"""Pages followed past the first answer's total before a pass pauses (a total that lies)."""
MAX_PASS_PAGES = 2000
"""Pages one pass reads at most (a million rows), whatever the total says: an API that serves
full pages forever must not hold a poll forever."""

log = structlog.get_logger("exporter.bsg")
_ID = attrgetter("id")

PageReader = Callable[[Mapping[str, str | int], tuple[str, ...]], Page]
"""One decoded page of ``GET /api/messages`` for these parameters, with these label fields."""


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """One pass over ``GET /api/messages``: a created-at range and an optional campaign."""

    start: float
    end: float
    campaign_id: int | None = None
    offset: int = 0  # rows of this query already read by an earlier, unfinished pass
    labels: tuple[str, ...] = LABEL_DIMENSIONS  # the label fields read (the others are None)
    max_pages: int | None = None  # pages after which a pass stops (ended_early), if fewer


@dataclass(slots=True)
class MessagePass:
    """What one pass read: the messages (deduplicated by id) and how it went.

    A pass ends on an empty page or a short one (fewer rows than the page size the API says
    it served, at most :data:`PAGE_LIMIT`); ``meta.page.total`` never ends or extends it.
    """

    messages: StagedMessages = field(default_factory=StagedMessages)
    complete: bool = True  # False: the request budget ran out; resume at next_offset
    ended_early: bool = False  # stopped at the page cap after a full page; more may follow
    capped: bool = False  # ended early at the query's own max_pages
    total_mismatch: bool = False  # the first page's total disagrees with the rows read
    last_id: int | None = None
    next_offset: int = 0
    pages: int = 0
    rows: int = 0
    kept: int = 0  # messages the pages gave, repeats included
    rejected: dict[str, int] = field(default_factory=dict)

    def add_page(self, page: Page) -> None:
        """Merge one page; a row seen again keeps its newest version."""
        self.pages += 1
        self.rows += page.rows
        self.kept += len(page.messages)
        self.messages.add(page.messages)
        top = max(map(_ID, page.messages), default=None)
        if top is not None and (self.last_id is None or top > self.last_id):
            self.last_id = top
        for reason, count in page.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count

    @property
    def duplicates(self) -> int:
        """Rows that repeated a message already read by this pass."""
        return self.kept - len(self.messages)

    @property
    def dropped(self) -> int:
        """Rows that gave no message (rejected, and not kept)."""
        return sum(n for reason, n in self.rejected.items() if reason not in KEPT_REJECTS)


def read_range(get_page: PageReader, query: MessageQuery, tz: tzinfo) -> MessagePass:
    """Read every message of ``query``, page by page, with ``filter[to]`` fixed for the pass.

    When the request budget runs out mid-pass, the pages read so far come back with
    ``complete`` False: rows arrive in id order, so everything up to ``last_id`` was read.
    """
    params = pass_params(("id", "asc"), (query.start, query.end), query.campaign_id, tz)
    result, total = _read_pass(get_page, params, query.offset, query.labels, query.max_pages)
    # A pass stopped at its page cap is read on from where it stopped: the total, which counts
    # the rows after it too, says nothing of what it skipped.
    if result.complete and not result.capped and _rows_skipped(result, total, query.offset):
        # Rows shifted between two pages (a page repeated some rows, and fewer distinct rows
        # came than the total says): some were skipped, and a skipped row below the cursor
        # is never read as new again. One more pass finds them; known rows cost nothing.
        log.info("pass_reread", reason="rows shifted between pages", rows=result.rows)
        again, _ = _read_pass(get_page, params, query.offset, query.labels, query.max_pages)
        # Each pass's own repeats: the second pass reading the first one's rows is not one.
        repeats = result.duplicates + again.duplicates
        result.messages.extend(again.messages)
        again.messages = result.messages
        again.kept = len(again.messages) + repeats
        again.pages += result.pages
        again.rows += result.rows
        if result.last_id is not None:
            again.last_id = max(result.last_id, again.last_id or result.last_id)
        result = again
    return result


def pass_params(
    order: tuple[str, str], created: tuple[float, float], campaign_id: int | None, tz: tzinfo
) -> dict[str, str | int]:
    """The parameters every page of a pass shares: full pages, the ``order`` (sort and way),
    the ``created`` range as the API's times (fixed for the whole pass), the campaign."""
    params: dict[str, str | int] = {
        "page[limit]": PAGE_LIMIT,
        "sort": order[0],
        "way": order[1],
        "filter[from]": format_api_time(created[0], tz),
        "filter[to]": format_api_time(created[1], tz),
    }
    if campaign_id is not None:
        params["filter[campaign_id]"] = campaign_id
    return params


def _read_pass(
    get_page: PageReader,
    params: Mapping[str, str | int],
    offset: int,
    labels: tuple[str, ...],
    cap: int | None = None,
) -> tuple[MessagePass, int | None]:
    """Page through one pass from ``offset``, ``cap`` pages at most; also returns the total of
    its first page."""
    result = MessagePass(next_offset=offset)
    total: int | None = None
    limit = MAX_PASS_PAGES if cap is None else max(1, min(cap, MAX_PASS_PAGES))
    max_pages = limit
    start = offset
    while True:
        try:
            page = get_page({**params, "page[offset]": offset}, labels)
        except BudgetExhaustedError:
            result.complete = False
            break
        result.add_page(page)
        offset += page.rows
        result.next_offset = offset
        if result.pages == 1:
            total = page.total
            # max(): a negative total must not stop the pass at its first page
            max_pages = min(max(total or 0, 0) // PAGE_LIMIT + _MAX_EXTRA_PAGES, limit)
        if page.rows == 0 or page.rows < page_size(page):
            break
        if result.pages >= max_pages:
            result.ended_early = True
            result.capped = result.pages >= limit and cap is not None
            break
    result.total_mismatch = _total_disagrees(total, start, result)
    return result, total


def page_size(page: Page) -> int:
    """The rows a full page has: ours, or fewer when the API says it serves fewer."""
    return min(PAGE_LIMIT, page.limit) if page.limit is not None else PAGE_LIMIT


def _total_disagrees(total: int | None, start: int, result: MessagePass) -> bool:
    """Tell whether a pass's first total disagrees with the rows it read from ``start``: not
    equal for a pass that read to its end, below them for one that stopped short."""
    if total is None:
        return False
    read = start + result.rows
    if result.complete and not result.ended_early:
        return total != read
    return total < read


def _rows_skipped(result: MessagePass, total: int | None, offset: int) -> bool:
    """Tell whether a pass repeated rows and yet read fewer distinct rows than its total."""
    if not result.duplicates or total is None:
        return False
    return len(result.messages) + result.dropped < total - offset
