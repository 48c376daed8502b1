"""Opaque, encrypted, expiring page cursors bound to what they page through.

A cursor is ``base64url(version | salt | AES-256-GCM(payload))``. The payload
(the position and an expiry) is encrypted, so a cursor shows no ids or storage
keys; the scope (``feed``, ``koos``, ``reactions``) and subject (the user or koo
id in the path) are authenticated as associated data, so a cursor issued for one
user or route does not decrypt for another. Anything that does not decrypt and
parse raises :class:`InvalidCursor`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["CursorCodec", "InvalidCursor"]

MAX_CURSOR_LENGTH = 2048
VERSION = b"\x01"
SALT_BYTES = 16
TAG_BYTES = 16
# Each cursor has its own key (see CursorCodec._cipher), so one fixed nonce never
# repeats under a key.
NONCE = bytes(12)
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class InvalidCursor(ValueError):
    """The cursor is malformed, tampered with, foreign or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._key = hashlib.sha256(b"cursor-aead-key\n" + secret.encode()).digest()
        self.ttl_seconds = ttl_seconds

    def _cipher(self, salt: bytes) -> AESGCM:
        # A key per cursor, derived from its random salt: random 96-bit nonces under one
        # key are safe for only about 2^32 messages, and a long-lived cursor secret
        # issues far more cursors than that.
        return AESGCM(hmac.new(self._key, salt, hashlib.sha256).digest())

    @staticmethod
    def _bound_to(scope: str, subject: str) -> bytes:
        return VERSION + scope.encode() + b"\x00" + subject.encode()

    def encode(self, scope: str, subject: str, position: dict[str, Any], *, now: float) -> str:
        """A cursor for ``subject`` in ``scope`` that expires after the TTL."""
        payload = orjson.dumps({"x": int(now) + self.ttl_seconds, "p": position})
        salt = os.urandom(SALT_BYTES)
        sealed = self._cipher(salt).encrypt(NONCE, payload, self._bound_to(scope, subject))
        return _b64(VERSION + salt + sealed)

    def decode(self, cursor: str, scope: str, subject: str, *, now: float) -> dict[str, Any]:
        """The position inside a valid cursor; raises InvalidCursor otherwise."""
        if (not cursor or len(cursor) > MAX_CURSOR_LENGTH
                or _ALPHABET.fullmatch(cursor) is None):
            raise InvalidCursor("the cursor is malformed")
        try:
            raw = _unb64(cursor)
        except (binascii.Error, ValueError):
            raise InvalidCursor("the cursor is malformed") from None
        if len(raw) < 1 + SALT_BYTES + TAG_BYTES or raw[:1] != VERSION:
            raise InvalidCursor("the cursor is malformed")
        salt, sealed = raw[1:1 + SALT_BYTES], raw[1 + SALT_BYTES:]
        try:
            body = self._cipher(salt).decrypt(NONCE, sealed, self._bound_to(scope, subject))
        except InvalidTag:
            raise InvalidCursor(
                "the cursor was altered, or issued for another request or deployment"
            ) from None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidCursor("the cursor is malformed") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("p"), dict):
            raise InvalidCursor("the cursor is malformed")
        expires = payload.get("x")
        if not isinstance(expires, int) or expires < now:
            raise InvalidCursor("the cursor has expired")
        position: dict[str, Any] = payload["p"]
        return position
