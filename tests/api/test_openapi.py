"""The OpenAPI description of ``POST /v1/events`` says what ``feed.events`` accepts.

Each event type has a schema in ``/openapi.json`` (a ``oneOf`` discriminated by
``type``), built from ``feed.events.SCHEMAS`` and one JSON-schema fragment per field
name. These tests hold the schema and the service's own validation
(:func:`feed.events.validate_event`) to the same answer: hand-written events valid
under the schema are accepted and invalid ones refused by both, for the same field;
and events that schemathesis generates from the schema (valid ones, and ones that
break it) get the same verdict from both. Three rules cannot be written in the
schema and are allowed for explicitly: ``occurred_at`` at most a day past the
service's clock (the tests validate at a clock that has reached the event), the two
users of a follow, block or mute must differ, and two different events of one batch
may not share an ``event_id`` (a batch rule, not an event's).

Patterns are checked as OpenAPI means them (ECMA-262, where ``$`` is the end of the
string); Python's ``re`` would also let ``$`` match before a final newline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from jsonschema import ValidationError, validators

from feed.api.openapi import (
    COMMON_EVENT_FIELDS,
    EVENT_DESCRIPTIONS,
    EVENT_FIELDS,
    event_schema_name,
    openapi_schema,
)
from feed.errors import ValidationFailed
from feed.events import (
    EVENT_TYPES,
    MAX_BATCH,
    MAX_EVENT_ID,
    MAX_HANDLE,
    MAX_HASHTAG_LENGTH,
    MAX_HASHTAGS,
    MAX_TEXT,
    MIN_OCCURRED_AT,
    SCHEMAS,
    validate_event,
)

T = 1_764_150_000_000  # 2025-11-26 09:40 UTC
NOW = T + 3_600_000  # the clock the hand-written events are validated at

EXAMPLES: dict[str, dict[str, Any]] = {
    "user_signed_up": {"type": "user_signed_up", "event_id": "su-1", "occurred_at": T,
                       "user_id": "asha", "handle": "asha_k", "lang": "hi",
                       "region": "ap-south-1"},
    "koo_created": {"type": "koo_created", "event_id": "kc-1", "occurred_at": T,
                    "koo_id": "k-100", "author_id": "asha", "text": "namaste", "lang": "hi",
                    "hashtags": ["chai", "monsoon"]},
    "koo_deleted": {"type": "koo_deleted", "event_id": "kd-1", "occurred_at": T,
                    "koo_id": "k-100", "author_id": "asha"},
    "reaction_added": {"type": "reaction_added", "event_id": "ra-1", "occurred_at": T,
                       "koo_id": "k-100", "user_id": "ravi", "kind": "like"},
    "reaction_removed": {"type": "reaction_removed", "event_id": "rr-1", "occurred_at": T,
                         "koo_id": "k-100", "user_id": "ravi", "kind": "like"},
    "user_followed": {"type": "user_followed", "event_id": "uf-1", "occurred_at": T,
                      "follower_id": "ravi", "followee_id": "asha"},
    "user_unfollowed": {"type": "user_unfollowed", "event_id": "uu-1", "occurred_at": T,
                        "follower_id": "ravi", "followee_id": "asha"},
    "user_blocked": {"type": "user_blocked", "event_id": "ub-1", "occurred_at": T,
                     "user_id": "ravi", "target_id": "spammer1"},
    "user_unblocked": {"type": "user_unblocked", "event_id": "un-1", "occurred_at": T,
                       "user_id": "ravi", "target_id": "spammer1"},
    "user_muted": {"type": "user_muted", "event_id": "um-1", "occurred_at": T,
                   "user_id": "ravi", "target_id": "loud1"},
    "user_unmuted": {"type": "user_unmuted", "event_id": "uv-1", "occurred_at": T,
                     "user_id": "ravi", "target_id": "loud1"},
    "user_deleted": {"type": "user_deleted", "event_id": "ud-1", "occurred_at": T,
                     "user_id": "loud1"},
}

# A value for every optional field, so each event type can be written out in full.
OPTIONAL_VALUES: dict[str, Any] = {"hashtags": ["chai"], "reply_to": "k-1", "rekoo_of": "k-2"}

ID_64 = "a" * 63 + "_"
TEXT = "line one\nline two 🙏 "

VALID_EDGES: dict[str, dict[str, Any]] = {
    "longest text, newline and emoji": {**EXAMPLES["koo_created"],
                                        "text": TEXT + "x" * (MAX_TEXT - len(TEXT))},
    "empty text": {**EXAMPLES["koo_created"], "text": ""},
    "upper-case lang": {**EXAMPLES["koo_created"], "lang": "EN"},
    "longest ids": {**EXAMPLES["koo_created"], "koo_id": ID_64, "author_id": "-" * 64,
                    "reply_to": ID_64},
    "null optionals": {**EXAMPLES["koo_created"], "hashtags": None, "reply_to": None,
                       "rekoo_of": None},
    "no optionals": {k: v for k, v in EXAMPLES["koo_created"].items() if k != "hashtags"},
    "most hashtags, longest, repeated": {
        **EXAMPLES["koo_created"],
        "hashtags": ["#" * MAX_HASHTAG_LENGTH, *["tag"] * (MAX_HASHTAGS - 1)]},
    "unknown fields": {**EXAMPLES["reaction_added"], "client": "android", "v": [1, 2]},
    "longest handle, with a tab": {**EXAMPLES["user_signed_up"],
                                   "handle": "a\tb" + "c" * (MAX_HANDLE - 3)},
    "longest region": {**EXAMPLES["user_signed_up"], "region": "ap-" + "x" * 29},
    "longest event_id, not ASCII": {**EXAMPLES["user_followed"],
                                    "event_id": "é" * MAX_EVENT_ID},
    "earliest occurred_at": {**EXAMPLES["user_muted"], "occurred_at": MIN_OCCURRED_AT},
}

# (name, event, the field validate_event names first)
INVALID: list[tuple[str, Any, str]] = [
    ("unknown type", {**EXAMPLES["user_muted"], "type": "user_poked"}, "type"),
    ("no type", {k: v for k, v in EXAMPLES["user_muted"].items() if k != "type"}, "type"),
    ("not an object", ["user_muted"], "event"),
    ("id too long", {**EXAMPLES["koo_deleted"], "koo_id": ID_64 + "x"}, "koo_id"),
    ("id with a dot", {**EXAMPLES["koo_deleted"], "author_id": "asha.k"}, "author_id"),
    ("empty id", {**EXAMPLES["user_followed"], "followee_id": ""}, "followee_id"),
    ("id with a final newline", {**EXAMPLES["user_followed"], "follower_id": "ravi\n"},
     "follower_id"),
    ("text too long", {**EXAMPLES["koo_created"], "text": "x" * (MAX_TEXT + 1)}, "text"),
    ("text with NUL", {**EXAMPLES["koo_created"], "text": "a\x00b"}, "text"),
    ("text not a string", {**EXAMPLES["koo_created"], "text": 7}, "text"),
    ("three-letter lang", {**EXAMPLES["koo_created"], "lang": "hin"}, "lang"),
    ("lang with a digit", {**EXAMPLES["koo_created"], "lang": "h1"}, "lang"),
    ("too many hashtags", {**EXAMPLES["koo_created"], "hashtags": ["t"] * (MAX_HASHTAGS + 1)},
     "hashtags"),
    ("empty hashtag", {**EXAMPLES["koo_created"], "hashtags": [""]}, "hashtags"),
    ("hashtag too long", {**EXAMPLES["koo_created"],
                          "hashtags": ["t" * (MAX_HASHTAG_LENGTH + 1)]}, "hashtags"),
    ("hashtag with a newline", {**EXAMPLES["koo_created"], "hashtags": ["a\n"]}, "hashtags"),
    ("hashtags not a list", {**EXAMPLES["koo_created"], "hashtags": "chai"}, "hashtags"),
    ("reply_to not an id", {**EXAMPLES["koo_created"], "reply_to": "k 1"}, "reply_to"),
    ("empty handle", {**EXAMPLES["user_signed_up"], "handle": ""}, "handle"),
    ("handle too long", {**EXAMPLES["user_signed_up"], "handle": "h" * (MAX_HANDLE + 1)},
     "handle"),
    ("handle with a control character", {**EXAMPLES["user_signed_up"], "handle": "a\x01"},
     "handle"),
    ("region not a region", {**EXAMPLES["user_signed_up"], "region": "Mumbai"}, "region"),
    ("region too long", {**EXAMPLES["user_signed_up"], "region": "ap-" + "x" * 30}, "region"),
    ("unknown reaction kind", {**EXAMPLES["reaction_added"], "kind": "love"}, "kind"),
    ("occurred_at in seconds", {**EXAMPLES["reaction_added"], "occurred_at": T // 1000},
     "occurred_at"),
    ("occurred_at as a string", {**EXAMPLES["reaction_added"], "occurred_at": str(T)},
     "occurred_at"),
    ("occurred_at as a float", {**EXAMPLES["reaction_added"], "occurred_at": float(T)},
     "occurred_at"),
    ("occurred_at as a boolean", {**EXAMPLES["reaction_added"], "occurred_at": True},
     "occurred_at"),
    ("empty event_id", {**EXAMPLES["user_blocked"], "event_id": ""}, "event_id"),
    ("event_id too long", {**EXAMPLES["user_blocked"], "event_id": "e" * (MAX_EVENT_ID + 1)},
     "event_id"),
    ("event_id with a C1 control", {**EXAMPLES["user_blocked"], "event_id": "e\x85"},
     "event_id"),
    ("event_id with a final newline", {**EXAMPLES["user_blocked"], "event_id": "e-1\n"},
     "event_id"),
    ("no event_id", {k: v for k, v in EXAMPLES["user_blocked"].items() if k != "event_id"},
     "event_id"),
]


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any
                  ) -> Iterator[ValidationError]:
    """``pattern`` as ECMA-262 reads it: a final ``$`` is the end of the string only."""
    if validator.is_type(instance, "string") and not re.search(
            re.sub(r"(?<!\\)\$$", r"\\Z", pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_schema()


@pytest.fixture(scope="module")
def event_validator(document: dict[str, Any]) -> Any:
    """A validator of one event against the document's ``Event`` schema."""
    import openapi_schema_validator as oas
    extend: Any = validators.extend  # unannotated in jsonschema's stubs
    cls = extend(oas.OAS30Validator, {"pattern": _ecma_pattern})
    return cls({"$ref": "#/components/schemas/Event", "components": document["components"]})


