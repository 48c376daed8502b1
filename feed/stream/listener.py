"""One open stream of an API process: :class:`Listener`, with its bounded buffer."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from feed.cache.live import entry_key

__all__ = ["MAX_PENDING_FRAMES", "Listener"]

MAX_PENDING_FRAMES = 256  # frames waiting for a slow client before it is disconnected


class Listener:
    """One open stream: its reader, the newest entry it has passed, and its frames."""

    __slots__ = ("after", "closed", "frames", "reader", "ready", "sending", "task")

    def __init__(self, reader: str, after: str) -> None:
        self.reader = reader
        self.after = entry_key(after)
        self.frames: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.closed: str | None = None  # why it ended: gone, stalled, cache, shutdown
        self.task: asyncio.Task[Any] | None = None  # the response's task, while sending
        self.sending = False

    def offer(self, frame: bytes) -> None:
        if self.closed is not None:
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

    async def next(self, idle: float) -> list[bytes] | None:
        """The frames waiting (maybe none, once closed); None after ``idle`` seconds
        without any."""
        if not self.frames and self.closed is None:
            try:
                async with asyncio.timeout(idle):
                    await self.ready.wait()
            except TimeoutError:
                return None
        self.ready.clear()
        frames = list(self.frames)
        self.frames.clear()
        return frames
