"""The realtime feed stream (Server-Sent Events) as an async iterator that reconnects.

The iterator keeps the id of the last event it saw and reconnects with it as
``Last-Event-ID`` whenever the stream ends or the connection fails, so the service
first sends what the caller missed. It skips a ``koo`` it already yielded (a reconnect
may send one twice). 429 and 503 are retried after ``Retry-After``; any other error
answer is raised.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx

from koo_feed_client._errors import ClientError, RateLimited, Unavailable, error_from_response
from koo_feed_client._models import FeedItem, as_object

__all__ = ["StreamEvent", "iter_stream"]

READ_TIMEOUT = 45.0  # three keep-alives missed: the connection is dead, reconnect
REMEMBERED = 1_000  # koo ids kept to skip a koo sent twice around a reconnect


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of the stream: ``koo`` (with ``item``), ``remove`` (``koo_id`` left the
    feed) or ``reset`` (the caller missed too much: reload the feed)."""

    event: str
    id: str | None = None
    koo_id: str | None = None
    item: FeedItem | None = None


def _parse(event: str, event_id: str | None, data: str) -> StreamEvent | None:
    if event == "reset":
        return StreamEvent("reset", event_id)
    if event not in ("koo", "remove"):
        return None  # an event this client does not know: newer services may add some
    body = as_object(json.loads(data), "the event's data")
    if event == "remove":
        koo_id = body.get("koo_id")
        return StreamEvent("remove", event_id, koo_id if isinstance(koo_id, str) else None)
    item = FeedItem.from_json(body)
    return StreamEvent("koo", event_id, item.koo_id, item)


async def iter_stream(
    http: httpx.AsyncClient, path: str, *, last_event_id: str | None,
    wait: Callable[[float | None, int], float], sleep: Callable[[float], Awaitable[None]],
    rng: random.Random | None = None,
) -> AsyncIterator[StreamEvent]:
    """Events of the stream at ``path``, reconnecting for ever (until the caller stops
    iterating or an answer cannot be retried). ``wait(retry_after, attempt)`` says how
    long to wait before a reconnect."""
    seen: OrderedDict[str, None] = OrderedDict()
    attempt = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        retry_after: float | None = None
        try:
            async with http.stream("GET", path, headers=headers,
                                   timeout=httpx.Timeout(10.0, read=READ_TIMEOUT)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    failure = error_from_response(response)
                    if not isinstance(failure, RateLimited | Unavailable):
                        raise failure
                    retry_after = failure.retry_after
                else:
                    attempt = 0
                    event, event_id, data = "message", None, []
                    async for line in response.aiter_lines():
                        if line:
                            name, _, value = line.partition(":")
                            value = value[1:] if value.startswith(" ") else value
                            if name == "event":
                                event = value
                            elif name == "id":
                                event_id = value
                            elif name == "data":
                                data.append(value)
                            continue
                        if data or event == "reset":
                            parsed = _parse(event, event_id, "\n".join(data) or "{}")
                            if event_id is not None:
                                last_event_id = event_id
                            if parsed is not None and not _repeated(parsed, seen):
                                yield parsed
                        event, event_id, data = "message", None, []
        except ValueError as exc:
            raise ClientError(f"GET {path}: an event is not the documented shape: {exc}") \
                from None
        except httpx.TransportError:
            pass  # the connection failed: reconnect
        await sleep(wait(retry_after, attempt))
        attempt += 1


def _repeated(event: StreamEvent, seen: OrderedDict[str, None]) -> bool:
    """Whether a koo was yielded before (and remember it); a reset forgets them all."""
    if event.event == "reset":
        seen.clear()
        return False
    if event.event != "koo" or event.koo_id is None:
        return False
    if event.koo_id in seen:
        return True
    seen[event.koo_id] = None
    if len(seen) > REMEMBERED:
        seen.popitem(last=False)
    return False
