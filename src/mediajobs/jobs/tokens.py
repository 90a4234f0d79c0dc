"""Opaque NextTokens: the sort key of the last job returned, bound to bucket, filters and order.

A token is `<base64url payload>.<hmac>`; the HMAC key is shared by every node through the
database, so a token from one API node works on another, and a forged or edited token, or
one issued for other filters, is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json


class BadToken(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def scope_digest(*parts: object) -> str:
    """A digest of everything a token is bound to (bucket, kind, filters, order)."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":"), default=str).encode()).hexdigest()[:16]


def encode(key: bytes, scope: str, created_at: float, seq: int) -> str:
    payload = _b64(json.dumps([scope, repr(created_at), seq], separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:12])
    return f"{payload}.{mac}"


def decode(key: bytes, scope: str, token: str) -> tuple[float, int]:
    payload, sep, mac = token.partition(".")
    if not sep:
        raise BadToken("nextToken is not a token this server issued.")
    want = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:12])
    if not hmac.compare_digest(want, mac):
        raise BadToken("nextToken is not a token this server issued.")
    try:
        bound, created, seq = json.loads(_unb64(payload))
        created_at, seq = float(created), int(seq)
    except (ValueError, TypeError, binascii.Error):
        raise BadToken("nextToken is malformed.") from None
    if bound != scope:
        raise BadToken("nextToken was issued for another bucket, filter or order.")
    return created_at, seq
