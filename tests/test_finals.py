"""Property test (hypothesis) of the compact store of final messages against a plain dict.

Final messages added in batches and one by one, in any id order, given other statuses, pruned,
saved as chunks and as snapshots: the table answers what a dict of them answers, and a table
replayed from what was saved answers the same. Tiny segments, dicts of the newest and decoding
blocks make every split, join, rotation and block boundary happen in a few steps.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from exporter.tracking import chunks, finals
from exporter.tracking.finals import FinalStore
from exporter.tracking.table import Final, MessageTable

NOW = 1_780_000_000.0
Kind = tuple[str, str, int]

ids = st.one_of(
    st.integers(min_value=1, max_value=400), st.integers(min_value=2**40, max_value=2**40 + 40)
)
created = st.one_of(
    st.integers(min_value=int(NOW) - 7200, max_value=int(NOW)).map(float),  # as the API gives
    st.floats(min_value=NOW - 7200, max_value=NOW),
    st.sampled_from([0.0, -5.0, 2.0**32, 2.0**40 + 0.5, math.inf]),
)
kinds = st.one_of(
    st.tuples(
        st.sampled_from(["sms", "viber"]), st.sampled_from(["delivered", "read"]), st.just(1)
    ),
    st.tuples(st.sampled_from(["sms", "rcs"]), st.sampled_from(["failed", "expired"]), st.just(2)),
    # many kinds: the codes' arrays widen past a byte
    st.tuples(st.integers(0, 299).map(lambda n: f"s{n}"), st.just("delivered"), st.just(1)),
)
bounds = st.floats(min_value=NOW - 7500, max_value=NOW + 60)


def answers(table: MessageTable, known: list[int]) -> dict[str, Any]:
    """What a table answers about final messages, comparable with ``==``."""
    entries = {}
    for msg_id in known:
        entry = table.get(msg_id)
        assert isinstance(entry, Final), msg_id
        entries[msg_id] = (entry.series, entry.status, entry.state, table.created_at(msg_id))
    return {
        "entries": entries,
        "all": sorted(table.entries),
        "tracked": len(table),
        "counts": table.status_counts(NOW - 3600),
        "recent": table.status_counts(NOW - 1800, NOW - 600),
        "everything": table.status_counts(-math.inf),
    }


class FinalsMachine(RuleBasedStateMachine):
    """A table of final messages and a dict of what it must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.table = MessageTable()
        self.model: dict[int, tuple[Kind, float]] = {}
        self.saved: list[bytes] = []
        self.pruned = -math.inf  # the tracker never adds what was created before its horizon

    def _new(self, batch: list[tuple[int, float, Kind]]) -> list[tuple[int, float, Kind]]:
        """The messages of ``batch`` the tracker could see for the first time."""
        return [m for m in batch if m[0] not in self.model and m[1] >= self.pruned]

    @rule(batch=st.lists(st.tuples(ids, created, kinds), max_size=30, unique_by=lambda m: m[0]))
    def add_finals(self, batch: list[tuple[int, float, Kind]]) -> None:
        batch = self._new(batch)
        entries = [self.table.final(*kind) for _, _, kind in batch]
        self.table.add_finals([m[0] for m in batch], [m[1] for m in batch], entries)
        self.model.update((msg_id, (kind, at)) for msg_id, at, kind in batch)

    @rule(message=st.tuples(ids, created, kinds))
    def add_final(self, message: tuple[int, float, Kind]) -> None:
        for msg_id, at, kind in self._new([message]):
            self.table.add_final(msg_id, at, self.table.final(*kind))
            self.model[msg_id] = (kind, at)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), status=st.sampled_from(["delivered", "undelivered", "unknown"]))
    def change_status(self, data: st.DataObject, status: str) -> None:
        msg_id = data.draw(st.sampled_from(sorted(self.model)))
        (series, _, state), at = self.model[msg_id]
        self.table.change_final(msg_id, self.table.final(series, status, state))
        self.model[msg_id] = ((series, status, state), at)

    @rule(before=bounds)
    def prune(self, before: float) -> None:
        gone = [msg_id for msg_id, (_, at) in self.model.items() if at < before]
        assert self.table.prune(before) == len(gone)
        for msg_id in gone:
            del self.model[msg_id]
        self.pruned = max(self.pruned, before)

    @rule()
    def save(self) -> None:
        changes = self.table.take_changes()
        if changes is not None:
            self.saved.append(changes)

    @rule()
    def restart_from_what_was_saved(self) -> None:
        """A load: the chunks saved so far, then this poll's, replayed and pruned."""
        self.save()
        again = MessageTable()
        for blob in self.saved:
            again.replay(blob)
        again.prune(self.pruned)  # pruning is not saved: a load prunes by the horizon
        assert answers(again, sorted(self.model)) == answers(self.table, sorted(self.model))

    @rule()
    def compact(self) -> None:
        """A snapshot replaces the chunks, and alone rebuilds the table."""
        self.save()
        self.saved = [self.table.snapshot()]
        again = MessageTable()
        again.replay(self.saved[0])
        assert answers(again, sorted(self.model)) == answers(self.table, sorted(self.model))

    @invariant()
    def answers_as_the_dict_does(self) -> None:
        table = self.table
        assert len(table) == len(self.model)
        for msg_id, ((series, status, state), at) in self.model.items():
            entry = table.get(msg_id)
            assert isinstance(entry, Final), msg_id
            assert (entry.series, entry.status, entry.state) == (series, status, state)
            assert table.created_at(msg_id) == at
        for msg_id in (0, 401, 2**40 - 1, 2**40 + 41, *range(1, 400, 37)):
            if msg_id not in self.model:
                assert table.get(msg_id) is None and table.created_at(msg_id) is None
        assert table.isdisjoint([0, 401]) and table.isdisjoint(self.model) == (not self.model)
        for start, end in ((NOW - 3600, math.inf), (NOW - 1800, NOW - 600), (-math.inf, NOW)):
            want = Counter(
                (series, status)
                for (series, status, _), at in self.model.values()
                if start <= at < end
            )
            high = None if end == math.inf else end
            assert table.status_counts(start, high) == dict(want)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments of four, dicts of the newest of three, decoding blocks of five."""
    monkeypatch.setattr(finals, "SEGMENT", 4)
    monkeypatch.setattr(finals, "HOT", 3)
    monkeypatch.setattr(chunks, "BLOCK", 5)


@pytest.mark.usefixtures("tiny")
def test_the_final_store_answers_as_a_dict_does() -> None:
    FinalsMachine.TestCase.settings = settings(
        max_examples=300,
        stateful_step_count=25,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    FinalsMachine.TestCase().runTest()


@pytest.mark.usefixtures("tiny")
def test_new_messages_in_id_order_fill_segments_and_prune_whole_ones() -> None:
    table = MessageTable()
    kind = table.final("sms", "delivered", 1)
    for poll in range(10):  # ids grow with time, a poll's all above the last one's
        ids = list(range(poll * 10, poll * 10 + 10))
        table.add_finals(ids, [NOW + 60 * poll + i for i in range(10)], [kind] * 10)
    assert len(table._finals._segments) == 25  # how they are cut
    assert table.prune(NOW + 60 * 5) == 50
    assert [table.get(i) for i in (49, 50)] == [None, kind]
    assert sorted(table.entries) == list(range(50, 100))


def test_a_message_pruned_then_seen_again_is_new_again_after_a_restart() -> None:
    table = MessageTable()
    kind = table.final("sms", "delivered", 1)
    table.add_final(2, NOW - 100, kind)
    saved = [table.snapshot()]
    assert table.prune(NOW) == 1  # pruning is not saved: the snapshot still has it
    table.add_finals([2], [NOW + 10], [kind])  # seen again, created later (none given: now)
    saved.append(table.take_changes() or b"")
    again = MessageTable()
    for blob in saved:
        again.replay(blob)
    again.prune(NOW)
    assert again.get(2) is again.final("sms", "delivered", 1)
    assert again.created_at(2) == NOW + 10


def test_a_small_store_keeps_few_of_its_newest_in_dicts_and_finds_every_one() -> None:
    store: FinalStore[str] = FinalStore(["a", "b"])
    ids = list(range(1000, 41_000))
    for start in range(0, len(ids), 3000):  # polls of new messages, appended
        part = ids[start : start + 3000]
        store.put_many(part, [7] * len(part), [1] * len(part), {})
    for msg_id in range(41_000, 42_000):  # and one at a time
        store.put(msg_id, 7.0, 0)
    hot = max(finals.HOT_MIN, len(store) // finals.HOT_SHARE)
    assert hot < finals.HOT
    assert len(store.young) + len(store.old) <= 2 * hot
    assert all(store.entry(i) == "b" for i in ids[::97])
    assert all(store.entry(i) == "a" for i in range(41_000, 42_000))
    assert store.entry(999) is None and store.entry(42_000) is None
