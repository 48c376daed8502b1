"""Recipients' notifications in the hot cache, for active recipients.

Two keys per recipient, hash-tagged ``{user_id}`` (one Redis Cluster slot): a sorted
set whose members are the live groups' updated sort keys (all scores 0, so members sort
newest first by lex order), and a hash of group -> notification (JSON, with its
revision), the seen mark (``!seen``) and the lowest sort key the set covers (``!lo``;
empty: every live group). The set holds the ``!`` member once it is loaded: without it
the recipient is not cached. Writes carry the group's revision and never replace a newer
one, so a load racing a settle, or two settles, leave the newest state; a group that left
keeps a small tombstone with its revision for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from feed import keys, metrics, notify_keys
from feed.cache._base import CacheBase

__all__ = ["CachedPage", "NotificationCache"]

LOADED = "!"
BUILDING = "!b"

# Apply one group's new state unless the cache holds a newer revision.
_PUT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local o = cjson.decode(old)
  if tonumber(o.rev) >= tonumber(ARGV[4]) then return 0 end
  if o.sk then redis.call('ZREM', KEYS[1], o.sk) end
end
local low = redis.call('HGET', KEYS[2], '!lo') or ''
if ARGV[3] ~= '' and (low == '' or ARGV[3] >= low) then
  redis.call('ZADD', KEYS[1], 0, ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({rev = tonumber(ARGV[4])}))
end
return 1
"""

# One page: members below ARGV[1] down to ARGV[2] (at most ARGV[3]), their bodies, the
# seen mark, the covered floor and the unseen count from ARGV[4] (a fallback when no mark).
_PAGE = """
if not redis.call('ZSCORE', KEYS[1], '!') then return false end
local low = redis.call('HGET', KEYS[2], '!lo')
if not low then return false end  -- the hash was evicted: not cached
local seen = tonumber(redis.call('HGET', KEYS[2], '!seen') or '0')
local from = math.max(seen + 1, tonumber(ARGV[4]))
local unseen = redis.call('ZLEXCOUNT', KEYS[1], '[' .. string.format('%013d', from), '+')
local bottom = ARGV[2]
if low ~= '' and '[' .. low > bottom then bottom = '[' .. low end
local members = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], bottom, 'LIMIT', 0, ARGV[3])
local out = {tostring(seen), low, unseen}
for _, m in ipairs(members) do
  local body = redis.call('HGET', KEYS[2], string.sub(m, 15))
  if not body then return false end  -- evicted in part: read it again
  table.insert(out, body)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return out
"""

