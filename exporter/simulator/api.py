"""Transport-free HTTP semantics of the fake API: routing, auth, validation, faults."""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from .admin import ADMIN_ROUTES
from .engine import Simulator
from .faults import BALANCE_FAULTS, CONTENT_FAULTS, HUGE_FIELDS, Fault
from .render import PageRenderer
from .replies import Reply, Request, json_reply, laravel_422

_INT = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})")
_LIMIT_ERROR = "The page.limit must be between 15 and 500."
_UNAUTHENTICATED = {"message": "Unauthenticated."}


Handler = Callable[[Simulator, Request], Reply]


def dispatch(sim: Simulator, req: Request) -> Reply:
    """Answer one request as the BSG API (or the simulator's admin API) would."""
    path = req.path.rstrip("/") or "/"
    if path in API_ROUTES:
        endpoint, method, handler = API_ROUTES[path]
        sim.count_request(endpoint)
        if req.method != method:
            return _not_allowed(req.method, path, [method])
        return _with_faults(sim, endpoint, handler, req)
    routes = ADMIN_ROUTES.get(path)
    if routes is None:
        return json_reply(404, {"message": "Not Found"})
    admin = routes.get(req.method)
    if admin is None:
        return _not_allowed(req.method, path, sorted(routes))
    return admin(sim, req)


def _not_allowed(method: str, path: str, allowed: list[str]) -> Reply:
    """Laravel's MethodNotAllowedHttpException."""
    message = (
        f"The {method} method is not supported for route {path.lstrip('/')}. "
        f"Supported methods: {', '.join(allowed)}."
    )
    return json_reply(405, {"message": message}, {"Allow": ", ".join(allowed)})


