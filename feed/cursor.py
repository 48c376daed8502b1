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
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MAX_WALK_RECOMMENDED", "CursorCodec", "FeedPosition", "InvalidCursor", "b64url",
           "unb64url", "walk_digest"]

MAX_CURSOR_LENGTH = 4096
VERSION = b"\x01"
SALT_BYTES = 16
TAG_BYTES = 16
# Each cursor has its own key (see CursorCodec._cipher), so one fixed nonce never
# repeats under a key.
NONCE = bytes(12)
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class InvalidCursor(ValueError):
    """The cursor is malformed, tampered with, foreign or expired."""


def b64url(data: bytes) -> str:
    """URL-safe base64 without padding (cursors, stream ids)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """Inverse of :func:`b64url`."""
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
        return b64url(VERSION + salt + sealed)

    def decode(self, cursor: str, scope: str, subject: str, *, now: float) -> dict[str, Any]:
        """The position inside a valid cursor; raises InvalidCursor otherwise."""
        if (not cursor or len(cursor) > MAX_CURSOR_LENGTH
                or _ALPHABET.fullmatch(cursor) is None):
            raise InvalidCursor("the cursor is malformed")
        try:
            raw = unb64url(cursor)
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


# Recommended koos a walk remembers so as never to repeat one: 4 bytes each in the cursor.
MAX_WALK_RECOMMENDED = 200


def walk_digest(koo_id: str) -> str:
    """The short name a cursor keeps of a recommended koo (a collision only skips one)."""
    return hashlib.blake2s(koo_id.encode(), digest_size=4).hexdigest()


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """Where a reader's walk through their feed is: the timeline position, how many items
    it has shown, and which recommended koos (their :func:`walk_digest`)."""

    before: tuple[int, str] | None = None
    shown: int = 0
    recommended_before: frozenset[str] = frozenset()
    recommended_order: tuple[str, ...] = ()

    @classmethod
    def from_position(cls, position: dict[str, Any]) -> FeedPosition:
        created, koo_id = position.get("t"), position.get("k")
        shown, seen = position.get("n", 0), position.get("x", "")
        if created is None and koo_id is None:
            before = None
        elif isinstance(created, int) and isinstance(koo_id, str):
            before = (created, koo_id)
        else:
            raise InvalidCursor("the cursor is malformed")
        if (not isinstance(shown, int) or shown < 0 or not isinstance(seen, str)
                or len(seen) % 8 or len(seen) > 8 * MAX_WALK_RECOMMENDED):
            raise InvalidCursor("the cursor is malformed")
        order = tuple(seen[i:i + 8] for i in range(0, len(seen), 8))
        return cls(before, shown, frozenset(order), order)

    def recommended_slots(self, limit: int, every: int) -> int:
        """How many of the next ``limit`` items are recommended: one at every ``every``-th
        position of the whole walk, so the rate holds over pages of any size."""
        if every <= 0 or len(self.recommended_order) >= MAX_WALK_RECOMMENDED:
            return 0
        return (self.shown + limit) // every - self.shown // every

    def after(self, boundary: tuple[int, str] | None, shown: int, recommended: list[str]
              ) -> dict[str, Any]:
        """The next page's cursor position."""
        order = (*self.recommended_order, *(walk_digest(k) for k in recommended))
        created, koo_id = boundary if boundary is not None else (None, None)
        return {"t": created, "k": koo_id, "n": self.shown + shown,
                "x": "".join(order[:MAX_WALK_RECOMMENDED])}
