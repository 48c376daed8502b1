"""The realtime feed stream (Server-Sent Events): event ids and the per-process hub.

The delivery path writes each streaming reader's live stream in the cache
(:mod:`feed.cache.live`); :class:`~feed.stream.hub.StreamHub` reads them in each API
process and feeds the open streams; the route is :mod:`feed.api.stream`.
"""

from __future__ import annotations

from feed.stream.hub import KEEPALIVE_SECONDS, Listener, StreamHub
from feed.stream.ids import StreamIds

__all__ = ["KEEPALIVE_SECONDS", "Listener", "StreamHub", "StreamIds"]
