"""The read planner: ranges over dense stretches, lookups for sparse stragglers, budget order."""

from __future__ import annotations

from exporter.polling.planner import Density, pages, plan_reads, within_allowance

NOW = 100_000.0


def uniform(per_second: float) -> Density:
    """A density of ``per_second`` messages in every second."""
    return lambda start, end: int((end - start + 1) * per_second)


def test_dense_due_messages_are_read_with_the_new_ones() -> None:
    due = [(i, NOW - 300 + i) for i in range(200)]  # 200 due among ~300 messages
    plan = plan_reads(due, NOW - 60, NOW, uniform(1.0))
    # one read from the oldest due message to now costs 1 page: cheaper than anything else
    assert plan.new_from == NOW - 300 and len(plan.new_covers) == 200 and plan.checks == ()


def test_a_resuming_read_keeps_its_start() -> None:
    due = [(i, NOW - 300 + i) for i in range(200)]
    plan = plan_reads(due, NOW - 60, NOW, uniform(1.0), resuming=True)
    assert plan.new_from == NOW - 60 and plan.new_covers == ()
    [check] = plan.checks
    assert check.by_range and len(check.ids) == 200


def test_sparse_stragglers_are_looked_up() -> None:
    due = [(1, NOW - 80_000), (2, NOW - 40_000)]  # two among ~800,000 messages
    plan = plan_reads(due, NOW - 60, NOW, uniform(10.0))
    assert plan.new_from == NOW - 60
    assert [(c.ids, c.by_range) for c in plan.checks] == [([1], False), ([2], False)]


def test_a_dense_cluster_far_from_now_gets_its_own_range() -> None:
    old = [(i, NOW - 50_000 + i) for i in range(100)]  # 100 due within ~1,000 messages
    plan = plan_reads(old, NOW - 60, NOW, uniform(10.0))
    assert plan.new_from == NOW - 60
    [check] = plan.checks
    assert check.by_range and (check.start, check.end) == (NOW - 50_000, NOW - 50_000 + 99)
    assert sorted(check.ids) == list(range(100)) and check.cost(uniform(10.0)) == 2


def test_budget_goes_to_the_most_overdue_first() -> None:
    # three sparse stragglers, most overdue first in the due list
    due = [(7, NOW - 30_000), (8, NOW - 60_000), (9, NOW - 90_000)]
    plan = plan_reads(due, NOW - 60, NOW, uniform(10.0))
    assert [c.ids for c in plan.checks] == [[7], [8], [9]]
    chosen, deferred = within_allowance(plan.checks, 2, uniform(10.0))
    assert [c.ids for c in chosen] == [[7], [8]] and deferred == 1
    chosen, deferred = within_allowance(plan.checks, None, uniform(10.0))
    assert len(chosen) == 3 and deferred == 0


def test_pages() -> None:
    assert [pages(n) for n in (0, 1, 500, 501, 1000, 1001)] == [1, 1, 1, 2, 2, 3]


def test_lookups_split_across_cycles_when_the_budget_is_short() -> None:
    # six stragglers 500 messages apart: one cluster, no cheaper as 6 pages than as 6 lookups
    due = [(i, NOW - 80_000 + 500 * i) for i in range(6)]
    plan = plan_reads(due, NOW - 60, NOW, uniform(1.0))
    [check] = plan.checks
    assert not check.by_range and check.range_cost(uniform(1.0)) == 6
    chosen, deferred = within_allowance(plan.checks, 4, uniform(1.0))
    assert [len(c.ids) for c in chosen] == [4] and deferred == 2
