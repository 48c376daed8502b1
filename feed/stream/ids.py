"""Event ids of the realtime stream: opaque, authenticated, bound to their reader.

An id names an entry of the reader's live stream. It is sealed with the page cursors'
primitives (AES-256-GCM under a key derived from the cursor secret and a random salt,
the reader as associated data, URL-safe base64; see :mod:`feed.cursor`), so it shows no
key or entry id, and one issued for another reader, altered, or too old does not open:
the stream then tells the client to reload its feed (``event: reset``).

Unlike a cursor, which gets a key of its own, ids are sealed by the thousand (an event
for every streaming follower): one derived key seals up to ``IDS_PER_KEY`` ids, each
under its own nonce, a counter, so a nonce never repeats under a key.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from feed.cursor import MAX_CURSOR_LENGTH, SALT_BYTES, TAG_BYTES, b64url, unb64url

__all__ = ["ID_TTL_SECONDS", "StreamIds"]

VERSION = b"\x02"
NONCE_BYTES = 12
IDS_PER_KEY = 1 << 24  # then a new salt, so a new key
ID_TTL_SECONDS = 86_400  # far beyond how long a live stream is kept: expiry never decides
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class StreamIds:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"stream-id-aead-key\n" + secret.encode()).digest()
        self._salt = b""
        self._aead: AESGCM | None = None
        self._count = 0

    def _derive(self, salt: bytes) -> AESGCM:
        return AESGCM(hmac.new(self._key, salt, hashlib.sha256).digest())

    @staticmethod
    def _bound_to(reader: str) -> bytes:
        return VERSION + b"stream\x00" + reader.encode()

    def seal(self, reader: str, entry_id: str, *, now: float) -> str:
        """The id a client sees for one entry of ``reader``'s live stream."""
        if self._aead is None or self._count >= IDS_PER_KEY:
            self._salt = os.urandom(SALT_BYTES)
            self._aead = self._derive(self._salt)
            self._count = 0
        self._count += 1
        nonce = self._count.to_bytes(NONCE_BYTES, "big")
        payload = orjson.dumps({"x": int(now) + ID_TTL_SECONDS, "e": entry_id})
        sealed = self._aead.encrypt(nonce, payload, self._bound_to(reader))
        return b64url(VERSION + self._salt + nonce + sealed)

    def open(self, reader: str, event_id: str, *, now: float) -> str | None:
        """The live stream entry an id names, or None if it is not a valid id of
        ``reader``'s (malformed, altered, foreign or expired)."""
        event_id = event_id.strip()
        if (not event_id or len(event_id) > MAX_CURSOR_LENGTH
                or _ALPHABET.fullmatch(event_id) is None):
            return None
        try:
            raw = unb64url(event_id)
        except (binascii.Error, ValueError):
            return None
        head = 1 + SALT_BYTES + NONCE_BYTES
        if len(raw) < head + TAG_BYTES or raw[:1] != VERSION:
            return None
        salt, nonce = raw[1:1 + SALT_BYTES], raw[1 + SALT_BYTES:head]
        try:
            body = self._derive(salt).decrypt(nonce, raw[head:], self._bound_to(reader))
            payload = orjson.loads(body)
        except (InvalidTag, orjson.JSONDecodeError):
            return None
        if not isinstance(payload, dict):
            return None
        expires, entry = payload.get("x"), payload.get("e")
        if not isinstance(expires, int) or expires < now:
            return None
        if not isinstance(entry, str) or _ENTRY_ID.fullmatch(entry) is None:
            return None
        return entry
