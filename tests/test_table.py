"""The in-memory message table: its chunks rebuild it exactly, and schema 1 files upgrade."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from exporter.bsg.wire import Epoch, Message, Status
from exporter.config.schema import MetricsConfig, TargetConfig
from exporter.tracking.store import SCHEMA_VERSION, StateStore
from exporter.tracking.table import Final, MessageTable, Row, minute_runs
from exporter.tracking.tracker import TargetTracker

NOW = 1_780_000_000.0
STATUSES: tuple[Status, ...] = ("sent", "accepted", "delivered", "read", "failed")


def view(table: MessageTable) -> dict[str, Any]:
    """Everything a table answers, comparable with ``==``."""
    entries = {
        msg_id: (
            (e.series, e.status, e.next_check, e.deadline, e.created_at)
            if isinstance(e, Row)
            else (e.series, e.status, e.state)
        )
        for msg_id, e in table.entries.items()
    }
    return {
        "entries": entries,
        "pending": table.pending,
        "counts": table.status_counts(NOW - 86400),
        "recent": table.status_counts(NOW - 1800, NOW - 600),
        "due": table.due(NOW + 86400),
        "between": table.pending_created_between(NOW - 3600, NOW),
        "expired": sorted(r.id for r in table.expired(NOW + 7200)),
        "oldest": table.oldest_pending(),
    }


def churn(table: MessageTable, rng: random.Random, step: int, since: float) -> None:
    """One poll's worth of random changes of every kind, new messages created after ``since``."""
    base = step * 100
    created = [rng.uniform(since, NOW) for _ in range(60)]
    created[:40] = sorted(created[:40])  # a run in creation order, then stragglers
    finals = [
        table.final(rng.choice(["sms", "viber"]), "delivered", 1 + step % 2) for _ in range(40)
    ]
    table.add_finals([base + i for i in range(40)], created[:40], finals)
    for i in range(40, 60):
        deadline = created[i] + rng.choice([1800.0, 7200.0])
        table.add_pending(Row(base + i, created[i], "sms", "sent", None, deadline))
    rows = [e for e in table.entries.values() if isinstance(e, Row)]
    rng.shuffle(rows)
    for row in rows[:5]:
        table.finalize(row, table.final(row.series, rng.choice(["delivered", "failed"]), 1))
    for row in rows[5:8]:
        row.status, row.next_check = "accepted", NOW + rng.uniform(-600, 600)
        table.update(row)
    table.abandon(rows[8:9])
    table.mark_backlog([r.id for r in rows[9:11]], NOW)
    final_ids = [i for i, e in table.entries.items() if isinstance(e, Final)]
    for msg_id in rng.sample(final_ids, 3):
        table.change_final(msg_id, table.final("sms", "read", 1))


def test_chunks_saved_poll_by_poll_rebuild_the_same_table() -> None:
    rng = random.Random(7)
    live = MessageTable()
    chunks: list[bytes] = []
    for step in range(12):
        # The tracker ignores messages older than what it pruned: so do the new ones here.
        churn(live, rng, step, NOW - 3600 if step <= 8 else NOW - 1800)
        if step == 8:
            removed = live.prune(NOW - 1800)
            assert removed > 0
        chunk = live.take_changes()
        assert chunk is not None
        chunks.append(chunk)
        again = MessageTable()
        for saved in chunks:
            again.replay(saved)
        if step >= 8:
            again.prune(NOW - 1800)  # pruning is not saved: a load prunes by the horizon
        assert view(again) == view(live), step
    snapshot = MessageTable()
    snapshot.replay(live.snapshot())
    snapshot.prune(NOW - 1800)
    assert view(snapshot) == view(live)
    assert live.take_changes() is None  # nothing changed since


def test_a_message_finalized_after_its_minute_was_pruned_is_forgotten() -> None:
    table = MessageTable()
    table.add_pending(Row(1, NOW - 100, "sms", "sent", None, NOW + 3600))
    table.add_finals([2], [NOW - 100], [table.final("sms", "delivered", 1)])
    assert table.prune(NOW) == 1  # the final one goes, the pending one stays
    assert set(table.entries) == {1} and table.pending == 1
    table.finalize(table.entries[1], table.final("sms", "delivered", 1))  # type: ignore[arg-type]
    assert table.entries == {} and table.pending == 0


