"""Unit and property tests of event validation (docs/api.md "Events"): pure, no I/O."""

from __future__ import annotations

import copy
import dataclasses
import re
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.errors import FeedError, ValidationFailed
from feed.events import (
    EVENT_TYPES,
    MAX_AHEAD_MS,
    MAX_BATCH,
    MIN_OCCURRED_AT,
    SCHEMAS,
    KooCreated,
    Reaction,
    Relation,
    check_id,
    event_digest,
    is_valid_id,
    typed,
    validate_batch,
    validate_event,
)

ID_ALPHABET = string.ascii_letters + string.digits + "_-"
CONTRACT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
T0 = 1_700_000_000_000
NOW_MS = 1_765_000_000_000  # a fixed "service clock" where a test needs one

# One valid example per event type of the contract's table, with its required fields.
EXAMPLES: dict[str, dict[str, Any]] = {
    "user_signed_up": {"user_id": "alice", "handle": "@alice", "lang": "hi",
                       "region": "ap-south-1"},
    "koo_created": {"koo_id": "k1", "author_id": "alice", "text": "namaste", "lang": "hi",
                    "hashtags": ["india", "koo"], "reply_to": "k0", "rekoo_of": None},
    "koo_deleted": {"koo_id": "k1", "author_id": "alice"},
    "reaction_added": {"koo_id": "k1", "user_id": "bob", "kind": "like"},
    "reaction_removed": {"koo_id": "k1", "user_id": "bob", "kind": "rekoo"},
    "user_followed": {"follower_id": "bob", "followee_id": "alice"},
    "user_unfollowed": {"follower_id": "bob", "followee_id": "alice"},
    "user_blocked": {"user_id": "bob", "target_id": "carol"},
    "user_unblocked": {"user_id": "bob", "target_id": "carol"},
    "user_muted": {"user_id": "bob", "target_id": "carol"},
    "user_unmuted": {"user_id": "bob", "target_id": "carol"},
    "user_deleted": {"user_id": "carol"},
}
OPTIONAL = {"koo_created": {"hashtags", "reply_to", "rekoo_of"}}
# Fields that hold a user or koo id (so the id rules apply to them).
ID_FIELDS = {
    "user_id", "koo_id", "author_id", "follower_id", "followee_id", "target_id",
}


def make(etype: str, /, **changes: Any) -> dict[str, Any]:
    """A valid event of type ``etype`` (event_id ``ev-<type>-<index>``), with ``changes``."""
    index: int = changes.pop("index", 0)
    event = {"type": etype, "event_id": f"ev-{etype}-{index}", "occurred_at": T0 + index,
             **copy.deepcopy(EXAMPLES[etype])}
    event.update(changes)
    return event


def required_fields(kind: str) -> list[str]:
    return ["event_id", "occurred_at",
            *[f for f in EXAMPLES[kind] if f not in OPTIONAL.get(kind, set())]]


def only_error(exc: pytest.ExceptionInfo[ValidationFailed]) -> dict[str, Any]:
    assert len(exc.value.errors) == 1, exc.value.errors
    return exc.value.errors[0]


# --- every event type -------------------------------------------------------------------


def test_examples_cover_every_contract_type() -> None:
    assert set(EXAMPLES) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 12


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_valid_example_is_accepted_and_normalized(kind: str) -> None:
    raw = make(kind)
    event = validate_event(raw)
    assert event == raw  # already normalized: nothing added, nothing dropped
    assert event is not raw


def test_koo_created_optional_fields_default() -> None:
    raw = make("koo_created")
    for name in ("hashtags", "reply_to", "rekoo_of"):
        del raw[name]
    event = validate_event(raw)
    assert event["hashtags"] == []
    assert event["reply_to"] is None
    assert event["rekoo_of"] is None
    assert set(event) == {"type", "event_id", "occurred_at", "koo_id", "author_id", "text",
                          "lang", "hashtags", "reply_to", "rekoo_of"}


