"""Fan-out jobs: resuming a koo's fan-out, the chunk deliveries, and the sweeper.

A new koo's fan-out starts inline in ``apply_event``; ``fan_out_koo`` runs only
when the sweeper finds a fan-out past its deadline.
"""

from __future__ import annotations

from typing import Any

from workers._context import retrying, services

__all__ = ["deliver_koo_chunk", "fan_out_koo", "sweep_fanouts"]


@retrying
async def fan_out_koo(ctx: dict[str, Any], koo_id: str, attempt: int = 0) -> str:
    """Resume the fan-out of one koo."""
    return await services(ctx).manager.fan_out(koo_id, attempt)


@retrying
async def deliver_koo_chunk(ctx: dict[str, Any], koo_id: str, chunk: str,
                            followers: list[str], author: str | None = None,
                            created: int | None = None) -> str:
    """Deliver one koo to one chunk of followers (active readers' cache and storage).
    ``author`` and ``created`` spare a read of the koo (jobs enqueued without them, by an
    earlier version, read it)."""
    return await services(ctx).manager.deliver_chunk(koo_id, chunk, followers, author=author,
                                                     created=created)


async def sweep_fanouts(ctx: dict[str, Any]) -> int:
    """Cron: re-enqueue fan-outs past their deadline (killed worker, dropped job, lost queue)."""
    return await services(ctx).manager.sweep_fanouts()
