"""Batch rebuild jobs on the backfill queue: timelines from the graph, the per-reader cap."""

from __future__ import annotations

from typing import Any

from feed.errors import StorageUnavailable
from workers._context import retry_later, services

__all__ = ["rebuild_timeline", "trim_timeline"]


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
