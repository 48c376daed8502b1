"""``GET /v1/users/{user_id}/feed/stream``: the reader's feed as Server-Sent Events.

Everything that can fail is checked before the stream opens, so it is answered with
the usual JSON error: the id (422), the reader (404), this process's maximum of open
streams (503 with ``Retry-After``), the cache (503). Then the answer stays open: the
frames the process's :class:`~feed.stream.StreamHub` hands over, a comment line while
idle, and the end of the response when the hub ends the stream (the client reconnects
with ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from feed.api._http import error, path_id
from feed.api._server import DIRECT_BODY
from feed.reader import Reader
from feed.stream import Listener, StreamHub

__all__ = ["STREAM_RETRY_AFTER_SECONDS", "feed_stream"]

log = logging.getLogger(__name__)

STREAM_RETRY_AFTER_SECONDS = 5
# Sent first: the stream is open (proxies and clients see bytes at once), and how long
# an EventSource waits before it reconnects.
OPENING = b"retry: 1000\n: open\n\n"
RESET = b"event: reset\ndata: {}\n\n"
KEEPALIVE = b": keep-alive\n\n"


async def feed_stream(request: Request) -> Response:
    user_id = path_id(request, "user_id")
    hub: StreamHub = request.app.state.stream_hub
    if not hub.reserve():
        return error(503, "unavailable",
                     "This process holds as many open streams as it may; try again shortly.",
                     headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)})
    try:
        reader: Reader = request.app.state.reader
        await reader.profile(user_id)  # 404 before anything is opened
        # An empty Last-Event-ID is no id at all (browsers send none before the first).
        last_id = request.headers.get("last-event-id", "").strip() or None
        listener, reset = await hub.open(user_id, last_id)
    except BaseException:
        hub.release()
        raise
    return EventStream(hub, listener, reset)


class EventStream(Response):
    """The open stream of one listener."""

    def __init__(self, hub: StreamHub, listener: Listener, reset: bool) -> None:
        super().__init__(None, 200, {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                         "text/event-stream")
        # No length: the body goes on until the stream ends.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.hub = hub
        self.listener = listener
        self.reset = reset

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        listener = self.listener
        listener.task = asyncio.current_task()
        watcher = asyncio.create_task(_watch_disconnect(receive, listener))
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            await self._send(send, OPENING + (RESET if self.reset else b""))
            # From here the hub may write frames itself while this task waits.
            listener.direct = scope.get("extensions", {}).get(DIRECT_BODY)
            while listener.closed is None:
                frames = await listener.next()
                if frames:
                    await self._send(send, b"".join(frames))
                elif listener.closed is None:  # nudged by the hub: idle for a while
                    await self._send(send, KEEPALIVE)
            if listener.closed != "gone":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if listener.closed != "stalled" or task is None:
                raise
            task.uncancel()  # disconnected: the client stopped reading
            log.info("a stream's client stopped reading; disconnected",
                     extra={"user_id": listener.reader})
        finally:
            listener.direct = None
            watcher.cancel()
            self.hub.detach(listener)
            self.hub.release()

    async def _send(self, send: Send, body: bytes) -> None:
        listener = self.listener
        listener.sending = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            listener.sending = False
            listener.sent_at = time.monotonic()


async def _watch_disconnect(receive: Receive, listener: Listener) -> None:
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
    listener.close("gone")
