"""Jobs that follow relation changes: merge an author in, purge one out, demote a celebrity."""

from __future__ import annotations

from typing import Any

from workers._context import retrying, services

__all__ = ["demote_celebrity", "merge_author_into_timeline", "purge_author_from_timeline"]


@retrying
async def merge_author_into_timeline(ctx: dict[str, Any], reader: str, author: str) -> int:
    """After a follow (or unblock / unmute): the author's recent koos join the timeline."""
    return await services(ctx).manager.merge_author(reader, author)


@retrying
async def purge_author_from_timeline(ctx: dict[str, Any], reader: str, author: str) -> int:
    """After an unfollow, block or mute: the author's koos leave the timeline's storage."""
    return await services(ctx).manager.unmerge_author(reader, author)


@retrying
async def demote_celebrity(ctx: dict[str, Any], author: str) -> int:
    """An author fell below the celebrity threshold: fan out their recent koos."""
    return await services(ctx).manager.demote(author)
