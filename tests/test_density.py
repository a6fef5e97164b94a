"""The density by minute of creation: against a plain dict, saved and restored, and as the
tracker keeps it for the read planner (across a restart, and forgetting what left the window)."""

from __future__ import annotations

import json
import sqlite3
from itertools import accumulate
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from exporter.bsg.wire import Epoch, Message
from exporter.tracking.codec import Counters, Progress, dump, restore
from exporter.tracking.density import MinuteDensity
from exporter.tracking.store import MEMORY, SCHEMA_VERSION, StateStore
from exporter.tracking.tracker import PRUNE_MARGIN
from tests.test_tracker import NOW, WINDOW, tracker

MINUTE = int(NOW // 60)
minutes = st.integers(min_value=MINUTE - 200, max_value=MINUTE + 200)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), minutes, st.integers(min_value=1, max_value=10**6)),
        st.tuples(st.just("keep_from"), minutes, st.just(0)),
    ),
    max_size=60,
)


def model_between(model: dict[int, int], first: int, last: int) -> int:
    """What a dict of counts by minute says of the minutes ``first`` to ``last``."""
    return sum(count for minute, count in model.items() if first <= minute <= last)


@given(operations, st.lists(st.tuples(minutes, minutes), min_size=1, max_size=8))
def test_the_density_answers_what_a_dict_of_minutes_answers(
    steps: list[tuple[str, int, int]], ranges: list[tuple[int, int]]
) -> None:
    density, model = MinuteDensity(), dict[int, int]()
    for action, minute, count in steps:
        if action == "add":
            density.add(minute, count)
            model[minute] = model.get(minute, 0) + count
        else:
            density.keep_from(minute)
            model = {m: n for m, n in model.items() if m >= minute}
        first, last = ranges[len(model) % len(ranges)]  # asked between changes too
        assert density.between(first, last) == model_between(model, first, last)
    assert list(density.items()) == sorted(model.items())
    assert len(density) == len(model)
    for first, last in ranges:
        assert density.between(first, last) == model_between(model, first, last)


@given(st.dictionaries(minutes, st.integers(min_value=1, max_value=2**40), max_size=50))
def test_the_density_is_saved_and_restored_whole(counts: dict[int, int]) -> None:
    c, p = Counters(), Progress()
    p.density = MinuteDensity(counts.items())
    saved = dump(c, p)
    restored = Progress()
    restore(Counters(), restored, saved, (1.0,), (1.0,))
    assert list(restored.density.items()) == sorted(counts.items())


def test_a_density_saved_as_pairs_by_an_earlier_version_is_read() -> None:
    c, p = Counters(), Progress()
    saved = dump(c, p)
    saved["density"] = [[MINUTE + 3, 7], [MINUTE, 2], [MINUTE + 1, 5]]  # as 0.2.0 saved it
    restore(c, p, saved, (1.0,), (1.0,))
    assert list(p.density.items()) == [(MINUTE, 2), (MINUTE + 1, 5), (MINUTE + 3, 7)]
    assert p.density.between(MINUTE + 1, MINUTE + 3) == 12


def test_the_tracker_keeps_the_density_across_a_restart_and_forgets_what_left() -> None:
    store = StateStore(MEMORY)
    t = tracker(store=store)
    created = [NOW - 3000 + 7 * i for i in range(400)]  # ~9 a minute over 47 minutes
    t.apply([Message(i, "delivered", created_at=Epoch(at)) for i, at in enumerate(created)], NOW)

    def seen(start: float, end: float) -> int:
        """Messages created in the whole minutes of ``start`` to ``end``."""
        return sum(1 for at in created if start // 60 <= at // 60 <= end // 60)

    spans = [(NOW - 3000, NOW), (NOW - 2000, NOW - 1000), (NOW - 1234, NOW - 1234), (NOW, NOW)]
    assert [t.density(*span) for span in spans] == [seen(*span) for span in spans]
    again = tracker(store=store)
    assert [again.density(*span) for span in spans] == [seen(*span) for span in spans]
    later = NOW + WINDOW  # most of the 47 minutes left the window and its margin
    kept_from = later - WINDOW - PRUNE_MARGIN
    again.apply([], later)
    assert again.density(NOW - 3000, kept_from - 60) == 0 < seen(NOW - 3000, kept_from - 60)
    assert again.density(kept_from, NOW) == seen(kept_from, NOW) > 0


def test_a_state_file_of_schema_3_keeps_its_density_and_is_marked_anew(tmp_path: Path) -> None:
    """Schema 3 saved the density as pairs: it is read as it is, and the file says schema 4,
    so that an exporter of schema 3 refuses it rather than misread the new form."""
    path = str(tmp_path / "s.db")
    store = StateStore(path)
    created = [NOW - 3000 + 11 * i for i in range(250)]
    tracker(store=store).apply(
        [Message(i, "delivered", created_at=Epoch(at)) for i, at in enumerate(created)], NOW
    )
    store.close()
    db = sqlite3.connect(path)
    saved = json.loads(db.execute("SELECT data FROM targets").fetchone()[0])
    form = saved["density"]
    minutes = accumulate(form["steps"], initial=form["first"])
    saved["density"] = [[m, n] for m, n in zip(minutes, form["counts"], strict=True)]
    with db:
        db.execute("UPDATE targets SET data = ?", (json.dumps(saved),))
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    db.close()
    again = tracker(store=StateStore(path))
    assert again.density(NOW - 3000, NOW) == len(created)
    assert again.density(NOW - 1500, NOW - 1000) == sum(
        1 for at in created if (NOW - 1500) // 60 <= at // 60 <= (NOW - 1000) // 60
    )
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'schema'")
    assert version.fetchone()[0] == str(SCHEMA_VERSION) == "4"
