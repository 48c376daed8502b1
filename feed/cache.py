"""The Redis hot cache: timelines of active readers, koo bodies, relation sets.

Everything here can be rebuilt from DynamoDB. A cached timeline is a sorted
set (member koo_id, score created ms) holding a sentinel member at +inf:
``!ready`` once complete, ``!building`` while a rebuild runs. Fan-out pushes
only into timelines that exist (active readers), with a Lua script so the
existence check and the write are one atomic step, and trims each set to
``FEED_TIMELINE_CACHE_ITEMS`` entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.settings import Settings
from feed import keys, metrics
from feed.errors import StorageUnavailable
from feed.models import Koo

__all__ = ["Cache", "ReaderSnapshot", "RedisClient", "RelationSets", "TimelineWindow"]

log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster

KOO_TTL_SECONDS = 6 * 3600
RELATIONS_TTL_SECONDS = 3600
PROFILE_TTL_SECONDS = 300
POPULAR_KEEP = 1000  # popular creators kept per language
LOCK_TTL_MS = 30_000
CLUSTER_CONCURRENCY = 64  # script calls in flight on a Redis Cluster
KOO_FIELDS = ("b", "likes", "rekoos", "comments", "d")  # a cached koo's hash fields
TRENDING_AT = "!at:"  # trending sentinel member: when the list was computed (ms)
PUSH_BATCH = 500  # timelines per push script call on a standalone Redis (~1-2 ms of Redis time)
OUTAGE_BACKOFF_SECONDS = 1.0  # the cache is skipped this long after a connection failure

# Push one koo into a reader's timeline if the reader is active (the set exists).
# KEYS[1] timeline; ARGV: score, member, keep (entries + sentinel)
_PUSH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], '!all')
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
end
return 1
"""

# The same for many readers' timelines in one call (standalone Redis: a Redis Cluster
# refuses keys of several slots in one script). KEYS timelines; ARGV as _PUSH.
_PUSH_MANY = """
local keep = tonumber(ARGV[3])
local pushed = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', key, ARGV[1], ARGV[2])
    if redis.call('ZCARD', key) > keep then
      redis.call('ZREM', key, '!all')
      redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
    end
    pushed = pushed + 1
  end
end
return pushed
"""

# HMGET the same fields of many hashes, one reply (standalone Redis). KEYS; ARGV fields.
_HMGET_MANY = """
local rows = {}
for i = 1, #KEYS do rows[i] = redis.call('HMGET', KEYS[i], unpack(ARGV)) end
return rows
"""

# Merge many entries into an existing timeline. KEYS[1]; ARGV: keep, score1, member1, ...
# A set that outgrows ``keep`` loses its oldest entries, so it no longer holds the whole
# history ('!all'; dropped first, so it does not count against ``keep``).
_MERGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[1]) then
  redis.call('ZREM', KEYS[1], '!all')
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 1))
end
return 1
"""

# Add members to a set only if it has been loaded. KEYS[1]; ARGV members
_SADD_IF_LOADED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('SADD', KEYS[1], unpack(ARGV))
"""

# HINCRBY a field of an existing hash. KEYS[1]; ARGV field, delta
_HINCR_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
"""

# HINCRBYFLOAT a field of an existing hash. KEYS[1]; ARGV field, delta
_HINCRFLOAT_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[2])
"""

