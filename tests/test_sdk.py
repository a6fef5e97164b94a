"""The simulator read by BSG's own Python SDK (bsg-sdk): its models must accept every answer.

The SDK is generated from the provider's OpenAPI file by people outside the team, so it is a
second opinion on the simulator's wire format that shares none of the exporter's assumptions.
Its models drop unknown keys silently, so "it parsed" proves little: each test also checks the
parsed values (ids, statuses, report times, page fields) against the simulator's ground truth or
against the raw JSON of the same answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pytest

# bsg-sdk ships py.typed, so mypy checks these calls against its own annotations (a
# `type: ignore[import-untyped]` would be an unused ignore, an error under --strict)
from bsg_api.api.auth_api import AuthApi
from bsg_api.api.balance_api import BalanceApi
from bsg_api.api.messages_sms_api import MessagesSMSApi
from bsg_api.api_client import ApiClient
from bsg_api.configuration import Configuration
from bsg_api.exceptions import ApiException
from bsg_api.models.login_request import LoginRequest
from bsg_api.models.message_api_schema import MessageApiSchema
from bsg_api.models.message_status import MessageStatus
from bsg_api.models.sort_way import SortWay
from pydantic import BaseModel, ValidationError

from exporter.simulator import (
    DEMO_API_KEY,
    CampaignProfile,
    ManualClock,
    Simulator,
    SimulatorServer,
    TrafficProfile,
)
from exporter.simulator.traffic import FINAL_STATUSES, STATUSES, UNPRICED_STATUSES
from tests.test_simulator import FMT, T0, Env, Factory, serve
from tests.test_simulator_sort import MODES, expected

__all__ = ["serve"]  # the fixture, shared with the simulator's other tests

REPORTLESS = ["expired", "unknown"]


def mixed(backfill: float = 4000.0) -> TrafficProfile:
    """Every channel, phone lengths from 11 to 12 digits, both sources, references, parts."""
    return TrafficProfile(
        campaigns=(
            CampaignProfile(
                7,
                0.6,
                channels={"sms": 0.4, "viber": 0.3, "whatsapp": 0.1, "rcs": 0.1, "hlr": 0.1},
                countries={"UA": 0.5, "MD": 0.2, "US": 0.2, "DE": 0.1},
                validity_hours=1,  # expiries within the backfill (more than an hour)
                max_parts=3,
            ),
            CampaignProfile(8, 0.3, reference_ids=True, source="web", validity_hours=2),
        ),
        backfill=backfill,
    )


class Sdk:
    """The SDK's client for one simulator, logged in with the API key as the SDK does it."""

    def __init__(self, url: str, key: str = DEMO_API_KEY, *, documented_dates: bool = True) -> None:
        """Log in through AuthApi and keep the bearer for the calls that need it."""
        self.config = Configuration(host=url)
        if documented_dates:
            # the SDK's default, ISO 8601 with a T and microseconds, is not the documented
            # Y-m-d H:i:s of filter[from]/filter[to] (test_sdk_default_date_format_is_refused)
            self.config.datetime_format = FMT
        self.client = ApiClient(self.config)
        token = AuthApi(self.client).login(LoginRequest(api_key=key))
        assert token.bearer is not None
        self.bearer = token.bearer
        self.config.access_token = token.bearer
        self.messages = MessagesSMSApi(self.client)
        self.balance = BalanceApi(self.client)

    def read_all(self, limit: int = 250, **params: Any) -> list[MessageApiSchema]:
        """Every row of a list query, page by page, checking each page's meta on the way."""
        rows: list[MessageApiSchema] = []
        total: int | None = None
        while total is None or len(rows) < total:
            page = self.messages.get_messages(page_offset=len(rows), page_limit=limit, **params)
            assert page.meta is not None and page.meta.page is not None, page
            meta = page.meta.page
            assert (meta.offset, meta.limit) == (len(rows), limit), meta
            assert total is None or meta.total == total, meta  # a still clock: a fixed total
            total = meta.total
            assert total is not None
            data = page.data or []
            assert len(data) == min(limit, total - len(rows)), (meta, len(data))
            if not data:
                break
            rows += data
        return rows


