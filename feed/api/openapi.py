"""The API's OpenAPI 3.0 description, served at /openapi.json."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_schema"]

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}


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

    def err(description: str) -> dict[str, Any]:
        return _json(_ref("Error"), description)

    return {
        "openapi": "3.0.3",
        "info": {"title": "koo-feed", "version": "1.0.0",
                 "description": "Ranked home feeds, profiles, koos and recommendations."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Koo": koo, "FeedItem": feed_item, "ScoredKoo": scored_koo,
                        "Error": error},
            "responses": {
                "Unauthorized": err("Missing or wrong bearer token"),
                "Invalid": err("An id, limit or body does not match the contract"),
                "NotFound": err("Unknown user or koo, or deleted koo"),
                "InvalidCursor": err("Tampered, foreign or expired cursor"),
                "RateLimited": err("Too many requests for this token"),
                "Unavailable": err("Storage is not answering"),
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
            "/v1/events": {"post": {
                "summary": "Publish 1-500 events (all validated first; none enqueued if any "
                           "is invalid)",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["events"],
                    "properties": {"events": {"type": "array", "minItems": 1, "maxItems": 500,
                                              "items": {"type": "object"}}}}}}},
                "responses": {
                    "202": _json({"type": "object", "required": ["accepted"],
                                  "properties": {"accepted": {"type": "integer"}}},
                                 "Every event is on the queue"),
                    "413": err("Body too large"), **_ERRORS,
                },
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(
                {"type": "object", "properties": {"status": {"type": "string"}}}, "OK")}}},
            "/readyz": {"get": {"summary": "Readiness: Redis and DynamoDB answer",
                                "responses": {"200": _json({"type": "object"}, "Ready"),
                                              "503": _json({"type": "object"}, "Not ready")}}},
        },
    }
