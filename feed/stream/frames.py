"""The Server-Sent Events frames of the realtime stream, each under its sealed id.

A ``koo`` frame carries the koo as a feed item (its fields, ``score`` and ``reason``),
ranked as the feed ranks it, and only if the reader may see it now; a ``remove`` frame
carries the id of a koo that left the feed. The JSON body of a koo is built once per
(koo, reason, affinity) within a batch of frames (``Bodies``).
"""

from __future__ import annotations

import orjson

from config.settings import Settings
from feed import ranking
from feed.models import Koo, RelationSets
from feed.stream.ids import StreamIds

__all__ = ["Bodies", "Frames", "frame"]

Bodies = dict[tuple[str, str, float], bytes]  # (koo, reason, affinity) -> JSON body


def frame(event: str, event_id: str, body: bytes) -> bytes:
    return b"".join((b"event: ", event.encode(), b"\nid: ", event_id.encode(),
                     b"\ndata: ", body, b"\n\n"))


class Frames:
    """Builds the frames one process sends, with the ids it seals and opens."""

    def __init__(self, settings: Settings) -> None:
        self.ids = StreamIds(settings.cursor_secret)
        self.weights = settings.weights

    def koo(self, reader: str, entry_id: str, koo: Koo | None, relations: RelationSets,
            affinity: dict[str, float], celebrities: frozenset[str], now: float,
            bodies: Bodies) -> bytes | None:
        """The ``koo`` frame of a live stream's entry; None if the koo is gone or the
        reader may not see it (the feed's rule: blocked, muted, blocking, not followed)."""
        if koo is None or koo.deleted:
            return None
        author = koo.author_id
        if not relations.sees(reader, author):
            return None
        if author == reader:
            reason = "self"
        elif author in celebrities:
            reason = "celebrity"
        else:
            reason = "following"
        weight = affinity.get(author, 0.0)
        body = bodies.get((koo.koo_id, reason, weight))
        if body is None:
            parts = ranking.score_koo(koo, now_ms=int(now * 1000), affinity=weight,
                                      repeats=0, weights=self.weights)
            item = koo.as_json()
            item["score"] = round(sum(parts.values()), 6)
            item["reason"] = reason
            body = bodies[(koo.koo_id, reason, weight)] = orjson.dumps(item)
        return frame("koo", self.ids.seal(reader, entry_id, now=now), body)

    def remove(self, reader: str, entry_id: str, koo_id: str, now: float) -> bytes:
        return frame("remove", self.ids.seal(reader, entry_id, now=now),
                     orjson.dumps({"koo_id": koo_id}))
