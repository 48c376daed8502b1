"""Batch rebuild jobs on the backfill queue: timelines, recommendations, the per-reader cap."""

from __future__ import annotations

from typing import Any

from feed.backfill import BackfillRun
from feed.errors import NotFound, StorageUnavailable
from feed.reader import Reader
from workers._context import retry_later, services

__all__ = ["backfill_chunk", "compute_recommendations", "rebuild_timeline", "trim_timeline"]


async def rebuild_timeline(ctx: dict[str, Any], reader: str) -> int:
    """Rebuild one reader's stored timeline from whom they follow, then their cache."""
    try:
        return await services(ctx).manager.rebuild(reader)
    except StorageUnavailable as exc:
        raise retry_later(ctx, exc) from exc


async def trim_timeline(ctx: dict[str, Any], reader: str) -> int:
    """Delete a reader's rows beyond FEED_TIMELINE_MAX_ITEMS."""
    try:
        return await services(ctx).manager.trim(reader)
    except StorageUnavailable as exc:
        raise retry_later(ctx, exc) from exc


async def compute_recommendations(ctx: dict[str, Any], reader: str) -> int:
    """Precompute and store a reader's who-to-follow and recommended koos."""
    try:
        return await Reader(services(ctx).manager).refresh_recommendations(reader)
    except NotFound:
        return 0  # not signed up (or gone): nothing to recommend to
    except StorageUnavailable as exc:
        raise retry_later(ctx, exc) from exc


async def backfill_chunk(
    ctx: dict[str, Any], run_id: str, kind: str, chunk: str, users: list[str]
) -> int:
    """One chunk of a ``feed backfill`` run; records itself done for the run's progress."""
    svc = services(ctx)
    reader = Reader(svc.manager)
    try:
        for user in users:
            if kind == "timelines":
                await svc.manager.rebuild(user)
            else:
                try:
                    await reader.refresh_recommendations(user)
                except NotFound:
                    continue
    except StorageUnavailable as exc:
        raise retry_later(ctx, exc) from exc
    await BackfillRun(ctx["redis"], run_id).mark_done(chunk)
    return len(users)
