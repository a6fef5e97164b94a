"""The chunk layouts: compact final columns, and state files of the layout before, upgraded."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exporter.config.schema import MetricsConfig
from exporter.tracking import chunks
from exporter.tracking.chunks import NONE, Chunk, LegacyChunk
from exporter.tracking.store import SCHEMA_VERSION, StateError, StateStore
from exporter.tracking.table import MessageTable, Row
from exporter.tracking.tracker import TargetTracker
from tests.fixtures.make_state_v2 import TARGETS
from tests.fixtures.make_state_v2 import view as tracker_view
from tests.test_table import NOW, churn, view

FIXTURES = Path(__file__).parent / "fixtures"


def encode_legacy(table: MessageTable) -> bytes:
    """The whole table as one chunk of the layout before (the encoder of schema 2, kept here)."""
    kinds: dict[tuple[str, str, int], int] = {}
    pending: list[list[Any]] = [[], [], [], [], []]
    final: list[list[Any]] = [[], [], []]
    for msg_id, entry in table.entries.items():
        if isinstance(entry, Row):
            code = kinds.setdefault((entry.series, entry.status, 0), len(kinds))
            values = [msg_id, entry.created_at, code, entry.next_check, entry.deadline]
            for column, value in zip(pending, values, strict=True):
                column.append(NONE if value is None else value)
        else:
            code = kinds.setdefault((entry.series, entry.status, entry.state), len(kinds))
            for column, value in zip(final, [msg_id, table.created_at(msg_id), code], strict=True):
                column.append(value)
    legacy = LegacyChunk(
        kinds=list(kinds),
        pending=tuple(chunks.pack(t, c) for t, c in zip("qdIdd", pending, strict=True)),  # type: ignore[arg-type]
        final=tuple(chunks.pack(t, c) for t, c in zip("qdI", final, strict=True)),  # type: ignore[arg-type]
        deleted=b"",
    )
    return msgspec.msgpack.encode(legacy)


def busy_table(seed: int) -> MessageTable:
    """A table after polls of every kind of change (see tests/test_table.py)."""
    rng = random.Random(seed)
    table = MessageTable()
    for step in range(6):
        churn(table, rng, step, NOW - 3600)
    return table


def schema_2_file(path: Path, blobs: dict[str, list[bytes]]) -> None:
    """A state file of schema 2 holding these chunks."""
    StateStore(str(path)).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    for target, target_blobs in blobs.items():
        for seq, blob in enumerate(target_blobs, 1):
            db.execute("INSERT INTO chunks VALUES (?, ?, ?)", (target, seq, blob))
    db.commit()
    db.close()


def stored_chunks(path: Path) -> dict[str, list[bytes]]:
    """The chunks of a state file, by target."""
    db = sqlite3.connect(path)
    found: dict[str, list[bytes]] = {}
    for target, data in db.execute("SELECT target, data FROM chunks ORDER BY target, seq"):
        found.setdefault(target, []).append(bytes(data))
    db.close()
    return found


@pytest.mark.parametrize("seed", range(5))
def test_a_legacy_chunk_replays_to_the_same_table(seed: int) -> None:
    table = busy_table(seed)
    again = MessageTable()
    again.replay(encode_legacy(table))
    assert isinstance(chunks.decode(encode_legacy(table)), LegacyChunk)
    assert view(again) == view(table)
    compact = MessageTable()
    compact.replay(again.snapshot())
    assert isinstance(chunks.decode(again.snapshot()), Chunk)
    assert view(compact) == view(table)


def test_a_schema_2_file_is_upgraded_in_place_to_one_compact_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    tables = {"a": busy_table(1), "b": busy_table(2)}
    legacy = {name: encode_legacy(table) for name, table in tables.items()}
    schema_2_file(path, {"a": [legacy["a"]], "b": [legacy["b"]]})
    StateStore(str(path)).close()
    upgraded = stored_chunks(path)
    assert sorted(upgraded) == ["a", "b"]
    for name, table in tables.items():
        [blob] = upgraded[name]
        assert isinstance(chunks.decode(blob), Chunk)
        again = MessageTable()
        again.replay(blob)
        assert view(again) == view(table)
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)


def test_a_state_file_written_by_the_exporter_before_loads_as_it_did(tmp_path: Path) -> None:
    """The fixture was written by the exporter of schema 2 (see fixtures/make_state_v2.py)."""
    path = tmp_path / "state.db"
    shutil.copy(FIXTURES / "state-v2.db", path)
    expected = json.loads((FIXTURES / "state-v2.json").read_text())
    store = StateStore(str(path))
    for target in TARGETS:
        tracker = TargetTracker(store, target, metrics=MetricsConfig((1,), (1,)))
        loaded = json.loads(json.dumps(tracker_view(tracker, expected["now"])))
        assert loaded == expected["targets"][target.name], target.name
    store.close()
    for blobs in stored_chunks(path).values():
        assert [type(chunks.decode(blob)) for blob in blobs] == [Chunk]
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)


def test_an_unreadable_chunk_of_schema_2_refuses_the_file_and_names_the_fix(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    schema_2_file(path, {"a": [b"\x94not a chunk"]})
    with pytest.raises(StateError, match=r"--state\.reset"):
        StateStore(str(path))


def test_ordinary_traffic_takes_a_few_bytes_a_message_in_any_chunk() -> None:
    rng = random.Random(1)
    table = MessageTable()
    ids, created, msg_id = [], [], 10**9
    for index in range(20_000):  # ids a few apart, a few messages a second
        msg_id += rng.randrange(1, 6)
        ids.append(msg_id)
        created.append(float(int(NOW) + index // 4 - rng.randrange(0, 3)))
    kinds = [table.final(rng.choice(["sms", "viber"]), "delivered", 1) for _ in ids]
    table.add_finals(ids, created, kinds)
    for index in range(5000):  # the young ones still pending, due in six hours
        at = float(int(NOW) + index // 4)
        table.add_pending(Row(msg_id + 1 + 3 * index, at, "sms", "sent", None, at + 21600))
    changes = table.take_changes()
    assert changes is not None and len(changes) < 4 * 25_000  # one poll's
    assert len(table.snapshot()) < 4 * 25_000


@pytest.mark.parametrize(
    "created",
    [
        [5.0, 5.0, 4.0, 300.0],
        [2.0**31, 1.5, 0.0, 7.25],
        [float("inf"), -3.0, 2.0**40, 1.0],
    ],
)
def test_creation_times_round_trip_exactly_whatever_they_are(created: list[float]) -> None:
    table = MessageTable()
    ids = [3, 1, 2, 900_000]
    table.add_finals(ids, created, [table.final("sms", "delivered", 1)] * len(ids))
    for blob in (table.snapshot(), table.take_changes()):
        assert blob is not None
        again = MessageTable()
        again.replay(blob)
        assert [again.created_at(i) for i in ids] == created