def accepted(raw: object, now_ms: int = NOW) -> bool:
    try:
        validate_event(raw, now_ms=now_ms)
    except ValidationFailed:
        return False
    return True


def full(event_type: str) -> dict[str, Any]:
    """The example of ``event_type`` with every optional field set."""
    optional = [s.name for s in SCHEMAS[event_type] if not s.required]
    missing = [name for name in optional if name not in OPTIONAL_VALUES]
    assert not missing, f"give OPTIONAL_VALUES a sample value for {missing}"
    return {**EXAMPLES[event_type], **{name: OPTIONAL_VALUES[name] for name in optional}}


# --- the document -------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3_0(document: dict[str, Any]) -> None:
    import openapi_spec_validator as validator
    validator.validate(document)


def test_every_field_of_every_event_type_has_a_fragment() -> None:
    used = {*COMMON_EVENT_FIELDS, *(s.name for specs in SCHEMAS.values() for s in specs)}
    assert used - set(EVENT_FIELDS) == set(), "fields without a JSON-schema fragment"
    assert set(EVENT_FIELDS) - used == set(), "fragments of fields no event type has"
    assert set(EVENT_DESCRIPTIONS) == set(SCHEMAS)
    assert all(fragment.get("description") for fragment in EVENT_FIELDS.values())


