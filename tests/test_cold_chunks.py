"""A cold read committed in chunks: each chunk a poll of its own, read on in the same cycle."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter.bsg.paging import MessagePass, MessageQuery
from exporter.simulator import DEMO_API_KEY, ManualClock, Simulator, SimulatorServer
from tests.harness import InProcessExporter, in_process, value

PRICE = {"value": "0.0100000", "currency": "EUR"}
FINAL, PENDING = 2300, 300
"""Messages of the baseline: 2,600 in all, 6 pages of 500 (the last one short)."""
CHUNK = 2


def baseline(sim: Simulator, clock: ManualClock) -> list[int]:
    """Final messages, then pending ones, two a second from 2,000 s ago; the pending ones' ids."""
    first = clock.now() - 2000

    def specs(status: str, count: int, offset: int) -> list[dict[str, Any]]:
        return [
            {"status": status, "amount": PRICE, "created_at": first + (offset + i) // 2}
            for i in range(count)
        ]

    sim.create_messages(specs("delivered", FINAL, 0))
    return sim.create_messages(specs("sent", PENDING, FINAL))


def start(url: str, state: Path, clock: ManualClock, **kw: Any) -> InProcessExporter:
    """An exporter of one target on a state file, its cold reads committed every 2 pages."""
    exporter = in_process(
        url, [{"name": "all", "window": "1h"}], DEMO_API_KEY, clock.now, state_path=str(state), **kw
    )
    # The wiring builds the poller with the default chunk: made small, a few pages show it.
    exporter.app.poller._cold_chunk = CHUNK
    return exporter


def delivered(samples: Any) -> float:
    """The target's delivered sms messages counted."""
    return value(samples, "bsg_messages_total", target="all", channel="sms", status="delivered")


def deliver(sim: Simulator, ids: list[int]) -> None:
    """Turn these messages delivered."""
    for msg_id in ids:
        sim.set_status(msg_id, "delivered")


def polls(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """The poll_finished and poll_failed lines."""
    return [e for e in logs if e["event"] in ("poll_finished", "poll_failed")]


@pytest.fixture
def rig(
    manual_simulator: tuple[ManualClock, Simulator, SimulatorServer], tmp_path: Path
) -> Iterator[tuple[ManualClock, Simulator, SimulatorServer, Path]]:
    """The simulator and a state file."""
    clock, sim, server = manual_simulator
    yield clock, sim, server, tmp_path / "state.db"


def test_a_cold_read_is_committed_chunk_by_chunk_in_one_cycle_and_counts_exactly(
    rig: tuple[ManualClock, Simulator, SimulatorServer, Path],
) -> None:
    clock, sim, server, state = rig
    pending = baseline(sim, clock)
    exporter = start(server.url, state, clock)
    try:
        before = sim.request_counts().get("messages", 0)
        with capture_logs() as logs:
            exporter.cycle()
        lines = polls(logs)
        # Three polls, each saved: pages 1-2, 3-4, then 5 and the short 6th that ends the read.
        assert [(e["event"], e["chunk"], e["pages"]) for e in lines] == [
            ("poll_finished", 1, 2),
            ("poll_finished", 2, 2),
            ("poll_finished", 3, 2),
        ]
        assert [e["tracked"] for e in lines] == [1000, 2000, 2600]
        # As many requests as one pass over the window: each chunk reads on where the last
        # one stopped, with the same filter[to].
        assert sim.request_counts()["messages"] - before == 6
        assert lines[-1]["pending"] == PENDING
        samples = exporter.samples()
        assert delivered(samples) == 0
        # The baseline's pending messages count when final, once each.
        clock.advance(60)
        deliver(sim, pending)
        with capture_logs() as logs:
            exporter.cycle()
        assert [e["chunk"] for e in polls(logs)] == [1]  # no longer cold: one poll
        clock.advance(60)
        exporter.cycle()
        samples = exporter.samples()
        assert delivered(samples) == PENDING
        assert value(samples, "bsg_messages_submitted_total", target="all", channel="sms") == 0
        assert exporter.app.state.targets["all"].snapshot.pending == 0
    finally:
        exporter.close()


def test_a_chunk_that_fails_keeps_the_chunks_before_and_the_read_resumes_exactly(
    rig: tuple[ManualClock, Simulator, SimulatorServer, Path],
) -> None:
    clock, sim, server, state = rig
    pending = baseline(sim, clock)
    exporter = start(server.url, state, clock)
    client = exporter.app.client
    read_messages = client.read_messages
    calls: list[MessageQuery] = []

    def failing_third(query: MessageQuery) -> MessagePass:
        calls.append(query)
        if len(calls) == 3:  # the third chunk's first page: refused
            sim.add_fault("http_status", count=1, status=400)
        return read_messages(query)

    client.read_messages = failing_third  # type: ignore[method-assign]
    try:
        with capture_logs() as logs:
            exporter.cycle()
        assert [(e["event"], e.get("chunk")) for e in polls(logs)] == [
            ("poll_finished", 1),
            ("poll_finished", 2),
            ("poll_failed", None),
        ]
        assert [q.offset for q in calls] == [0, 1000, 2000]
    finally:
        exporter.close()
    # A restart: what the two chunks saved is there, and the read resumes after it.
    exporter = start(server.url, state, clock)
    try:
        assert exporter.app.state.targets["all"].snapshot.tracked == 2000
        clock.advance(60)
        with capture_logs() as logs:
            exporter.cycle()
        # From a little before the last message the saved chunks read: 2 pages, one short.
        assert [(e["chunk"], e["pages"], e["tracked"]) for e in polls(logs)] == [(1, 2, 2600)]
        assert polls(logs)[0]["pending"] == PENDING
        samples = exporter.samples()
        assert delivered(samples) == 0
        clock.advance(60)
        deliver(sim, pending)
        exporter.cycle()
        clock.advance(60)
        exporter.cycle()
        samples = exporter.samples()
        assert delivered(samples) == PENDING
        assert value(samples, "bsg_messages_submitted_total", target="all", channel="sms") == 0
        assert value(samples, "bsg_up", target="all") == 1
    finally:
        exporter.close()


def test_a_budget_spent_mid_chunk_ends_the_cycle_and_the_next_reads_on(
    rig: tuple[ManualClock, Simulator, SimulatorServer, Path],
) -> None:
    clock, sim, server, state = rig
    baseline(sim, clock)
    exporter = start(server.url, state, clock, max_requests_per_minute=5)
    try:
        with capture_logs() as logs:
            exporter.cycle()
        lines = polls(logs)
        # Five requests: the login, pages 1-2, 3-4; then the budget is spent (no empty chunk).
        assert [(e["chunk"], e["pages"], e["budget_short"]) for e in lines] == [
            (1, 2, False),
            (2, 2, False),
        ]
        assert sim.request_counts()["messages"] == 4
        clock.advance(61)
        exporter.cycle()
        clock.advance(61)
        exporter.cycle()
        snapshot = exporter.app.state.targets["all"].snapshot
        assert (snapshot.tracked, snapshot.pending) == (FINAL + PENDING, PENDING)
        samples = exporter.samples()
        assert delivered(samples) == 0
    finally:
        exporter.close()


def _intercept_pages(exporter: InProcessExporter, change: Any) -> None:
    """Pass every page request of the new-messages read through ``change(params)`` first."""
    client = exporter.app.client
    get_page = client._get_page

    def changed(params: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if params.get("sort") == "id" and "filter[id]" not in params:
            params = change(params)
        return get_page(params, *args, **kwargs)

    client._get_page = changed  # type: ignore[method-assign, assignment]


def test_rows_shifted_in_an_early_chunk_are_found_by_reading_the_pass_again(
    rig: tuple[ManualClock, Simulator, SimulatorServer, Path],
) -> None:
    """A page that repeats rows skips as many: the chunk it ends cannot see it (its total counts
    the rows after it too), so the whole read is checked once its last chunk is read."""
    clock, sim, server, state = rig
    baseline(sim, clock)
    exporter = start(server.url, state, clock, count_existing=True)
    shifted: list[int] = []

    def shift_once(params: dict[str, Any]) -> dict[str, Any]:
        if params["page[offset]"] == 500 and not shifted:  # the first chunk's second page
            shifted.append(1)
            sim.add_fault("duplicate_rows", count=1, n=5)
        return params

    _intercept_pages(exporter, shift_once)
    try:
        with capture_logs() as logs:
            exporter.cycle()
        assert shifted and any(e["event"] == "pass_reread" for e in logs)
        # Every final message of the baseline counted once, none missed (count_existing_on_start).
        samples = exporter.samples()
        assert delivered(samples) == FINAL
        snapshot = exporter.app.state.targets["all"].snapshot
        assert (snapshot.tracked, snapshot.pending) == (FINAL + PENDING, PENDING)
        clock.advance(60)
        exporter.cycle()
        assert (
            value(exporter.samples(), "bsg_messages_submitted_total", target="all", channel="sms")
            == 0
        )
    finally:
        exporter.close()


def test_an_api_that_ignores_the_offset_costs_a_cold_read_one_pass_a_cycle(
    rig: tuple[ManualClock, Simulator, SimulatorServer, Path],
) -> None:
    """Full pages forever: the pass's cap (its total's pages and a few) holds over its chunks."""
    clock, sim, server, state = rig
    baseline(sim, clock)
    exporter = start(server.url, state, clock)
    _intercept_pages(exporter, lambda params: {**params, "page[offset]": 0})
    try:
        for _ in range(2):
            before = sim.request_counts().get("messages", 0)
            exporter.cycle()
            # 2,600 rows: 5 pages of the total, 20 more at most; then the next cycle reads on.
            assert sim.request_counts()["messages"] - before <= 2600 // 500 + 20 + 1
            assert value(exporter.samples(), "bsg_up", target="all") == 1
            clock.advance(61)
    finally:
        exporter.close()