@pytest.fixture
def sdk(serve: Factory) -> tuple[Env, Sdk]:
    """A simulator with mixed traffic on a still ManualClock, and the SDK logged in to it."""
    env = serve(mixed())
    return env, Sdk(env.server.url)


def wire(value: Any) -> Any:
    """A parsed value as the API prints it: enums by value, times in the documented format."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.strftime(FMT)
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    return value


def assert_parsed_as_sent(parsed: MessageApiSchema, raw: dict[str, Any]) -> None:
    """Every key the simulator sent is a field of the SDK's model, parsed to the same value."""
    dropped = set(raw) - set(MessageApiSchema.model_fields)
    assert not dropped, f"keys the SDK's model does not know (it drops them): {sorted(dropped)}"
    got = {key: wire(getattr(parsed, key)) for key in raw}
    assert got == raw


def sort_key(sort: str, m: MessageApiSchema) -> tuple[int, int]:
    """Where a row belongs under sort=id or sort=phone (ties by id), ascending."""
    assert m.id is not None and m.phone is not None
    return (m.id, 0) if sort == "id" else (m.phone, m.id)


def order(rows: list[MessageApiSchema], mode: str, way: SortWay) -> list[int]:
    """The ids in the order `mode` must serve these rows, computed from the SDK's parse."""
    return expected([{"id": m.id, "delivered_at": m.delivered_at} for m in rows], mode, way.value)


# --- login and balance ------------------------------------------------------------------


def test_login_and_balance_parse_with_the_sdk_models(serve: Factory) -> None:
    env = serve(mixed(backfill=600.0))
    client = Sdk(env.server.url)
    assert client.bearer.count(".") == 2 and env.sim.authorized(client.bearer)  # a JWT it honours
    answer = client.balance.account_balance()
    assert answer.data is not None
    truth = env.sim.balance()
    assert answer.data.to_dict() == truth
    assert answer.data.currency == "EUR" and answer.data.credit == 125.0
    assert isinstance(answer.data.balance, float) and answer.data.balance < 1000.0  # charged

    with pytest.raises(ApiException) as wrong_key:
        Sdk(env.server.url, key="live_not_a_key")
    assert wrong_key.value.status == 401 and wrong_key.value.body is not None
    assert json.loads(wrong_key.value.body) == {"message": "Unauthenticated."}
    env.sim.expire_tokens()
    with pytest.raises(ApiException) as revoked:
        client.balance.account_balance()
    assert revoked.value.status == 401


# --- list answers in every sort mode ---------------------------------------------------


@pytest.mark.parametrize("sort", ["id", "phone"])
def test_every_record_parses_as_sent_both_ways(sdk: tuple[Env, Sdk], sort: str) -> None:
    env, client = sdk
    raw = {r["id"]: r for r in env.all_rows()[0]}
    truth = {t["id"]: t["status"] for t in env.truth()["messages"]}
    assert len(raw) == len(truth) > 2000
    for way in SortWay:
        rows = client.read_all(sort=sort, way=way)
        assert sorted(m.id or 0 for m in rows) == sorted(truth)  # each row once
        assert rows == sorted(rows, key=lambda m: sort_key(sort, m), reverse=way is SortWay.DESC)
        for m in rows:
            assert m.id is not None and m.status is not None
            assert m.status.value == truth[m.id]
            assert_parsed_as_sent(m, raw[m.id])
    seen = {m.status for m in rows}
    assert seen >= {
        MessageStatus.DELIVERED,
        MessageStatus.READ,
        MessageStatus.SENT,
        MessageStatus.EXPIRED,
        MessageStatus.NOT_VIBER_USER,
        MessageStatus.NOT_SERVICE_USER,
    }, seen


