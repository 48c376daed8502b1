"""Unit and property tests of the event rules against hostile or careless producers
(docs/api.md "Events"): ``occurred_at`` in ms between 2000-01-01 and 24 h past the
service's clock, no control characters in ``event_id``, one ``event_id`` per event in a
batch, and the digest that tells a replay from a reused id. Pure, no I/O."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.errors import ValidationFailed
from feed.events import (
    MAX_AHEAD_MS,
    MIN_OCCURRED_AT,
    event_digest,
    validate_batch,
    validate_event,
)
from tests.test_events import EXAMPLES, make, only_error, raw_events

NOW_MS = 1_765_000_000_000  # 2025-12-06: the "service clock" of these tests
DAY_MS = 24 * 3600 * 1000


def problem_of(value: object, *, now_ms: int = NOW_MS) -> dict[str, Any] | None:
    """The one error of a koo_deleted with ``occurred_at=value``, or None if accepted."""
    try:
        validate_event(make("koo_deleted", occurred_at=value), now_ms=now_ms)
    except ValidationFailed as exc:
        errors = exc.errors
    else:
        return None
    assert len(errors) == 1, errors
    return errors[0]


# --- occurred_at --------------------------------------------------------------------------


def test_the_bounds_are_2000_and_24_hours_past_the_clock() -> None:
    assert MIN_OCCURRED_AT == 946_684_800_000  # 2000-01-01T00:00:00Z
    assert MAX_AHEAD_MS == DAY_MS
    assert problem_of(MIN_OCCURRED_AT) is None
    assert problem_of(NOW_MS) is None
    assert problem_of(NOW_MS + DAY_MS) is None
    for bad in (MIN_OCCURRED_AT - 1, NOW_MS + DAY_MS + 1):
        error = problem_of(bad)
        assert error is not None, bad
        assert error["field"] == "occurred_at", bad


@pytest.mark.parametrize("seconds", [NOW_MS // 1000, 1_700_000_000, 946_684_800])
def test_seconds_are_refused_and_the_message_says_seconds(seconds: int) -> None:
    """Before: a value in seconds was taken as ms, a koo of January 1970."""
    error = problem_of(seconds)
    assert error is not None
    assert error["field"] == "occurred_at"
    assert "seconds" in error["message"]
    assert "milliseconds" in error["message"]


@pytest.mark.parametrize("future", [NOW_MS + DAY_MS + 1, NOW_MS + 30 * DAY_MS,
                                    10**13 - 1, NOW_MS * 1000])
def test_the_future_is_refused_and_the_message_says_so(future: int) -> None:
    """Before: 10^13 - 1 (year 2286) was accepted and pinned a koo to the top of every
    follower's feed."""
    error = problem_of(future)
    assert error is not None
    assert error["field"] == "occurred_at"
    assert "future" in error["message"]


def test_the_upper_bound_moves_with_the_clock() -> None:
    later = NOW_MS + 10 * DAY_MS
    assert problem_of(later) is not None
    assert problem_of(later, now_ms=later) is None


def test_the_clock_of_the_service_is_used_by_default() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_deleted", occurred_at=10**13 - 1))
    assert only_error(exc)["field"] == "occurred_at"


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 3 * NOW_MS))
def test_occurred_at_is_accepted_iff_within_the_bounds(value: int) -> None:
    accepted = problem_of(value) is None
    assert accepted is (MIN_OCCURRED_AT <= value <= NOW_MS + DAY_MS)


def test_a_bad_occurred_at_is_one_of_the_batch_errors() -> None:
    batch = [make("koo_deleted", index=i, occurred_at=NOW_MS - i) for i in range(4)]
    batch[1]["occurred_at"] = 1_765_000_000  # seconds
    batch[3]["occurred_at"] = NOW_MS + 2 * DAY_MS
    with pytest.raises(ValidationFailed) as exc:
        validate_batch(batch, now_ms=NOW_MS)
    assert [(e["index"], e["field"]) for e in exc.value.errors] == [
        (1, "occurred_at"), (3, "occurred_at")]


# --- event_id -----------------------------------------------------------------------------


CONTROL = [chr(c) for c in (*range(32), *range(127, 160))]


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9f"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_event_id_with_a_control_character_is_refused(char: str, where: str) -> None:
    """Before: ``ev-1\\n`` was accepted, though ids never hold control characters."""
    event_id = {"start": char + "ev-1", "middle": "ev" + char + "1", "end": "ev-1" + char}[where]
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_deleted", event_id=event_id), now_ms=NOW_MS)
    error = only_error(exc)
    assert error["field"] == "event_id"
    assert "control" in error["message"]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=128))
