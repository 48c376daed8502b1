"""Notification jobs: each one syncs or removes notifications after one event.

Every job reads the current state of what it is about (the reaction, the follow, the
reply, the relation), so running it twice, late or concurrently changes nothing.
"""

from __future__ import annotations

from typing import Any

from feed.notifications import Notifications
from workers._context import retrying, services

__all__ = [
    "purge_koo_notifications",
    "purge_notifications_from",
    "sync_follow_notification",
    "sync_reaction_notification",
    "sync_reply_notification",
]


def notifications(ctx: dict[str, Any]) -> Notifications:
    """The worker's notifications, built once over its services."""
    found = ctx.get("notifications")
    if not isinstance(found, Notifications):
        found = ctx["notifications"] = Notifications.over(services(ctx).manager)
    return found


@retrying
async def sync_reaction_notification(ctx: dict[str, Any], koo_id: str, user_id: str,
                                     kind: str) -> int:
    """After a reaction was added or removed: its actor joins or leaves the author's."""
    return await notifications(ctx).sync_reaction(koo_id, user_id, kind)


@retrying
async def sync_follow_notification(ctx: dict[str, Any], follower: str, followee: str) -> int:
    """After a follow or unfollow: the follower joins or leaves the followee's."""
    return await notifications(ctx).sync_follow(follower, followee)


@retrying
async def sync_reply_notification(ctx: dict[str, Any], reply_id: str) -> int:
    """After a reply was created: its author joins the parent's author's."""
    return await notifications(ctx).sync_reply(reply_id)


@retrying
async def purge_koo_notifications(ctx: dict[str, Any], koo_id: str) -> int:
    """After a koo was deleted: its notifications go (and a reply's actor leaves)."""
    return await notifications(ctx).purge_koo(koo_id)


@retrying
async def purge_notifications_from(ctx: dict[str, Any], recipient: str, actor: str) -> int:
    """After a block or mute: the actor leaves the recipient's notifications."""
    return await notifications(ctx).remove_between(recipient, actor)
