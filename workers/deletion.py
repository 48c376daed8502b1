"""Purge a deleted koo from every timeline that holds it (reads already hide it)."""

from __future__ import annotations

from typing import Any

from feed.errors import StorageUnavailable
from workers._context import retry_later, services

__all__ = ["purge_deleted_koo"]


async def purge_deleted_koo(ctx: dict[str, Any], koo_id: str) -> int:
    try:
        return await services(ctx).applier.fanout.undeliver(koo_id)
    except StorageUnavailable as exc:
        raise retry_later(ctx, exc) from exc
