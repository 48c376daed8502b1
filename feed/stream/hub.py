"""One API process's side of the realtime stream: :class:`StreamHub`.

The hub holds one pub/sub connection to the cache Redis, whatever the number of open
streams. A message on ``keys.LIVE_WAKE_CHANNEL`` names readers whose live streams grew;
for those this process serves, one pump reads the new entries (one XREAD per batch of
readers; a pipelined XRANGE each on a Cluster), hydrates the koos once, applies the
feed's rule of who sees whom with the reader's current relations, and hands each open
stream its frames. A koo's delivery says which entry it appended after which: a stream
that has passed that entry gets the koo without its live stream being read back. A stream
whose client stops reading is closed once ``MAX_PENDING_FRAMES`` wait for it. When the
pub/sub connection fails (the cache Redis restarted), every stream is ended: clients
reconnect with ``Last-Event-ID`` and resume from the live stream, or reload on a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from feed import keys, metrics
from feed.cache.fallback import without_cache
from feed.cache.live import (
    LIVE_MAXLEN,
    LIVE_TTL_SECONDS,
    Appended,
    LiveEntry,
    entry_key,
    parse_wake,
)
from feed.errors import StorageUnavailable
from feed.models import Koo, RelationSets
from feed.stream.frames import Bodies, Frames
from feed.stream.listener import MAX_PENDING_FRAMES, Listener
from feed.timeline import FeedManager

__all__ = ["KEEPALIVE_SECONDS", "MAX_PENDING_FRAMES", "Listener", "StreamHub"]

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 14.0  # a comment line at least this often while a stream is idle
RESUME_LIMIT = 200  # entries a reconnecting client may catch up on; more: reset
PUMP_BATCH = 2_000  # readers whose live streams one pump round reads
PING_SECONDS = 5.0  # the pub/sub connection is checked this often while quiet
KEEP_SECONDS = LIVE_TTL_SECONDS / 4  # live streams and fan sets are extended this often
RESUBSCRIBE_SECONDS = 1.0
STOP_SECONDS = 5.0  # how long stop() waits for the hub's tasks


@dataclass(slots=True)
class _Reader:
    """What the hub knows about one reader it streams to."""

    listeners: set[Listener] = field(default_factory=set)
    relations: RelationSets | None = None
    affinity: dict[str, float] = field(default_factory=dict)
    fans_of: frozenset[str] = frozenset()  # pulled authors the reader follows and sees
    loading: asyncio.Task[None] | None = None


class StreamHub:
    """Every open stream of this process, over one pub/sub connection."""

    def __init__(self, manager: FeedManager, *, max_streams: int) -> None:
        self.manager = manager
        self.cache = manager.cache
        self.settings = manager.settings
        self.frames = Frames(self.settings)
        self.max_streams = max_streams
        self.keepalive = KEEPALIVE_SECONDS
        self.open_streams = 0
        self._readers: dict[str, _Reader] = {}
        self._pending: set[str] = set()  # readers whose live streams are to be read
        self._appended: deque[tuple[str, list[Appended]]] = deque()  # koos to pass on
        self._pump_due = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._celebrities: frozenset[str] = frozenset()
        self._tasks: list[asyncio.Task[None]] = []
        self._signals: list[tuple[signal.Signals, Any, Any]] = []
        self._stopping = False

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._listen()),
                           asyncio.create_task(self._pump()),
                           asyncio.create_task(self._keep()),
                           asyncio.create_task(self._nudge())]
            self._end_on_signals()

    def _end_on_signals(self) -> None:
        """End every stream when the server is told to stop. The server waits for open
        responses to finish before it stops, and a stream never finishes by itself: its
        clients reconnect to another process instead of waiting for the grace period."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue  # nobody stops on it here: leave it alone

            def chained(signum: int, frame: Any, previous: Any = previous) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed already
                    loop.call_soon_threadsafe(self._end_all, "shutdown")
                previous(signum, frame)

            signal.signal(sig, chained)
            self._signals.append((sig, chained, previous))

    async def stop(self) -> None:
        self._stopping = True
        self._end_all("shutdown")
        for sig, chained, previous in self._signals:
            if signal.getsignal(sig) is chained:
                signal.signal(sig, previous)
        self._signals = []
        for task in self._tasks:
            task.cancel()
        # A cancellation can be swallowed inside the Redis client (turned into a timeout
        # it then reports): the loops also stop on the flag, and the wait is bounded.
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
            if stuck:
                log.warning("live stream tasks did not stop in time",
                            extra={"tasks": len(stuck)})
        self._tasks = []

    # --- opening and closing streams ------------------------------------------------------

    def reserve(self) -> bool:
        """Count a stream about to open; False past the process's maximum."""
        if self.open_streams >= self.max_streams:
            return False
        self.open_streams += 1
        metrics.STREAMS_OPEN.inc()
        return True

    def release(self) -> None:
        self.open_streams -= 1
        metrics.STREAMS_OPEN.dec()

    async def open(self, reader: str, last_event_id: str | None) -> tuple[Listener, bool]:
        """A listener for ``reader``'s stream (reserved first), from the entry
        ``last_event_id`` names if it can resume from there; the flag says it cannot (the
        client must reload its feed). Raises StorageUnavailable without the cache."""
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                await self._subscribed.wait()
        except TimeoutError:
            raise StorageUnavailable("the live streams' channel is not subscribed",
                                     "unsubscribed") from None
        after = await self.cache.open_live(reader)
        reset = False
        if last_event_id is not None:
            entry = self.frames.ids.open(reader, last_event_id, now=time.time())
            since: list[LiveEntry] | None = None
            if entry is not None:
                since = await self.cache.live_since(reader, entry, limit=RESUME_LIMIT)
            if since is None:
                reset = True
            elif entry is not None:
                after = entry
        listener = Listener(reader, after)
        state = self._readers.get(reader)
        if state is None:
            state = self._readers[reader] = _Reader()
            state.loading = asyncio.create_task(self._load(reader, state))
        state.listeners.add(listener)
        try:
            if state.loading is not None:
                await asyncio.shield(state.loading)
        except BaseException:
            self.detach(listener)
            raise
        self._due([reader])  # anything after `after`: the backlog, or what came meanwhile
        return listener, reset

    def detach(self, listener: Listener) -> None:
        """Forget a listener whose response ended."""
        state = self._readers.get(listener.reader)
        if state is None:
            return
        state.listeners.discard(listener)
        if not state.listeners:
            del self._readers[listener.reader]

    def _end_all(self, reason: str) -> None:
        for state in list(self._readers.values()):
            for listener in list(state.listeners):
                listener.close(reason)

    # --- what the hub knows of a reader ---------------------------------------------------

    async def _load(self, reader: str, state: _Reader) -> None:
        """Read the reader's relations (and affinity), and register them among the live
        fans of the pulled authors they follow."""
        relations = await self.manager.relations_of(reader)
        if not self._celebrities:
            self._celebrities = await self.manager.celebrities()
        affinity: dict[str, float] | None = None
        with without_cache("affinity"):
            affinity = await self.cache.affinity(reader)
        state.relations = relations
        state.affinity = affinity or {}
        state.fans_of = frozenset(a for a in relations.following
                                  if a in self._celebrities and relations.sees(reader, a))
        await self.cache.keep_live([reader], {reader: state.fans_of})

    # --- reading live streams -------------------------------------------------------------

    def _woken(self, message: str) -> None:
        readers, koo_id, appended = parse_wake(message)
        self._due([r for r in readers if r in self._readers])
        mine = [a for a in appended if a[0] in self._readers]
        if mine:
            self._appended.append((koo_id, mine))
            self._pump_due.set()

    def _due(self, readers: list[str]) -> None:
        if readers:
            self._pending.update(readers)
            self._pump_due.set()

    async def _pump(self) -> None:
        """The one task that hands frames to streams, in the order the entries came:
        koos passed on as their delivery announced them, then live streams read."""
        while not self._stopping:
            await self._pump_due.wait()
            self._pump_due.clear()
            while self._appended or self._pending:
                if self._appended:
                    koo_id, appended = self._appended.popleft()
                    batch = [reader for reader, _, _ in appended]
                    work = self._pass_on(koo_id, appended)
                else:
                    batch = [self._pending.pop()
                             for _ in range(min(PUMP_BATCH, len(self._pending)))]
                    work = self._pull(batch)
                try:
                    await work
                except StorageUnavailable as exc:
                    log.warning("live streams could not be read; their streams end",
                                extra={"error": str(exc), "readers": len(batch)})
                    for reader in batch:
                        for listener in list(self._readers.get(reader, _Reader()).listeners):
                            listener.close("cache")
                except Exception:
                    log.exception("live streams could not be read",
                                  extra={"readers": len(batch)})

    async def _pass_on(self, koo_id: str, appended: list[Appended]) -> None:
        """A koo's delivery appended it to these readers' live streams: each stream that
        has passed the entry before gets it; a stream behind that (an entry it has not
        seen came first, or a message arrived out of order) reads its live stream."""
        bodies = await self.manager.koos([koo_id])
        now = time.time()
        items: Bodies = {}
        behind: list[str] = []
        for reader, before, entry_id in appended:
            state = self._readers.get(reader)
            if state is None or state.relations is None:
                continue  # gone, or opening: open() reads its stream once loaded
            key, before_key = entry_key(entry_id), entry_key(before)
            if any(before_key != listener.after < key for listener in state.listeners):
                behind.append(reader)
                continue
            frame = self.frames.koo(reader, entry_id, bodies.get(koo_id), state.relations,
                                    state.affinity, self._celebrities, now, items)
            for listener in state.listeners:
                if key > listener.after:
                    if frame is not None:
                        listener.offer(frame)
                    listener.after = key
        self._due(behind)

    async def _pull(self, readers: list[str]) -> None:
        after: dict[str, str] = {}
        for reader in readers:
            state = self._readers.get(reader)
            if state is not None and state.listeners:
                ms, seq = min(listener.after for listener in state.listeners)
                after[reader] = f"{ms}-{seq}"
        found = await self.cache.live_entries(after, count=LIVE_MAXLEN)
        koo_ids = sorted({f["k"] for rows in found.values() for _, f in rows
                          if f.get("t") == "koo" and f.get("k")})
        bodies = await self.manager.koos(koo_ids) if koo_ids else {}
        now = time.time()
        items: Bodies = {}
        for reader, rows in found.items():
            state = self._readers.get(reader)
            if state is not None and state.relations is not None:
                await self._dispatch(reader, state, rows, bodies, now, items)
            if len(rows) >= LIVE_MAXLEN:
                self._due([reader])  # more than one read's worth: go on next round

    async def _dispatch(self, reader: str, state: _Reader, rows: list[LiveEntry],
                        bodies: dict[str, Koo], now: float,
                        items: Bodies) -> None:
        for entry_id, fields in rows:
            kind = fields.get("t")
            frame: bytes | None = None
            if kind == "rel":
                await self._load(reader, state)
            elif kind == "koo" and state.relations is not None:
                frame = self.frames.koo(reader, entry_id, bodies.get(fields.get("k", "")),
                                        state.relations, state.affinity, self._celebrities,
                                        now, items)
            elif kind == "remove" and fields.get("k"):
                frame = self.frames.remove(reader, entry_id, fields["k"], now)
            key = entry_key(entry_id)
            for listener in list(state.listeners):
                if key > listener.after:
                    if frame is not None:
                        listener.offer(frame)
                    listener.after = key

    # --- the pub/sub connection and the keeper --------------------------------------------

    def _subscriber(self) -> Any:
        redis = self.cache.redis
        if isinstance(redis, RedisCluster):
            # Plain PUBLISH reaches every node of a Cluster: any one node will do.
            node = redis.get_default_node()
            return Redis(host=node.host, port=node.port, decode_responses=True,
                         socket_connect_timeout=self.settings.redis_timeout)
        return redis

    async def _listen(self) -> None:
        while not self._stopping:
            client = self._subscriber()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.LIVE_WAKE_CHANNEL)
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=PING_SECONDS)
                    if message is None:
                        await pubsub.ping()
                    elif message.get("type") == "message":
                        self._woken(str(message["data"]))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                if self._stopping:
                    return
                log.warning("the live streams' channel failed; open streams end",
                            extra={"error": str(exc), "streams": self.open_streams})
                self._end_all("cache")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                if client is not self.cache.redis:
                    with contextlib.suppress(Exception):
                        await client.aclose()
            await asyncio.sleep(RESUBSCRIBE_SECONDS)

    async def _nudge(self) -> None:
        """Wake the streams that have written nothing for nearly ``keepalive`` seconds,
        so each sends a keep-alive in time: one pass over the open streams four times
        per interval, instead of a timer per stream."""
        while not self._stopping:
            every = self.keepalive / 4
            await asyncio.sleep(every)
            quiet_since = time.monotonic() - (self.keepalive - every)
            for state in self._readers.values():
                for listener in state.listeners:
                    listener.nudge(quiet_since)

    async def _keep(self) -> None:
        """Extend the live streams of the readers streaming here, and refresh the list of
        pulled authors, every ``KEEP_SECONDS``."""
        while not self._stopping:
            await asyncio.sleep(KEEP_SECONDS)
            try:
                self._celebrities = await self.manager.celebrities()
                readers = list(self._readers)
                for i in range(0, len(readers), PUMP_BATCH):
                    part = readers[i:i + PUMP_BATCH]
                    await self.cache.keep_live(part, {r: self._readers[r].fans_of
                                                      for r in part if r in self._readers})
            except StorageUnavailable as exc:
                log.warning("live streams could not be extended", extra={"error": str(exc)})
