"""JWT-shaped bearer tokens, issued and checked against the simulator clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


def _b64(data: bytes) -> str:
    """Encode base64url without padding, as JWTs do."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode base64url that may lack its padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(b'{"typ":"JWT","alg":"HS256"}')


class TokenStore:
    """Issues HS256 JWTs and remembers which ones are still honoured."""

    def __init__(self, secret: bytes, ttl: float, account_id: int) -> None:
        self._secret = secret
        self._ttl = ttl
        self._account_id = account_id
        self._serial = 0
        # token -> exp; revoking forgets them, so even unexpired ones stop working
        self._issued: dict[str, int] = {}

    def issue(self, now: float) -> str:
        """Return a new token valid from `now` for the configured ttl."""
        self._serial += 1
        exp = int(now + self._ttl)
        claims = {
            "iat": int(now),
            "exp": exp,
            "roles": [],
            "id": self._account_id,
            "jti": self._serial,  # keeps tokens issued in the same second distinct
        }
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{_HEADER}.{body}.{self._sign(f'{_HEADER}.{body}')}"
        self._issued[token] = exp
        return token

    def valid(self, token: str, now: float) -> bool:
        """Tell whether `token` is well-formed, signed by us, not revoked and unexpired."""
        exp = self._issued.get(token)
        if exp is None or now >= exp:
            return False
        head, _, sig = token.rpartition(".")
        return hmac.compare_digest(sig, self._sign(head))

    def revoke_all(self) -> int:
        """Forget every token issued so far; return how many were forgotten."""
        count = len(self._issued)
        self._issued.clear()
        return count

    @staticmethod
    def claims(token: str) -> dict[str, object]:
        """Decode the payload of a token without checking it."""
        decoded = json.loads(_unb64(token.split(".")[1]))
        if not isinstance(decoded, dict):
            raise ValueError("token payload is not an object")
        return decoded

    def _sign(self, head: str) -> str:
        """HMAC-SHA256 signature of `header.payload`."""
        return _b64(hmac.new(self._secret, head.encode(), hashlib.sha256).digest())
