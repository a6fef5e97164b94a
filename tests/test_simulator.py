"""The BSG API simulator, exercised over real HTTP loopback."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from exporter.simulator import (
    DEMO_API_KEY,
    CampaignProfile,
    ManualClock,
    RealClock,
    ScaledClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
    demo_profile,
    start_demo,
    status_at,
)
from exporter.simulator.__main__ import duration
from exporter.simulator.traffic import COUNTRIES, FINAL_STATUSES, PENDING_STATUSES

T0 = 1_780_000_000.0
# one TLS context for every client: building one per httpx.Client costs ~50 ms
TLS = ssl.create_default_context()
FMT = "%Y-%m-%d %H:%M:%S"
UNAUTHENTICATED = {"message": "Unauthenticated."}
LIMIT_ERROR = {
    "message": "The page.limit must be between 15 and 500.",
    "errors": {"page.limit": ["The page.limit must be between 15 and 500."]},
}


def stamp(t: float) -> str:
    """Format epoch seconds like the API (UTC)."""
    return datetime.fromtimestamp(t, UTC).strftime(FMT)


def epoch(text: str) -> float:
    """Parse an API timestamp (UTC)."""
    return datetime.strptime(text, FMT).replace(tzinfo=UTC).timestamp()


def profile(rate: float = 1.0, backfill: float = 0.0, **kw: Any) -> TrafficProfile:
    """One campaign (id 7) of plain UA SMS unless told otherwise."""
    return TrafficProfile(campaigns=(CampaignProfile(7, rate, **kw),), backfill=backfill)


@dataclass
class Env:
    """A running simulator and a logged-in client."""

    sim: Simulator
    server: SimulatorServer
    clock: ManualClock
    client: httpx.Client
    anon: httpx.Client  # no Authorization header

    def get(self, path: str = "/api/messages", /, **params: Any) -> httpx.Response:
        """GET with the bearer token."""
        return self.client.get(path, params=params)

    def page(self, **params: Any) -> dict[str, Any]:
        """A successful /api/messages answer."""
        r = self.get(**params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def all_rows(self, **params: Any) -> tuple[list[dict[str, Any]], int]:
        """Page through everything with limit 500; return rows and the last total."""
        rows: list[dict[str, Any]] = []
        offset, total = 0, 1
        while offset < total:
            body = self.page(**{"page[limit]": 500, "page[offset]": offset, **params})
            rows += body["data"]
            total = body["meta"]["page"]["total"]
            offset += 500
        return rows, total

    def truth(self, **params: Any) -> dict[str, Any]:
        """GET /_sim/truth."""
        body: dict[str, Any] = self.anon.get("/_sim/truth", params=params).json()
        return body

    def admin(self, path: str, payload: Any = None, method: str = "POST") -> httpx.Response:
        """Call the admin API."""
        return self.anon.request(method, f"/_sim/{path}", json=payload)


Factory = Callable[..., Env]


@pytest.fixture
def serve() -> Iterator[Factory]:
    """Start simulators on port 0 with a ManualClock; stop them afterwards."""
    started: list[tuple[SimulatorServer, httpx.Client, httpx.Client]] = []

    def start(prof: TrafficProfile | None = None, **kw: Any) -> Env:
        clock = kw.pop("clock", None) or ManualClock(T0)
        sim = Simulator(prof or profile(), clock=clock, **kw)
        server = SimulatorServer(sim).start()
        client = httpx.Client(base_url=server.url, timeout=10, verify=TLS)
        anon = httpx.Client(base_url=server.url, timeout=10, verify=TLS)
        started.append((server, client, anon))
        r = client.post("/api/auth/login", json={"api_key": DEMO_API_KEY})
        client.headers["Authorization"] = f"Bearer {r.json()['bearer']}"
        return Env(sim, server, clock, client, anon)

    yield start
    for server, client, anon in started:
        client.close()
        anon.close()
        server.stop()


# --- auth -------------------------------------------------------------------------------


def test_login_issues_a_jwt_that_expires_by_the_simulator_clock(serve: Factory) -> None:
    env = serve(token_ttl=3600)
    r = env.anon.post("/api/auth/login", json={"api_key": DEMO_API_KEY})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    token = r.json()["bearer"]
    _, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert (claims["iat"], claims["exp"]) == (int(T0), int(T0) + 3600)
    assert "id" in claims and sig
    auth = {"Authorization": f"Bearer {token}"}
    assert env.anon.get("/api/accounts/balance", headers=auth).status_code == 200
    env.clock.advance(3600)
    r = env.anon.get("/api/accounts/balance", headers=auth)
    assert (r.status_code, r.json()) == (401, UNAUTHENTICATED)


def test_login_rejects_bad_and_missing_keys(serve: Factory) -> None:
    env = serve()
    r = env.client.post("/api/auth/login", json={"api_key": "live_wrong"})
    assert (r.status_code, r.json()) == (401, UNAUTHENTICATED)
    r = env.client.post("/api/auth/login", json={})
    assert r.status_code == 422
    assert r.json()["errors"] == {"api_key": ["The api key field is required."]}


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not.a.jwt", "Basic abc", "forged"],
)
def test_requests_without_a_valid_token_get_401(serve: Factory, authorization: str | None) -> None:
    env = serve()
    good = env.client.headers["Authorization"]
    if authorization == "forged":  # right shape, claims changed, signature kept
        head, _, sig = good.removeprefix("Bearer ").split(".")
        payload = base64.urlsafe_b64encode(b'{"iat":1,"exp":9999999999,"id":1}').decode()
        authorization = f"Bearer {head}.{payload.rstrip('=')}.{sig}"
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/api/messages", "/api/accounts/balance"):
        r = env.anon.get(path, headers=headers)
        assert (r.status_code, r.json()) == (401, UNAUTHENTICATED)


def test_refresh_and_revocation(serve: Factory) -> None:
    env = serve()
    old = env.client.headers["Authorization"]
    env.clock.advance(10)
    r = env.client.post("/api/auth/refresh")
    assert r.status_code == 200
    new = f"Bearer {r.json()['bearer']}"
    assert new != old
    env.client.headers["Authorization"] = new
    assert env.get().status_code == 200
    assert env.anon.post("/api/auth/refresh").status_code == 401
    assert env.admin("tokens/expire").json()["revoked"] == 2
    for token in (old, new):
        r = env.anon.get("/api/messages", headers={"Authorization": token})
        assert r.status_code == 401
    assert env.sim.request_counts()["refresh"] == 2


# --- validation and routing ---------------------------------------------------------------


@pytest.mark.parametrize("limit", ["14", "501", "abc", "1.5"])
def test_page_limit_out_of_range_is_422_with_laravel_body(serve: Factory, limit: str) -> None:
    r = serve().get(**{"page[limit]": limit})
    assert (r.status_code, r.json()) == (422, LIMIT_ERROR)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"page[offset]": "-1"}, "page.offset"),
        ({"sort": "status"}, "sort"),
        ({"way": "up"}, "way"),
        ({"filter[from]": "2025-03-20"}, "filter.from"),
        ({"filter[to]": "2025-02-30 00:00:00"}, "filter.to"),
        ({"filter[id]": "x1"}, "filter.id"),
        ({"filter[campaign_id]": "abc"}, "filter.campaign_id"),
    ],
)
def test_bad_parameters_are_422(serve: Factory, params: dict[str, str], key: str) -> None:
    r = serve().get(**params)
    assert r.status_code == 422
    body = r.json()
    assert list(body["errors"]) == [key]
    assert body["message"] == body["errors"][key][0]


def test_several_errors_are_summed_up_like_laravel(serve: Factory) -> None:
    body = serve().get(**{"page[limit]": "5", "way": "sideways"}).json()
    assert body["message"] == "The page.limit must be between 15 and 500. (and 1 more error)"


def test_unknown_paths_and_wrong_methods_answer_json(serve: Factory) -> None:
    env = serve()
    r = env.client.get("/api/nothing")
    assert (r.status_code, r.json()) == (404, {"message": "Not Found"})
    r = env.client.get("/api/auth/login")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert "not supported" in r.json()["message"]
    assert env.client.post("/api/messages").status_code == 405


def test_connections_are_kept_alive(serve: Factory) -> None:
    import http.client

    env = serve()
    conn = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/api/messages", headers={"Authorization": "Bearer x"})
        resp = conn.getresponse()
        assert resp.status == 401
        assert int(resp.headers["Content-Length"]) == len(resp.read())
        assert not resp.will_close
    conn.close()


# --- paging, sorting, filtering -------------------------------------------------------------


def test_paging_by_id_covers_every_message_exactly_once(serve: Factory) -> None:
    env = serve(profile(rate=2.0, backfill=900))
    env.clock.advance(30)
    until = stamp(env.clock.now())
    rows, total = env.all_rows(**{"filter[to]": until})
    truth_ids = [m["id"] for m in env.truth()["messages"]]
    ids = [r["id"] for r in rows]
    assert ids == truth_ids
    assert total == len(ids) > 1500
    assert all(b > a for a, b in itertools.pairwise(ids))
    assert ids[0] > 2**32
    # paging with a smaller limit gives the same sequence
    small = [
        r["id"]
        for off in range(0, 300, 15)
        for r in env.page(**{"page[limit]": 15, "page[offset]": off})["data"]
    ]
    assert small == ids[:300]


def test_sort_desc_reverses_the_order(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=300))
    asc = [r["id"] for r in env.all_rows()[0]]
    desc = [r["id"] for r in env.all_rows(way="desc")[0]]
    assert desc == asc[::-1]
    page = env.page(**{"way": "desc", "page[limit]": 20, "page[offset]": 5})
    assert [r["id"] for r in page["data"]] == asc[::-1][5:25]


def test_sort_by_phone_and_delivered(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=600))
    phones = [r["phone"] for r in env.all_rows(sort="phone")[0]]
    assert phones == sorted(phones)
    rows = env.all_rows(sort="delivered")[0]
    delivered = [r["delivered_at"] for r in rows]
    nulls = delivered.count(None)
    assert 0 < nulls < len(delivered)
    assert delivered[:nulls] == [None] * nulls  # MySQL: NULLs first when ascending
    assert delivered[nulls:] == sorted(delivered[nulls:])
    desc = [r["delivered_at"] for r in env.all_rows(sort="delivered", way="desc")[0]]
    assert desc[-nulls:] == [None] * nulls


def test_filters_by_campaign_id_and_reference(serve: Factory) -> None:
    prof = TrafficProfile(
        campaigns=(
            CampaignProfile(11, 1.0, reference_ids=True),
            CampaignProfile(12, 0.5),
        ),
        backfill=600,
    )
    env = serve(prof)
    truth = env.truth()["messages"]
    for cid in (11, 12):
        rows, total = env.all_rows(**{"filter[campaign_id]": cid})
        expected = [m["id"] for m in truth if m["campaign_id"] == cid]
        assert [r["id"] for r in rows] == expected
        assert total == len(expected) > 100
    assert env.page(**{"filter[campaign_id]": 99})["meta"]["page"]["total"] == 0
    target = truth[len(truth) // 2]
    one = env.page(**{"filter[id]": target["id"]})
    assert [r["id"] for r in one["data"]] == [target["id"]]
    assert one["meta"]["page"]["total"] == 1
    ref_row = next(r for r in env.page()["data"] if r["reference_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", ref_row["reference_id"])
    by_ref = env.page(**{"filter[reference_id]": ref_row["reference_id"]})["data"]
    assert [r["id"] for r in by_ref] == [ref_row["id"]]


def test_date_filters_are_inclusive_and_default_to_now(serve: Factory) -> None:
    env = serve(profile(rate=0.0))
    ids = env.sim.create_messages([{"created_at": T0 - 100 + i * 10} for i in range(10)])
    created = {r["id"]: r["created_at"] for r in env.all_rows()[0]}
    assert created[ids[3]] == stamp(T0 - 70)
    rows, total = env.all_rows(**{"filter[from]": stamp(T0 - 70), "filter[to]": stamp(T0 - 30)})
    assert [r["id"] for r in rows] == ids[3:8]
    assert total == 5
    # filter[to] in the future still shows nothing that does not exist yet
    env.clock.advance(60)
    later = env.sim.create_messages([{}])
    rows, _ = env.all_rows(**{"filter[to]": stamp(T0 + 30)})
    assert later[0] not in [r["id"] for r in rows]
    assert env.page(**{"filter[from]": stamp(T0 + 1)})["meta"]["page"]["total"] == 1


def test_timestamps_follow_the_configured_zone(serve: Factory) -> None:
    env = serve(profile(rate=0.0), tz="Europe/Kyiv")
    env.sim.create_messages([{"created_at": T0}])
    row = env.page()["data"][0]
    assert row["created_at"] == stamp(T0 + 3 * 3600)  # EEST, UTC+3, in May
    local = stamp(T0 + 3 * 3600)
    assert env.page(**{"filter[from]": local})["meta"]["page"]["total"] == 1
    assert env.page(**{"filter[from]": stamp(T0 + 3 * 3600 + 1)})["meta"]["page"]["total"] == 0


# --- records --------------------------------------------------------------------------------


def test_records_have_the_provider_shape(serve: Factory) -> None:
    env = serve(demo_profile())
    rows = env.page(**{"page[limit]": 500})["data"]
    keys = list(rows[0])
    assert keys == [
        "id", "campaign_id", "reference_id", "type", "source", "text", "phone", "validity",
        "status", "amount", "sender", "created_at", "sent_at", "delivered_at", "country",
        "parts",
    ]  # fmt: skip
    for r in rows:
        assert isinstance(r["phone"], int) and isinstance(r["id"], int)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r["created_at"])
        if r["status"] in ("scheduled", "moderation"):
            assert r["amount"] is None
        else:
            assert re.fullmatch(r"\d+\.\d{7}", r["amount"]["value"])
        if r["status"] in FINAL_STATUSES:
            assert r["delivered_at"] is not None
        if r["status"] in ("accepted", "sending", "scheduled", "moderation"):
            assert r["sent_at"] is None
    assert {r["status"] for r in env.all_rows()[0]} >= {"delivered", "sent", "read"}
    ua = next(r for r in rows if r["country"] == "UA" and r["type"] == "sms" and r["amount"])
    assert ua["amount"] == {"value": "0.0100000", "currency": "UAH"}


def test_explicit_messages_keep_their_status_until_changed(serve: Factory) -> None:
    env = serve(profile(rate=0.0))
    r = env.admin(
        "messages",
        {
            "messages": [
                {"campaign_id": 5, "status": "sent", "created_at": T0 - 60, "country": "DE"},
                {"status": "accepted", "amount": None},
            ]
        },
    )
    assert r.status_code == 201
    sent_id, acc_id = r.json()["ids"]
    env.clock.advance(3600)
    rec = env.page(**{"filter[id]": sent_id})["data"][0]
    assert (rec["status"], rec["sent_at"], rec["delivered_at"]) == ("sent", stamp(T0 - 60), None)
    assert rec["amount"] == {"value": "0.0750000", "currency": "EUR"}
    assert rec["campaign_id"] == 5
    env.admin("messages/status", {"id": sent_id, "status": "delivered"})
    env.clock.advance(100)
    env.sim.set_status(sent_id, "read")
    rec = env.page(**{"filter[id]": sent_id})["data"][0]
    assert (rec["status"], rec["delivered_at"]) == ("read", stamp(T0 + 3600))
    acc = env.page(**{"filter[id]": acc_id})["data"][0]
    assert (acc["status"], acc["sent_at"], acc["amount"]) == ("accepted", None, None)
    env.sim.set_status(acc_id, "failed")
    acc = env.page(**{"filter[id]": acc_id})["data"][0]
    assert acc["sent_at"] == acc["delivered_at"] == stamp(T0 + 3700)
    history = {m["id"]: m["history"] for m in env.truth()["messages"]}
    assert [s for _, s in history[sent_id]] == ["accepted", "sent", "delivered", "read"]
    assert env.admin("messages/status", {"id": 1, "status": "sent"}).status_code == 404
    assert env.admin("messages", {"messages": [{"colour": "red"}]}).status_code == 422


def test_set_status_takes_an_automatic_message_off_its_timeline(serve: Factory) -> None:
    env = serve(profile(rate=1.0))
    env.clock.advance(1)
    first = env.page()["data"][0]
    assert first["status"] in PENDING_STATUSES
    env.sim.set_status(first["id"], "undelivered")
    env.clock.advance(4 * 3600)
    rec = env.page(**{"filter[id]": first["id"]})["data"][0]
    assert (rec["status"], rec["delivered_at"]) == ("undelivered", stamp(T0 + 1))
    truth = env.truth()["messages"][0]
    assert truth["history"][-1] == [T0 + 1, "undelivered"]
    with pytest.raises(ValueError, match="future"):
        env.sim.create_messages([{"created_at": T0 + 99999}])


def test_backdated_messages_still_page_in_id_order(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=120))
    env.clock.advance(5)
    old = env.sim.create_messages([{"created_at": T0 - 3600}])[0]
    rows, total = env.all_rows()
    ids = [r["id"] for r in rows]
    assert ids[-1] == old and ids == sorted(ids) and total == len(ids)
    window = {"filter[from]": stamp(T0 - 3601), "filter[to]": stamp(T0 - 3599)}
    assert [r["id"] for r in env.all_rows(**window)[0]] == [old]


# --- traffic model ----------------------------------------------------------------------------


def test_same_seed_same_pages_regardless_of_query_pattern(serve: Factory) -> None:
    a = serve(demo_profile(), seed=42)
    b = serve(demo_profile(), seed=42)
    c = serve(demo_profile(), seed=43)
    for step in range(8):  # `a` is polled all along, `b` only at the end
        for env in (a, b, c):
            env.clock.advance(97.5 * step)
        a.page(**{"page[limit]": 100, "way": "desc"})
        a.page(**{"page[limit]": 500, "filter[campaign_id]": 58982653, "sort": "delivered"})
    params = {"page[limit]": 500, "page[offset]": 3000}
    assert b.page(**params) == a.page(**params)
    assert a.all_rows() == b.all_rows()
    assert c.page(**params) != a.page(**params)


def _shares(messages: list[dict[str, Any]]) -> dict[str, float]:
    counts = Counter(m["status"] for m in messages)
    return {s: n / len(messages) for s, n in counts.items()}


def test_steady_traffic_reaches_a_realistic_mix(serve: Factory) -> None:
    env = serve(profile(rate=1.0, validity_hours=1))
    env.clock.advance(4 * 3600)
    truth = env.truth()["messages"]
    settled = _shares([m for m in truth if m["created_at"] < T0 + 2 * 3600])
    assert len(truth) > 12000
    assert 0.90 <= settled["delivered"] <= 0.97
    assert 0.004 <= settled["failed"] <= 0.02
    assert 0.008 <= settled["undelivered"] <= 0.03
    assert 0.01 <= settled["expired"] <= 0.06
    assert not set(settled) & PENDING_STATUSES  # all settled after validity
    recent = [m for m in truth if m["created_at"] > T0 + 4 * 3600 - 5]
    assert any(m["status"] in PENDING_STATUSES for m in recent)
    latencies = sorted(
        m["delivered_at"] - m["sent_at"] for m in truth if m["status"] == "delivered"
    )
    assert 2 <= latencies[len(latencies) // 2] <= 7  # median a few seconds


def test_viber_has_non_users_and_read_receipts(serve: Factory) -> None:
    env = serve(profile(rate=1.0, channels={"viber": 1.0}))
    env.clock.advance(3 * 3600)
    truth = env.truth()["messages"]
    shares = _shares([m for m in truth if m["created_at"] < T0 + 3600])
    assert 0.06 <= shares["not_viber_user"] <= 0.14
    assert shares["read"] > 0.3
    read = [m for m in truth if m["status"] == "read"]
    for m in read[:50]:
        statuses = [s for _, s in m["history"]]
        assert statuses[-2:] == ["delivered", "read"]
        assert m["delivered_at"] == m["history"][-2][0]  # kept from the first final status


def test_failure_spike_raises_failures_only_for_new_messages(serve: Factory) -> None:
    env = serve(profile(rate=2.0))
    env.clock.advance(1800)
    assert env.admin("scenario", {"name": "failure_spike"}).status_code == 200
    env.clock.advance(1800)
    env.admin("scenario", {"name": "steady"})
    env.clock.advance(1800)
    env.sim.set_scenario("paused")  # no more arrivals while every outcome comes in
    env.clock.advance(3 * 3600)
    truth = env.truth()["messages"]

    def bad(lo: float, hi: float) -> float:
        part = [m for m in truth if lo <= m["created_at"] < hi]
        return sum(m["status"] in ("failed", "undelivered") for m in part) / len(part)

    assert bad(T0, T0 + 1800) < 0.06
    assert 0.3 <= bad(T0 + 1800, T0 + 3600) <= 0.5
    assert bad(T0 + 3600, T0 + 5400) < 0.06
    assert env.admin("scenario", {"name": "nope"}).status_code == 422


def test_paused_stops_arrivals_but_not_explicit_messages(serve: Factory) -> None:
    env = serve(profile(rate=5.0))
    env.clock.advance(10)
    env.sim.set_scenario("paused")
    before = env.page()["meta"]["page"]["total"]
    env.clock.advance(600)
    assert env.page()["meta"]["page"]["total"] == before
    env.sim.create_messages([{}, {}])
    assert env.page()["meta"]["page"]["total"] == before + 2
    env.sim.set_scenario("steady")
    env.clock.advance(60)
    assert env.page()["meta"]["page"]["total"] > before + 100


def test_truth_agrees_with_the_api(serve: Factory) -> None:
    env = serve(demo_profile())
    env.clock.advance(1234)
    rows, _ = env.all_rows()
    truth = env.truth()
    assert truth["now"] == env.clock.now()
    assert len(rows) == len(truth["messages"])
    for r, t in zip(rows, truth["messages"], strict=True):
        assert r["id"] == t["id"] and r["status"] == t["status"]
        assert (r["campaign_id"], r["type"], r["country"]) == (
            t["campaign_id"],
            t["type"],
            t["country"],
        )
        for key in ("created_at", "sent_at", "delivered_at"):
            assert r[key] == (None if t[key] is None else stamp(t[key]))
        assert r["amount"] == t["amount"]
        assert t["history"][-1][1] == t["status"]
        assert t["history"][0][0] == t["created_at"]


def test_cached_records_follow_every_status_change(serve: Factory) -> None:
    """Records are rendered once per state: re-reads as the clock moves (back too) stay true."""
    env = serve(demo_profile(backfill=600.0))
    moments = [0.0, 1.0, 7.0, 60.0, 1800.0, 3.0, 7200.0]
    for moment in moments:
        env.clock.set(T0 + moment)
        rows, _ = env.all_rows(**{"filter[from]": stamp(T0 - 600)})
        truth = {t["id"]: t for t in env.truth()["messages"]}
        for r in rows:
            t = truth[r["id"]]
            assert (r["status"], r["amount"]) == (t["status"], t["amount"]), moment
            for key in ("sent_at", "delivered_at"):
                assert r[key] == (None if t[key] is None else stamp(t[key])), moment
    first = rows[50]["id"]  # on the page _page_with reads (offset 50)
    env.sim.set_status(first, "failed")
    assert env.page(**{"filter[id]": first})["data"][0]["status"] == "failed"


def test_balance_decreases_with_traffic(serve: Factory) -> None:
    env = serve(profile(rate=2.0, backfill=600), currency="UAH", start_balance=5.0)
    first = env.get("/api/accounts/balance").json()["data"]
    assert first["currency"] == "UAH" and first["credit"] == 125
    assert first["balance"] == pytest.approx(5.0 - 0.01 * env.truth()["messages"].__len__())
    env.clock.advance(600)
    later = env.get("/api/accounts/balance").json()["data"]["balance"]
    assert later < first["balance"]
    assert later == pytest.approx(5.0 - 0.01 * len(env.truth()["messages"]))
    assert later < 0  # postpaid accounts go negative
    env.sim.create_messages([{"amount": {"value": "1.5000000", "currency": "UAH"}}])
    final = env.get("/api/accounts/balance").json()["data"]["balance"]
    assert final == pytest.approx(later - 1.5)


# --- faults ---------------------------------------------------------------------------------


def _add(env: Env, kind: str, **params: Any) -> None:
    r = env.admin("faults", {"kind": kind, **params})
    assert r.status_code == 201, r.text


def test_http_status_faults(serve: Factory) -> None:
    env = serve()
    _add(env, "http_status", status=429, retry_after=7, count=1)
    r = env.get()
    assert (r.status_code, r.headers["retry-after"]) == (429, "7")
    assert r.json() == {"message": "Too Many Attempts."}
    assert env.get().status_code == 200
    _add(env, "http_status", status=503, count=2, endpoint="balance")
    assert env.get().status_code == 200
    codes = [env.get("/api/accounts/balance").status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    _add(env, "http_status", status=500, endpoint="login")
    r = env.client.post("/api/auth/login", json={"api_key": DEMO_API_KEY})
    assert (r.status_code, r.json()) == (500, {"message": "Server Error"})
    assert env.sim.fault_counts()["http_status"] == 4
    assert env.admin("faults", method="DELETE").status_code == 200
    assert env.client.post("/api/auth/login", json={"api_key": DEMO_API_KEY}).status_code == 200


def test_transport_faults(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=300))
    _add(env, "slow", delay=0.3, count=1)
    started = time.perf_counter()
    assert env.get().status_code == 200
    assert time.perf_counter() - started >= 0.3
    _add(env, "reset", count=1)
    with pytest.raises(httpx.TransportError):
        env.get(**{"page[limit]": 500}).json()
    _add(env, "malformed", count=1)
    r = env.get()
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert env.page()["data"]  # all faults used up
    assert env.sim.fault_counts() == {"slow": 1, "reset": 1, "malformed": 1}


def test_stop_is_fast_even_during_a_slow_request(serve: Factory) -> None:
    import threading

    env = serve()
    env.sim.add_fault("slow", delay=30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            env.get()
        except httpx.HTTPError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.2)
    started = time.perf_counter()
    env.server.stop()
    worker.join(5)
    assert time.perf_counter() - started < 2
    assert errors and not worker.is_alive()


def _page_with(env: Env, kind: str, **params: Any) -> dict[str, Any]:
    env.sim.add_fault(kind, count=1, **params)
    body = env.page(**{"page[limit]": 50, "page[offset]": 50})
    env.sim.clear_faults()
    return body


def test_content_faults_bend_the_page(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=600, channels={"sms": 1, "viber": 1}))
    env.clock.advance(3)
    clean = env.page(**{"page[limit]": 50, "page[offset]": 50})
    rows, total = clean["data"], clean["meta"]["page"]["total"]

    body = _page_with(env, "send_at")
    assert all("send_at" in r and "sent_at" not in r for r in body["data"])
    assert [r["send_at"] for r in body["data"]] == [r["sent_at"] for r in rows]

    body = _page_with(env, "phone_string")
    assert [r["phone"] for r in body["data"]] == [str(r["phone"]) for r in rows]

    body = _page_with(env, "iso_timestamps")
    iso = body["data"][0]["created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", iso)
    assert datetime.fromisoformat(iso).timestamp() == epoch(rows[0]["created_at"])

    body = _page_with(env, "amount_missing")
    assert all("amount" not in r for r in body["data"])
    body = _page_with(env, "amount_missing", mode="null")
    assert all(r["amount"] is None for r in body["data"])

    body = _page_with(env, "bad_records")
    assert len(body["data"]) == 52 and body["meta"]["page"]["total"] == total
    assert sum("id" not in r for r in body["data"]) == 1
    assert sum("status" not in r for r in body["data"]) == 1

    body = _page_with(env, "total_lies", delta=-10)
    assert body["meta"]["page"]["total"] == total - 10
    assert body["data"] == rows

    body = _page_with(env, "duplicate_rows", n=5)
    first_page = env.page(**{"page[limit]": 50})["data"]
    assert [r["id"] for r in body["data"][:5]] == [r["id"] for r in first_page[-5:]]
    assert body["meta"]["page"]["offset"] == 50

    body = _page_with(env, "empty_page")
    assert body["data"] == [] and body["meta"]["page"]["total"] == total


def test_a_fault_can_let_its_first_requests_by(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=600))
    assert env.admin("faults", {"kind": "empty_page", "skip": -1}).status_code == 422
    assert env.admin("faults", {"kind": "empty_page", "skip": True}).status_code == 422
    _add(env, "empty_page", count=1, skip=2)  # the third page of a read comes back empty
    pages = [env.page(**{"page[limit]": 50, "page[offset]": 50 * i})["data"] for i in range(4)]
    assert [len(page) for page in pages] == [50, 50, 0, 50]
    assert env.admin("faults", method="GET").json()["applied"] == {"empty_page": 1}


def test_unknown_status_only_touches_pending_records(serve: Factory) -> None:
    env = serve(profile(rate=2.0, backfill=120))
    clean = env.all_rows()[0]
    env.sim.add_fault("unknown_status", status="queued_v2", count=1)
    bent = env.page(**{"page[limit]": 500})["data"]
    assert len(bent) == len(clean)
    for before, after in zip(clean, bent, strict=True):
        if before["status"] in PENDING_STATUSES:
            assert after["status"] == "queued_v2"
        else:
            assert after["status"] == before["status"]
    assert any(r["status"] == "queued_v2" for r in bent)


def test_faults_are_validated_and_listed(serve: Factory) -> None:
    env = serve()
    assert env.admin("faults", {"kind": "gremlins"}).status_code == 422
    assert env.admin("faults", {"kind": "slow", "endpoint": "nowhere"}).status_code == 422
    assert env.admin("faults", {"kind": "http_status", "status": 200}).status_code == 422
    _add(env, "phone_string", endpoint="any", count=2)
    listed = env.admin("faults", method="GET").json()["faults"]
    assert listed == [{"kind": "phone_string", "endpoint": "any", "count": 2, "skip": 0}]
    # content faults only act on message pages: a balance call leaves the count alone
    env.get("/api/accounts/balance")
    assert env.admin("faults", method="GET").json()["faults"][0]["count"] == 2


# --- admin, clocks, performance, CLI ------------------------------------------------------------


def test_admin_clock_and_stats(serve: Factory) -> None:
    env = serve(profile(rate=1.0))
    assert env.admin("clock", {"advance": 100}).json()["now"] == T0 + 100
    stats = env.admin("stats", method="GET").json()
    assert stats["messages"] == len(env.truth()["messages"]) > 50
    assert stats["requests"]["login"] == 1
    real = serve(clock=RealClock())
    assert real.admin("clock", {"advance": 100}).status_code == 409


def test_scaled_clock_runs_faster() -> None:
    clock = ScaledClock(speed=100.0, start=T0)
    time.sleep(0.05)
    assert 4.0 <= clock.now() - T0 <= 30.0


def test_large_store_answers_a_500_row_page_quickly(serve: Factory) -> None:
    prof = TrafficProfile(
        campaigns=(CampaignProfile(1, 80.0), CampaignProfile(2, 20.0, channels={"viber": 1.0})),
        backfill=2600,
    )
    started = time.perf_counter()
    env = serve(prof)
    built = time.perf_counter() - started
    timings = []
    for params in (
        {"page[offset]": 200_000},
        {"page[offset]": 100_000, "way": "desc"},
        {"page[offset]": 20_000, "filter[campaign_id]": 2},
    ):
        started = time.perf_counter()
        body = env.page(**{"page[limit]": 500, **params})
        timings.append(time.perf_counter() - started)
        assert len(body["data"]) == 500
    total = env.page()["meta"]["page"]["total"]
    print(f"\n{total} messages built in {built:.2f}s; 500-row pages in "
          + ", ".join(f"{t * 1000:.0f} ms" for t in timings))  # fmt: skip
    assert total >= 250_000
    assert max(timings) < 2.0


def test_start_demo_serves_backfilled_history() -> None:
    with start_demo(seed=3) as server:
        client = httpx.Client(base_url=server.url, verify=TLS)
        token = client.post("/api/auth/login", json={"api_key": DEMO_API_KEY}).json()["bearer"]
        body = client.get("/api/messages", headers={"Authorization": f"Bearer {token}"}).json()
        client.close()
    assert body["meta"]["page"]["total"] > 3000  # about an hour at 1.7 msg/s
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/_sim/stats", verify=TLS)


def test_duration_parsing() -> None:
    assert [duration(s) for s in ("90", "90s", "30m", "1h", "1h30m", "2d")] == [
        90, 90, 1800, 3600, 5400, 172800,
    ]  # fmt: skip


def test_cli_prints_its_url_and_stops_on_sigterm() -> None:
    cmd = [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0",
           "--backfill", "10m", "--api-key", "live_cli_key", "--speed", "10"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url and "live_cli_key" in line, line
        login = url.group(0) + "/api/auth/login"
        r = httpx.post(login, json={"api_key": "live_cli_key"}, verify=TLS)
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_prices_table_matches_the_brief() -> None:
    assert (COUNTRIES["UA"].price, COUNTRIES["UA"].currency) == (0.01, "UAH")
    assert (COUNTRIES["DE"].price, COUNTRIES["DE"].currency) == (0.075, "EUR")
    assert (COUNTRIES["US"].price, COUNTRIES["GB"].price, COUNTRIES["PL"].price) == (
        0.0079,
        0.035,
        0.042,
    )


def test_status_at_reads_the_truth_history() -> None:
    history = [[10.0, "accepted"], [12.0, "sent"], [20.0, "delivered"]]
    moments = [9.9, 10.0, 11.0, 12.0, 19.9, 20.0, 99.0]
    assert [status_at(history, m) for m in moments] == [
        None, "accepted", "accepted", "sent", "sent", "delivered", "delivered",
    ]  # fmt: skip


def test_faults_that_break_the_body_or_its_encoding(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=60))
    _add(env, "bad_encoding", endpoint="balance", count=1)
    with pytest.raises(httpx.DecodingError):
        env.get("/api/accounts/balance")
    _add(env, "gzip", pad=2**20, endpoint="balance", count=1)
    r = env.get("/api/accounts/balance")
    assert r.headers["content-encoding"] == "gzip" and int(r.headers["content-length"]) < 8192
    assert len(r.content) > 2**20 and r.json()["data"]["currency"]  # trailing spaces: still JSON
    _add(env, "deep_nesting", depth=5000, status=500, endpoint="balance", count=1)
    r = env.get("/api/accounts/balance")
    assert r.status_code == 500 and r.content.startswith(b'{"message":"Server Error","nested":')
    assert r.content.count(b"[") == 5000
    _add(env, "deep_nesting", depth=3, count=1)
    body = env.page()
    assert body["nested"] == [[[]]] and body["data"]
    _add(env, "huge_number", endpoint="balance", count=1)
    assert env.get("/api/accounts/balance").json()["data"]["balance"] == int("9" * 400)
    _add(env, "huge_number", field="validity", digits=30, count=1)
    assert {r["validity"] for r in env.page()["data"]} == {int("9" * 30)}


def test_faults_that_bend_prices_fields_and_paging(serve: Factory) -> None:
    env = serve(profile(rate=1.0, backfill=600))
    clean = env.page(**{"page[limit]": 500})
    rows, total = clean["data"], clean["meta"]["page"]["total"]
    body = _page_with(env, "negative_price")
    assert all(r["amount"]["value"].startswith("-") for r in body["data"] if r["amount"])
    body = _page_with(env, "negative_price", value="NaN")
    assert {r["amount"]["value"] for r in body["data"] if r["amount"]} == {"NaN"}
    first = rows[50]["id"]  # on the page _page_with reads (offset 50)
    body = _page_with(
        env, "set_field", field="created_at", value="1970-01-01 00:00:00", ids=[first]
    )
    assert [r["created_at"] for r in body["data"]].count("1970-01-01 00:00:00") == 1
    env.sim.add_fault("page_cap", limit=100, count=1)
    body = env.page(**{"page[limit]": 500})
    assert len(body["data"]) == 100 and body["meta"]["page"]["limit"] == 100
    env.sim.add_fault("page_cap", limit=100, state=False, count=1)
    assert env.page(**{"page[limit]": 500})["meta"]["page"]["limit"] == 500
    env.sim.add_fault("total_lies", delta=7, beyond=True)
    for offset in (0, total, total + 500):
        meta = env.page(**{"page[limit]": 500, "page[offset]": offset})["meta"]["page"]
        assert meta["total"] == min(offset + 500, max(total, offset)) + 7
    env.sim.clear_faults()


def test_retry_after_and_message_of_http_status_take_any_text(serve: Factory) -> None:
    env = serve()
    for retry_after, header in (("soon", "soon"), (1e11, "100000000000"), (0.5, "0.5")):
        _add(env, "http_status", status=429, retry_after=retry_after, count=1)
        assert env.get().headers["retry-after"] == header
    _add(env, "http_status", status=422, message="key live_x echoed\n", count=1)
    assert env.get().json() == {"message": "key live_x echoed\n"}


@pytest.mark.parametrize("part", ["headers", "body", "both"])
def test_drip_sends_a_byte_at_a_time(serve: Factory, part: str) -> None:
    env = serve()
    _add(env, "drip", interval=0.01, part=part, endpoint="balance", count=1)
    started = time.perf_counter()
    r = env.get("/api/accounts/balance")
    elapsed = time.perf_counter() - started
    assert r.status_code == 200 and r.json()["data"]["currency"]
    dripped = {"headers": 100, "body": len(r.content), "both": 100 + len(r.content)}[part]
    assert elapsed >= dripped * 0.01  # at least a wait per byte
    assert env.get("/api/accounts/balance").status_code == 200  # the connection is usable


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ({"retry_after": "soon"}, {"retry_after": "a\r\nX-Injected: 1"}),
        ({"retry_after": 1e11}, {"retry_after": True}),
        ({"message": "x"}, {"message": 5}),
        ({"kind": "bad_encoding", "encoding": "br"}, {"encoding": "gzip, br\n"}),
        ({"kind": "gzip", "pad": 10}, {"pad": -1}),
        ({"kind": "drip", "interval": 0.5}, {"interval": 0}),
        ({"kind": "drip", "part": "both"}, {"part": "trailers"}),
        ({"kind": "deep_nesting", "depth": 1}, {"depth": 0}),
        ({"kind": "deep_nesting", "status": 200}, {"status": 99}),
        ({"kind": "negative_price", "value": "-1"}, {"value": [1]}),
        ({"kind": "huge_number", "digits": 1}, {"digits": 0}),
        ({"kind": "huge_number", "field": "id"}, {"field": "balance"}),
        ({"kind": "huge_number", "field": "credit", "endpoint": "balance"}, {"field": "id"}),
        ({"kind": "set_field", "field": "sent_at"}, {"field": "nonsense"}),
        ({"kind": "set_field", "ids": [1, 2]}, {"ids": "all"}),
        ({"kind": "page_cap", "limit": 500}, {"limit": 501}),
        ({"kind": "total_lies", "beyond": True}, {"beyond": "yes"}),
        ({"kind": "total_lies", "delta": -5}, {"delta": 1.5}),
    ],
    ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items())[:40],
)
def test_new_faults_and_parameters_are_validated(
    serve: Factory, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    env = serve()
    if "kind" not in good:
        good = {"kind": "http_status", "status": 429, **good}
    r = env.admin("faults", good)
    assert r.status_code == 201, r.text
    r = env.admin("faults", {**good, **bad})
    assert r.status_code == 422, r.text
    assert len(env.admin("faults", method="GET").json()["faults"]) == 1