@pytest.mark.parametrize("name", list(EVENT_FIELDS))
def test_the_fragment_is_a_valid_schema(name: str) -> None:
    import openapi_schema_validator as oas
    oas.OAS30Validator.check_schema(EVENT_FIELDS[name])


def test_each_event_type_has_a_schema_under_the_discriminator(document: dict[str, Any]
                                                              ) -> None:
    schemas = document["components"]["schemas"]
    union = schemas["Event"]
    assert union["discriminator"]["propertyName"] == "type"
    mapping = union["discriminator"]["mapping"]
    assert set(mapping) == set(EVENT_TYPES)
    assert [branch["$ref"] for branch in union["oneOf"]] == list(mapping.values())
    for event_type, ref in mapping.items():
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert schema is schemas[event_schema_name(event_type)]
        assert schema["properties"]["type"] == {"type": "string", "enum": [event_type]}
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    events = body["application/json"]["schema"]["properties"]["events"]
    assert (events["minItems"], events["maxItems"]) == (1, MAX_BATCH)
    assert events["items"] == {"$ref": "#/components/schemas/Event"}


def test_post_events_documents_415_for_a_content_encoding(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/events"]["post"]["responses"]
    assert {"202", "401", "413", "415", "422", "429", "503"} <= set(responses)
    assert "Accept-Encoding" in responses["415"]["headers"]


# --- hand-written events ------------------------------------------------------------------

def test_every_event_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(SCHEMAS)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_example_is_valid_under_the_schema_and_accepted(event_validator: Any,
                                                            event_type: str) -> None:
    for event in (EXAMPLES[event_type], full(event_type)):
        event_validator.validate(event)
        assert validate_event(event, now_ms=NOW)["type"] == event_type


@pytest.mark.parametrize("name", list(VALID_EDGES))
def test_edge_values_valid_under_the_schema_are_accepted(event_validator: Any,
                                                         name: str) -> None:
    event = VALID_EDGES[name]
    event_validator.validate(event)
    validate_event(event, now_ms=NOW)


@pytest.mark.parametrize(("name", "event", "field"), INVALID, ids=[n for n, _, _ in INVALID])
def test_invalid_events_are_refused_by_both(event_validator: Any, name: str, event: Any,
                                            field: str) -> None:
    assert not event_validator.is_valid(event)
    with pytest.raises(ValidationFailed) as refused:
        validate_event(event, now_ms=NOW)
    assert refused.value.errors[0]["field"] == field, refused.value.errors


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_required_in_the_schema_is_required_by_the_service(event_validator: Any,
                                                           event_type: str) -> None:
    event = full(event_type)
    required = {"type", *COMMON_EVENT_FIELDS,
                *(s.name for s in SCHEMAS[event_type] if s.required)}
    for name in event:
        without = {k: v for k, v in event.items() if k != name}
        assert event_validator.is_valid(without) == (name not in required), name
        assert accepted(without) == (name not in required), name


# --- generated events ---------------------------------------------------------------------

def _verdicts(event_validator: Any, raw: object) -> None:
    """The schema and validate_event agree on ``raw`` (but for the rules the schema cannot
    state)."""
    valid = event_validator.is_valid(raw)
    clock = NOW
    if isinstance(raw, dict) and type(raw.get("occurred_at")) is int:
        clock = max(raw["occurred_at"], MIN_OCCURRED_AT)  # a clock that reached the event
    try:
        validate_event(raw, now_ms=clock)
        problems: list[dict[str, str]] = []
    except ValidationFailed as exc:
        problems = exc.errors[0]["problems"]
    if valid and problems:
        # The one rule of an event the schema cannot state: two different users.
        assert len(problems) == 1, (raw, problems)
        assert problems[0]["message"].startswith("must differ from "), (raw, problems)
    else:
        assert valid or problems, (raw, list(event_validator.iter_errors(raw)))


GENERATED = hsettings(max_examples=60, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck),
                      phases=[Phase.explicit, Phase.generate, Phase.shrink])


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_events_get_the_same_verdict_from_schema_and_service(
        document: dict[str, Any], event_validator: Any, mode: str) -> None:
    """schemathesis generates request bodies of POST /v1/events from the document: valid
    ones (positive) and ones that break it somewhere (negative). Every event in them gets
    the same verdict from the schema and from validate_event."""
    import schemathesis
    operation = schemathesis.openapi.from_dict(document)["/v1/events"]["POST"]
    generation = schemathesis.GenerationMode(mode)
    seen = {"events": 0, "valid": 0}

    @given(case=operation.as_strategy(generation_mode=generation))
    @GENERATED
    def check(case: Any) -> None:
        body = case.body
        if not (isinstance(body, dict) and isinstance(body.get("events"), list)):
            return
        for raw in body["events"]:
            seen["events"] += 1
            seen["valid"] += event_validator.is_valid(raw)
            _verdicts(event_validator, raw)

    check()
    assert seen["events"] > 0
    if mode == "positive":
        assert seen["valid"] == seen["events"], "schemathesis generated events the schema refuses"