# Release a lock only if we still hold it. KEYS[1]; ARGV token
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Generic cell rate algorithm, one bucket per key (the API's per-token rate limit and its
# per-address failed-authentication limit). KEYS[1]; ARGV interval between requests in
# ms, burst, now ms. Returns 0 when allowed, else the milliseconds to wait.
_TAKE_TOKEN = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - burst * interval
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""

_SCRIPTS = {
    "take_token": _TAKE_TOKEN,
    "push": _PUSH,
    "push_many": _PUSH_MANY,
    "hmget_many": _HMGET_MANY,
    "merge": _MERGE,
    "sadd_if_loaded": _SADD_IF_LOADED,
    "hincr_if_exists": _HINCR_IF_EXISTS,
    "hincrfloat_if_exists": _HINCRFLOAT_IF_EXISTS,
    "unlock": _UNLOCK,
}


@dataclass(frozen=True, slots=True)
class TimelineWindow:
    """Entries read from a cached timeline: (koo_id, created ms), newest first."""

    ready: bool
    entries: list[tuple[str, int]]
    exhausted: bool  # the cached set holds nothing older than the last entry
    complete: bool = False  # the cached set holds the reader's whole stored timeline


@dataclass(frozen=True, slots=True)
class RelationSets:
    """The reader's relations that decide what their feed may show."""

    following: frozenset[str]
    blocking: frozenset[str]
    muting: frozenset[str]
    blocked_by: frozenset[str]

    def hidden(self) -> frozenset[str]:
        """Authors whose koos never appear for this reader."""
        return self.blocking | self.muting | self.blocked_by


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Read(Generic[T]):
    """One lookup as commands for a pipeline and a parser of their replies, so that
    several lookups can share one round trip (:meth:`Cache.snapshot`)."""

    queue: Callable[[Any], None]
    size: int
    parse: Callable[[list[Any]], T]


@dataclass(frozen=True, slots=True)
class ReaderSnapshot:
    """What a feed page needs from the cache about its reader, read in one round trip;
    None where the cache does not hold it."""

    profile: dict[str, Any] | None
    relations: RelationSets | None
    affinity: dict[str, float] | None
    celebrities: frozenset[str] | None
    window: TimelineWindow
    recommended: list[dict[str, Any]] | None


class Cache:
    """The hot cache, over a standalone Redis or a Redis Cluster."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keep = settings.timeline_cache_items + 1  # entries plus the sentinel
        self.active_ttl = settings.active_days * 86_400
        self._sha: dict[str, str] = {}
        self._skip_until = 0.0  # monotonic time until which the cache is not tried

    def _atomic(self) -> Any:
        """A pipeline that is a MULTI/EXEC transaction on a standalone Redis. A Redis Cluster
        has no cross-command transactions in redis-py; every pipeline here touches one
        user's keys and stays correct without one (a reader between two commands sees a
        missing or incomplete set and falls back to storage)."""
        return self.redis.pipeline(transaction=not isinstance(self.redis, RedisCluster))

    # --- scripts ----------------------------------------------------------------------

    async def load_scripts(self) -> None:
        """Load the Lua scripts (again after a Redis restart or SCRIPT FLUSH)."""
        for name, body in _SCRIPTS.items():
            self._sha[name] = await self.redis.script_load(body)

    async def _run_many(self, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
                        ) -> list[Any]:
        """Run one script for many (keys, args): one pipeline on a standalone Redis; on a
        Redis Cluster (where redis-py pipelines no scripts) concurrent calls, each routed
        to its key's node. Scripts are reloaded after a NOSCRIPT (a restarted Redis)."""
        if not calls:
            return []
        for attempt in range(2):
            if name not in self._sha:
                await self.load_scripts()
            sha = self._sha[name]
            try:
                if isinstance(self.redis, RedisCluster):
                    return await self._run_concurrently(sha, calls)
                pipe = self.redis.pipeline(transaction=False)
                for script_keys, args in calls:
                    pipe.evalsha(sha, len(script_keys), *script_keys, *args)
                return list(await pipe.execute(raise_on_error=True))
            except NoScriptError:
                if attempt:
                    raise
                self._sha.clear()
            except RedisError as exc:
                if "NOSCRIPT" in str(exc) and not attempt:
                    self._sha.clear()
                    continue
                raise self._failed(exc) from exc
        raise AssertionError("unreachable")

    async def _run_concurrently(
        self, sha: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        semaphore = asyncio.Semaphore(CLUSTER_CONCURRENCY)

        async def one(script_keys: Sequence[str], args: Sequence[Any]) -> Any:
            async with semaphore:
                reply: Any = self.redis.evalsha(sha, len(script_keys), *script_keys, *args)
                return await reply

        return list(await asyncio.gather(*(one(k, a) for k, a in calls)))

    async def _fetch(self, *reads: _Read[Any]) -> list[Any]:
        """Run lookups in one pipeline (one round trip; per node on a Redis Cluster)."""
        pipe = self.redis.pipeline(transaction=False)
        for read in reads:
            read.queue(pipe)
        rows = await self._guard(pipe.execute())
        found: list[Any] = []
        at = 0
        for read in reads:
            found.append(read.parse(rows[at:at + read.size]))
            at += read.size
        return found

    async def _one(self, read: _Read[T]) -> T:
        (found,) = await self._fetch(read)
        return cast(T, found)

    async def snapshot(
        self, reader: str, *, window: int, before: tuple[int, str] | None = None
    ) -> ReaderSnapshot:
        """The reader's profile, relation sets, affinity, the celebrities, the first
        timeline window and the stored recommended koos, in one round trip."""
        found = await self._fetch(
            self._profile_read(reader), self._relations_read(reader),
            self._affinity_read(reader), self._celebrities_read(),
            self._window_read(reader, limit=window, before=before),
            self._recommendations_read(reader, "koos"),
        )
        return ReaderSnapshot(*found)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    # --- timelines --------------------------------------------------------------------

    async def push(self, readers: Iterable[str], koo_id: str, created: int) -> int:
        """Add one koo to every active reader's cached timeline; returns how many.

        On a standalone Redis one script call covers up to PUSH_BATCH readers (a fan-out
        chunk costs a few calls instead of one per follower); a Redis Cluster gets one
        call per reader, each routed to its slot's node.
        """
        timelines = [keys.timeline(r) for r in readers]
        args = (created, koo_id, self.keep)
        calls: list[tuple[Sequence[str], Sequence[Any]]]
        if isinstance(self.redis, RedisCluster):
            calls = [((key,), args) for key in timelines]
            results = await self._guard(self._run_many("push", calls))
        else:
            calls = [(timelines[i:i + PUSH_BATCH], args)
                     for i in range(0, len(timelines), PUSH_BATCH)]
            results = await self._guard(self._run_many("push_many", calls))
        return sum(int(r) for r in results)

    async def merge(self, reader: str, entries: Sequence[tuple[str, int]]) -> bool:
        """Add many koos to one reader's cached timeline, if it is cached."""
        if not entries:
            return False
        args: list[Any] = [self.keep]
        for koo_id, created in entries:
            args += [created, koo_id]
        (result,) = await self._guard(self._run_many("merge", [((keys.timeline(reader),), args)]))
        return bool(result)

    async def window(
        self, reader: str, *, limit: int, before: tuple[int, str] | None = None
    ) -> TimelineWindow:
        """Up to ``limit`` cached entries older than ``before`` (created, koo_id), newest first."""
        return await self._one(self._window_read(reader, limit=limit, before=before))

    def _window_read(
        self, reader: str, *, limit: int, before: tuple[int, str] | None
    ) -> _Read[TimelineWindow]:
        key = keys.timeline(reader)

        def queue(pipe: Any) -> None:
            pipe.zmscore(key, [keys.TIMELINE_READY, keys.COMPLETE])
            if before is None:
                pipe.zrevrangebyscore(key, "(inf", "-inf", start=0, num=limit + 1,
                                      withscores=True)
            else:
                # Ties on the score are ordered by member; fetch a little more, cut below.
                pipe.zrevrangebyscore(key, before[0], "-inf", start=0, num=limit + 64,
                                      withscores=True)
            pipe.expire(key, self.active_ttl)

        def parse(replies: list[Any]) -> TimelineWindow:
            (ready_score, complete), rows, _ = replies
            if ready_score is None:
                metrics.CACHE_LOOKUPS.labels("timeline", "miss").inc()
                return TimelineWindow(False, [], False)
            metrics.CACHE_LOOKUPS.labels("timeline", "hit").inc()
            entries: list[tuple[str, int]] = []
            for member, score in rows:
                created = int(score)
                if member.startswith("!"):
                    continue
                if before is not None and (created, member) >= before:
                    continue
                entries.append((member, created))
            exhausted = len(entries) <= limit
            if before is not None and len(rows) >= limit + 64:
                exhausted = False
            return TimelineWindow(True, entries[:limit], exhausted, complete is not None)

        return _Read(queue, 3, parse)

    async def is_cached(self, reader: str) -> bool:
        return await self._guard(self.redis.zscore(keys.timeline(reader), keys.TIMELINE_READY)) \
            is not None

    async def acquire_rebuild(self, reader: str) -> str | None:
        """Take the single-flight lock for rebuilding a reader's timeline; a token or None."""
        token = secrets.token_hex(8)
        got = await self._guard(
            self.redis.set(keys.timeline_lock(reader), token, nx=True, px=LOCK_TTL_MS)
        )
        if not got:
            return None
        key = keys.timeline(reader)
        if await self._guard(self.redis.zscore(key, keys.TIMELINE_READY)) is not None:
            # Rebuilt by whoever held the lock just before: a reader who saw the miss
            # earlier must not rebuild it a second time.
            await self.release_rebuild(reader, token)
            return None
        # From now on fan-out pushes into this set too, so nothing delivered during the
        # rebuild's read of DynamoDB is missed.
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {keys.TIMELINE_BUILDING: math.inf})
        pipe.expire(key, self.active_ttl)
        await self._guard(pipe.execute())
        return token

    async def complete_rebuild(
        self, reader: str, token: str, entries: Sequence[tuple[str, int]], *,
        complete: bool = False,
    ) -> None:
        """Store the rebuilt entries and mark the timeline ready; release the lock.

        ``complete``: the entries are the reader's whole stored timeline, so reads need
        not look in DynamoDB below the cached set (until a trim drops the mark).
        """
        key = keys.timeline(reader)
        mapping: dict[str, float] = dict(entries)
        mapping[keys.TIMELINE_READY] = math.inf
        if complete:
            mapping[keys.COMPLETE] = math.inf
        pipe = self._atomic()
        pipe.zadd(key, mapping)
        pipe.zrem(key, keys.TIMELINE_BUILDING)
        pipe.zremrangebyrank(key, 0, -(self.keep + 1))
        pipe.expire(key, self.active_ttl)
        *_, trimmed, _ = await self._guard(pipe.execute())
        if complete and trimmed:
            # Pushes during the rebuild overflowed the set: it lost its oldest entries.
            await self._guard(self.redis.zrem(key, keys.COMPLETE))
        await self.release_rebuild(reader, token)

    async def release_rebuild(self, reader: str, token: str) -> None:
        with contextlib.suppress(StorageUnavailable):
            await self._guard(self._run_many("unlock", [((keys.timeline_lock(reader),), (token,))]))

    async def drop_timeline(self, reader: str) -> None:
        await self._guard(self.redis.delete(keys.timeline(reader)))

    # --- koo bodies -------------------------------------------------------------------

    async def put_koos(self, koos: Iterable[Koo]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for koo in koos:
            key = keys.koo(koo.koo_id)
            body = orjson.dumps(_body(koo))
            pipe.hset(key, mapping={
                "b": body, "likes": koo.likes, "rekoos": koo.rekoos, "comments": koo.comments,
                "d": int(koo.deleted),
            })
            pipe.expire(key, KOO_TTL_SECONDS)
            count += 1
        if count:
            await self._guard(pipe.execute())

    async def get_koos(self, koo_ids: Sequence[str]) -> dict[str, Koo]:
        """Cached koos by id (deleted ones included, marked); misses are left out."""
        if not koo_ids:
            return {}
        if isinstance(self.redis, RedisCluster):
            pipe = self.redis.pipeline(transaction=False)
            for koo_id in koo_ids:
                pipe.hmget(keys.koo(koo_id), KOO_FIELDS)
            rows = await self._guard(pipe.execute())
        else:
            # One script, one reply for every body: far less client work than a reply each.
            (rows,) = await self._guard(self._run_many(
                "hmget_many", [([keys.koo(k) for k in koo_ids], KOO_FIELDS)]
            ))
        found: dict[str, Koo] = {}
        for koo_id, (body, likes, rekoos, comments, deleted) in zip(koo_ids, rows, strict=True):
            if deleted == "1":
                found[koo_id] = Koo(koo_id, "", "", "", 0, deleted=True)
                continue
            if body is None:
                continue
            data = orjson.loads(body)
            data.update(koo_id=koo_id, likes=int(likes or 0), rekoos=int(rekoos or 0),
                        comments=int(comments or 0))
            found[koo_id] = Koo.from_item(data)
        hits = len(found)
        metrics.CACHE_LOOKUPS.labels("koo", "hit").inc(hits)
        metrics.CACHE_LOOKUPS.labels("koo", "miss").inc(len(koo_ids) - hits)
        return found

    async def bump_counter(self, koo_id: str, field: str, delta: int) -> None:
        await self._guard(
            self._run_many("hincr_if_exists", [((keys.koo(koo_id),), (field, delta))])
        )

    async def mark_deleted(self, koo_id: str) -> None:
        key = keys.koo(koo_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, "d", "1")
        pipe.expire(key, KOO_TTL_SECONDS)
        await self._guard(pipe.execute())

    # --- profiles ---------------------------------------------------------------------

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        return await self._one(self._profile_read(user_id))

    def _profile_read(self, user_id: str) -> _Read[dict[str, Any] | None]:
        def parse(replies: list[Any]) -> dict[str, Any] | None:
            (raw,) = replies
            if raw is None:
                metrics.CACHE_LOOKUPS.labels("profile", "miss").inc()
                return None
            metrics.CACHE_LOOKUPS.labels("profile", "hit").inc()
            found: dict[str, Any] = orjson.loads(raw)
            return found

        return _Read(lambda pipe: pipe.get(keys.profile(user_id)), 1, parse)

    async def store_profile(self, user_id: str, profile: Mapping[str, Any]) -> None:
        await self._guard(
            self.redis.set(keys.profile(user_id), orjson.dumps(profile), ex=PROFILE_TTL_SECONDS)
        )

    async def drop_profiles(self, *user_ids: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.delete(keys.profile(user_id))
        await self._guard(pipe.execute())

    async def popular_authors(self, lang: str, limit: int) -> list[tuple[str, int]]:
        rows = await self._guard(
            self.redis.zrevrange(keys.popular_authors(lang), 0, limit - 1, withscores=True)
        )
        return [(m, int(s)) for m, s in rows]

    async def set_popularity(self, lang: str, user_id: str, followers: int) -> None:
        key = keys.popular_authors(lang)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {user_id: followers})
        pipe.zremrangebyrank(key, 0, -(POPULAR_KEEP + 1))
        await self._guard(pipe.execute())

    # --- relations --------------------------------------------------------------------

    _RELATION_KEYS = (
        ("following", keys.following),
        ("blocking", keys.blocking),
        ("muting", keys.muting),
        ("blocked_by", keys.blocked_by),
    )

    async def relation_sets(self, reader: str) -> RelationSets | None:
        """The reader's cached relation sets, or None if any is not loaded."""
        return await self._one(self._relations_read(reader))

    def _relations_read(self, reader: str) -> _Read[RelationSets | None]:
        def queue(pipe: Any) -> None:
            for _, key_of in self._RELATION_KEYS:
                pipe.smembers(key_of(reader))

        def parse(rows: list[Any]) -> RelationSets | None:
            if not all(keys.LOADED in row for row in rows):
                metrics.CACHE_LOOKUPS.labels("relations", "miss").inc()
                return None
            metrics.CACHE_LOOKUPS.labels("relations", "hit").inc()
            sets = [frozenset(m for m in row if m != keys.LOADED) for row in rows]
            return RelationSets(*sets)

        return _Read(queue, len(self._RELATION_KEYS), parse)

    async def store_relation_sets(self, reader: str, sets: RelationSets) -> None:
        pipe = self._atomic()
        for name, key_of in self._RELATION_KEYS:
            key = key_of(reader)
            pipe.delete(key)
            pipe.sadd(key, keys.LOADED, *getattr(sets, name))
            pipe.expire(key, RELATIONS_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def relation_changed(self, key: str, member: str, on: bool) -> None:
        """Keep a loaded relation set in step with a relation event."""
        if on:
            await self._guard(self._run_many("sadd_if_loaded", [((key,), (member,))]))
        else:
            await self._guard(self.redis.srem(key, member))

    # --- celebrities ------------------------------------------------------------------

    async def celebrities(self) -> frozenset[str] | None:
        return await self._one(self._celebrities_read())

    def _celebrities_read(self) -> _Read[frozenset[str] | None]:
        def parse(replies: list[Any]) -> frozenset[str] | None:
            (members,) = replies
            if keys.LOADED not in members:
                return None
            return frozenset(m for m in members if m != keys.LOADED)

        return _Read(lambda pipe: pipe.smembers(keys.celebrities()), 1, parse)

    async def store_celebrities(self, authors: Iterable[str]) -> None:
        pipe = self._atomic()
        pipe.delete(keys.celebrities())
        pipe.sadd(keys.celebrities(), keys.LOADED, *authors)
        pipe.expire(keys.celebrities(), RELATIONS_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def celebrity_changed(self, author: str, on: bool) -> None:
        await self.relation_changed(keys.celebrities(), author, on)

    async def author_recent(
        self, authors: Sequence[str], *, before: tuple[int, str] | None, limit: int
    ) -> dict[str, tuple[list[tuple[str, int]], bool] | None]:
        """Cached recent koos of each author older than ``before``, and whether the cached
        set is the author's whole history; None for an author not cached."""
        pipe = self.redis.pipeline(transaction=False)
        top = "(inf" if before is None else before[0]
        for author in authors:
            key = keys.author_recent(author)
            pipe.zmscore(key, [keys.TIMELINE_READY, keys.COMPLETE])
            pipe.zrevrangebyscore(key, top, "-inf", start=0, num=limit + 8, withscores=True)
        rows = await self._guard(pipe.execute())
        found: dict[str, tuple[list[tuple[str, int]], bool] | None] = {}
        for i, author in enumerate(authors):
            (ready, complete), entries = rows[2 * i], rows[2 * i + 1]
            if ready is None:
                found[author] = None
                continue
            found[author] = (
                [
                    (m, int(s)) for m, s in entries
                    if not m.startswith("!") and (before is None or (int(s), m) < before)
                ][:limit],
                complete is not None,
            )
        return found

    async def store_author_recent(
        self, author: str, entries: Sequence[tuple[str, int]], *, complete: bool
    ) -> None:
        key = keys.author_recent(author)
        mapping: dict[str, float] = dict(entries)
        mapping[keys.TIMELINE_READY] = math.inf
        if complete:
            mapping[keys.COMPLETE] = math.inf
        pipe = self._atomic()
        pipe.delete(key)
        pipe.zadd(key, mapping)
        pipe.expire(key, self.active_ttl)
        await self._guard(pipe.execute())

    async def author_recent_add(self, author: str, koo_id: str, created: int) -> None:
        keep = self.settings.celebrity_recent_items + 1
        await self._guard(
            self._run_many("push", [((keys.author_recent(author),), (created, koo_id, keep))])
        )

    async def author_recent_remove(self, author: str, koo_id: str) -> None:
        await self._guard(self.redis.zrem(keys.author_recent(author), koo_id))

    # --- affinity ---------------------------------------------------------------------

    async def affinity(self, reader: str) -> dict[str, float] | None:
        return await self._one(self._affinity_read(reader))

    def _affinity_read(self, reader: str) -> _Read[dict[str, float] | None]:
        def parse(replies: list[Any]) -> dict[str, float] | None:
            (raw,) = replies
            if keys.LOADED not in raw:
                return None
            return {k: float(v) for k, v in raw.items() if k != keys.LOADED}

        return _Read(lambda pipe: pipe.hgetall(keys.affinity(reader)), 1, parse)

    async def store_affinity(self, reader: str, weights: Mapping[str, float]) -> None:
        key = keys.affinity(reader)
        pipe = self._atomic()
        pipe.delete(key)
        pipe.hset(key, mapping={keys.LOADED: 1, **weights})
        pipe.expire(key, RELATIONS_TTL_SECONDS)
        await self._guard(pipe.execute())

    async def affinity_changed(self, reader: str, author: str, delta: float) -> None:
        # Weights are stored as floats, so the increment must be a float one.
        await self._guard(
            self._run_many("hincrfloat_if_exists", [((keys.affinity(reader),), (author, delta))])
        )

    # --- trending ---------------------------------------------------------------------

    async def trending(self, lang: str, limit: int
                       ) -> tuple[list[tuple[str, float]], int] | None:
        """The best ``limit`` cached trending koos of a language and when (ms) the list was
        computed; None if none is cached."""
        key = keys.trending(lang)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(key, 0, limit, withscores=True)
        pipe.zrange(key, 0, 0)  # the lowest member: the "!at:<ms>" sentinel
        rows, lowest = await self._guard(pipe.execute())
        if not rows:
            return None
        computed = 0  # a list without the sentinel counts as old
        if lowest and lowest[0].startswith(TRENDING_AT):
            computed = int(lowest[0][len(TRENDING_AT):])
        return [(m, float(s)) for m, s in rows if not m.startswith("!")][:limit], computed

    async def store_trending(
        self, lang: str, scored: Sequence[tuple[str, float]], *, ttl: int, computed_ms: int,
    ) -> None:
        key = keys.trending(lang)
        pipe = self._atomic()
        pipe.delete(key)
        mapping: dict[str, float] = dict(scored)
        mapping[f"{TRENDING_AT}{computed_ms}"] = -1.0  # below every score: scores are >= 0
        pipe.zadd(key, mapping)
        pipe.expire(key, ttl)
        await self._guard(pipe.execute())

    async def try_lock(self, key: str, seconds: float) -> bool:
        """A short lock (SET NX PX) that expires by itself; True if taken."""
        return bool(await self._guard(
            self.redis.set(key, "1", nx=True, px=max(1, int(seconds * 1000)))
        ))

    async def trending_remove(self, lang: str, koo_id: str) -> None:
        await self._guard(self.redis.zrem(keys.trending(lang), koo_id))

    # --- recommendations ----------------------------------------------------------------

    async def recommendations(self, user_id: str, kind: str) -> list[dict[str, Any]] | None:
        """A reader's stored recommendations of one kind, if cached ([] is a cached "none")."""
        return await self._one(self._recommendations_read(user_id, kind))

    def _recommendations_read(self, user_id: str, kind: str
                              ) -> _Read[list[dict[str, Any]] | None]:
        def parse(replies: list[Any]) -> list[dict[str, Any]] | None:
            (raw,) = replies
            if raw is None:
                return None
            found: list[dict[str, Any]] = orjson.loads(raw)
            return found

        return _Read(lambda pipe: pipe.get(keys.recommendations(user_id, kind)), 1, parse)

    async def store_recommendations(
        self, user_id: str, kind: str, items: Sequence[Mapping[str, Any]], *, ttl: int
    ) -> None:
        await self._guard(self.redis.set(
            keys.recommendations(user_id, kind), orjson.dumps(list(items)), ex=max(1, ttl)
        ))

    async def drop_recommendations(self, user_id: str, kind: str) -> None:
        await self._guard(self.redis.delete(keys.recommendations(user_id, kind)))

    # --- rate limiting ----------------------------------------------------------------

    async def take_token(self, key: str, *, interval_ms: float, burst: float,
                         now_ms: float) -> float:
        """Seconds to wait before the next request on this bucket (0: go ahead): one
        request per ``interval_ms``, ``burst`` at once."""
        (wait_ms,) = await self._guard(
            self._run_many("take_token", [((key,), (interval_ms, burst, int(now_ms)))])
        )
        return int(wait_ms) / 1000

    # --- plumbing ---------------------------------------------------------------------

    async def _guard(self, awaitable: Any) -> Any:
        """Await a Redis call, mapping failures to StorageUnavailable.

        After a connection failure the cache is skipped for ``OUTAGE_BACKOFF_SECONDS``
        (callers fall back to DynamoDB at once) instead of every request queueing up
        behind its own reconnect attempt.
        """
        if self._skip_until > time.monotonic():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise StorageUnavailable("redis: not answering a moment ago; cache skipped",
                                     "CacheSkipped")
        try:
            return await awaitable
        except StorageUnavailable:
            raise
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: Exception) -> StorageUnavailable:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
            self._skip_until = time.monotonic() + OUTAGE_BACKOFF_SECONDS
        return StorageUnavailable(f"redis: {exc}", type(exc).__name__)


def _body(koo: Koo) -> dict[str, Any]:
    return {
        "author_id": koo.author_id, "text": koo.text, "lang": koo.lang,
        "created_at": koo.created_at, "hashtags": list(koo.hashtags),
        "reply_to": koo.reply_to, "rekoo_of": koo.rekoo_of,
    }
