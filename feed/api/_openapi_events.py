"""The OpenAPI schemas of the events of ``POST /v1/events``, one per event type.

They are built from :data:`feed.schemas.SCHEMAS` and the limits in :mod:`feed.fields`:
each field's JSON-schema fragment is in :data:`EVENT_FIELDS`. Patterns follow OpenAPI's
(ECMA-262) rules: ``$`` is the end of the string.
"""

from __future__ import annotations

import re
from typing import Any

from feed.fields import (
    ID_PATTERN,
    ID_RULE,
    LANG_PATTERN,
    MAX_AHEAD_MS,
    MAX_EVENT_ID,
    MAX_HANDLE,
    MAX_HASHTAG_LENGTH,
    MAX_HASHTAGS,
    MAX_REGION,
    MAX_TEXT,
    MIN_OCCURRED_AT,
    REACTION_KINDS,
    REGION_PATTERN,
)
from feed.schemas import SCHEMAS

__all__ = [
    "AHEAD_HOURS",
    "COMMON_EVENT_FIELDS",
    "EVENT_DESCRIPTIONS",
    "EVENT_FIELDS",
    "ID_SCHEMA",
    "event_schema_name",
    "event_schemas",
    "event_union",
]


def _whole(pattern: re.Pattern[str]) -> str:
    """``pattern`` as a JSON-schema pattern that must match the whole string."""
    body = pattern.pattern
    return f"^(?:{body})$" if "|" in body else f"^{body}$"


ID_SCHEMA = {"type": "string", "pattern": _whole(ID_PATTERN)}

AHEAD_HOURS = MAX_AHEAD_MS // 3_600_000


def _id_field(what: str) -> dict[str, Any]:
    return {**ID_SCHEMA, "description": f"{what}: {ID_RULE}."}


# The JSON-schema fragment of every field an event can carry, by field name: the rules of
# the checkers in feed.events, in JSON-schema terms. A field is documented (and validated
# by clients) only through this table; the tests hold that every field of SCHEMAS is here.
EVENT_FIELDS: dict[str, dict[str, Any]] = {
    "event_id": {
        "type": "string", "minLength": 1, "maxLength": MAX_EVENT_ID,
        "pattern": r"^[^\x00-\x1f\x7f-\x9f]*$",
        "description": f"The producer's id of this event, 1-{MAX_EVENT_ID} characters "
                       "without control characters. The same event sent again under the same "
                       "id is applied once; a different event under a used id is not applied.",
    },
    "occurred_at": {
        "type": "integer", "format": "int64", "minimum": MIN_OCCURRED_AT,
        "description": "When it happened, in milliseconds since the Unix epoch: from "
                       f"2000-01-01 to at most {AHEAD_HOURS} h past the service's clock "
                       "(a value in seconds is refused). Of two events about the same "
                       "relation or reaction, the later occurred_at wins.",
    },
    "user_id": _id_field("The user's id"),
    "koo_id": _id_field("The koo's id"),
    "author_id": _id_field("The id of the koo's author"),
    "follower_id": _id_field("The id of the user who follows"),
    "followee_id": _id_field("The id of the user followed, not follower_id"),
    "target_id": _id_field("The id of the other user, not user_id"),
    "handle": {
        "type": "string", "minLength": 1, "maxLength": MAX_HANDLE,
        "pattern": r"^[^\x00-\x08\x0b-\x1f]*$",
        "description": f"The user's handle, 1-{MAX_HANDLE} characters; no control characters "
                       "but tab and newline.",
    },
    "lang": {  # the check lower-cases the value first, so either case is taken
        "type": "string", "pattern": _whole(LANG_PATTERN).replace("[a-z]", "[A-Za-z]"),
        "description": "A two-letter ISO 639-1 language code such as hi or en (stored "
                       "lower-cased).",
    },
    "region": {
        "type": "string", "maxLength": MAX_REGION, "pattern": _whole(REGION_PATTERN),
        "description": "The user's home region, such as ap-south-1: where their profile is "
                       "kept.",
    },
    "text": {
        "type": "string", "maxLength": MAX_TEXT, "pattern": r"^[^\x00]*$",
        "description": f"The koo's text, at most {MAX_TEXT} characters, without NUL.",
    },
    "hashtags": {
        "type": "array", "nullable": True, "maxItems": MAX_HASHTAGS,
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_HASHTAG_LENGTH,
                  "pattern": r"^[^\x00-\x1f]*$"},
        "description": f"At most {MAX_HASHTAGS} hashtags of 1-{MAX_HASHTAG_LENGTH} "
                       "characters without control characters; duplicates are dropped; "
                       "absent or null: none.",
    },
    "reply_to": {**ID_SCHEMA, "nullable": True,
                 "description": f"The id of the koo this one replies to, or null: {ID_RULE}."},
    "rekoo_of": {**ID_SCHEMA, "nullable": True,
                 "description": f"The id of the koo this one re-shares, or null: {ID_RULE}."},
    "kind": {"type": "string", "enum": list(REACTION_KINDS),
             "description": "The kind of reaction."},
}

