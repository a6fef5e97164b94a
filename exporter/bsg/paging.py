"""Reading ``GET /api/messages`` in passes: the query, what a pass read, and the paging rules.

A pass fixes ``filter[to]`` and reads page after page in id order until an empty or short
page; rows that repeat are deduplicated by id, and a pass whose pages shifted under it is read
again. ``meta.page.total`` only bounds how far a pass follows full pages, never ends one; a
cold read in chunks that ended before its total's rows reads on (:meth:`ChunkedPass.ended_short`).

Must not import: httpx, prometheus_client, or any exporter module outside ``exporter.bsg`` but
the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from operator import attrgetter

import structlog

from exporter.bsg.decode import format_api_time
from exporter.bsg.errors import BudgetExhaustedError
from exporter.bsg.staged import StagedMessages
from exporter.bsg.wire import PAGE_LIMIT, Page
from exporter.model import KEPT_REJECTS, LABEL_DIMENSIONS

MAX_EXTRA_PAGES = 20
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
    total: int | None = None  # the first page's meta.page.total
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
            total = result.total = page.total
            max_pages = min(page_cap(total), limit)
        if page.rows == 0 or page.rows < page_size(page):
            break
        if result.pages >= max_pages:
            result.ended_early = True
            result.capped = result.pages >= limit and cap is not None
            break
    result.total_mismatch = _total_disagrees(total, start, result)
    return result, total


def page_cap(total: int | None) -> int:
    """The pages a pass whose first page said ``total`` may read: its total's pages and a few
    more (a total that lies), at most :data:`MAX_PASS_PAGES`."""
    # max(): a negative total must not stop the pass at its first page
    return min(max(total or 0, 0) // PAGE_LIMIT + MAX_EXTRA_PAGES, MAX_PASS_PAGES)


@dataclass(frozen=True, slots=True)
class ChunkedPass:
    """One pass read in chunks, each a :class:`MessagePass` of its own (a cold read, committed
    chunk by chunk): what the checks of a whole pass need, carried from chunk to chunk.

    The page cap holds for the pass, not for each chunk; and rows that shifted between pages
    are looked for over the pass: a chunk's first page may repeat rows of the chunk before.
    """

    start: int  # the offset the pass began at
    total: int | None = None  # its first page's total
    pages: int = 0
    distinct: int = 0  # messages read, each once over the chunks
    dropped: int = 0  # rows that gave no message
    repeated: bool = False  # a row came twice: in one chunk, or again in a later one
    top: int | None = None  # the highest id read
    again: bool = False  # the pass is being read once more (rows shifted the first time)
    read_on_at: int | None = None  # distinct messages when it last read on past its end

    def chunk_cap(self, chunk_pages: int) -> int:
        """Pages the next chunk may read: ``chunk_pages``, within what is left of the pass's cap."""
        cap = MAX_PASS_PAGES if self.pages == 0 else page_cap(self.total)
        return max(1, min(chunk_pages, cap - self.pages))

    def exhausted(self) -> bool:
        """True once the chunks read every page the pass's cap allows."""
        return self.pages > 0 and self.pages >= page_cap(self.total)

    def after(self, chunk: MessagePass) -> ChunkedPass:
        """The pass once ``chunk``, its next chunk, is read."""
        top = self.top
        repeats = 0 if top is None else sum(1 for msg_id in chunk.messages if msg_id <= top)
        if chunk.last_id is not None and (top is None or chunk.last_id > top):
            top = chunk.last_id
        return ChunkedPass(
            self.start,
            chunk.total if self.pages == 0 else self.total,
            self.pages + chunk.pages,
            self.distinct + len(chunk.messages) - repeats,
            self.dropped + chunk.dropped,
            self.repeated or chunk.duplicates > 0 or repeats > 0,
            top,
            self.again,
            self.read_on_at,
        )

    def skipped_rows(self) -> bool:
        """Tell whether the pass, read to its end, repeated rows and yet read fewer distinct
        ones than its total: some were skipped (once read again, it is taken as it is)."""
        return not self.again and self.repeated and self._short_of_total()

    def ended_short(self) -> bool:
        """Tell whether the pass got to an empty or short page before the rows its total said:
        an API's passing empty page must not end a baseline, so it reads on from there, as
        long as the last time it did found rows and its page cap allows."""
        if self.exhausted() or not self._short_of_total():
            return False
        return self.read_on_at is None or self.distinct > self.read_on_at

    def reading_on(self) -> ChunkedPass:
        """The pass, reading on past the page it ended on."""
        return replace(self, read_on_at=self.distinct)

    def _short_of_total(self) -> bool:
        """Tell whether the pass read fewer rows, each once, than its first page's total said."""
        return self.total is not None and self.distinct + self.dropped < self.total - self.start

    def read_again(self) -> ChunkedPass:
        """The same pass, to be read once more from its start."""
        return ChunkedPass(self.start, again=True)


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
