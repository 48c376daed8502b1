"""Field rules shared by events and routes: each checker normalizes or says what is wrong."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feed import fields
from feed.errors import ValidationFailed

ID_ALPHABET = string.ascii_letters + string.digits + "_-"


@given(st.text(ID_ALPHABET, min_size=1, max_size=64))
def test_ids_of_the_alphabet_up_to_64_are_valid(value: str) -> None:
    assert fields.is_valid_id(value)
    assert fields.ident(value) == value
    assert fields.check_id("user_id", value) == value


@pytest.mark.parametrize("value", ["", "a" * 65, "a b", "a:b", "é", None, 7, ["a"]])
def test_other_ids_are_refused_with_the_rule(value: object) -> None:
    assert not fields.is_valid_id(value)
    with pytest.raises(fields.Invalid, match="1-64 characters"):
        fields.ident(value)
    with pytest.raises(ValidationFailed):
        fields.check_id("user_id", value)


def test_optional_ids_accept_null() -> None:
    assert fields.optional_ident(None) is None
    assert fields.optional_ident("k1") == "k1"


def test_languages_are_normalized_to_lower_case() -> None:
    assert fields.lang("HI") == "hi"
    for bad in ("hin", "\u212ao"):  # the Kelvin sign lower-cases to an ASCII k
        with pytest.raises(fields.Invalid, match="two-letter"):
            fields.lang(bad)


def test_text_allows_newlines_but_not_nul_or_too_much() -> None:
    assert fields.text("line\nline") == "line\nline"
    with pytest.raises(fields.Invalid, match="NUL"):
        fields.text("a\x00b")
    with pytest.raises(fields.Invalid, match=str(fields.MAX_TEXT)):
        fields.text("x" * (fields.MAX_TEXT + 1))


def test_handles_refuse_control_characters() -> None:
    handle = fields.string(1, fields.MAX_HANDLE)
    assert handle("@alice") == "@alice"
    with pytest.raises(fields.Invalid, match="control"):
        handle("@al\x07ice")


def test_hashtags_default_to_none_and_drop_repeats_in_order() -> None:
    assert fields.hashtags(None) == []
    assert fields.hashtags(["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(fields.Invalid, match="at most"):
        fields.hashtags(["t"] * (fields.MAX_HASHTAGS + 1))


def test_timestamps_are_integers_not_booleans() -> None:
    assert fields.timestamp(1_700_000_000_000) == 1_700_000_000_000
    for bad in (True, 1.5, "1700000000000"):
        with pytest.raises(fields.Invalid, match="integer"):
            fields.timestamp(bad)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (1_700_000_000, "seconds"),
        (1_700_000_000_000 + fields.MAX_AHEAD_MS + 60_000, "future"),
        (fields.MIN_OCCURRED_AT - 1, "from 2000-01-01"),
    ],
)
def test_times_out_of_bounds_say_why(value: int, says: str) -> None:
    now = 1_700_000_000_000
    assert fields.check_time(now, now) is None
    wrong = fields.check_time(value, now)
    assert wrong is not None
    assert says in wrong


def test_reaction_kinds_and_regions() -> None:
    assert [fields.kind(k) for k in fields.REACTION_KINDS] == list(fields.REACTION_KINDS)
    with pytest.raises(fields.Invalid):
        fields.kind("love")
    assert fields.region("ap-south-1") == "ap-south-1"
    with pytest.raises(fields.Invalid):
        fields.region("mars")
