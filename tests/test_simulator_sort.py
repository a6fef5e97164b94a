"""sort=delivered over HTTP loopback: MySQL's order off the report index, and its bent modes."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from exporter.simulator import CampaignProfile, ManualClock, Simulator, TrafficProfile
from exporter.simulator.__main__ import build_parser, make_server
from exporter.simulator.traffic import FINAL_STATUSES
from tests.test_simulator import T0, TLS, Env, Factory, serve, stamp

__all__ = ["serve"]  # the fixture, shared with the simulator's other tests

MODES = ("mysql", "ignored", "nulls_first", "no_direction")
WAYS = ("asc", "desc")
Row = dict[str, Any]


def traffic(backfill: float = 2400.0, scale: float = 1.0) -> TrafficProfile:
    """Two campaigns whose messages expire within hours: reports and NULLs mixed."""
    return TrafficProfile(
        campaigns=(
            CampaignProfile(7, 1.5 * scale, channels={"sms": 0.7, "viber": 0.3}, validity_hours=1),
            CampaignProfile(8, 0.5 * scale, reference_ids=True, validity_hours=2),
        ),
        backfill=backfill,
    )


def expected(rows: list[Row], mode: str, way: str) -> list[int]:
    """The ids in the order `mode` must serve `rows` (any order): a brute-force sort."""
    rows = sorted(rows, key=lambda r: r["id"])
    if mode == "ignored":
        ids = [r["id"] for r in rows]
        return ids[::-1] if way == "desc" else ids
    desc = way == "desc" and mode != "no_direction"
    nulls = [r["id"] for r in rows if r["delivered_at"] is None]
    # the API's timestamps are fixed-width: as strings they sort in time order
    shown = sorted((r["delivered_at"], r["id"]) for r in rows if r["delivered_at"] is not None)
    reported = [i for _, i in shown]
    if desc:
        nulls.reverse()
        reported.reverse()
    return reported + nulls if mode == "mysql" and desc else nulls + reported


def served(env: Env, way: str, limit: int = 250, **filters: Any) -> list[Row]:
    """Every row of sort=delivered, page by page."""
    rows: list[Row] = []
    total = 1
    while len(rows) < total:
        params = {"sort": "delivered", "way": way, "page[limit]": limit, **filters}
        body = env.page(**{**params, "page[offset]": len(rows)})
        total = body["meta"]["page"]["total"]
        rows += body["data"]
        assert body["data"] or not total
    return rows


def set_sort(env: Env, **settings: Any) -> dict[str, Any]:
    """PUT /_sim/sort, which must succeed."""
    r = env.admin("sort", settings, method="PUT")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_every_mode_matches(
    env: Env, limit: int = 250, filters: dict[str, Any] | None = None
) -> None:
    """Each mode, both ways, pages exactly as the brute-force sort of the selection."""
    filters = filters or {}
    selection, _ = env.all_rows(**filters)
    assert len(selection) > limit  # more than a page: the report index serves these
    for mode, way in itertools.product(MODES, WAYS):
        set_sort(env, delivered=mode)
        ids = [r["id"] for r in served(env, way, limit, **filters)]
        assert ids == expected(selection, mode, way), (mode, way, filters)
    set_sort(env, delivered="mysql")


def delivered_times(rows: list[Row]) -> list[str | None]:
    """The delivered_at column."""
    return [r["delivered_at"] for r in rows]


def test_each_mode_orders_both_ways(serve: Factory) -> None:
    env = serve(traffic())
    env.clock.advance(30)
    every = {way: served(env, way) for way in WAYS}
    asc, desc = (delivered_times(every[w]) for w in WAYS)
    nulls = asc.count(None)
    assert 0 < nulls < len(asc) // 2
    shown = [t for t in asc if t is not None]
    assert asc[:nulls] == [None] * nulls and asc[nulls:] == sorted(shown)
    assert desc[-nulls:] == [None] * nulls and desc[:-nulls] == asc[nulls:][::-1]
    ids = {w: [r["id"] for r in every[w]] for w in WAYS}
    set_sort(env, delivered="ignored")
    assert [r["id"] for r in served(env, "asc")] == sorted(ids["asc"])
    assert [r["id"] for r in served(env, "desc")] == sorted(ids["asc"], reverse=True)
    set_sort(env, delivered="nulls_first")
    assert [r["id"] for r in served(env, "asc")] == ids["asc"]
    first = served(env, "desc")
    assert delivered_times(first) == [None] * nulls + asc[nulls:][::-1]
    assert [r["id"] for r in first[nulls:]] == ids["desc"][:-nulls]
    assert [r["id"] for r in first[:nulls]] == ids["desc"][-nulls:]  # NULLs by id, descending
    set_sort(env, delivered="no_direction")
    assert [r["id"] for r in served(env, "desc")] == ids["asc"]
    assert [r["id"] for r in served(env, "asc")] == ids["asc"]


def test_ties_and_nulls_follow_the_way(serve: Factory) -> None:
    env = serve(traffic(backfill=0.0))
    same = [{"status": "delivered", "created_at": T0 - 50, "delivered_at": T0 - 10}] * 20
    pending = [{"status": "sent", "created_at": T0 - 40}] * 20
    ids = env.sim.create_messages(same + pending)
    by_way = {w: [r["id"] for r in served(env, w, limit=15)] for w in WAYS}
    assert by_way["asc"] == ids[20:] + ids[:20]  # NULLs, then one report time: by id
    assert by_way["desc"] == ids[:20][::-1] + ids[20:][::-1]
    assert env.sim.store.reports.active


def test_fast_path_matches_a_brute_force_sort_under_filters(serve: Factory) -> None:
    env = serve(traffic())
    env.clock.advance(45)
    assert_every_mode_matches(env)
    assert_every_mode_matches(env, 100, {"filter[campaign_id]": 8})
    window = {"filter[from]": stamp(T0 - 1500), "filter[to]": stamp(T0 - 300)}
    assert_every_mode_matches(env, 250, window)
    assert_every_mode_matches(env, 40, {**window, "filter[campaign_id]": 8})
    reports = env.sim.store.reports
    assert reports.active and len(reports) == len(env.sim.store)
    ref = next(r for r in env.all_rows()[0] if r["reference_id"])
    one = served(env, "desc", **{"filter[reference_id]": ref["reference_id"]})
    assert [r["id"] for r in one] == [ref["id"]]
    env.clock.set(T0 - 600)  # back in time: reports not yet made are NULLs again
    assert_every_mode_matches(env)


def test_fast_path_matches_after_pruning(serve: Factory) -> None:
    env = serve(traffic(backfill=3000.0), retention=1800.0)
    assert_every_mode_matches(env)  # the index is in use before anything is pruned
    before = len(env.sim.store)
    env.clock.advance(700)  # past the pruning period: messages older than 30 min go
    assert_every_mode_matches(env)
    reports = env.sim.store.reports
    assert len(env.sim.store) < before and len(reports) == len(env.sim.store)
    oldest = min(r["created_at"] for r in env.all_rows()[0])
    assert oldest >= stamp(env.clock.now() - 1800)
    set_sort(env, reportless=["failed", "expired"])  # the lists by status were pruned too
    assert_every_mode_matches(env, limit=400)


def test_manual_messages_are_refiled_when_their_status_changes(serve: Factory) -> None:
    env = serve(traffic(backfill=1200.0))
    early = env.sim.create_messages(
        [
            {"status": "sent", "created_at": T0 - 900},
            {"status": "accepted", "created_at": T0 - 600},
            {"status": "delivered", "created_at": T0 - 800, "delivered_at": T0 - 700},
            {"status": "delivered", "created_at": T0 - 60, "delivered_at": T0 + 5000},
        ]
    )
    assert_every_mode_matches(env)
    automatic = [r for r in env.all_rows()[0] if r["id"] not in early]
    pending = next(r["id"] for r in automatic if r["delivered_at"] is None)
    final = next(r["id"] for r in automatic if r["delivered_at"] is not None)
    env.clock.advance(20)
    late = env.sim.create_messages([{"status": "sent", "created_at": T0 - 3000}])  # backdated
    for msg_id, status in ((early[0], "delivered"), (pending, "failed"), (final, "read")):
        r = env.admin("messages/status", {"id": msg_id, "status": status})
        assert r.status_code == 200, r.text
    env.clock.advance(20)
    env.sim.set_status(early[1], "sent")  # still no report
    env.sim.set_status(late[0], "expired")
    assert_every_mode_matches(env)
    records = {r["id"]: r for r in env.all_rows()[0]}
    assert records[pending]["delivered_at"] == stamp(T0 + 20)
    assert records[early[1]]["delivered_at"] is None
    assert records[early[3]]["delivered_at"] == stamp(T0 + 5000)
    top = served(env, "desc", limit=15)[0]
    assert top["id"] == early[3]  # a report time set by hand shows even ahead of the clock


def test_modes_switch_while_running(serve: Factory) -> None:
    env = serve(traffic(), delivered_sort="no_direction", reportless=["unknown"])
    env.clock.advance(10)
    shown = env.admin("sort", method="GET").json()
    assert shown == {"delivered": "no_direction", "reportless": ["unknown"]}
    params = {"sort": "delivered", "way": "desc", "page[limit]": 50}
    pages = {}
    for mode in MODES:
        assert set_sort(env, delivered=mode) == {"delivered": mode, "reportless": ["unknown"]}
        pages[mode] = [r["id"] for r in env.page(**params)["data"]]
        assert env.admin("sort", method="GET").json()["delivered"] == mode
    assert len({tuple(ids) for ids in pages.values()}) == len(MODES)
    assert set_sort(env, reportless=[]) == {"delivered": "no_direction", "reportless": []}
    assert env.sim.sorting() == {"delivered": "no_direction", "reportless": []}


def test_reportless_statuses_are_served_and_sorted_as_nulls(serve: Factory) -> None:
    env = serve(traffic(backfill=4500.0, scale=0.5), reportless=("expired",))  # some expired
    env.clock.advance(60)
    cached, _ = env.all_rows()  # renders (and caches) every record
    assert set_sort(env, reportless=["unknown", "expired", "failed"])["reportless"] == [
        "expired", "failed", "unknown",
    ]  # fmt: skip
    rows, _ = env.all_rows()
    hidden = {"expired", "failed", "unknown"}
    assert {r["status"] for r in rows} >= {"expired", "failed", "delivered"}
    for r in rows:
        if r["status"] in hidden:
            assert r["delivered_at"] is None, r
        elif r["status"] in FINAL_STATUSES:
            assert r["delivered_at"] is not None, r
    failed = {r["id"] for r in cached if r["status"] == "failed" and r["delivered_at"]}
    assert failed and all(r["delivered_at"] is None for r in rows if r["id"] in failed)
    truth = {t["id"]: t for t in env.truth()["messages"]}
    assert all(truth[r["id"]]["delivered_at"] is None for r in rows if r["status"] in hidden)
    assert_every_mode_matches(env, limit=400)
    assert_every_mode_matches(env, 100, {"filter[campaign_id]": 8})
    delivered = [r["id"] for r in rows if r["status"] == "delivered"]
    env.sim.set_status(delivered[0], "unknown")  # refiled under its new status: a NULL now
    env.sim.set_status(delivered[1], "delivered")
    env.sim.create_messages([{"status": "expired", "created_at": T0 - 100}])
    assert_every_mode_matches(env, limit=400)
    top = served(env, "asc", limit=400)
    assert delivered[0] in {r["id"] for r in top if r["delivered_at"] is None}
    set_sort(env, reportless=["read"])  # the commonest reports: found by a scan of the selection
    rows, _ = env.all_rows()
    assert {r["status"] for r in rows} >= {"read", "delivered"}
    for r in rows:
        if r["status"] in ("read", "delivered"):
            assert (r["delivered_at"] is None) == (r["status"] == "read"), r
    assert_every_mode_matches(env, limit=400)
    set_sort(env, reportless=[])
    again = {r["id"]: r["delivered_at"] for r in env.all_rows()[0]}
    assert all(again[i] is not None for i in failed)


def test_a_descending_top_page_draws_only_its_own_timelines(serve: Factory) -> None:
    prof = TrafficProfile(campaigns=(CampaignProfile(1, 20.0),), backfill=1500.0)
    env = serve(prof)
    first = env.page(**{"sort": "delivered", "way": "desc", "page[limit]": 500})
    deeper = {"sort": "delivered", "way": "desc", "page[limit]": 500, "page[offset]": 5000}
    env.page(**deeper)
    store = env.sim.store
    drawn = sum(m.timeline is not None for m in store.by_id.values())
    assert first["meta"]["page"]["total"] == len(store) > 25_000
    assert drawn <= 1000  # the two pages' rows: the rest of the day was never materialized
    env.clock.advance(60)
    env.page(**{"sort": "delivered", "way": "desc", "page[limit]": 500})
    assert len(store.reports) == len(store)


def test_bad_sort_settings_are_refused(serve: Factory) -> None:
    env = serve(traffic(backfill=60.0))
    bodies: list[Any] = [
        {"delivered": "random"},
        {"delivered": 3},
        {"reportless": ["sent"]},
        {"reportless": ["lost"]},
        {"reportless": "expired"},
        {"reportless": [["expired"]]},
        {"colour": "red"},
        {},
        [],
    ]
    for body in bodies:
        r = env.admin("sort", body, method="PUT")
        assert r.status_code == 400, (body, r.text)
        assert r.json()["message"], body
    r = env.admin("sort", {"delivered": "ignored", "reportless": ["sent"]}, method="PUT")
    assert r.status_code == 400 and "sent" in r.json()["message"]
    assert env.admin("sort", method="GET").json() == {"delivered": "mysql", "reportless": []}
    assert "mysql" in env.admin("sort", {"delivered": "random"}, method="PUT").json()["message"]
    assert env.admin("sort", method="POST").status_code == 405
    with pytest.raises(ValueError, match="random"):
        Simulator(traffic(), clock=ManualClock(T0), delivered_sort="random")
    with pytest.raises(ValueError, match="sent"):
        Simulator(traffic(), clock=ManualClock(T0), reportless=["sent"])
    with pytest.raises(ValueError, match="string"):
        env.sim.set_sorting(reportless="expired")


def test_cli_flags_set_the_sort(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["--listen", "127.0.0.1:0", "--backfill", "0", "--delivered-sort", "nulls_first",
         "--reportless", "expired, unknown"]
    )  # fmt: skip
    with make_server(args) as server:
        body: dict[str, Any] = httpx.get(f"{server.url}/_sim/sort", verify=TLS).json()
    assert body == {"delivered": "nulls_first", "reportless": ["expired", "unknown"]}
    assert parser.parse_args([]).delivered_sort == "mysql"
    assert parser.parse_args([]).reportless == frozenset()
    for bad in (["--delivered-sort", "random"], ["--reportless", "expired,sent"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert "sent" in capsys.readouterr().err
