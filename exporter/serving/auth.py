"""Basic auth of the web endpoints: the users of the web configuration, checked by bcrypt.

Owns the check of an ``Authorization`` header (constant-time names, bcrypt one at a time, a
cache of the checks that passed keyed so that memory never holds a fast hash of a password)
and the challenge of a 401.

Must not import: httpx, the client, the poller, or the web server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterable

import bcrypt

from exporter.config.reader import Secret
from exporter.config.webconfig import WebConfig

AUTH_CHALLENGE = 'Basic realm="bsg-exporter"'
"""The WWW-Authenticate value of a 401."""
_BCRYPT_COST = re.compile(r"\$2[aby]\$([0-9]{2})\$")


def authenticator(config: WebConfig) -> BasicAuth | None:
    """The basic-auth check of ``config``, or None when it configures no user."""
    return BasicAuth(config.basic_auth_users) if config.basic_auth_users else None


class BasicAuth:
    """Checks Authorization headers against bcrypt hashes, caching the successful checks."""

    CACHE_SIZE = 1024

    def __init__(self, users: Iterable[tuple[str, Secret]]) -> None:
        self._users = tuple((name.encode(), hashed.reveal().encode()) for name, hashed in users)
        if not self._users:
            raise ValueError("BasicAuth needs at least one user")
        # An unknown user is checked against the costliest real hash, so that a wrong user
        # name takes as long as a wrong password and does not reveal which users exist.
        self._decoy = max((h for _, h in self._users), key=_bcrypt_cost)
        # The cache is keyed by a keyed hash: memory never holds a fast, unsalted hash of a
        # password that could be brute-forced from a dump.
        self._cache_key = secrets.token_bytes(32)
        self._good: set[bytes] = set()
        # bcrypt is slow on purpose: one check at a time keeps a flood of bad passwords from
        # taking every core from the scrapes.
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> bool:
        """True when the header carries a configured user and its password."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.new(
            self._cache_key, len(user).to_bytes(4, "big") + user + password, hashlib.sha256
        ).digest()
        if digest in self._good:
            return True
        hashed = None
        for name, candidate in self._users:  # every name compared, in constant time each
            if hmac.compare_digest(name, user):
                hashed = candidate
        with self._lock:
            try:
                matches = bcrypt.checkpw(password, hashed or self._decoy)
            except ValueError:  # longer than bcrypt's 72 bytes, or a NUL byte: never valid
                matches = False
        if not (matches and hashed is not None):
            return False
        if len(self._good) >= self.CACHE_SIZE:
            self._good.clear()
        self._good.add(digest)
        return True


def _basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    """The user and password of a "Basic" Authorization header, as bytes."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _bcrypt_cost(hashed: bytes) -> int:
    """The cost factor of a bcrypt hash."""
    match = _BCRYPT_COST.match(hashed.decode("ascii", "replace"))
    return int(match.group(1)) if match else 0
