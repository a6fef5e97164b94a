"""The simulator's own control API under /_sim/ (no auth): scenarios, faults, sorting, truth."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from .clock import ManualClock
from .engine import Simulator
from .replies import Reply, Request, admin_error, json_body, json_reply

AdminHandler = Callable[[Simulator, Request], Reply]


def _object(req: Request) -> dict[str, Any] | None:
    """The JSON object body, or None."""
    body = json_body(req)
    return body if isinstance(body, dict) else None


def _truth(sim: Simulator, req: Request) -> Reply:
    """GET /_sim/truth[?campaign_id=N]."""
    raw = parse_qs(req.query).get("campaign_id")
    try:
        campaign_id = int(raw[-1]) if raw else None
    except ValueError:
        return admin_error(422, "campaign_id must be an integer")
    return json_reply(200, sim.truth(campaign_id))


def _scenario(sim: Simulator, req: Request) -> Reply:
    """POST /_sim/scenario {"name": ...}."""
    body = _object(req) or {}
    try:
        sim.set_scenario(str(body.get("name")))
    except ValueError as exc:
        return admin_error(422, str(exc))
    return json_reply(200, {"scenario": sim.scenario})


def _add_fault(sim: Simulator, req: Request) -> Reply:
    """POST /_sim/faults {"kind", "count", "endpoint", "skip", ...params}."""
    body = _object(req)
    if body is None or not isinstance(body.get("kind"), str):
        return admin_error(422, 'expected {"kind": ..., "count": ..., "endpoint": ...}')
    params = dict(body)
    kind = params.pop("kind")
    count = params.pop("count", None)
    endpoint = str(params.pop("endpoint", "messages"))
    try:
        fault = sim.add_fault(kind, count, endpoint, **params)
    except ValueError as exc:
        return admin_error(422, str(exc))
    return json_reply(201, {"fault": fault})


def _list_faults(sim: Simulator, req: Request) -> Reply:
    """GET /_sim/faults."""
    return json_reply(200, {"faults": sim.faults(), "applied": sim.fault_counts()})


def _clear_faults(sim: Simulator, req: Request) -> Reply:
    """DELETE /_sim/faults."""
    sim.clear_faults()
    return json_reply(200, {"faults": []})


def _create_messages(sim: Simulator, req: Request) -> Reply:
    """POST /_sim/messages {"messages": [...]}."""
    body = _object(req)
    specs = body.get("messages") if body else None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        return admin_error(422, 'expected {"messages": [{...}, ...]}')
    try:
        ids = sim.create_messages(specs)
    except (TypeError, ValueError) as exc:
        return admin_error(422, str(exc))
    return json_reply(201, {"ids": ids})


def _set_status(sim: Simulator, req: Request) -> Reply:
    """POST /_sim/messages/status {"id": ..., "status": ...}."""
    body = _object(req) or {}
    msg_id, status = body.get("id"), body.get("status")
    if not isinstance(msg_id, int) or not isinstance(status, str):
        return admin_error(422, 'expected {"id": <int>, "status": <str>}')
    try:
        sim.set_status(msg_id, status)
    except KeyError:
        return admin_error(404, f"no message {msg_id}")
    return json_reply(200, {"id": msg_id, "status": status})


def _get_sort(sim: Simulator, req: Request) -> Reply:
    """GET /_sim/sort."""
    return json_reply(200, sim.sorting())


def _put_sort(sim: Simulator, req: Request) -> Reply:
    """PUT /_sim/sort {"delivered": <mode>, "reportless": [<final status>, ...]}, either or both."""
    body = _object(req)
    reportless = (body or {}).get("reportless")
    if not body or set(body) - {"delivered", "reportless"}:
        return admin_error(400, 'expected {"delivered": <mode>, "reportless": [<status>, ...]}')
    if reportless is not None and not (
        isinstance(reportless, list) and all(isinstance(s, str) for s in reportless)
    ):
        return admin_error(400, "reportless must be a list of final statuses")
    try:
        settings = sim.set_sorting(delivered=body.get("delivered"), reportless=reportless)
    except ValueError as exc:
        return admin_error(400, str(exc))
    return json_reply(200, settings)


def _expire_tokens(sim: Simulator, req: Request) -> Reply:
    """POST /_sim/tokens/expire."""
    return json_reply(200, {"revoked": sim.expire_tokens()})


def _get_clock(sim: Simulator, req: Request) -> Reply:
    """GET /_sim/clock."""
    return json_reply(200, {"now": sim.now(), "manual": isinstance(sim.clock, ManualClock)})


def _move_clock(sim: Simulator, req: Request) -> Reply:
    """POST /_sim/clock {"advance": seconds} or {"set": epoch}; ManualClock only."""
    clock = sim.clock
    if not isinstance(clock, ManualClock):
        return admin_error(409, "the simulator does not run on a ManualClock")
    body = _object(req) or {}
    try:
        if "set" in body:
            clock.set(float(body["set"]))
        else:
            clock.advance(float(body.get("advance", 0.0)))
    except (TypeError, ValueError) as exc:
        return admin_error(422, str(exc))
    return json_reply(200, {"now": sim.now()})


def _stats(sim: Simulator, req: Request) -> Reply:
    """GET /_sim/stats."""
    return json_reply(200, sim.stats())


ADMIN_ROUTES: dict[str, dict[str, AdminHandler]] = {
    "/_sim/truth": {"GET": _truth},
    "/_sim/scenario": {"POST": _scenario},
    "/_sim/faults": {"GET": _list_faults, "POST": _add_fault, "DELETE": _clear_faults},
    "/_sim/messages": {"POST": _create_messages},
    "/_sim/messages/status": {"POST": _set_status},
    "/_sim/sort": {"GET": _get_sort, "PUT": _put_sort},
    "/_sim/tokens/expire": {"POST": _expire_tokens},
    "/_sim/clock": {"GET": _get_clock, "POST": _move_clock},
    "/_sim/stats": {"GET": _stats},
}
