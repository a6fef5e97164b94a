"""Request and reply values shared by the API, the admin API and the transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec


@dataclass(frozen=True)
class Request:
    """What the transport read: method, path, raw query, lower-cased headers, body."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Reply:
    """What the transport must send; `delay`, `reset` and `drip` come from injected faults.

    ``drip`` is (seconds between bytes, "headers" | "body" | "both"): what is sent a byte at a
    time.
    """

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    drip: tuple[float, str] | None = None


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON reply."""
    return Reply(status, msgspec.json.encode(payload), headers or {})


def laravel_422(errors: Mapping[str, list[str]]) -> Reply:
    """Laravel's validation failure: the first message plus '(and N more errors)'."""
    messages = [m for msgs in errors.values() for m in msgs]
    message = messages[0]
    if len(messages) > 1:
        more = len(messages) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return json_reply(422, {"message": message, "errors": dict(errors)})


def json_body(req: Request) -> Any:
    """The decoded JSON body, or None when it is empty or not JSON."""
    if not req.body.strip():
        return None
    try:
        return msgspec.json.decode(req.body)
    except msgspec.DecodeError:
        return None


def admin_error(status: int, message: str) -> Reply:
    """An admin API error, in the same Laravel shape as the real API's."""
    if status == 422:
        return laravel_422({"request": [message]})
    return json_reply(status, {"message": message})
