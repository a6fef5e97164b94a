"""What the client reads out of the provider's replies besides records: an error's message
(cleaned of secrets and control characters, cut short), ``Retry-After``, a token's expiry.

Nothing the provider writes reaches a log line or an exception unless :func:`safe_text` has
cleaned it.

Must not import: httpx, prometheus_client, or any exporter module but the decoder.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import re
from datetime import UTC, datetime

import msgspec

from exporter.bsg.decode import nested_too_deeply

_TEXT_LIMIT = 200
"""Characters of provider text kept in an error message."""


def api_message(body: bytes, key: str) -> str:
    """The ``message`` of a Laravel-shaped error body, cleaned and shortened, in parentheses;
    never the request itself."""
    if not body or nested_too_deeply(body):
        return ""
    try:
        decoded = msgspec.json.decode(body)
    except (ValueError, RecursionError):  # not JSON, or cut at the error body cap
        return ""
    message = decoded.get("message") if isinstance(decoded, dict) else None
    text = safe_text(str(message), key) if message not in (None, "") else ""
    return f"({text})" if text else ""


_SECRETS = re.compile(
    r"\b(?:live|test)_[A-Za-z0-9_\-]{6,}"  # an API key
    r"|\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"  # a JWT: header.claims.signature
    r"|\bBearer\s+[A-Za-z0-9._~+/=\-]+",  # an Authorization header's value
    re.IGNORECASE,
)
_SPACES = re.compile(r"[\t\n\r\v\f\x1c-\x1f\x85\u2028\u2029]+")
_CONTROLS = re.compile(
    r"[\x00-\x08\x0e-\x1b\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
REDACTED = "[redacted]"


def safe_text(text: str, secret: str | None = None, limit: int = _TEXT_LIMIT) -> str:
    """Provider text made fit for a log line or a page: the key and anything that looks like a
    key or a token replaced by ``[redacted]``, control and direction characters removed, line
    breaks made spaces, cut to ``limit`` characters."""
    if secret:
        text = text.replace(secret, REDACTED)
    text = _SECRETS.sub(REDACTED, text)
    text = _CONTROLS.sub("", _SPACES.sub(" ", text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` in seconds from ``now`` (a number or an HTTP date), at least 0; None
    when absent or unreadable. A number too large to mean anything comes back infinite."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _http_date(text, now)
    if seconds is None or math.isnan(seconds):
        return None
    return max(seconds, 0.0)


def _http_date(text: str, now: float) -> float | None:
    """Seconds from ``now`` to an HTTP date; None when it is not one."""
    try:
        moment = email.utils.parsedate_to_datetime(text)
        if moment.tzinfo is None:  # "-0000": HTTP dates are in GMT
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp() - now
    except (TypeError, ValueError, OverflowError, IndexError, OSError):
        return None


def clock_text(epoch: float) -> str:
    """A moment for a message, in UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, without verifying it (the API does that)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    try:
        expiry = float(exp)
    except OverflowError:  # an exp of hundreds of digits
        return None
    return expiry if math.isfinite(expiry) else None
