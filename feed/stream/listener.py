"""One open stream of an API process: :class:`Listener`, with its bounded buffer."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from feed.cache.live import entry_key

__all__ = ["MAX_PENDING_FRAMES", "Listener"]

MAX_PENDING_FRAMES = 256  # frames waiting for a slow client before it is disconnected


class Listener:
    """One open stream: its reader, the newest entry it has passed, and its frames.

    Nothing here keeps a timer: the hub wakes a stream that has sent nothing for a while
    (:meth:`nudge`), and the stream then sends a keep-alive. One timer per stream, armed
    and cancelled on every frame, cost more than the frame's own write.
    """

    __slots__ = ("after", "closed", "direct", "frames", "reader", "ready", "sending", "sent_at",
                 "task")

    def __init__(self, reader: str, after: str) -> None:
        self.reader = reader
        self.after = entry_key(after)
        self.frames: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.closed: str | None = None  # why it ended: gone, stalled, cache, shutdown
        self.task: asyncio.Task[Any] | None = None  # the response's task, while sending
        self.sending = False
        self.sent_at = time.monotonic()  # when the stream last wrote to its client
        # Writes a frame to the client at once, if the connection takes it (False: it
        # does not); set by the response once it has started. See feed.api._server.
        self.direct: Callable[[bytes], bool] | None = None

    def offer(self, frame: bytes) -> None:
        if self.closed is not None:
            return
        # Nothing waiting and nothing being written: the frame can go out now, in order,
        # without waking the response's task (the cost that matters at thousands of
        # streams). Otherwise it waits its turn behind the others.
        if (not self.frames and not self.sending and self.direct is not None
                and self.direct(frame)):
            self.sent_at = time.monotonic()
            return
        if len(self.frames) >= MAX_PENDING_FRAMES:
            self.close("stalled")
            return
        self.frames.append(frame)
        self.ready.set()

    def close(self, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        self.ready.set()
        if reason == "stalled" and self.sending and self.task is not None:
            self.task.cancel()  # stuck writing to a client that does not read

    def nudge(self, quiet_since: float) -> None:
        """Wake the stream if it has written nothing since ``quiet_since`` (monotonic):
        it is time for a keep-alive."""
        if self.sent_at <= quiet_since and not self.frames:
            self.ready.set()

    async def next(self) -> list[bytes]:
        """The frames waiting; none when the stream was closed or nudged."""
        if not self.frames and self.closed is None:
            await self.ready.wait()
        self.ready.clear()
        frames = list(self.frames)
        self.frames.clear()
        return frames
