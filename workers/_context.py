"""Job context: the services opened at worker startup, and the shared failure policy."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from arq import Retry

from feed.errors import NotReady, StorageUnavailable
from feed.services import Services

__all__ = ["retry_later", "retrying", "services", "soft_deadline"]

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0


def services(ctx: dict[str, Any]) -> Services:
    """The services opened by the worker's on_startup."""
    found: Services = ctx["services"]
    return found


def retry_delay(job_try: int) -> float:
    """Capped exponential backoff with full jitter, by arq's try number (1-based)."""
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, job_try - 1))
    return random.uniform(ceiling / 2, ceiling)


def retry_later(ctx: dict[str, Any], exc: StorageUnavailable | NotReady) -> Retry:
    """An arq Retry for a transient failure, deferred by the backoff. Storage that failed
    is a warning; an event that came before what it refers to is the events' ordering at
    work (it is dead-lettered if it waits too long), so it is logged at INFO."""
    delay = retry_delay(int(ctx.get("job_try", 1)))
    log.log(
        logging.INFO if isinstance(exc, NotReady) else logging.WARNING,
        "job deferred after a transient failure",
        extra={"job_id": ctx.get("job_id"), "job_try": ctx.get("job_try"), "error": str(exc),
               "defer_seconds": round(delay, 3)},
    )
    return Retry(defer=delay)


P = ParamSpec("P")
R = TypeVar("R")


def retrying(
    job: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """A job whose transient storage failures are retried later with backoff (arq Retry)."""

    @functools.wraps(job)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx: dict[str, Any] = args[0]  # type: ignore[assignment]
        try:
            async with soft_deadline(ctx):
                return await job(*args, **kwargs)
        except StorageUnavailable as exc:
            raise retry_later(ctx, exc) from exc

    return run


@contextlib.asynccontextmanager
async def soft_deadline(ctx: dict[str, Any]) -> AsyncIterator[None]:
    """Give up a little before arq's own job timeout (``job_soft_timeout`` in the worker's
    context), as a transient failure: arq fails a timed-out job for good and would drop
    its work, while slow storage (a paused or overloaded DynamoDB) deserves a retry."""
    limit = ctx.get("job_soft_timeout")
    try:
        async with asyncio.timeout(limit):
            yield
    except TimeoutError as exc:
        raise StorageUnavailable(f"job ran past its {limit} s deadline", "JobTimeout") from exc
