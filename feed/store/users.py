"""Users: profiles (signups), follower/following counters and the celebrity mark."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from config.tables import USERS, USERS_CELEBRITIES
from feed import keys
from feed.errors import ConditionFailed
from feed.events import UserSignedUp
from feed.models import User
from feed.store._codec import values
from feed.store._dynamo import Dynamo

__all__ = ["ERASED", "Users"]

ERASED = "erased_at"  # the tombstone mark of an erased user (ms): refuses later events
NOT_ERASED = f"attribute_not_exists({ERASED})"
# What the tombstone keeps besides the id: when, and the erasure's progress (no profile).
TOMBSTONE_FIELDS = ("user_id", ERASED, "erase_step", "erase_pos", "erase_counts",
                    "erase_by", "erase_wait")

class Users:
    """Profiles and counters. ``regions``: clients of the home regions whose users'
    profiles (handle, language, signup time) live in that region's own ``users`` table
    (:mod:`feed.store.regions`); the service's table then keeps only the id, the home
    region, the profile version, the counters and the celebrity mark."""

    def __init__(self, db: Dynamo, regions: Mapping[str, Dynamo] | None = None) -> None:
        self.db = db
        self.regions: Mapping[str, Dynamo] = regions or {}

    def home_of(self, region: str | None) -> Dynamo | None:
        """The regional store of a home region; None when profiles stay in our table."""
        return self.regions.get(region) if region else None

    async def save_profile(self, event: UserSignedUp) -> bool:
        """Write a signup's profile unless a newer one is stored; counters are kept.

        A regional profile is written in its region first, then the home row that points
        at it: a crash between the two leaves a replay with work to do, never a pointer to
        nothing. A profile that moves region is removed from the one it left.
        Returns False when a newer (or the same) signup was already applied.
        """
        key = {"user_id": event.user_id}
        at = event.occurred_at
        target = self.home_of(event.region)
        previous: str | None = None
        if self.regions:
            row = await self.db.get(USERS, key, consistent=True,
                                    attributes=["region", "profile_ver"])
            if row and int(row.get("profile_ver", -1)) >= at:
                return False  # never copy an older profile into a region it has left
            previous = (row or {}).get("region")
        if target is not None:
            await _put_profile(target, event)
            update = ("SET #r = :r, profile_ver = :t, "
                      "followers = if_not_exists(followers, :zero), "
                      "following = if_not_exists(following, :zero) "
                      "REMOVE handle, lang, created_at")
            names = {"#r": "region"}
            vals = values(r=event.region, t=at, zero=0)
        else:
            update = ("SET handle = :h, lang = :l, #r = :r, profile_ver = :t, "
                      "created_at = if_not_exists(created_at, :t), "
                      "followers = if_not_exists(followers, :zero), "
                      "following = if_not_exists(following, :zero)")
            names = {"#r": "region"}
            vals = values(h=event.handle, l=event.lang, r=event.region, t=at, zero=0)
        try:
            await self.db.update(
                USERS, key, update,
                condition=f"{NOT_ERASED} AND "
                "(attribute_not_exists(profile_ver) OR profile_ver < :t)",
                names=names, values=vals,
            )
        except ConditionFailed:
            return False
        left = self.home_of(previous) if previous != event.region else None
        if left is not None:
            with contextlib.suppress(ConditionFailed):
                await left.delete(USERS, key, condition="profile_ver < :t", values=values(t=at))
        return True

    async def load_many(self, users: list[tuple[User, bool]], *, at: int) -> int:
        """Bulk load (seeding, migrations): profiles with their counters, and whether each
        is a celebrity, in the same form signups and follows produce."""
        items = []
        regional: dict[str, list[dict[str, Any]]] = {}
        for user, celebrity in users:
            profile: dict[str, Any] = {
                "user_id": user.user_id, "handle": user.handle, "lang": user.lang,
                "region": user.region, "profile_ver": at, "created_at": user.created_at,
            }
            item: dict[str, Any] = {"followers": user.followers, "following": user.following}
            if self.home_of(user.region) is not None:
                regional.setdefault(user.region, []).append(profile)
                item.update(user_id=user.user_id, region=user.region, profile_ver=at)
            else:
                item.update(profile)
            if celebrity:
                item["celeb_shard"] = keys.CELEBRITY_SHARD
            items.append(item)
        for region, profiles in regional.items():
            await self.regions[region].batch_write(USERS, puts=profiles)
        return await self.db.batch_write(USERS, puts=items)

    async def region_of(self, user_id: str) -> str | None:
        """The home region a user signed up in (None for an unknown id)."""
        item = await self.db.get(USERS, {"user_id": user_id}, attributes=["region"])
        region = (item or {}).get("region")
        return region if isinstance(region, str) else None

    async def get(self, user_id: str, *, consistent: bool = False) -> User | None:
        """The profile of a signed-up user, read from its home region (None for unknown ids)."""
        key = {"user_id": user_id}
        item = await self.db.get(USERS, key, consistent=consistent)
        if item is None or "profile_ver" not in item or ERASED in item:
            return None
        home = self.home_of(item.get("region"))
        if home is not None:
            profile = await home.get(USERS, key, consistent=consistent)
            if profile is None:
                return None
            item = {**profile, "followers": item.get("followers", 0),
                    "following": item.get("following", 0)}
        return User.from_item(item)

    def counter_item(self, user_id: str, field: str, delta: int) -> dict[str, Any]:
        """Transaction item adding ``delta`` to one counter (creating the row if needed)."""
        assert field in {"followers", "following"}
        return {
            "Update": {
                "TableName": USERS,
                "Key": {"user_id": user_id},
                "UpdateExpression": "ADD #c :d",
                "ExpressionAttributeNames": {"#c": field},
                "ExpressionAttributeValues": values(d=delta),
            }
        }

    async def set_celebrity(self, user_id: str, celebrity: bool, *, at: int | None = None
                            ) -> None:
        """Mark or unmark an author whose koos are pulled at read time (``at``: the time of
        the event that made them one, in event time like every relation's version)."""
        if celebrity:
            since = int(time.time() * 1000) if at is None else at
            await self.db.update(USERS, {"user_id": user_id},
                                 "SET celeb_shard = :s, celeb_since = :since",
                                 values=values(s=keys.CELEBRITY_SHARD, since=since))
        else:
            await self.db.update(USERS, {"user_id": user_id}, "REMOVE celeb_shard, celeb_since")

    async def celebrity_since(self, user_id: str) -> int | None:
        """When (ms) the author was last marked a celebrity; None if not marked."""
        item = await self.db.get(USERS, {"user_id": user_id}, consistent=True,
                                 attributes=["celeb_shard", "celeb_since"])
        if not item or not item.get("celeb_shard"):
            return None
        return int(item.get("celeb_since", 0))

    async def reach(self, user_id: str) -> tuple[int, bool]:
        """(followers, marked as a celebrity) in one read."""
        item = await self.db.get(USERS, {"user_id": user_id}, consistent=True,
                                 attributes=["followers", "celeb_shard"])
        if not item:
            return 0, False
        return max(0, int(item.get("followers", 0))), bool(item.get("celeb_shard"))

    async def celebrities(self) -> list[str]:
        """Every author marked as a celebrity."""
        return [
            item["user_id"]
            async for item in self.db.query(
                USERS, "celeb_shard = :s", values=values(s=keys.CELEBRITY_SHARD),
                index=USERS_CELEBRITIES, page_size=1000,
            )
        ]

    async def scan_reach(self, *, page_size: int = 1000
                         ) -> AsyncIterator[tuple[str, int, str | None, str | None]]:
        """(user_id, followers, lang, region) of every signed-up user, from one Scan of the
        home rows; lang is None where the profile lives in its home region."""
        async for page, _ in self.db.scan_pages(
            USERS, limit=page_size,
            attributes=["user_id", "followers", "lang", "region", "profile_ver", ERASED],
        ):
            for item in page:
                if "profile_ver" in item and ERASED not in item:
                    yield (item["user_id"], max(0, int(item.get("followers", 0))),
                           item.get("lang"), item.get("region"))

    async def all_ids(self, *, page_size: int = 500) -> list[str]:
        """Every user id (for batch jobs; pages through a Scan)."""
        ids: list[str] = []
        async for page, _ in self.db.scan_pages(USERS, limit=page_size,
                                                attributes=["user_id", ERASED]):
            ids.extend(i["user_id"] for i in page if ERASED not in i)
        return ids

    # --- erasure: the tombstone, the guard on every event's writes, the profile --------

    def guard(self, items: list[dict[str, Any]], user_ids: Iterable[str]
              ) -> tuple[list[dict[str, Any]], frozenset[int]]:
        """``items`` with a condition that each of ``user_ids`` is not erased (on the item
        that already updates their row, else a ConditionCheck of their row), and the
        indexes of the items that carry it: a transaction naming an erased user cancels."""
        out = list(items)
        guarded: set[int] = set()
        for user_id in dict.fromkeys(user_ids):
            for index, item in enumerate(out):
                ((kind, body),) = item.items()
                if (body.get("TableName") == USERS and "Key" in body
                        and body["Key"].get("user_id") == user_id):
                    condition = body.get("ConditionExpression")
                    body = {**body, "ConditionExpression":
                            f"{NOT_ERASED} AND ({condition})" if condition else NOT_ERASED}
                    out[index] = {kind: body}
                    guarded.add(index)
                    break
            else:
                out.append({"ConditionCheck": {"TableName": USERS, "Key": {"user_id": user_id},
                                               "ConditionExpression": NOT_ERASED}})
                guarded.add(len(out) - 1)
        return out, frozenset(guarded)

    async def any_erased(self, user_ids: Iterable[str]) -> bool:
        """Whether any of these users is erased or being erased (one BatchGetItem)."""
        wanted = [{"user_id": u} for u in dict.fromkeys(user_ids)]
        if not wanted:
            return False
        items = await self.db.batch_get(USERS, wanted, attributes=["user_id", ERASED],
                                        consistent=True)
        return any(ERASED in i for i in items)

    async def mark_erased(self, user_id: str, by: str) -> bool:
        """Start an erasure: the tombstone mark on the user's row (kept forever), which
        refuses every later event naming them. False if one was started before."""
        try:
            await self.db.update(
                USERS, {"user_id": user_id},
                f"SET {ERASED} = :t, erase_step = :s, erase_pos = :p, erase_by = :b",
                condition=NOT_ERASED,
                values=values(t=int(time.time() * 1000), s="start", p="", b=by),
            )
        except ConditionFailed:
            return False
        return True

    async def erasure(self, user_id: str) -> dict[str, Any] | None:
        """The tombstone of an erased (or being erased) user; None if not erased."""
        item = await self.db.get(USERS, {"user_id": user_id}, consistent=True)
        if not item or ERASED not in item:
            return None
        return item

    async def erasure_done(self, user_id: str) -> bool:
        """Whether the user's erasure has finished."""
        stone = await self.erasure(user_id)
        return stone is not None and stone.get("erase_step") == "done"

    async def save_erasure(self, user_id: str, step: str, pos: str,
                           counts: Mapping[str, int], wait: Iterable[str] = ()) -> None:
        """Persist the erasure's progress on its tombstone: the step, the position in it,
        what was removed so far (counts) and the koos whose fan-outs it waits for."""
        waiting = sorted(set(wait))
        update = "SET erase_step = :s, erase_pos = :p, erase_counts = :c"
        vals = values(s=step, p=pos, c=dict(counts))
        if waiting:
            update += ", erase_wait = :w"
            vals[":w"] = {"SS": waiting}
        else:
            update += " REMOVE erase_wait"
        await self.db.update(USERS, {"user_id": user_id}, update,
                             condition=f"attribute_exists({ERASED})", values=vals)

    async def erase_profile(self, user_id: str) -> int:
        """Remove the profile (in its home region too) and every attribute of the user's
        row but the tombstone's; returns the profiles removed."""
        item = await self.db.get(USERS, {"user_id": user_id}, consistent=True)
        if not item or ERASED not in item:
            return 0
        # Every mapped region, not only the current one: a user who moved left nothing
        # behind, but an interrupted move could have.
        removed = 0
        for db in self.regions.values():
            if await db.get(USERS, {"user_id": user_id}, consistent=True) is not None:
                await db.delete(USERS, {"user_id": user_id})
                removed += 1
        if "handle" in item:  # the profile was in our own table
            removed += 1
        stone = {k: v for k, v in item.items() if k in TOMBSTONE_FIELDS}
        await self.db.put(USERS, stone, condition=f"attribute_exists({ERASED})")
        return removed



async def _put_profile(db: Dynamo, event: UserSignedUp) -> None:
    """The profile in its home region's table, unless a newer one is there (a replay
    finds its own version there and goes on to the home row)."""
    profile = {
        "user_id": event.user_id, "handle": event.handle, "lang": event.lang,
        "region": event.region, "profile_ver": event.occurred_at,
        "created_at": event.occurred_at,
    }
    with contextlib.suppress(ConditionFailed):
        await db.put(USERS, profile,
                     condition="attribute_not_exists(profile_ver) OR profile_ver < :t",
                     values=values(t=event.occurred_at))
