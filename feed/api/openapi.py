"""The API's OpenAPI 3.0 description, served at /openapi.json.

The events of ``POST /v1/events`` are described from :data:`feed.events.SCHEMAS` and the
limits in :mod:`feed.events`: one schema per event type (a ``oneOf`` discriminated by
``type``), built from the JSON-schema fragment of each field in :data:`EVENT_FIELDS`.
Patterns follow OpenAPI's (ECMA-262) rules: ``$`` is the end of the string.
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
from feed.schemas import MAX_BATCH, SCHEMAS

__all__ = ["COMMON_EVENT_FIELDS", "EVENT_DESCRIPTIONS", "EVENT_FIELDS", "event_schema_name",
           "openapi_schema"]


def _whole(pattern: re.Pattern[str]) -> str:
    """``pattern`` as a JSON-schema pattern that must match the whole string."""
    body = pattern.pattern
    return f"^(?:{body})$" if "|" in body else f"^{body}$"


_ID = {"type": "string", "pattern": _whole(ID_PATTERN)}

_AHEAD_HOURS = MAX_AHEAD_MS // 3_600_000


def _id_field(what: str) -> dict[str, Any]:
    return {**_ID, "description": f"{what}: {ID_RULE}."}


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
                       f"2000-01-01 to at most {_AHEAD_HOURS} h past the service's clock "
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
    "reply_to": {**_ID, "nullable": True,
                 "description": f"The id of the koo this one replies to, or null: {ID_RULE}."},
    "rekoo_of": {**_ID, "nullable": True,
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


def _event_schemas() -> dict[str, dict[str, Any]]:
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


def _event_union() -> dict[str, Any]:
    refs = {event_type: f"#/components/schemas/{event_schema_name(event_type)}"
            for event_type in SCHEMAS}
    return {"oneOf": [{"$ref": ref} for ref in refs.values()],
            "discriminator": {"propertyName": "type", "mapping": refs}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "422": {"$ref": "#/components/responses/Invalid"},
    "429": {"$ref": "#/components/responses/RateLimited"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return {
        "name": "limit", "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


_CURSOR = {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any],
         *, paged: bool = False, not_found: bool = True) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json(ok, "OK"), **_ERRORS}
    if not_found:
        responses["404"] = {"$ref": "#/components/responses/NotFound"}
    if paged:
        responses["400"] = {"$ref": "#/components/responses/InvalidCursor"}
    return {"get": {"summary": summary, "parameters": params, "responses": responses,
                    "security": [{"bearer": []}]}}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": item},
                       "next_cursor": {"type": "string", "nullable": True}},
    }


def _notification_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        "notification_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["like", "rekoo", "comment", "reply", "follow"]},
        "koo_id": {**_ID, "nullable": True},
        "actors": {"type": "array", "maxItems": 3, "items": _ID},
        "actor_count": {"type": "integer", "minimum": 1},
        "updated_at": {"type": "integer"}, "seen": {"type": "boolean"},
    }
    return {"type": "object", "required": list(props), "properties": props}


def _notification_paths() -> dict[str, Any]:
    page = _page(_ref("Notification"))
    page["required"].append("unseen")
    page["properties"]["unseen"] = {"type": "integer", "minimum": 0}
    listing = _get("Aggregated notifications, newest activity first",
                   [_path("user_id"), _limit(20, 100), _CURSOR], page, paged=True)
    listing["get"]["description"] = (
        "The same kind on the same koo (or new followers) within one window of "
        "FEED_NOTIFY_GROUP_HOURS is one notification: `actors` holds the 3 newest actors, "
        "`actor_count` the distinct actors. `unseen` counts the notifications updated after "
        "the highest `up_to` ever posted to `.../notifications/seen`.")
    seen = {"post": {
        "summary": "Mark seen every notification updated at up_to or before",
        "parameters": [_path("user_id")],
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["up_to"],
            "properties": {"up_to": {"type": "integer", "minimum": 0,
                                     "description": "ms; at most a day ahead"}}}}}},
        "responses": {"204": {"description": "Marked (the highest up_to ever posted counts)"},
                      "404": {"$ref": "#/components/responses/NotFound"}, **_ERRORS},
    }}
    return {"/v1/users/{user_id}/notifications": listing,
            "/v1/users/{user_id}/notifications/seen": seen}


def openapi_schema() -> dict[str, Any]:
    koo_props: dict[str, Any] = {
        "koo_id": _ID, "author_id": _ID, "text": {"type": "string"},
        "lang": {"type": "string"}, "created_at": {"type": "integer"},
        "hashtags": {"type": "array", "items": {"type": "string"}},
        "reply_to": {"type": "string", "nullable": True},
        "rekoo_of": {"type": "string", "nullable": True},
        "likes": {"type": "integer", "minimum": 0}, "rekoos": {"type": "integer", "minimum": 0},
        "comments": {"type": "integer", "minimum": 0},
    }
    koo = {"type": "object", "required": list(koo_props), "properties": koo_props}
    feed_item = {
        "type": "object", "required": [*koo_props, "score", "reason"],
        "properties": {
            **koo_props, "score": {"type": "number"},
            "reason": {"type": "string",
                       "enum": ["following", "self", "celebrity", "recommended"]},
            "explain": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    }
    scored_koo = {
        "type": "object", "required": [*koo_props, "score", "reason"],
        "properties": {**koo_props, "score": {"type": "number"}, "reason": {"type": "string"}},
    }
    error = {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "details": {"type": "array", "items": {}}},
        }},
    }

    def err(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = _json(_ref("Error"), description)
        if headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in headers.items()}
        return response

    retry_after = {"Retry-After": "Seconds to wait before trying again"}

    return {
        "openapi": "3.0.3",
        "info": {"title": "koo-feed", "version": "1.0.0",
                 "description": "Ranked home feeds, profiles, koos and recommendations."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Koo": koo, "FeedItem": feed_item, "ScoredKoo": scored_koo,
                        "Error": error, "Event": _event_union(), **_event_schemas(),
                        "Notification": _notification_schema()},
            "responses": {
                "Unauthorized": err("Missing or wrong bearer token",
                                    {"WWW-Authenticate": "Bearer"}),
                "Invalid": err("An id, limit or body does not match the contract"),
                "NotFound": err("Unknown user or koo, or deleted koo"),
                "InvalidCursor": err("Tampered, foreign or expired cursor"),
                "RateLimited": err("Too many requests for this token, or too many failed "
                                   "authentications from this address",
                                   retry_after),
                "Unavailable": err("Storage or the queue is not answering, or the process "
                                   "has too many reads in flight", retry_after),
            },
        },
        "paths": {
            "/v1/users/{user_id}/feed": _get(
                "The ranked home feed",
                [_path("user_id"), _limit(20, 100), _CURSOR,
                 {"name": "explain", "in": "query", "required": False,
                  "schema": {"type": "boolean", "default": False}}],
                _page(_ref("FeedItem")), paged=True,
            ),
            "/v1/users/{user_id}/feed/stream": {"get": {
                "summary": "The feed in real time (Server-Sent Events)",
                "description": "Stays open. `event: koo` (an `id:` and a FeedItem without "
                               "`explain`) when a koo enters the feed, `event: remove` "
                               "(`{\"koo_id\"}`) when one leaves it, a comment line at "
                               "least every 15 s while idle. Reconnect with "
                               "`Last-Event-ID` to get what came since (at most 200), "
                               "or `event: reset` when that is not possible: reload the "
                               "feed. 503 with Retry-After past the process's maximum "
                               "of open streams.",
                "parameters": [_path("user_id"),
                               {"name": "Last-Event-ID", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "404": {"$ref": "#/components/responses/NotFound"},
                    **_ERRORS,
                },
                "security": [{"bearer": []}],
            }},
            "/v1/users/{user_id}": _get(
                "A user's profile", [_path("user_id")],
                {"type": "object",
                 "required": ["user_id", "handle", "lang", "region", "followers", "following",
                              "created_at"],
                 "properties": {"user_id": _ID, "handle": {"type": "string"},
                                "lang": {"type": "string"}, "region": {"type": "string"},
                                "followers": {"type": "integer"},
                                "following": {"type": "integer"},
                                "created_at": {"type": "integer"}}},
            ),
            "/v1/users/{user_id}/koos": _get(
                "The author's own koos, newest first",
                [_path("user_id"), _limit(20, 100), _CURSOR], _page(_ref("Koo")), paged=True,
            ),
            "/v1/koos/{koo_id}": _get("One koo", [_path("koo_id")], _ref("Koo")),
            "/v1/koos/{koo_id}/reactions": _get(
                "Reactions to a koo, newest first",
                [_path("koo_id"), _limit(50, 200), _CURSOR],
                _page({"type": "object", "required": ["user_id", "kind", "created_at"],
                       "properties": {"user_id": _ID, "kind": {"type": "string"},
                                      "created_at": {"type": "integer"}}}),
                paged=True,
            ),
            "/v1/users/{user_id}/recommendations/follows": _get(
                "Who to follow", [_path("user_id"), _limit(10, 100)],
                {"type": "object", "required": ["items"], "properties": {"items": {
                    "type": "array", "items": {
                        "type": "object", "required": ["user_id", "score", "reason"],
                        "properties": {"user_id": _ID, "score": {"type": "number"},
                                       "reason": {"type": "string"}}}}}},
            ),
            "/v1/users/{user_id}/recommendations/koos": _get(
                "Recommended koos", [_path("user_id"), _limit(10, 100)],
                {"type": "object", "required": ["items"],
                 "properties": {"items": {"type": "array", "items": _ref("ScoredKoo")}}},
            ),
            **_notification_paths(),
            "/v1/events": {"post": {
                "summary": f"Publish 1-{MAX_BATCH} events (all validated first; none "
                           "enqueued if any is invalid)",
                "description": "An event sent again (same event_id, same content) is "
                               "applied once. Three rules are checked that the event schemas "
                               f"cannot state: occurred_at at most {_AHEAD_HOURS} h past the "
                               "service's clock, the two users of a follow, block or mute "
                               "differ, and two different events of one batch never share "
                               "an event_id.",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["events"],
                    "properties": {"events": {"type": "array", "minItems": 1,
                                              "maxItems": MAX_BATCH,
                                              "items": _ref("Event")}}}}}},
                "responses": {
                    "202": _json({"type": "object", "required": ["accepted"],
                                  "properties": {"accepted": {"type": "integer"}}},
                                 "Every event is on the queue"),
                    "413": err("Body too large"),
                    "415": err("A Content-Encoding other than identity: send the body "
                               "uncompressed", {"Accept-Encoding": "identity"}),
                    **_ERRORS,
                },
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(
                {"type": "object", "properties": {"status": {"type": "string"}}}, "OK")}}},
            "/readyz": {"get": {"summary": "Readiness: Redis and DynamoDB answer",
                                "responses": {"200": _json({"type": "object"}, "Ready"),
                                              "503": _json({"type": "object"}, "Not ready")}}},
        },
    }
