"""The realtime stream's side of the hot cache: each streaming reader's live stream.

A reader who has a realtime stream open (or had one within ``LIVE_TTL_SECONDS``) has a
short Redis Stream, ``keys.live_stream``, of what entered or left their feed: ``koo``
entries written by the delivery itself (the timeline push and the live append are one
script call, so a reader who never streamed costs one EXISTS), ``remove`` entries, and
``rel`` notes when the reader's relations change. A writer then publishes the reader
ids on ``keys.LIVE_WAKE_CHANNEL``, once per batch; every API process listens there on
one connection and reads the streams of the readers it serves. The stream is also what
a reconnecting client resumes from.

A wake-up message is space-separated words (ids never hold ``:`` or ``/``):

- ``READER``: READER's live stream grew; read it.
- ``koo:KOO_ID`` first, then ``READER/BEFORE/ENTRY``: the delivery of KOO_ID appended
  entry ENTRY to READER's live stream, right after entry BEFORE. A process whose stream
  of READER has passed BEFORE sends the koo as it is, without reading the stream back
  (the common case, and most of the cost at thousands of streams); any other reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from feed import keys
from feed.cache._base import CacheBase, Calls
from feed.cache.timelines import PUSH_BATCH

__all__ = ["LIVE_MAXLEN", "LIVE_TTL_SECONDS", "Appended", "LiveCache", "LiveEntry",
           "entry_key", "parse_wake", "wake_message"]

LIVE_MAXLEN = 200  # entries a live stream keeps (about: trimmed with MAXLEN ~)
LIVE_SEEN_KEEP = 400  # koo ids remembered per live stream, to stream each koo once
LIVE_TTL_SECONDS = 600  # a live stream outlives its last open stream by this much
WAKE_BATCH = 1_000  # reader ids per wake-up message

LiveEntry = tuple[str, dict[str, str]]  # (stream entry id, fields)
Appended = tuple[str, str, str]  # (reader, id of the entry before, id of the koo's entry)
_KOO_WORD = "koo:"


def wake_message(readers: Sequence[str], koo_id: str = "",
                 appended: Sequence[Appended] = ()) -> str:
    """One wake-up message: ``readers`` to read, and ``appended`` entries of ``koo_id``."""
    words = [f"{_KOO_WORD}{koo_id}", *("/".join(a) for a in appended)] if appended else []
    return " ".join([*words, *readers])


def parse_wake(message: str) -> tuple[list[str], str, list[Appended]]:
    """The readers to read, the koo and the entries it was appended as, of a message."""
    readers: list[str] = []
    appended: list[Appended] = []
    koo_id = ""
    for word in message.split():
        if word.startswith(_KOO_WORD):
            koo_id = word[len(_KOO_WORD):]
        elif "/" in word:
            reader, before, entry = word.split("/", 2)
            if koo_id:
                appended.append((reader, before, entry))
            else:
                readers.append(reader)
        else:
            readers.append(word)
    return readers, koo_id, appended


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class LiveCache(CacheBase):
    """Readers' live streams, and the wake-up channel of the API processes."""

    def _live_args(self, created: int, koo_id: str, author: str) -> list[Any]:
        return [created, koo_id, author, LIVE_MAXLEN, LIVE_SEEN_KEEP, LIVE_TTL_SECONDS]

    async def push_live(self, readers: Sequence[str], koo_id: str, created: int,
                        author: str) -> int:
        """:meth:`TimelineCache.push`, and the koo appended once to the live stream of
        each of ``readers`` who streams; returns how many cached timelines took it."""
        readers = list(readers)
        live_args = self._live_args(created, koo_id, author)
        args = [created, koo_id, self.keep, *live_args[2:]]

        def keys_of(part: Sequence[str]) -> list[str]:
            return [k for r in part for k in (keys.timeline(r), keys.live_stream(r),
                                                 keys.live_seen(r))]

        step = 1 if isinstance(self.redis, RedisCluster) else PUSH_BATCH
        starts = range(0, len(readers), step)
        calls: Calls = [(keys_of(readers[i:i + step]), args) for i in starts]
        results = await self._guard(self._run_many("push_live", calls))
        pushed = 0
        grew: list[Appended] = []
        for start, reply in zip(starts, results, strict=True):
            pushed += int(reply[0])
            grew += [(readers[start + int(reply[i]) - 1], str(reply[i + 1]), str(reply[i + 2]))
                     for i in range(1, len(reply), 3)]
        await self.wake_koo(koo_id, grew)
        return pushed

    async def live_koo(self, readers: Sequence[str], koo_id: str, created: int,
                       author: str) -> list[int]:
        """Append a koo to the live streams of ``readers`` only (no timeline): one flag
        per reader, 1 written, 0 streamed before, -1 no live stream."""
        args = self._live_args(created, koo_id, author)
        pairs = [(keys.live_stream(r), keys.live_seen(r)) for r in readers]
        if isinstance(self.redis, RedisCluster):
            calls: Calls = [(pair, args) for pair in pairs]
        else:
            calls = [([k for pair in pairs[i:i + PUSH_BATCH] for k in pair], args)
                     for i in range(0, len(pairs), PUSH_BATCH)]
        replies = [r for reply in await self._guard(self._run_many("live_koo", calls))
                   for r in reply]
        await self.wake_koo(koo_id, [(reader, str(r[0]), str(r[1]))
                                     for reader, r in zip(readers, replies, strict=True)
                                     if isinstance(r, list)])
        return [1 if isinstance(r, list) else int(r) for r in replies]

    async def live_fans(self, author: str) -> list[str]:
        """Readers with a live stream who follow ``author`` (a pulled author)."""
        return sorted(await self._guard(self.redis.smembers(keys.live_fans(author))))

    async def drop_live_fans(self, author: str, readers: Sequence[str]) -> None:
        if readers:
            await self._guard(self.redis.srem(keys.live_fans(author), *readers))

    async def live_note(self, readers: Sequence[str], kind: str, koo_id: str = "") -> int:
        """Append a note (``remove`` of a koo, ``rel``) to each existing live stream of
        ``readers``; returns how many took it."""
        streams = [keys.live_stream(r) for r in readers]
        args = (kind, koo_id, LIVE_MAXLEN)
        if isinstance(self.redis, RedisCluster):
            calls: Calls = [((s,), args) for s in streams]
        else:
            calls = [(streams[i:i + PUSH_BATCH], args)
                     for i in range(0, len(streams), PUSH_BATCH)]
        step = 1 if isinstance(self.redis, RedisCluster) else PUSH_BATCH
        grew: list[str] = []
        for start, reply in zip(range(0, len(readers), step),
                                await self._guard(self._run_many("live_note", calls)),
                                strict=True):
            grew += [readers[start + int(i) - 1] for i in reply]
        await self.wake(grew)
        return len(grew)

    async def live_removes(self, reader: str, koo_ids: Sequence[str]) -> int:
        """Append a ``remove`` of each koo to one reader's live stream, if it exists."""
        stream = keys.live_stream(reader)
        if not koo_ids or not await self.is_live(reader):
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for koo_id in koo_ids:
            pipe.xadd(stream, {"t": "remove", "k": koo_id}, maxlen=LIVE_MAXLEN,
                      approximate=True)
        await self._guard(pipe.execute())
        await self.wake([reader])
        return len(koo_ids)

    async def is_live(self, reader: str) -> bool:
        return bool(await self._guard(self.redis.exists(keys.live_stream(reader))))

    async def wake(self, readers: Sequence[str]) -> None:
        """Tell the API processes that these readers' live streams grew."""
        for i in range(0, len(readers), WAKE_BATCH):
            await self._publish(wake_message(readers[i:i + WAKE_BATCH]))

    async def wake_koo(self, koo_id: str, appended: Sequence[Appended]) -> None:
        """Tell the API processes which entries the delivery of a koo appended."""
        for i in range(0, len(appended), WAKE_BATCH):
            await self._publish(wake_message((), koo_id, appended[i:i + WAKE_BATCH]))

    async def _publish(self, message: str) -> None:
        if isinstance(self.redis, RedisCluster):
            # A plain PUBLISH reaches the subscribers of every node of a Cluster.
            node = self.redis.get_default_node()
            await self._guard(self.redis.execute_command(
                "PUBLISH", keys.LIVE_WAKE_CHANNEL, message, target_nodes=node))
        else:
            redis: Any = self.redis
            await self._guard(redis.publish(keys.LIVE_WAKE_CHANNEL, message))

    # --- the API process's side ---------------------------------------------------------

    async def open_live(self, reader: str) -> str:
        """Start (or keep) a reader's live stream; returns the id of its newest entry,
        from which a new stream goes on."""
        stream = keys.live_stream(reader)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(stream, {"t": "open"}, maxlen=LIVE_MAXLEN, approximate=True)
        pipe.expire(stream, LIVE_TTL_SECONDS)
        pipe.expire(keys.live_seen(reader), LIVE_TTL_SECONDS)
        entry_id, *_ = await self._guard(pipe.execute())
        return str(entry_id)

    async def keep_live(self, readers: Iterable[str],
                        fans: Mapping[str, Iterable[str]]) -> None:
        """Extend the live streams of readers still streaming, and their place among the
        live fans of the pulled authors they follow (``fans``: reader -> authors)."""
        pipe = self.redis.pipeline(transaction=False)
        queued = 0
        for reader in readers:
            pipe.expire(keys.live_stream(reader), LIVE_TTL_SECONDS)
            pipe.expire(keys.live_seen(reader), LIVE_TTL_SECONDS)
            queued += 2
            for author in fans.get(reader, ()):
                pipe.sadd(keys.live_fans(author), reader)
                pipe.expire(keys.live_fans(author), LIVE_TTL_SECONDS)
                queued += 2
        if queued:
            await self._guard(pipe.execute())

    async def live_entries(self, after: Mapping[str, str], *, count: int
                           ) -> dict[str, list[LiveEntry]]:
        """Up to ``count`` entries of each reader's live stream after the given id."""
        readers = list(after)
        if not readers:
            return {}
        if not isinstance(self.redis, RedisCluster):
            # One XREAD for every stream (a Cluster refuses keys of several slots).
            reply = await self._guard(self.redis.xread(
                {keys.live_stream(r): after[r] for r in readers}, count=count))
            found: dict[str, list[LiveEntry]] = {r: [] for r in readers}
            by_key = {keys.live_stream(r): r for r in readers}
            for key, rows in reply or ():
                found[by_key[str(key)]] = [(str(i), dict(f)) for i, f in rows]
            return found
        pipe = self.redis.pipeline(transaction=False)
        for reader in readers:
            pipe.xrange(keys.live_stream(reader), min=f"({after[reader]}", count=count)
        replies = await self._guard(pipe.execute())
        return {r: [(str(i), dict(f)) for i, f in reply]
                for r, reply in zip(readers, replies, strict=True)}

    async def live_since(self, reader: str, entry_id: str, *, limit: int
                         ) -> list[LiveEntry] | None:
        """The entries after ``entry_id``, if the stream still holds that entry and at
        most ``limit`` came after it; None otherwise (resuming is not possible)."""
        stream = keys.live_stream(reader)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrange(stream, min=entry_id, max=entry_id, count=1)
        pipe.xrange(stream, min=f"({entry_id}", count=limit + 1)
        found, after = await self._guard(pipe.execute())
        if not found or len(after) > limit:
            return None
        return [(str(i), dict(f)) for i, f in after]