def test_event_id_is_accepted_iff_it_has_no_control_character(event_id: str) -> None:
    try:
        validate_event(make("koo_deleted", event_id=event_id), now_ms=NOW_MS)
        accepted = True
    except ValidationFailed:
        accepted = False
    assert accepted is not any(c in CONTROL for c in event_id)


def test_event_id_may_still_hold_unicode_and_punctuation() -> None:
    for event_id in ("producer:42/ev.1", "ईवेंट-१", "a b", "e\u200bx"):
        assert validate_event(make("koo_deleted", event_id=event_id),
                              now_ms=NOW_MS)["event_id"] == event_id


# --- one event_id per event in a batch ----------------------------------------------------


def test_two_different_events_under_one_event_id_are_both_refused() -> None:
    """Before: both were accepted (202) and the second was silently dropped."""
    batch = [make("user_followed", index=i) for i in range(5)]
    batch[3] = make("user_unfollowed", event_id=batch[1]["event_id"])
    with pytest.raises(ValidationFailed) as exc:
        validate_batch(batch, now_ms=NOW_MS)
    errors = exc.value.errors
    assert [(e["index"], e["field"]) for e in errors] == [(1, "event_id"), (3, "event_id")]
    assert "events[3]" in errors[0]["message"]
    assert "events[1]" in errors[1]["message"]
    assert errors[0]["event_id"] == errors[1]["event_id"] == batch[1]["event_id"]


def test_events_differing_in_one_field_under_one_event_id_are_refused() -> None:
    first = make("koo_created")
    second = {**first, "text": first["text"] + "!"}
    with pytest.raises(ValidationFailed) as exc:
        validate_batch([first, second], now_ms=NOW_MS)
    assert [e["index"] for e in exc.value.errors] == [0, 1]


def test_the_same_event_twice_in_a_batch_is_a_harmless_duplicate() -> None:
    event = make("koo_created")
    same = {**event, "lang": "HI", "unknown": 1}  # equal once normalized
    assert validate_batch([event, same, event], now_ms=NOW_MS) == [event, event, event]


def test_reused_ids_and_invalid_events_give_one_error_per_index_in_order() -> None:
    batch = [make("user_followed", index=i) for i in range(6)]
    batch[0] = {**batch[0], "follower_id": "a:b"}  # invalid: its id is not compared
    batch[2] = {**batch[5], "follower_id": "someone"}  # same id as 5, another event
    batch[4] = {**batch[0]}  # same id as 0 (invalid): only its own check counts
    with pytest.raises(ValidationFailed) as exc:
        validate_batch(batch, now_ms=NOW_MS)
    assert [(e["index"], e["field"]) for e in exc.value.errors] == [
        (0, "follower_id"), (2, "event_id"), (4, "follower_id"), (5, "event_id")]


def test_many_events_under_one_id_keep_their_messages_short() -> None:
    batch = [make("koo_deleted", event_id="same", koo_id=f"k{i}") for i in range(500)]
    with pytest.raises(ValidationFailed) as exc:
        validate_batch(batch, now_ms=NOW_MS)
    assert len(exc.value.errors) == 500
    assert max(len(e["message"]) for e in exc.value.errors) < 300


# --- the digest ---------------------------------------------------------------------------


def test_digest_is_a_stable_hex_name() -> None:
    event = validate_event(make("koo_created"), now_ms=NOW_MS)
    digest = event_digest(event)
    assert len(digest) == 32
    assert int(digest, 16) >= 0
    assert digest == event_digest(dict(reversed(list(event.items()))))
    # Stable across processes and releases (the ledger keeps it for days): BLAKE2b-128 of
    # the JSON with sorted keys and no spaces.
    canonical = b'{"event_id":"e","occurred_at":1,"type":"x"}'
    assert event_digest({"type": "x", "event_id": "e", "occurred_at": 1}) == (
        hashlib.blake2b(canonical, digest_size=16).hexdigest())


@settings(max_examples=200, deadline=None)
@given(raw_events(), st.randoms(use_true_random=False))
def test_digest_ignores_key_order_unknown_fields_and_normalization(
    raw: dict[str, Any], rng: random.Random
) -> None:
    event = validate_event(raw, now_ms=NOW_MS)
    items = list(raw.items())
    rng.shuffle(items)
    shuffled = dict(items)
    shuffled["an_unknown_field"] = [1, 2]
    if "lang" in shuffled:
        shuffled["lang"] = shuffled["lang"].upper()
    assert event_digest(validate_event(shuffled, now_ms=NOW_MS)) == event_digest(event)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_digest_changes_with_every_field(kind: str) -> None:
    event = validate_event(make(kind), now_ms=NOW_MS)
    digest = event_digest(event)
    for name, value in event.items():
        changed = {**event, name: (value + 1 if isinstance(value, int) else
                                   [*value, "x"] if isinstance(value, list) else
                                   "k2" if value is None else value + "x")}
        assert event_digest(changed) != digest, name
