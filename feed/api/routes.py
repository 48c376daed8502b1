"""The /v1 routes (docs/api.md), one function per route."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from feed.api._http import error, json, path_id, query_bool, query_cursor, query_limit
from feed.errors import ValidationFailed
from feed.events import MAX_BATCH
from feed.publisher import EventPublisher
from feed.reader import Reader

__all__ = [
    "get_feed",
    "get_koo",
    "get_koo_reactions",
    "get_user",
    "get_user_koos",
    "post_events",
    "recommend_follows",
    "recommend_koos",
]

MAX_EVENTS_BODY = 4 * 1024 * 1024


def _reader(request: Request) -> Reader:
    reader: Reader = request.app.state.reader
    return reader


async def get_feed(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    limit = query_limit(request, default=20, maximum=100)
    explain = query_bool(request, "explain")
    page = await _reader(request).feed(user_id, limit=limit, cursor=query_cursor(request))
    return json(page.as_json(explain=explain))


async def get_user(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    return json(await _reader(request).profile(user_id))


async def get_user_koos(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    limit = query_limit(request, default=20, maximum=100)
    koos, cursor = await _reader(request).author_koos(
        user_id, limit=limit, cursor=query_cursor(request)
    )
    return json({"items": [k.as_json() for k in koos], "next_cursor": cursor})


async def get_koo(request: Request) -> Response:
    koo_id = path_id(request, "koo_id")
    return json((await _reader(request).koo(koo_id)).as_json())


async def get_koo_reactions(request: Request) -> Response:
    koo_id = path_id(request, "koo_id")
    limit = query_limit(request, default=50, maximum=200)
    items, cursor = await _reader(request).reactions(
        koo_id, limit=limit, cursor=query_cursor(request)
    )
    return json({"items": items, "next_cursor": cursor})


async def recommend_follows(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    limit = query_limit(request, default=10, maximum=100)
    picks = await _reader(request).recommended_follows(user_id, limit=limit)
    return json({"items": [p.as_json() for p in picks]})


async def recommend_koos(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    limit = query_limit(request, default=10, maximum=100)
    picks = await _reader(request).recommended_koos(user_id, limit=limit)
    items = []
    for koo, pick in picks:
        item = koo.as_json()
        item["score"] = round(pick.score, 6)
        item["reason"] = pick.reason
        items.append(item)
    return json({"items": items})


async def post_events(request: Request) -> Response:
    codings = [c.strip().lower() for value in request.headers.getlist("content-encoding")
               for c in value.split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        # A body in a coding we do not decode is not the body its sender meant: never
        # read it as-is. Accept-Encoding names the coding we take (RFC 7694).
        shown = ", ".join(codings)[:100]
        return error(415, "unsupported_media_type",
                     f"Content-Encoding {shown} is not supported; send the body uncompressed.",
                     headers={"Accept-Encoding": "identity"})
    body = await _read_body(request)
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed([{"field": "body", "message": f"body is not JSON: {exc}"}]) \
            from None
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise ValidationFailed(
            [{"field": "events", "message": 'body must be {"events": [ ... ]}'}]
        )
    publisher: EventPublisher = request.app.state.publisher
    accepted = await publisher.publish(payload["events"])
    return json({"accepted": accepted}, 202)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_EVENTS_BODY:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_EVENTS_BODY:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


class PayloadTooLarge(Exception):
    pass


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body is over {MAX_EVENTS_BODY // (1024 * 1024)} MiB; send at most "
        f"{MAX_BATCH} events per request"
    )
