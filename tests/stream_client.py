"""A small Server-Sent Events reader for the stream tests, and an in-process server.

The tests read streams over real HTTP (uvicorn on a free port): an in-memory transport
buffers a whole response, which a stream never finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette

from feed._embedded import free_port
from feed.api._server import ConnectionLimits, guarded_protocol

TOKEN = "test-token-123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Event:
    event: str
    id: str | None
    data: Any


@dataclass
class Stream:
    """What one open stream has received so far."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # the body of an answer that is not a stream (an error)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    comments: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self, within: float = 10.0) -> Event:
        async with asyncio.timeout(within):
            return await self.events.get()

    async def next_of(self, kind: str, within: float = 10.0) -> Event:
        """The next event of one kind (others are skipped)."""
        async with asyncio.timeout(within):
            while True:
                got = await self.events.get()
                if got.event == kind:
                    return got

    async def quiet(self, seconds: float) -> list[Event]:
        """Every event that arrives within ``seconds``."""
        found: list[Event] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    found.append(await self.events.get())
        return found


async def _read(response: httpx.Response, stream: Stream) -> None:
    event_id: str | None
    data: list[str]
    kind, event_id, data = "message", None, []
    try:
        async for line in response.aiter_lines():
            if line == "":
                if data:
                    payload = "\n".join(data)
                    await stream.events.put(Event(kind, event_id, orjson.loads(payload)))
                kind, event_id, data = "message", None, []
            elif line.startswith(":"):
                stream.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    kind = value
                elif name == "id":
                    event_id = value
                elif name == "data":
                    data.append(value)
    except (httpx.HTTPError, OSError):
        pass
    finally:
        stream.ended.set()


@contextlib.asynccontextmanager
async def open_stream(base_url: str, user_id: str, *, last_event_id: str | None = None,
                      headers: dict[str, str] | None = None) -> AsyncIterator[Stream]:
    """Open ``user_id``'s stream; yields once the answer's head arrived (an error's body
    is read whole)."""
    sent = dict(AUTH if headers is None else headers)
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    stream = Stream()
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0)))
        response = await stack.enter_async_context(
            client.stream("GET", f"/v1/users/{user_id}/feed/stream", headers=sent))
        stream.status = response.status_code
        stream.headers = dict(response.headers)
        if response.status_code != 200:
            stream.body = await response.aread()
            stream.ended.set()
            yield stream
            return
        reader = asyncio.create_task(_read(response, stream))
        try:
            yield stream
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve an app whose lifespan already runs on a free port, with the HTTP protocol
    `feed api` serves with; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                            log_level="warning", timeout_graceful_shutdown=1,
                            http=guarded_protocol(ConnectionLimits()))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
