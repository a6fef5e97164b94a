"""The report feed's pass: where it stops and how it tells an order it cannot trust.

The pass reads through a page function, so these tests hand it the pages of an ordered list
directly; the feed against the simulator's orders, end to end, is in test_report_feed.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC

import pytest

from exporter.bsg.errors import BudgetExhaustedError
from exporter.bsg.reports import MAX_UNPROVEN_PAGES, ReportQuery, read_reports
from exporter.bsg.wire import Epoch, Message, Page
from exporter.model import NULL_FIRST, RISING, UNPROVEN

T0 = 1_750_000_000.0


class Pages:
    """The pages of ``rows`` as the API would serve them at each offset, with the requests."""

    def __init__(
        self, rows: Sequence[Message], limit: int = 500, budget: int | None = None
    ) -> None:
        self.rows = list(rows)
        self.limit = limit
        self.budget = budget
        self.asked: list[Mapping[str, str | int]] = []

    def __call__(self, params: Mapping[str, str | int], labels: tuple[str, ...]) -> Page:
        if self.budget is not None and len(self.asked) >= self.budget:
            raise BudgetExhaustedError("spent")
        self.asked.append(params)
        offset = int(params["page[offset]"])
        rows = self.rows[offset : offset + self.limit]
        return Page(rows, len(rows), None)


def reported(count: int, newest: float, *, first_id: int = 1, step: float = 1.0) -> list[Message]:
    """``count`` delivered messages, newest report first, ``step`` seconds apart."""
    return [
        Message(
            id=first_id + i,
            status="delivered",
            delivered_at=Epoch(newest - i * step),
            created_at=Epoch(T0),
        )
        for i in range(count)
    ]


def unreported(count: int, first_id: int = 100_000) -> list[Message]:
    """``count`` pending messages, without a report."""
    return [Message(id=first_id + i, status="sent", created_at=Epoch(T0)) for i in range(count)]


def query(since: float | None) -> ReportQuery:
    """A pass over messages created from T0, down to ``since``."""
    return ReportQuery(T0, T0 + 3600, since)


def test_a_pass_reads_newest_first_down_to_its_mark_and_no_further() -> None:
    api = Pages(reported(2000, newest=T0 + 3000))
    result = read_reports(api, query(since=T0 + 3000 - 700), UTC)
    assert len(api.asked) == 2  # rows 0-499 reach T0+2501, 500-999 pass below the mark
    assert result.trusted and result.top == T0 + 3000 and result.disorder is None
    assert {p["sort"] for p in api.asked} == {"delivered"} and {p["way"] for p in api.asked} == {
        "desc"
    }
    assert [p["page[offset]"] for p in api.asked] == [0, 500]


def test_a_pass_ends_at_the_first_message_without_a_report_after_reports() -> None:
    api = Pages(reported(600, newest=T0 + 3000) + unreported(5000))
    result = read_reports(api, query(since=T0), UTC)
    assert len(api.asked) == 2 and result.trusted  # the nulls come last: nothing more to read


def test_a_pass_without_a_mark_reads_one_page_to_find_where_reports_stand() -> None:
    api = Pages(reported(2000, newest=T0 + 3000))
    result = read_reports(api, query(since=None), UTC)
    assert len(api.asked) == 1 and result.trusted and result.top == T0 + 3000


def test_a_rising_report_time_is_a_disorder_and_its_messages_are_still_read() -> None:
    rows = reported(300, newest=T0 + 100) + reported(300, newest=T0 + 3000, first_id=1000)
    result = read_reports(Pages(rows), query(since=T0), UTC)
    assert result.disorder == RISING and not result.trusted
    assert len(result.messages) == 500  # what the page said of each message is still true


def test_a_report_after_messages_without_one_is_a_disorder() -> None:
    rows = unreported(100) + reported(100, newest=T0 + 3000)
    result = read_reports(Pages(rows), query(since=T0), UTC)
    assert result.disorder == NULL_FIRST and not result.trusted


def test_messages_without_a_report_and_no_report_end_an_honest_pass() -> None:
    result = read_reports(Pages(unreported(700)), query(since=T0), UTC)
    assert result.trusted and result.top is None  # the documented order: no report at all


def test_pages_without_any_report_are_given_up_on_after_a_bound() -> None:
    api = Pages(unreported(500 * (MAX_UNPROVEN_PAGES + 5)))
    result = read_reports(api, query(since=T0), UTC)
    assert result.disorder == UNPROVEN and len(api.asked) == MAX_UNPROVEN_PAGES


def test_rows_repeated_by_reports_arriving_mid_pass_are_read_once_and_in_order() -> None:
    rows = reported(1000, newest=T0 + 3000)

    class Shifting(Pages):
        """A new report lands on top after the first page: the second page starts one row
        later in the old order, repeating the first page's last row."""

        def __call__(self, params: Mapping[str, str | int], labels: tuple[str, ...]) -> Page:
            if self.asked:
                self.rows = [*reported(1, newest=T0 + 3500, first_id=5000), *rows]
            return super().__call__(params, labels)

    result = read_reports(Shifting(rows), query(since=T0 + 3000 - 800), UTC)
    assert result.trusted and result.duplicates == 1
    assert len(result.messages) == 999  # rows 0..998 of the old order, 499 read twice


def test_a_pass_cut_by_the_budget_is_not_trusted_and_keeps_what_it_read() -> None:
    api = Pages(reported(2000, newest=T0 + 3000), budget=1)
    result = read_reports(api, query(since=T0), UTC)
    assert not result.complete and not result.trusted and result.disorder is None
    assert len(result.messages) == 500


@pytest.mark.parametrize("campaign", [None, 7])
def test_a_pass_fixes_its_filters(campaign: int | None) -> None:
    api = Pages(reported(10, newest=T0 + 3000))
    read_reports(api, ReportQuery(T0, T0 + 3600, T0, campaign_id=campaign), UTC)
    [params] = api.asked
    assert params["filter[from]"] == "2025-06-15 15:06:40"
    assert params["filter[to]"] == "2025-06-15 16:06:40"
    assert params.get("filter[campaign_id]") == campaign