def test_koo_created_optional_fields_accept_null_and_ids() -> None:
    event = validate_event(make("koo_created", hashtags=None, reply_to=None, rekoo_of="k9"))
    assert (event["hashtags"], event["reply_to"], event["rekoo_of"]) == ([], None, "k9")


@pytest.mark.parametrize("field", ["reply_to", "rekoo_of"])
@pytest.mark.parametrize("bad", ["bad:id", "", 7, ["k1"], "x" * 65])
def test_koo_created_reference_ids_are_checked(field: str, bad: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_created", **{field: bad}))
    assert only_error(exc)["field"] == field


@pytest.mark.parametrize("bad", ["india", [1], [""], ["x" * 101], [None], {"a": 1},
                                 ["tag\x00"], [f"t{i}" for i in range(31)]])
def test_koo_created_bad_hashtags(bad: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_created", hashtags=bad))
    assert only_error(exc)["field"] == "hashtags"


def test_hashtags_are_deduplicated_in_order() -> None:
    event = validate_event(make("koo_created", hashtags=["b", "a", "b", "c", "a"]))
    assert event["hashtags"] == ["b", "a", "c"]


@pytest.mark.parametrize("kind", ["reaction_added", "reaction_removed"])
@pytest.mark.parametrize("reaction", ["like", "rekoo", "comment"])
def test_every_reaction_kind_is_accepted(kind: str, reaction: str) -> None:
    assert validate_event(make(kind, kind=reaction))["kind"] == reaction


@pytest.mark.parametrize("reaction", ["Like", "love", "", None, 1, ["like"]])
def test_unknown_reaction_kind_rejected(reaction: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("reaction_added", kind=reaction))
    assert only_error(exc)["field"] == "kind"


def test_lang_is_normalized_to_lower_case() -> None:
    assert validate_event(make("koo_created", lang="HI"))["lang"] == "hi"
    assert validate_event(make("user_signed_up", lang="En"))["lang"] == "en"


@pytest.mark.parametrize("lang", ["hin", "h", "", "h1", "en-US", 12, None])
def test_bad_lang_rejected(lang: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_created", lang=lang))
    assert only_error(exc)["field"] == "lang"


@pytest.mark.parametrize("region", ["ap-south-1", "eu-west-1", "us-gov-west-1"])
def test_good_regions_accepted(region: str) -> None:
    assert validate_event(make("user_signed_up", region=region))["region"] == region


@pytest.mark.parametrize("region", ["mumbai", "AP-SOUTH-1", "ap_south_1", "", "ap-", 1,
                                    "a" * 30 + "-south-1"])
def test_bad_regions_rejected(region: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("user_signed_up", region=region))
    assert only_error(exc)["field"] == "region"


@pytest.mark.parametrize("handle", ["", "h" * 65, "a\x00b", "a\rb", 5])
def test_bad_handle_rejected(handle: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("user_signed_up", handle=handle))
    assert only_error(exc)["field"] == "handle"


def test_handle_of_64_chars_accepted() -> None:
    assert validate_event(make("user_signed_up", handle="h" * 64))["handle"] == "h" * 64


@pytest.mark.parametrize(("kind", "a", "b"), [
    ("user_followed", "follower_id", "followee_id"),
    ("user_unfollowed", "follower_id", "followee_id"),
    ("user_blocked", "user_id", "target_id"),
    ("user_unblocked", "user_id", "target_id"),
    ("user_muted", "user_id", "target_id"),
    ("user_unmuted", "user_id", "target_id"),
])
def test_relation_to_oneself_rejected(kind: str, a: str, b: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make(kind, **{a: "same", b: "same"}))
    error = only_error(exc)
    assert error["field"] == b
    assert a in error["message"]


# --- missing fields ---------------------------------------------------------------------


MISSING_CASES = [(kind, field) for kind in sorted(EXAMPLES) for field in required_fields(kind)]


@pytest.mark.parametrize(("kind", "field"), MISSING_CASES)
def test_missing_required_field_names_field_and_event(kind: str, field: str) -> None:
    raw = make(kind, index=3)
    del raw[field]
    with pytest.raises(ValidationFailed) as exc:
        validate_event(raw)
    error = only_error(exc)
    assert error["field"] == field
    assert error["type"] == kind
    assert error["index"] == 0
    assert error["problems"] == [{"field": field, "message": "is required"}]
    assert field in error["message"]
    assert "events[0]" in error["message"]
    if field != "event_id":
        assert error["event_id"] == f"ev-{kind}-3"
        assert f"ev-{kind}-3" in error["message"]
    else:
        assert error["event_id"] is None
    assert field in str(exc.value)


@pytest.mark.parametrize(("kind", "field"), MISSING_CASES)
def test_missing_field_in_batch_reports_index(kind: str, field: str) -> None:
    bad = make(kind, index=1)
    del bad[field]
    with pytest.raises(ValidationFailed) as exc:
        validate_batch([make(kind, index=0), bad, make(kind, index=2)])
    error = only_error(exc)
    assert (error["index"], error["field"]) == (1, field)
    assert "events[1]" in error["message"]


def test_every_problem_of_one_event_is_listed() -> None:
    raw = make("koo_created", text=None, lang=3)
    del raw["koo_id"]
    with pytest.raises(ValidationFailed) as exc:
        validate_event(raw)
    error = only_error(exc)
    assert [p["field"] for p in error["problems"]] == ["koo_id", "text", "lang"]


# --- wrong types ------------------------------------------------------------------------


WRONG_VALUES: list[object] = [7, True, 1.5, None, ["x"], {"a": "b"}]
STRING_FIELDS = sorted({(kind, f) for kind in EXAMPLES for f in required_fields(kind)
                        if f != "occurred_at"})


@pytest.mark.parametrize(("kind", "field"), STRING_FIELDS)
@pytest.mark.parametrize("value", WRONG_VALUES, ids=lambda v: type(v).__name__)
def test_wrong_type_for_string_field_rejected(kind: str, field: str, value: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make(kind, **{field: value}))
    error = only_error(exc)
    assert error["field"] == field
    assert field in error["message"]


@pytest.mark.parametrize("value", [True, False, 1.0, 1.7e12, "1700000000000", None, [T0],
                                   -1, 0, 1, T0 // 1000, 10**13 - 1, 10**13])
def test_bad_occurred_at_rejected(value: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_deleted", occurred_at=value))
    assert only_error(exc)["field"] == "occurred_at"


@pytest.mark.parametrize("value", [MIN_OCCURRED_AT, T0, NOW_MS + MAX_AHEAD_MS])
def test_occurred_at_bounds_accepted(value: int) -> None:
    event = validate_event(make("koo_deleted", occurred_at=value), now_ms=NOW_MS)
    assert event["occurred_at"] == value


def test_wrong_type_message_says_what_was_given() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_created", text=12))
    assert "integer" in only_error(exc)["message"]
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_deleted", occurred_at=True))
    assert "boolean" in only_error(exc)["message"]


@pytest.mark.parametrize("raw", [None, "event", 3, ["type", "koo_deleted"]])
def test_non_object_event_rejected(raw: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(raw)
    error = only_error(exc)
    assert error["field"] == "event"
    assert (error["event_id"], error["type"]) == (None, None)


# --- ids --------------------------------------------------------------------------------


BAD_IDS = ["a:b", "{a}", "a*", "a\x00", "x" * 65, "ünïcode", "koo-\u0915", "", " a",
           "a\n", "a.b", "a/b", "a#b", "\uff41"]
GOOD_IDS = ["a", "A", "0", "_", "-", "x" * 64, "user_1-AB", "--__--"]


@pytest.mark.parametrize("value", BAD_IDS)
def test_is_valid_id_rejects(value: str) -> None:
    assert is_valid_id(value) is False


@pytest.mark.parametrize("value", GOOD_IDS)
def test_is_valid_id_accepts(value: str) -> None:
    assert is_valid_id(value) is True


@pytest.mark.parametrize("value", [None, 1, b"abc", ["a"], 1.0, True])
def test_is_valid_id_rejects_non_strings(value: object) -> None:
    assert is_valid_id(value) is False


def test_check_id_returns_value() -> None:
    assert check_id("user_id", "user_1") == "user_1"


@pytest.mark.parametrize("value", [*BAD_IDS, None, 5])
def test_check_id_raises_naming_the_field(value: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        check_id("koo_id", value)
    error = only_error(exc)
    assert error["field"] == "koo_id"
    assert error["message"].startswith("koo_id ")
    assert isinstance(exc.value, FeedError)


ID_CASES = [(kind, f) for kind in sorted(EXAMPLES) for f in EXAMPLES[kind] if f in ID_FIELDS]


@pytest.mark.parametrize(("kind", "field"), ID_CASES)
@pytest.mark.parametrize("value", BAD_IDS)
def test_bad_ids_rejected_in_every_event(kind: str, field: str, value: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make(kind, **{field: value}))
    assert only_error(exc)["field"] == field


@pytest.mark.parametrize(("kind", "field"), ID_CASES)
def test_64_char_ids_accepted_in_every_event(kind: str, field: str) -> None:
    assert validate_event(make(kind, **{field: "Z" * 64}))[field] == "Z" * 64


# --- text, event_id, type, unknown fields -------------------------------------------------


def test_text_of_500_chars_accepted() -> None:
    text = "क" * 500  # characters, not bytes
    assert validate_event(make("koo_created", text=text))["text"] == text


def test_text_of_501_chars_rejected() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_created", text="a" * 501))
    error = only_error(exc)
    assert error["field"] == "text"
    assert "501" in error["message"]


def test_text_with_nul_rejected_but_newlines_kept() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_created", text="a\x00b"))
    assert only_error(exc)["field"] == "text"
    assert validate_event(make("koo_created", text="a\nb"))["text"] == "a\nb"


@pytest.mark.parametrize("length", [1, 64, 128])
def test_event_id_lengths_accepted(length: int) -> None:
    event_id = "e" * length
    assert validate_event(make("koo_deleted", event_id=event_id))["event_id"] == event_id


def test_event_id_may_hold_characters_outside_the_id_alphabet() -> None:
    event_id = "producer:42/ev.1"
    assert validate_event(make("koo_deleted", event_id=event_id))["event_id"] == event_id


@pytest.mark.parametrize("event_id", ["", "e" * 129, "a\x00", "a\n", "a\t", "\x7f", 42, None])
def test_bad_event_id_rejected(event_id: object) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_event(make("koo_deleted", event_id=event_id))
    assert only_error(exc)["field"] == "event_id"


@pytest.mark.parametrize("kind", ["koo_edited", "", "KOO_CREATED", None, 3, ["koo_created"]])
def test_unknown_type_rejected(kind: object) -> None:
    raw = make("koo_deleted", type=kind)
    with pytest.raises(ValidationFailed) as exc:
        validate_event(raw)
    error = only_error(exc)
    assert error["field"] == "type"
    assert error["type"] == (kind if isinstance(kind, str) else None)
    assert error["event_id"] == "ev-koo_deleted-0"


def test_missing_type_rejected() -> None:
    raw = make("koo_deleted")
    del raw["type"]
    with pytest.raises(ValidationFailed) as exc:
        validate_event(raw)
    assert only_error(exc)["field"] == "type"


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_unknown_fields_are_dropped(kind: str) -> None:
    raw = make(kind, extra="x", score=1, nested={"a": [1]})
    event = validate_event(raw)
    assert "extra" not in event
    assert "score" not in event
    assert "nested" not in event
    assert event == make(kind)
    assert raw["extra"] == "x"  # the input is not modified


# --- batches ----------------------------------------------------------------------------


def test_batch_of_good_events_is_returned_in_order() -> None:
    batch = [make(kind, index=i) for i, kind in enumerate(sorted(EXAMPLES))]
    assert validate_batch(batch) == batch


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1])
def test_batch_size_out_of_range_rejected(size: int) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_batch([make("koo_deleted", index=i) for i in range(size)])
    error = only_error(exc)
    assert error["field"] == "events"
    assert str(size) in error["message"]


@pytest.mark.parametrize("size", [1, MAX_BATCH])
def test_batch_size_bounds_accepted(size: int) -> None:
    assert len(validate_batch([make("koo_deleted", index=i) for i in range(size)])) == size


def test_one_bad_event_among_good_ones() -> None:
    batch = [make("koo_created", index=i) for i in range(10)]
    batch[6]["koo_id"] = "bad:id"
    with pytest.raises(ValidationFailed) as exc:
        validate_batch(batch)
    error = only_error(exc)
    assert error["index"] == 6
    assert error["event_id"] == "ev-koo_created-6"
    assert error["field"] == "koo_id"
    assert error["message"].startswith("events[6] (event_id 'ev-koo_created-6'): koo_id ")


def test_several_bad_events_give_one_error_per_bad_index() -> None:
    batch: list[object] = [make("user_followed", index=i) for i in range(8)]
    batch[1] = "not an object"
    batch[3] = make("user_followed", index=3, follower_id=None, followee_id=1)  # two problems
    batch[4] = make("user_followed", index=4, type="koo_edited")
    batch[7] = make("user_followed", index=7, occurred_at=True)
    with pytest.raises(ValidationFailed) as exc:
        validate_batch(batch)
    errors = exc.value.errors
    assert [e["index"] for e in errors] == [1, 3, 4, 7]
    assert [e["field"] for e in errors] == ["event", "follower_id", "type", "occurred_at"]
    assert [p["field"] for p in errors[1]["problems"]] == ["follower_id", "followee_id"]
    assert str(exc.value).startswith("4 errors; first: events[1]")


# --- properties -------------------------------------------------------------------------


ids = st.from_regex(CONTRACT_ID, fullmatch=True)
optional_ids = st.none() | ids
texts = st.text(st.characters(blacklist_characters="\x00"), max_size=500)
langs = st.from_regex(r"[a-zA-Z]{2}", fullmatch=True)
hashtags = st.lists(st.text(st.characters(min_codepoint=32), min_size=1, max_size=100),
                    max_size=30)
junk = st.dictionaries(st.text(min_size=1).filter(lambda k: k not in {
    "type", "event_id", "occurred_at", *{f for e in EXAMPLES.values() for f in e}}),
    st.integers() | st.text(), max_size=3)
common = {"event_id": st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1,
                             max_size=128),
          "occurred_at": st.integers(MIN_OCCURRED_AT, T0)}


def _pair(a: str, b: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(ids, ids).filter(lambda p: p[0] != p[1]).map(
        lambda p: {a: p[0], b: p[1]})


FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "user_signed_up": st.fixed_dictionaries(
        {"user_id": ids, "handle": st.text(st.characters(min_codepoint=32), min_size=1,
                                           max_size=64),
         "lang": langs, "region": st.sampled_from(["ap-south-1", "eu-west-1", "us-east-2"])}),
    "koo_created": st.fixed_dictionaries(
        {"koo_id": ids, "author_id": ids, "text": texts, "lang": langs},
        optional={"hashtags": st.none() | hashtags, "reply_to": optional_ids,
                  "rekoo_of": optional_ids}),
    "koo_deleted": st.fixed_dictionaries({"koo_id": ids, "author_id": ids}),
    "reaction_added": st.fixed_dictionaries(
        {"koo_id": ids, "user_id": ids, "kind": st.sampled_from(["like", "rekoo", "comment"])}),
    "reaction_removed": st.fixed_dictionaries(
        {"koo_id": ids, "user_id": ids, "kind": st.sampled_from(["like", "rekoo", "comment"])}),
    "user_followed": _pair("follower_id", "followee_id"),
    "user_unfollowed": _pair("follower_id", "followee_id"),
    "user_blocked": _pair("user_id", "target_id"),
    "user_unblocked": _pair("user_id", "target_id"),
    "user_muted": _pair("user_id", "target_id"),
    "user_unmuted": _pair("user_id", "target_id"),
}


@st.composite
def raw_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    return {"type": kind, **draw(st.fixed_dictionaries(common)), **draw(FIELDS[kind]),
            **draw(junk)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_events())
def test_validation_is_idempotent(raw: dict[str, Any]) -> None:
    event = validate_event(raw)
    assert validate_event(event) == event
    assert validate_batch([raw, event]) == [event, event]
    allowed = {"type", "event_id", "occurred_at", *EXAMPLES[raw["type"]]}
    assert set(event) <= allowed
    assert {k: v for k, v in raw.items() if k in allowed and k not in
            {"lang", "hashtags"}} == {k: v for k, v in event.items() if k in raw and k not in
                                      {"lang", "hashtags"}}


@settings(max_examples=300, deadline=None)
@given(st.text(ID_ALPHABET + ":{}*#.\x00\né\u0915 ", max_size=70) | st.text(max_size=70)
       | ids)
def test_is_valid_id_iff_regex_fullmatch(value: str) -> None:
    expected = CONTRACT_ID.fullmatch(value) is not None
    assert is_valid_id(value) is expected
    # an oracle that does not use a regex at all
    assert expected is (1 <= len(value) <= 64 and all(c in ID_ALPHABET for c in value))


# --- typed events ---------------------------------------------------------------------


@pytest.mark.parametrize("etype", EVENT_TYPES)
def test_each_type_has_a_class_with_exactly_its_schema_fields(etype: str) -> None:
    event = typed(validate_event(make(etype), now_ms=NOW_MS))
    assert etype == event.TYPE
    names = {f.name for f in dataclasses.fields(event)}
    assert names == {"event_id", "occurred_at", *(f.name for f in SCHEMAS[etype])}


@pytest.mark.parametrize("etype", EVENT_TYPES)
@pytest.mark.parametrize("without_optional", [False, True])
def test_the_typed_form_gives_back_the_validated_event(etype: str,
                                                       without_optional: bool) -> None:
    """wire() is the dict the queue carried, so the ledger's digest is the same as before."""
    raw = make(etype)
    if without_optional:
        for name in OPTIONAL.get(etype, ()):
            raw.pop(name, None)
    valid = validate_event(raw, now_ms=NOW_MS)
    event = typed(valid)
    assert event.wire() == valid
    assert event_digest(event.wire()) == event_digest(valid)


def test_relation_events_name_user_other_kind_and_direction() -> None:
    follow = typed(validate_event(make("user_followed"), now_ms=NOW_MS))
    unblock = typed(validate_event(make("user_unblocked"), now_ms=NOW_MS))
    assert isinstance(follow, Relation)
    assert isinstance(unblock, Relation)
    assert (follow.user, follow.other, follow.KIND, follow.ON) == ("bob", "alice", "follow", True)
    assert (unblock.user, unblock.other, unblock.KIND, unblock.ON) == (
        "bob", "carol", "block", False)
    added = typed(validate_event(make("reaction_added"), now_ms=NOW_MS))
    removed = typed(validate_event(make("reaction_removed"), now_ms=NOW_MS))
    assert isinstance(added, Reaction)
    assert isinstance(removed, Reaction)
    assert (added.ADDED, removed.ADDED) == (True, False)


def test_typed_events_are_frozen() -> None:
    event = typed(validate_event(make("koo_created"), now_ms=NOW_MS))
    assert isinstance(event, KooCreated)
    assert event.hashtags == ("india", "koo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.text = "changed"  # type: ignore[misc]