@pytest.mark.parametrize("mode", MODES)
def test_sort_by_delivered_in_each_mode_and_with_reportless_statuses(
    serve: Factory, mode: str
) -> None:
    env = serve(mixed(), delivered_sort=mode)
    # reports of the statuses to hide, whatever the draws: a reportless switch must show
    env.sim.create_messages(
        [{"status": s, "created_at": T0 - 900 + i, "delivered_at": T0 - 300 + i}
         for i, s in enumerate(REPORTLESS * 3)]
    )  # fmt: skip
    client = Sdk(env.server.url)
    for hidden in ([], REPORTLESS):
        r = env.admin("sort", {"reportless": hidden}, method="PUT")  # switched while running
        assert r.json() == {"delivered": mode, "reportless": hidden}, r.text
        rows = client.read_all(sort="id")
        blank = [m for m in rows if m.delivered_at is None]
        assert 0 < len(blank) < len(rows)  # NULLs and report times both: the modes differ
        for m in rows:
            assert m.status is not None
            final = m.status.value in FINAL_STATUSES and m.status.value not in hidden
            assert (m.delivered_at is not None) == final, m
        assert {m.status.value for m in blank if m.status} >= set(hidden)
        for way in SortWay:
            served = client.read_all(sort="delivered", way=way)
            assert [m.id for m in served] == order(rows, mode, way), (mode, way, hidden)
            assert {m.id: m for m in served} == {m.id: m for m in rows}  # same records


# --- every status, filters and paging on a paused account ---------------------------------


def every_status(sim: Simulator, now: float) -> dict[int, dict[str, Any]]:
    """Three manual messages in each status; their specs by id."""
    channel = {"read": "viber", "not_viber_user": "viber", "not_service_user": "whatsapp"}
    specs = [
        {
            "status": status,
            "type": channel.get(status, "sms"),
            "created_at": now - 3000 + 60 * i,
            "reference_id": f"ref{i:04d}",
        }
        for i, status in enumerate(sorted(STATUSES) * 3)
    ]
    return dict(zip(sim.create_messages(specs), specs, strict=True))


def test_paused_account_shows_every_status_the_sdk_knows(
    manual_simulator: tuple[ManualClock, Simulator, SimulatorServer],
) -> None:
    clock, sim, server = manual_simulator
    sim.set_scenario("paused")
    specs = every_status(sim, clock.now())
    assert {s.value for s in MessageStatus} == STATUSES  # the SDK's enum is the simulator's list
    client = Sdk(server.url)
    rows = client.read_all(limit=15, sort="id", way=SortWay.DESC)
    assert [m.id for m in rows] == sorted(specs, reverse=True)
    assert {m.status for m in rows} == set(MessageStatus)
    for m in rows:
        assert m.id is not None and m.status is not None
        spec = specs[m.id]
        assert (m.status.value, m.reference_id) == (spec["status"], spec["reference_id"])
        assert m.type is not None and m.type.value == spec["type"]
        assert (m.amount is None) == (spec["status"] in UNPRICED_STATUSES)
        assert (m.delivered_at is None) == (spec["status"] not in FINAL_STATUSES)
        assert m.created_at == datetime.fromtimestamp(spec["created_at"], UTC).replace(tzinfo=None)
    for mode in MODES:
        sim.set_sorting(delivered=mode)
        for hidden in ([], REPORTLESS):
            sim.set_sorting(reportless=hidden)
            current = client.read_all(limit=15, sort="id")
            assert sum(m.delivered_at is None for m in current) == 3 * (5 + len(hidden))
            for way in SortWay:
                served = client.read_all(limit=15, sort="delivered", way=way)
                assert [m.id for m in served] == order(current, mode, way), (mode, way, hidden)


