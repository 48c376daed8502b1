"""Cached koo bodies: one hash per koo with its body, counters and deleted mark."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster

from feed import keys, metrics
from feed.cache._base import CacheBase
from feed.models import Koo

KOO_TTL_SECONDS = 6 * 3600
KOO_FIELDS = ("b", "likes", "rekoos", "comments", "d")  # a cached koo's hash fields


class KooCache(CacheBase):
    """Koo bodies and their counters."""

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


def _body(koo: Koo) -> dict[str, Any]:
    return {
        "author_id": koo.author_id, "text": koo.text, "lang": koo.lang,
        "created_at": koo.created_at, "hashtags": list(koo.hashtags),
        "reply_to": koo.reply_to, "rekoo_of": koo.rekoo_of,
    }
