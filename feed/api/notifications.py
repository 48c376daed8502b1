"""The notification routes: a recipient's notifications, and marking them seen."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from feed.api._http import json, path_id, query_cursor, query_limit
from feed.errors import ValidationFailed
from feed.notifications import Notifications

__all__ = ["get_notifications", "post_notifications_seen"]

MAX_SEEN_BODY = 4096


def _notifications(request: Request) -> Notifications:
    found: Notifications = request.app.state.notifications
    return found


async def get_notifications(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    limit = query_limit(request, default=20, maximum=100)
    page = await _notifications(request).page(user_id, limit=limit,
                                              cursor=query_cursor(request))
    return json(page)


async def post_notifications_seen(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SEEN_BODY:
            raise _invalid(f"the body is over {MAX_SEEN_BODY} bytes")
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid('body must be JSON: {"up_to": ms}') from None
    if not isinstance(payload, dict) or "up_to" not in payload:
        raise _invalid('body must be {"up_to": ms}')
    await _notifications(request).mark_seen(user_id, payload["up_to"])
    return Response(status_code=204)


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed([{"field": "body", "message": message}])