_SEEN = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[2], '!seen') or '0')
if tonumber(ARGV[1]) > seen then redis.call('HSET', KEYS[2], '!seen', ARGV[1]) end
return 1
"""

# Release a lock only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class CachedPage:
    """What the cache holds for one page: bodies newest first, the seen mark, the lowest
    sort key covered ("" = everything) and the unseen count it can vouch for."""

    bodies: list[dict[str, Any]]
    seen: int
    low: str
    unseen: int
    members: int  # how many notifications the slice had, bodies missing or not


def _encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


class NotificationCache(CacheBase):
    """Cached notifications of active recipients."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        redis: Any = self.redis  # standalone or cluster: both register scripts
        self._put = redis.register_script(_PUT)
        self._page = redis.register_script(_PAGE)
        self._seen = redis.register_script(_SEEN)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, user_id: str) -> list[str]:
        return [keys.notifications(user_id), keys.notification_bodies(user_id)]

    async def page(self, user_id: str, *, before: str | None, floor: int, limit: int
                   ) -> CachedPage | None:
        """Up to ``limit`` cached notifications updated at ``floor`` or later, strictly
        before the sort key ``before``; None if the recipient is not cached."""
        high = f"({before}" if before else "+"
        reply = await self._guard(self._page(
            keys=self._keys(user_id),
            args=[high, f"[{floor:013d}", limit, floor, self.active_ttl * 1000],
        ))
        if reply is None:
            metrics.CACHE_LOOKUPS.labels("notifications", "miss").inc()
            return None
        metrics.CACHE_LOOKUPS.labels("notifications", "hit").inc()
        seen, low, unseen, *raw = reply
        bodies = [orjson.loads(b) for b in raw if b]
        return CachedPage([b for b in bodies if "sk" in b], int(seen), str(low), int(unseen),
                          len(raw))

    async def unseen_bodies(self, user_id: str, since: int) -> list[dict[str, Any]]:
        """Every cached notification updated at ``since`` or later."""
        zset, bodies = self._keys(user_id)
        members = await self._guard(
            self.redis.zrevrangebylex(zset, "+", f"[{since:013d}"))
        groups = [m[14:] for m in members]
        if not groups:
            return []
        raw = await self._guard(self.redis.hmget(bodies, groups))
        return [orjson.loads(b) for b in raw if b]

    async def put_group(self, user_id: str, body: dict[str, Any]) -> None:
        """Write one group's new state (actor_count 0: it left) if the recipient is cached."""
        live = int(body["actor_count"]) > 0
        sk = notify_keys.notify_updated_sk(int(body["updated_at"]), body["group"]) if live else ""
        await self._guard(self._put(
            keys=self._keys(user_id),
            args=[body["group"], _encode({**body, "sk": sk}) if live else b"", sk, body["rev"]],
        ))

    async def begin_load(self, user_id: str) -> None:
        """Start caching a recipient, before reading what to cache: settles from now on
        write into the keys, so none that lands during the read is lost."""
        zset, hashed = self._keys(user_id)
        ttl = self.active_ttl
        pipe = self._atomic()
        pipe.delete(zset, hashed)
        pipe.zadd(zset, {BUILDING: 0})
        pipe.hset(hashed, "!lo", "")
        pipe.expire(zset, ttl)
        pipe.expire(hashed, ttl)
        await self._guard(pipe.execute())

    async def finish_load(self, user_id: str, bodies: Sequence[dict[str, Any]], *, seen: int,
                          low: str) -> None:
        """Cache a recipient's newest notifications, read after :meth:`begin_load` (all of
        them if ``low`` is ""); settles that landed meanwhile keep their newer revisions."""
        zset, hashed = self._keys(user_id)
        for body in bodies:
            await self.put_group(user_id, body)
        await self._guard(self._seen(keys=self._keys(user_id), args=[seen]))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(hashed, "!lo", low)
        pipe.zadd(zset, {LOADED: 0})
        pipe.zrem(zset, BUILDING)
        await self._guard(pipe.execute())

    async def set_seen(self, user_id: str, up_to: int) -> None:
        await self._guard(self._seen(keys=self._keys(user_id), args=[up_to]))

    async def forget(self, user_id: str) -> None:
        """Drop a recipient's cached notifications (erasure; rebuilt on the next read)."""
        await self._guard(self.redis.delete(*self._keys(user_id)))

    # --- settling coordination (an optimisation: counts are exact without it) -----------

    async def note_change(self, user_id: str, group: str, token: str, lock_ms: int
                          ) -> tuple[bool, str | None]:
        """Record a change to a group's actors; returns (whether this caller now holds
        the group's settle lock, the change generation it saw)."""
        gen_key = keys.notify_settle_gen(user_id, group)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(gen_key)
        pipe.pexpire(gen_key, 3_600_000)
        pipe.set(keys.notify_settle_lock(user_id, group), token, nx=True, px=lock_ms)
        gen, _, got = await self._guard(pipe.execute())
        return bool(got), str(gen)

    async def generation(self, user_id: str, group: str) -> str | None:
        found = await self._guard(self.redis.get(keys.notify_settle_gen(user_id, group)))
        return None if found is None else str(found)

    async def keep_lock(self, user_id: str, group: str, token: str, lock_ms: int) -> bool:
        """Extend the lock if still ours, or take it if free."""
        lock = keys.notify_settle_lock(user_id, group)
        current = await self._guard(self.redis.get(lock))
        if current == token:
            return bool(await self._guard(self.redis.pexpire(lock, lock_ms)))
        return bool(await self._guard(self.redis.set(lock, token, nx=True, px=lock_ms)))

    async def release(self, user_id: str, group: str, token: str) -> None:
        await self._guard(self._release(keys=[keys.notify_settle_lock(user_id, group)],
                                        args=[token]))
