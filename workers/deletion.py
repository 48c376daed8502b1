"""Purge a deleted koo from every timeline that holds it (reads already hide it)."""

from __future__ import annotations

from typing import Any

from workers._context import retrying, services

__all__ = ["purge_deleted_koo"]


@retrying
async def purge_deleted_koo(ctx: dict[str, Any], koo_id: str) -> int:
    return await services(ctx).manager.undeliver(koo_id)
