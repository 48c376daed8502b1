"""Batch rebuild jobs on the backfill queue: timelines, recommendations, the per-reader cap."""

from __future__ import annotations

import contextlib
from typing import Any

from feed import popular
from feed.backfill import BackfillRun
from feed.errors import NotFound
from feed.reader import Reader
from workers._context import retrying, services

__all__ = [
    "backfill_chunk",
    "compute_recommendations",
    "rebuild_timeline",
    "refresh_popular_authors",
    "trim_timeline",
]


@retrying
async def rebuild_timeline(ctx: dict[str, Any], reader: str) -> int:
    """Rebuild one reader's stored timeline from whom they follow, then their cache."""
    return await services(ctx).manager.rebuild(reader)


@retrying
async def trim_timeline(ctx: dict[str, Any], reader: str) -> int:
    """Delete a reader's rows beyond FEED_TIMELINE_MAX_ITEMS."""
    return await services(ctx).manager.trim(reader)


@retrying
async def compute_recommendations(ctx: dict[str, Any], reader: str) -> int:
    """Precompute and store a reader's who-to-follow and recommended koos."""
    try:
        return await Reader(services(ctx).manager).refresh_recommendations(reader)
    except NotFound:
        return 0  # not signed up (or gone): nothing to recommend to


@retrying
async def refresh_popular_authors(ctx: dict[str, Any]) -> int:
    """Recompute every language's popular creators from DynamoDB (who-to-follow)."""
    svc = services(ctx)
    return sum((await popular.refresh_popular_authors(svc.stores, svc.cache)).values())


@retrying
async def backfill_chunk(
    ctx: dict[str, Any], run_id: str, kind: str, chunk: str, users: list[str]
) -> int:
    """One chunk of a ``feed backfill`` run; records itself done for the run's progress."""
    svc = services(ctx)
    reader = Reader(svc.manager)
    for user in users:
        if kind == "timelines":
            await svc.manager.rebuild(user)
        else:
            with contextlib.suppress(NotFound):
                await reader.refresh_recommendations(user)
    await BackfillRun(ctx["redis"], run_id).mark_done(chunk)
    return len(users)