def tracker_on(store: StateStore) -> TargetTracker:
    """The target "all" of a two-hour window over ``store``."""
    return TargetTracker(store, TargetConfig("all", 7200, None), metrics=MetricsConfig((1,), (1,)))


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE targets (name TEXT PRIMARY KEY, identity TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE messages (
    target TEXT NOT NULL, id INTEGER NOT NULL, created_at REAL NOT NULL, series TEXT NOT NULL,
    status TEXT NOT NULL, state INTEGER NOT NULL, next_check REAL, deadline REAL,
    PRIMARY KEY (target, id)
) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema', '1');
"""


def test_a_schema_1_file_is_upgraded_with_every_message(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    new = tracker_on(StateStore(":memory:"))
    new.apply([], NOW)  # a saved target record, as schema 1 wrote it
    data = new._store._db.execute("SELECT identity, data FROM targets").fetchone()
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO targets VALUES ('all', ?, ?)", data)
    rows = [
        ("all", 1, NOW - 60, "sms", "delivered", 1, None, None),
        ("all", 2, NOW - 50, "viber", "read", 2, None, None),
        ("all", 3, NOW - 40, "sms", "sent", 0, NOW + 60, NOW + 3600),
    ]
    db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    store = StateStore(str(path))
    tracker = tracker_on(store)
    snap = tracker.snapshot(NOW)
    assert (snap.tracked, snap.pending) == (3, 1)
    assert dict(snap.window) == {("sms", "delivered"): 1, ("viber", "read"): 1, ("sms", "sent"): 1}
    assert tracker.rechecks(NOW + 61).due[:1] == ((3, NOW - 40),)  # its own re-check survived
    store.close()
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "messages" not in tables
    assert db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)


def test_chunks_are_replaced_by_a_snapshot_and_a_restart_resumes_from_it(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr("exporter.tracking.tracker.COMPACT_MIN_CHANGES", -(10**9))  # on every save
    store = StateStore(":memory:")
    live = tracker_on(store)
    rng = random.Random(3)
    for step in range(6):
        now = NOW + 60 * step
        messages = [
            Message(id=i, status=rng.choice(STATUSES), channel="sms", created_at=Epoch(now - i))
            for i in range(step * 10, step * 10 + 30)  # each poll re-reads 20 of the last one
        ]
        live.apply(messages, now)
    chunks = store._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    assert chunks == 1  # a snapshot replaced the chunks of single polls
    again = tracker_on(store)
    loaded, saved = again.snapshot(NOW + 300), live.snapshot(NOW + 300)
    assert loaded.tracked == 30 + 5 * 10 and loaded.pending > 0
    assert replace(loaded, delivery_latency={}, send_delay={}) == replace(
        saved, delivery_latency={}, send_delay={}
    )
    assert loaded.delivery_latency["sms"].counts == saved.delivery_latency["sms"].counts


@pytest.mark.parametrize("seed", range(20))
def test_minute_runs_cover_every_message_once_in_its_minute(seed: int) -> None:
    rng = random.Random(seed)
    stretches = [  # sorted stretches, as a poll's new messages then older ones read again
        sorted(NOW - rng.uniform(0, 900) for _ in range(rng.randrange(0, 300)))
        for _ in range(rng.randrange(1, 4))
    ]
    created = [t for stretch in stretches for t in stretch]
    if seed % 5 == 0:
        rng.shuffle(created)  # no order at all: still right, one message at a time
    runs = list(minute_runs(created))
    assert sum(end - start for _, start, end in runs) == len(created)
    assert [start for _, start, _ in runs] == [0, *(end for _, _, end in runs[:-1])]
    for minute, start, end in runs:
        assert end > start
        assert all(int(t // 60) == minute for t in created[start:end])
    assert len(runs) <= 16 * len(stretches) or seed % 5 == 0  # a handful of runs per stretch


@pytest.mark.parametrize("seed", range(4))
def test_pending_queries_answer_by_exact_times_whatever_the_index_buckets(seed: int) -> None:
    """Rows share index buckets (an hour each): every query still answers to the second."""
    rng = random.Random(seed)
    table = MessageTable()
    rows = []
    for msg_id in range(1, 400):
        created = NOW - rng.uniform(0, 3 * 3600)
        deadline = None if rng.random() < 0.2 else created + rng.uniform(0, 7200)
        rows.append(Row(msg_id, created, "sms", "sent", None, deadline))
        table.add_pending(rows[-1])
    for row in rows[::7]:  # some leave again
        table.finalize(row, table.final("sms", "delivered", 1))
    rows = [row for index, row in enumerate(rows) if index % 7]
    assert table.oldest_pending() == min(row.created_at for row in rows)
    for _ in range(60):
        start, end = sorted(NOW - rng.uniform(-60, 3.2 * 3600) for _ in range(2))
        inside = [r for r in rows if start < r.created_at <= end]
        assert table.pending_created_between(start, end) == sorted(
            ((r.id, r.created_at) for r in inside), key=lambda item: (item[1], item[0])
        )
        counted = sum(start <= r.created_at < end for r in rows)
        assert table.status_counts(start, end).get(("sms", "sent"), 0) == counted
        moment = NOW - rng.uniform(-7200, 3 * 3600)
        due = [r for r in rows if r.deadline is not None and r.deadline <= moment]
        assert sorted(r.id for r in table.expired(moment)) == sorted(r.id for r in due)
        assert sorted(table.validity_ended(moment)) == sorted((r.id, r.created_at) for r in due)
