"""Opaque, signed, expiring page cursors bound to what they page through.

A cursor is ``base64url(json payload) "." base64url(HMAC-SHA256 tag)``. The
payload names its scope (``feed``, ``koos``, ``reactions``) and subject (the
user or koo id in the path), so a cursor issued for one user is refused for
another. Anything that does not verify raises :class:`InvalidCursor`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

__all__ = ["CursorCodec", "InvalidCursor"]

MAX_CURSOR_LENGTH = 2048


class InvalidCursor(ValueError):
    """The cursor is malformed, tampered with, foreign or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._key = hashlib.sha256(b"cursor-key\n" + secret.encode()).digest()
        self.ttl_seconds = ttl_seconds

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:18]

    def encode(self, scope: str, subject: str, position: dict[str, Any], *, now: float) -> str:
        """A cursor for ``subject`` in ``scope`` that expires after the TTL."""
        payload = {"s": scope, "u": subject, "x": int(now) + self.ttl_seconds, "p": position}
        body = orjson.dumps(payload)
        return f"{_b64(body)}.{_b64(self._tag(body))}"

    def decode(self, cursor: str, scope: str, subject: str, *, now: float) -> dict[str, Any]:
        """The position inside a valid cursor; raises InvalidCursor otherwise."""
        if not cursor or len(cursor) > MAX_CURSOR_LENGTH or cursor.count(".") != 1:
            raise InvalidCursor("the cursor is malformed")
        body_text, tag_text = cursor.split(".")
        try:
            body, tag = _unb64(body_text), _unb64(tag_text)
        except (binascii.Error, ValueError):
            raise InvalidCursor("the cursor is malformed") from None
        if not hmac.compare_digest(tag, self._tag(body)):
            raise InvalidCursor("the cursor's signature does not match")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidCursor("the cursor is malformed") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("p"), dict):
            raise InvalidCursor("the cursor is malformed")
        if payload.get("s") != scope or payload.get("u") != subject:
            raise InvalidCursor("the cursor was issued for another request")
        expires = payload.get("x")
        if not isinstance(expires, int) or expires < now:
            raise InvalidCursor("the cursor has expired")
        position: dict[str, Any] = payload["p"]
        return position
