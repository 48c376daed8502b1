"""The API's OpenAPI 3.0 description, served at /openapi.json.

The events of ``POST /v1/events`` are one schema per event type (a ``oneOf``
discriminated by ``type``), built in :mod:`feed.api._openapi_events`.
"""

from __future__ import annotations

from typing import Any

from feed.api._openapi_events import (
    AHEAD_HOURS,
    COMMON_EVENT_FIELDS,
    EVENT_DESCRIPTIONS,
    EVENT_FIELDS,
    ID_SCHEMA,
    event_schema_name,
    event_schemas,
    event_union,
)
from feed.schemas import MAX_BATCH

__all__ = ["COMMON_EVENT_FIELDS", "EVENT_DESCRIPTIONS", "EVENT_FIELDS", "event_schema_name",
           "openapi_schema"]


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
    return {"name": name, "in": "path", "required": True, "schema": ID_SCHEMA}


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
        "koo_id": {**ID_SCHEMA, "nullable": True},
        "actors": {"type": "array", "maxItems": 3, "items": ID_SCHEMA},
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
        "koo_id": ID_SCHEMA, "author_id": ID_SCHEMA, "text": {"type": "string"},
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
                        "Error": error, "Event": event_union(), **event_schemas(),
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
                            "content": {"text/event-stream": {"schema": {
                                "description": "One event of the stream.",
                                "type": "object",
                                "properties": {
                                    "event": {"type": "string",
                                              "enum": ["koo", "remove", "reset"]},
                                    "id": {"type": "string"},
                                    "data": {"type": "string",
                                             "description": "JSON: a FeedItem (koo), "
                                             "{\"koo_id\"} (remove), {} (reset)"},
                                    "retry": {"type": "integer"},
                                }}}}},
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
                 "properties": {"user_id": ID_SCHEMA, "handle": {"type": "string"},
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
                       "properties": {"user_id": ID_SCHEMA, "kind": {"type": "string"},
                                      "created_at": {"type": "integer"}}}),
                paged=True,
            ),
            "/v1/users/{user_id}/recommendations/follows": _get(
                "Who to follow", [_path("user_id"), _limit(10, 100)],
                {"type": "object", "required": ["items"], "properties": {"items": {
                    "type": "array", "items": {
                        "type": "object", "required": ["user_id", "score", "reason"],
                        "properties": {"user_id": ID_SCHEMA, "score": {"type": "number"},
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
                               f"cannot state: occurred_at at most {AHEAD_HOURS} h past the "
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
