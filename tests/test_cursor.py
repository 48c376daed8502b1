"""Unit and property tests of page cursors (feed/cursor.py): opaque (encrypted), bound
to their route and subject, expiring, and anything else is InvalidCursor. Pure, no I/O."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import string
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.cursor import MAX_CURSOR_LENGTH, NONCE, SALT_BYTES, VERSION, CursorCodec, InvalidCursor

SECRET = "test-cursor-secret-0123456789"
TTL = 3600
NOW = 1_765_000_000.0
CODEC = CursorCodec(SECRET, TTL)

# What the read routes put in cursors, with what a DynamoDB page key holds.
POSITIONS: dict[str, dict[str, Any]] = {
    "feed": {"t": 1_765_000_000_123, "k": "koo_secret_id", "r": 3},
    "koos": {"t": 1_765_000_000_456, "k": "koo_other_id"},
    "reactions": {"start": {"koo_id": "koo_reacted_id", "rk": "user_fan#like",
                            "react_sk": "1765000000789#user_fan"}},
}
SCOPES = sorted(POSITIONS)


def cursor_for(scope: str = "feed", subject: str = "alice", now: float = NOW) -> str:
    return CODEC.encode(scope, subject, POSITIONS[scope], now=now)


def all_bytes(cursor: str) -> bytes:
    """Every byte a client can recover from a cursor without the key: each base64url
    run, decoded (at every alignment), plus the text itself."""
    found = [cursor.encode()]
    for run in re.findall(r"[A-Za-z0-9_-]{2,}", cursor):
        for skip in range(4):
            part = run[skip:]
            part = part[: len(part) - len(part) % 4]
            with contextlib.suppress(binascii.Error, ValueError):
                found.append(base64.urlsafe_b64decode(part))
    return b"\n".join(found)


# --- round trip and opacity ---------------------------------------------------------------


@pytest.mark.parametrize("scope", SCOPES)
def test_a_cursor_gives_back_its_position(scope: str) -> None:
    cursor = cursor_for(scope)
    assert CODEC.decode(cursor, scope, "alice", now=NOW) == POSITIONS[scope]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)  # safe in a query string as it is
    assert len(cursor) < 400


@pytest.mark.parametrize("scope", SCOPES)
def test_a_cursor_reveals_no_id_key_name_or_subject(scope: str) -> None:
    """Before: the base64 of a cursor showed the koo ids and the DynamoDB key names
    (``react_sk``, ``koo_id``, ``rk``) of the page position."""
    revealed = all_bytes(cursor_for(scope, subject="alice_the_reader"))
    for secret in ("koo_secret_id", "koo_other_id", "koo_reacted_id", "user_fan",
                   "react_sk", "koo_id", '"rk"', "alice_the_reader", '"t":1765', "1765000000"):
        assert secret.encode() not in revealed, secret


def test_the_same_position_gives_a_different_cursor_each_time() -> None:
    cursors = {cursor_for() for _ in range(50)}
    assert len(cursors) == 50
    assert all(CODEC.decode(c, "feed", "alice", now=NOW) == POSITIONS["feed"] for c in cursors)


def test_another_process_with_the_same_secret_reads_it() -> None:
    assert CursorCodec(SECRET, TTL).decode(cursor_for(), "feed", "alice",
                                           now=NOW) == POSITIONS["feed"]


# --- bound, expiring ------------------------------------------------------------------------


@pytest.mark.parametrize(("scope", "subject"), [
    ("feed", "bob"), ("feed", "alic"), ("feed", "alice_"), ("koos", "alice"),
    ("reactions", "alice"), ("feed", ""),
])
def test_a_cursor_is_refused_for_another_user_or_route(scope: str, subject: str) -> None:
    with pytest.raises(InvalidCursor):
        CODEC.decode(cursor_for("feed", "alice"), scope, subject, now=NOW)


def test_a_cursor_of_another_deployment_is_refused() -> None:
    with pytest.raises(InvalidCursor):
        CursorCodec("another-secret-0123456789", TTL).decode(cursor_for(), "feed", "alice",
                                                               now=NOW)


def test_a_cursor_expires_after_the_ttl() -> None:
    cursor = cursor_for()
    assert CODEC.decode(cursor, "feed", "alice", now=NOW + TTL) == POSITIONS["feed"]
    with pytest.raises(InvalidCursor, match="expired"):
        CODEC.decode(cursor, "feed", "alice", now=NOW + TTL + 1)


def test_the_ttl_is_the_codecs() -> None:
    short = CursorCodec(SECRET, 5)
    cursor = short.encode("feed", "alice", {"t": 1}, now=NOW)
    assert short.decode(cursor, "feed", "alice", now=NOW + 5) == {"t": 1}
    with pytest.raises(InvalidCursor):
        short.decode(cursor, "feed", "alice", now=NOW + 6)


# --- tampering: never anything but InvalidCursor --------------------------------------------


def test_old_signed_cursors_are_refused() -> None:
    body = base64.urlsafe_b64encode(b'{"s":"feed","u":"alice","x":9999999999,"p":{}}')
    for forged in (body.decode().rstrip("="), body.decode().rstrip("=") + ".AAAA"):
        with pytest.raises(InvalidCursor):
            CODEC.decode(forged, "feed", "alice", now=NOW)


@pytest.mark.parametrize("bad", ["", "a", "AA", "AAAA", "x" * 3000, "é", "a.b", "a b",
                                 "a+b/c=", "====", "A" * (MAX_CURSOR_LENGTH + 1), "\x00"])
def test_garbage_is_refused(bad: str) -> None:
    with pytest.raises(InvalidCursor):
        CODEC.decode(bad, "feed", "alice", now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SCOPES), st.data())
def test_any_change_to_the_bytes_of_a_cursor_is_refused(scope: str, data: st.DataObject
                                                        ) -> None:
    cursor = cursor_for(scope)
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor):
        CODEC.decode(forged, scope, "alice", now=NOW)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SCOPES), st.integers(1, 40))
def test_a_cut_or_extended_cursor_is_refused(scope: str, n: int) -> None:
    cursor = cursor_for(scope)
    for forged in (cursor[:-n], cursor + "A" * n, cursor[n:]):
        with pytest.raises(InvalidCursor):
            CODEC.decode(forged, scope, "alice", now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(string.ascii_letters + string.digits + "-_",
                                       min_size=40, max_size=300))
def test_arbitrary_text_is_refused_with_invalid_cursor_only(text: str) -> None:
    with pytest.raises(InvalidCursor):
        CODEC.decode(text, "feed", "alice", now=NOW)


# --- any position, any subject ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
subjects = st.from_regex(re.compile(r"[A-Za-z0-9_-]{1,64}"), fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SCOPES), subjects, st.dictionaries(st.text(max_size=8), json_values,
                                                          max_size=5))
def test_any_position_comes_back_for_its_scope_and_subject_only(
    scope: str, subject: str, position: dict[str, Any],
) -> None:
    cursor = CODEC.encode(scope, subject, position, now=NOW)
    assert len(cursor) <= MAX_CURSOR_LENGTH
    assert CODEC.decode(cursor, scope, subject, now=NOW) == position
    with pytest.raises(InvalidCursor):
        CODEC.decode(cursor, scope, subject + "x", now=NOW)


# --- a payload sealed with the right key but of the wrong shape --------------------------------


def sealed(payload: bytes, scope: str = "feed", subject: str = "alice") -> str:
    """A cursor holding ``payload`` as this deployment would seal it."""
    salt = bytes(range(SALT_BYTES))
    box = CODEC._cipher(salt).encrypt(NONCE, payload, CODEC._bound_to(scope, subject))
    return base64.urlsafe_b64encode(VERSION + salt + box).rstrip(b"=").decode()


def test_sealing_by_hand_makes_a_valid_cursor() -> None:
    cursor = sealed(orjson.dumps({"x": int(NOW) + 10, "p": {"t": 1}}))
    assert CODEC.decode(cursor, "feed", "alice", now=NOW) == {"t": 1}


@pytest.mark.parametrize("payload", [
    b"not json",
    b"[1, 2]",
    b'{"x": 9999999999}',
    b'{"x": 9999999999, "p": [1]}',
    b'{"x": 9999999999, "p": "t"}',
    b'{"p": {"t": 1}}',
    b'{"x": "9999999999", "p": {"t": 1}}',
    b'{"x": 9999999999.5, "p": {"t": 1}}',
    b'{"x": 1, "p": {"t": 1}}',
])
def test_a_sealed_payload_of_the_wrong_shape_is_refused(payload: bytes) -> None:
    with pytest.raises(InvalidCursor):
        CODEC.decode(sealed(payload), "feed", "alice", now=NOW)