def test_filters_select_what_the_sdk_asks_for(
    manual_simulator: tuple[ManualClock, Simulator, SimulatorServer],
) -> None:
    clock, sim, server = manual_simulator
    sim.set_scenario("paused")
    specs = every_status(sim, clock.now())
    client = Sdk(server.url)
    for msg_id, spec in list(specs.items())[::7]:
        (one,) = client.read_all(filter_id=msg_id)
        assert (one.id, one.reference_id) == (msg_id, spec["reference_id"])
        (same,) = client.read_all(filter_reference_id=spec["reference_id"])
        assert same == one
    assert client.read_all(filter_id=1) == []
    assert len(client.read_all(limit=15, filter_campaign_id=21)) == len(specs)
    assert client.read_all(filter_campaign_id=22) == []
    start, end = clock.now() - 2400, clock.now() - 1200
    window = client.read_all(
        limit=15,
        filter_from=datetime.fromtimestamp(start, UTC),
        filter_to=datetime.fromtimestamp(end, UTC),
        way=SortWay.DESC,
    )
    inside = [i for i, s in specs.items() if start <= s["created_at"] <= end]
    assert [m.id for m in window] == sorted(inside, reverse=True) and len(inside) == 21


def test_sdk_default_date_format_is_refused(
    manual_simulator: tuple[ManualClock, Simulator, SimulatorServer],
) -> None:
    # a finding about the SDK, not the simulator: both of the provider's documents give
    # filter[from] as Y-m-d H:i:s, but the SDK formats it as ISO 8601 with a T and microseconds
    clock, _, server = manual_simulator
    client = Sdk(server.url, documented_dates=False)
    assert client.config.datetime_format == "%Y-%m-%dT%H:%M:%S.%f%z"
    with pytest.raises(ApiException) as refused:
        client.messages.get_messages(filter_from=datetime.fromtimestamp(clock.now() - 60, UTC))
    assert refused.value.status == 422 and refused.value.body is not None
    errors = json.loads(refused.value.body)["errors"]
    assert errors == {"filter.from": ["The filter.from does not match the format Y-m-d H:i:s."]}
    client.config.datetime_format = FMT  # the documented format: accepted
    page = client.messages.get_messages(filter_from=datetime.fromtimestamp(clock.now() - 60, UTC))
    assert page.meta is not None and page.meta.page is not None and page.meta.page.total == 0


# --- what the SDK cannot read: quirks the provider's documents allow ----------------------


@pytest.mark.parametrize(
    ("fault", "field"),
    [
        ("phone_string", "phone"),  # the doc page types phone as a string
        ("unknown_status", "status"),  # a status outside the 13 "can appear one day"
    ],
)
def test_sdk_models_refuse_documented_quirks(serve: Factory, fault: str, field: str) -> None:
    # a finding about the SDK: its models are strict where the documents say a reader must be
    # tolerant, so the SDK is an oracle for the simulator's default answers only
    env = serve(mixed(backfill=600.0))
    client = Sdk(env.server.url)
    env.sim.add_fault(fault, count=1)
    with pytest.raises(ValidationError) as refused:
        client.messages.get_messages(page_limit=15, way=SortWay.DESC)
    assert [e["loc"] for e in refused.value.errors()] == [(field,)]
    assert client.read_all(limit=15, filter_campaign_id=8)  # the fault spent: read as before


def test_sdk_drops_the_doc_pages_send_at(serve: Factory) -> None:
    # a finding about the SDK: the doc page names the send time send_at, the OpenAPI file
    # sent_at; the SDK knows only sent_at and drops send_at without a word
    env = serve(mixed(backfill=600.0))
    client = Sdk(env.server.url)
    env.sim.add_fault("send_at", count=1)
    page = client.messages.get_messages(page_limit=15, sort="id", way=SortWay.DESC)
    sent = [m for m in page.data or [] if m.status is MessageStatus.SENT]
    assert sent and all(m.sent_at is None for m in sent)
    again = client.messages.get_messages(page_limit=15, sort="id", way=SortWay.DESC)
    assert all(m.sent_at is not None for m in again.data or [] if m.status is MessageStatus.SENT)
