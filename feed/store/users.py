"""Users: profiles (signups), follower/following counters and the celebrity mark."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from config.tables import USERS, USERS_CELEBRITIES
from feed import keys
from feed.errors import ConditionFailed
from feed.models import User
from feed.store._codec import values
from feed.store._dynamo import Dynamo

__all__ = ["Users"]

PROFILE_FIELDS = ("user_id", "handle", "lang", "region", "created_at", "followers", "following")


class Users:
    def __init__(self, db: Dynamo) -> None:
        self.db = db

    async def save_profile(self, event: dict[str, Any]) -> bool:
        """Write a signup's profile unless a newer one is stored; counters are kept.

        Returns False when a newer (or the same) signup was already applied.
        """
        try:
            await self.db.update(
                USERS,
                {"user_id": event["user_id"]},
                "SET handle = :h, lang = :l, #r = :r, profile_ver = :t, "
                "created_at = if_not_exists(created_at, :t), "
                "followers = if_not_exists(followers, :zero), "
                "following = if_not_exists(following, :zero)",
                condition="attribute_not_exists(profile_ver) OR profile_ver < :t",
                names={"#r": "region"},
                values=values(h=event["handle"], l=event["lang"], r=event["region"],
                              t=event["occurred_at"], zero=0),
            )
        except ConditionFailed:
            return False
        return True

    async def load_many(self, users: list[tuple[User, bool]], *, at: int) -> int:
        """Bulk load (seeding, migrations): profiles with their counters, and whether each
        is a celebrity, in the same form signups and follows produce."""
        items = []
        for user, celebrity in users:
            item: dict[str, Any] = {
                "user_id": user.user_id, "handle": user.handle, "lang": user.lang,
                "region": user.region, "profile_ver": at, "created_at": user.created_at,
                "followers": user.followers, "following": user.following,
            }
            if celebrity:
                item["celeb_shard"] = keys.CELEBRITY_SHARD
            items.append(item)
        return await self.db.batch_write(USERS, puts=items)

    async def get(self, user_id: str, *, consistent: bool = False) -> User | None:
        """The profile of a signed-up user (None for unknown ids)."""
        item = await self.db.get(USERS, {"user_id": user_id}, consistent=consistent)
        if item is None or "handle" not in item:
            return None
        return User.from_item(item)

    async def get_many(self, user_ids: Sequence[str]) -> dict[str, User]:
        items = await self.db.batch_get(USERS, [{"user_id": u} for u in user_ids])
        return {i["user_id"]: User.from_item(i) for i in items if "handle" in i}

    async def counters(self, user_id: str, *, consistent: bool = True) -> tuple[int, int]:
        """(followers, following) of a user, known or not."""
        item = await self.db.get(USERS, {"user_id": user_id}, consistent=consistent,
                                 attributes=["followers", "following"])
        if not item:
            return 0, 0
        return max(0, int(item.get("followers", 0))), max(0, int(item.get("following", 0)))

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

    async def all_ids(self, *, page_size: int = 500) -> list[str]:
        """Every user id (for batch jobs; pages through a Scan)."""
        ids: list[str] = []
        async for page, _ in self.db.scan_pages(USERS, limit=page_size, attributes=["user_id"]):
            ids.extend(i["user_id"] for i in page)
        return ids