def _with_faults(sim: Simulator, endpoint: str, handler: Handler, req: Request) -> Reply:
    """Run a handler with the transport faults that target its endpoint."""
    delay = sum(float(f.params["delay"]) for f in sim.take_faults(endpoint, frozenset({"slow"})))
    failing = sim.take_faults(endpoint, frozenset({"http_status"}))
    reply = _status_fault(failing[0].params) if failing else handler(sim, req)
    for fault in sim.take_faults(endpoint, frozenset({"deep_nesting"})):
        reply = _nested(reply, fault.params)
    for fault in sim.take_faults(endpoint, frozenset({"malformed", "reset"})):
        if fault.kind == "malformed":
            # a proxy that cut the upstream answer short, yet says 200
            reply = Reply(200, reply.body[: len(reply.body) // 2] + b"\x00<", reply.headers)
        else:
            reply.reset = True
    for fault in sim.take_faults(endpoint, frozenset({"gzip", "bad_encoding"})):
        if fault.kind == "gzip":
            reply.body = _gzip(reply.body, int(fault.params["pad"]))
        reply.headers["Content-Encoding"] = str(fault.params.get("encoding", "gzip"))
    for fault in sim.take_faults(endpoint, frozenset({"drip"})):
        reply.drip = (float(fault.params["interval"]), str(fault.params["part"]))
    reply.delay = delay
    return reply


def _nested(reply: Reply, params: dict[str, Any]) -> Reply:
    """The reply with a ``nested`` member ``depth`` arrays deep (and the fault's status)."""
    if params["status"] is not None:
        reply = _status_fault({"status": params["status"]})
    depth = int(params["depth"])
    nested = b"[" * depth + b"]" * depth
    body = reply.body.rstrip()
    if not (body.startswith(b"{") and body.endswith(b"}")):
        return Reply(reply.status, b'{"nested":' + nested + b"}", reply.headers)
    comma = b"," if body[1:-1].strip() else b""
    return Reply(reply.status, body[:-1] + comma + b'"nested":' + nested + b"}", reply.headers)


def _gzip(body: bytes, pad: int) -> bytes:
    """The body gzipped, with ``pad`` spaces after it (a bomb when large); built in chunks."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    parts = [packer.compress(body)]
    chunk = b" " * min(pad, 2**20)
    for start in range(0, pad, len(chunk) or 1):
        parts.append(packer.compress(chunk[: pad - start]))
    parts.append(packer.flush())
    return b"".join(parts)


def _status_fault(params: dict[str, Any]) -> Reply:
    """The reply of an http_status fault, with Laravel's wording where it has one."""
    status = int(params["status"])
    headers: dict[str, str] = {}
    if status == 429:
        message = "Too Many Attempts."
        headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0"}
    elif status == 401:
        message = "Unauthenticated."
    elif status >= 500:
        message = "Server Error" if status == 500 else HTTPStatus(status).phrase
    else:
        message = HTTPStatus(status).phrase
    retry_after = params.get("retry_after")
    if isinstance(retry_after, str):
        headers["Retry-After"] = retry_after  # junk too: that is what the fault is for
    elif retry_after is not None:
        number = float(retry_after)
        whole = math.isfinite(number) and number.is_integer()
        headers["Retry-After"] = str(int(number)) if whole else repr(number)
    if params.get("message") is not None:
        message = str(params["message"])
    return json_reply(status, {"message": message}, headers)


def _bearer(req: Request) -> str | None:
    """The token of an `Authorization: Bearer ...` header."""
    scheme, _, token = req.headers.get("authorization", "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _authorized(sim: Simulator, req: Request) -> bool:
    """Tell whether the request carries a token the simulator honours now."""
    token = _bearer(req)
    return token is not None and sim.authorized(token)


def _login(sim: Simulator, req: Request) -> Reply:
    """POST /api/auth/login."""
    api_key = _body_fields(req).get("api_key")
    if not isinstance(api_key, str) or not api_key:
        message = "The api key field is required."
        return json_reply(422, {"message": message, "errors": {"api_key": [message]}})
    token = sim.login(api_key)
    return json_reply(200, {"bearer": token}) if token else json_reply(401, _UNAUTHENTICATED)


def _refresh(sim: Simulator, req: Request) -> Reply:
    """POST /api/auth/refresh."""
    if not _authorized(sim, req):
        return json_reply(401, _UNAUTHENTICATED)
    return json_reply(200, {"bearer": sim.refresh()})


def _balance(sim: Simulator, req: Request) -> Reply:
    """GET /api/accounts/balance."""
    if not _authorized(sim, req):
        return json_reply(401, _UNAUTHENTICATED)
    data = sim.balance()
    for fault in sim.take_faults("balance", BALANCE_FAULTS):
        name = fault.params["field"] or HUGE_FIELDS["balance"][0]
        data[name] = int("9" * int(fault.params["digits"]))
    return json_reply(200, {"data": data})


def _messages(sim: Simulator, req: Request) -> Reply:
    """GET /api/messages."""
    if not _authorized(sim, req):
        return json_reply(401, _UNAUTHENTICATED)
    params, errors = parse_messages_query(req.query, sim)
    if errors:
        return laravel_422(errors)
    with sim.lock:
        faults = sim.take_faults("messages", CONTENT_FAULTS)
        return json_reply(200, _page(sim, params, faults))


def _page(sim: Simulator, params: dict[str, Any], faults: list[Fault]) -> dict[str, Any]:
    """Build the page object, bent by the content faults in effect."""
    kinds = {f.kind: f.params for f in faults}
    offset, limit = params.pop("offset"), params.pop("limit")
    shift = int(kinds["duplicate_rows"]["n"]) if "duplicate_rows" in kinds else 0
    served = limit
    if "page_cap" in kinds:  # an API that serves fewer rows a page than asked for
        served = min(limit, int(kinds["page_cap"]["limit"]))
        limit = served if kinds["page_cap"]["state"] else limit
    now, total, rows = sim.query(offset=max(offset - shift, 0), limit=served, **params)
    data = [] if "empty_page" in kinds else PageRenderer(sim, now, kinds).records(rows)
    if "total_lies" in kinds:
        lie = kinds["total_lies"]
        # beyond: always more rows than this page reaches, however far the reading gets
        base = offset + len(data) if lie["beyond"] else total
        total = base + int(lie["delta"])
    return {"data": data, "meta": {"page": {"total": total, "offset": offset, "limit": limit}}}


def _body_fields(req: Request) -> dict[str, Any]:
    """A JSON object body, or form fields, as Laravel reads either."""
    if not req.body:
        return {}
    try:
        decoded = json.loads(req.body)
    except ValueError:
        form = parse_qs(req.body.decode("utf-8", "replace"))
        return {k: v[-1] for k, v in form.items()}
    return decoded if isinstance(decoded, dict) else {}


def parse_messages_query(query: str, sim: Simulator) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Validate the list parameters like the provider's FormRequest; return (params, errors)."""
    # PHP keeps the last of repeated keys; Laravel turns empty strings into null
    raw = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items() if v[-1] != ""}
    errors: dict[str, list[str]] = {}
    params: dict[str, Any] = {}
    limit = _int(raw.get("page[limit]", "50"))
    if limit is None or not 15 <= limit <= 500:
        errors["page.limit"] = [_LIMIT_ERROR]
    params["limit"] = limit
    params["offset"] = _offset(raw.get("page[offset]", "0"), errors)
    params["sort"] = _choice(raw, "sort", ("id", "phone", "delivered"), errors)
    params["descending"] = _choice(raw, "way", ("asc", "desc"), errors) == "desc"
    for key, name in (("filter[id]", "message_id"), ("filter[campaign_id]", "campaign_id")):
        if key in raw:
            params[name] = _int(raw[key])
            if params[name] is None:
                errors[_dotted(key)] = [f"The {_dotted(key)} must be an integer."]
    if "filter[reference_id]" in raw:
        params["reference_id"] = raw["filter[reference_id]"]
    for key, name in (("filter[from]", "date_from"), ("filter[to]", "date_to")):
        if key in raw:
            params[name] = _date(raw[key], sim)
            if params[name] is None:
                errors[_dotted(key)] = [
                    f"The {_dotted(key)} does not match the format Y-m-d H:i:s."
                ]
    return params, errors


def _dotted(key: str) -> str:
    """'filter[id]' -> 'filter.id', the attribute name Laravel prints."""
    return key.replace("[", ".").rstrip("]")


def _int(text: str) -> int | None:
    """An integer like PHP's FILTER_VALIDATE_INT accepts, else None."""
    text = text.strip()
    return int(text) if _INT.fullmatch(text) else None


def _offset(text: str, errors: dict[str, list[str]]) -> int:
    """page[offset]: an integer >= 0."""
    value = _int(text)
    if value is None:
        errors["page.offset"] = ["The page.offset must be an integer."]
    elif value < 0:
        errors["page.offset"] = ["The page.offset must be at least 0."]
    return max(value or 0, 0)


def _choice(
    raw: Mapping[str, str], key: str, allowed: tuple[str, ...], errors: dict[str, list[str]]
) -> str:
    """An enumerated parameter, defaulting to its first allowed value."""
    value = raw.get(key, allowed[0])
    if value not in allowed:
        errors[key] = [f"The selected {key} is invalid."]
        return allowed[0]
    return value


def _date(text: str, sim: Simulator) -> float | None:
    """Parse 'Y-m-d H:i:s' in the simulator's zone into epoch seconds."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    try:
        y, mo, d, h, mi, sec = (int(p) for p in match.groups())
        return datetime(y, mo, d, h, mi, sec, tzinfo=sim.zone).timestamp()
    except ValueError:
        return None


API_ROUTES: dict[str, tuple[str, str, Handler]] = {
    "/api/auth/login": ("login", "POST", _login),
    "/api/auth/refresh": ("refresh", "POST", _refresh),
    "/api/messages": ("messages", "GET", _messages),
    "/api/accounts/balance": ("balance", "GET", _balance),
}
