"""Fan-out jobs: the coordinator, the chunk deliveries, and the sweeper."""

from __future__ import annotations

from typing import Any

from feed.fanout import FanOut
from workers._context import retrying, services

__all__ = ["deliver_koo_chunk", "fan_out_koo", "sweep_fanouts"]


def _fanout(ctx: dict[str, Any]) -> FanOut:
    return services(ctx).applier.fanout


@retrying
async def fan_out_koo(ctx: dict[str, Any], koo_id: str, attempt: int = 0) -> str:
    """Coordinate (or resume) the fan-out of one koo."""
    return await _fanout(ctx).run(koo_id, attempt)


@retrying
async def deliver_koo_chunk(ctx: dict[str, Any], koo_id: str, chunk: str,
                            followers: list[str], author: str | None = None,
                            created: int | None = None) -> str:
    """Deliver one koo to one chunk of followers (active readers' cache and storage).
    ``author`` and ``created`` spare a read of the koo (jobs enqueued without them, by an
    earlier version, read it)."""
    return await _fanout(ctx).deliver_chunk(koo_id, chunk, followers, author=author,
                                            created=created)


async def sweep_fanouts(ctx: dict[str, Any]) -> int:
    """Cron: re-enqueue fan-outs past their deadline (killed worker, dropped job, lost queue)."""
    return await _fanout(ctx).sweep()
