"""The erase_user job: one run of a user's erasure (:mod:`feed.erasure`)."""

from __future__ import annotations

from typing import Any

from feed.erasure import Erasure
from workers._context import retrying, services

__all__ = ["erase_user"]

# A run stops this long before its job's soft deadline, saves where it got to and
# enqueues the next run.
RUN_MARGIN_SECONDS = 10.0


@retrying
async def erase_user(ctx: dict[str, Any], user_id: str, run: int = 0) -> str:
    svc = services(ctx)
    limit = float(ctx.get("job_soft_timeout") or 25.0)
    return await Erasure(svc.manager, svc.jobs).run(
        user_id, run, budget=max(1.0, limit - RUN_MARGIN_SECONDS))