# Every event type carries these two besides its own fields (all required).
COMMON_EVENT_FIELDS = ("event_id", "occurred_at")

EVENT_DESCRIPTIONS: dict[str, str] = {
    "user_signed_up": "A user signed up. A later signup of the same user replaces the "
                      "profile (and moves it if the region changed).",
    "koo_created": "A user posted a koo; it is delivered to the author's followers' feeds.",
    "koo_deleted": "The author deleted a koo; it disappears from every feed at once. A "
                   "delete whose author_id is not the koo's author can never apply.",
    "reaction_added": "A user liked, re-kooed or commented on a koo: one reaction per user, "
                      "kind and koo.",
    "reaction_removed": "A user took back a reaction.",
    "user_followed": "follower_id follows followee_id (the two must differ); recent koos of "
                     "followee_id are brought into follower_id's feed.",
    "user_unfollowed": "follower_id stops following followee_id (the two must differ).",
    "user_blocked": "user_id blocks target_id (the two must differ): neither sees the "
                    "other's koos in their feed.",
    "user_unblocked": "user_id unblocks target_id (the two must differ).",
    "user_muted": "user_id mutes target_id (the two must differ): target_id's koos leave "
                  "user_id's feed.",
    "user_unmuted": "user_id unmutes target_id (the two must differ).",
    "user_deleted": "The user is erased: their profile, koos, reactions, relations, "
                    "timeline, recommendations and notifications are removed everywhere, "
                    "and later events naming them are refused.",
}


def event_schema_name(event_type: str) -> str:
    """The component name of an event type's schema: ``koo_created`` -> ``KooCreated``."""
    return "".join(part.capitalize() for part in event_type.split("_"))


def event_schemas() -> dict[str, dict[str, Any]]:
    """One schema per event type, by component name, from SCHEMAS and EVENT_FIELDS."""
    schemas: dict[str, dict[str, Any]] = {}
    for event_type, specs in SCHEMAS.items():
        names = [*COMMON_EVENT_FIELDS, *(spec.name for spec in specs)]
        required = [*COMMON_EVENT_FIELDS, *(spec.name for spec in specs if spec.required)]
        # A field missing from EVENT_FIELDS is described as any value rather than breaking
        # the app; the tests fail on it.
        properties = {"type": {"type": "string", "enum": [event_type]},
                      **{name: EVENT_FIELDS.get(name, {}) for name in names}}
        schema: dict[str, Any] = {
            "type": "object", "required": ["type", *required], "properties": properties,
            "description": EVENT_DESCRIPTIONS.get(event_type, event_type)
            + " Unknown fields are ignored.",
        }
        schemas[event_schema_name(event_type)] = schema
    return schemas


def event_union() -> dict[str, Any]:
    refs = {event_type: f"#/components/schemas/{event_schema_name(event_type)}"
            for event_type in SCHEMAS}
    return {"oneOf": [{"$ref": ref} for ref in refs.values()],
            "discriminator": {"propertyName": "type", "mapping": refs}}
