"""The one policy for a cache call the caller can do without.

On these paths a cache failure is never the caller's error: reads fall back to
DynamoDB, and what a write would have cached is cached again later (or rebuilt
from DynamoDB). Each fallback is counted in ``feed_cache_fallbacks_total{op}``
and logged at most once per operation every ``LOG_INTERVAL_SECONDS``, so an
operator sees a sick cache before readers do, without a log line per request.
Only cache failures (:class:`CacheUnavailable`) are absorbed: a DynamoDB failure
inside the block still reaches the caller.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator

from feed import metrics
from feed.errors import CacheUnavailable

__all__ = ["LOG_INTERVAL_SECONDS", "without_cache"]

log = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 10.0
_last_logged: dict[str, float] = {}


@contextlib.contextmanager
def without_cache(op: str) -> Iterator[None]:
    """Run the block; if the cache fails in it, count, maybe log, and go on after it."""
    try:
        yield
    except CacheUnavailable as exc:
        metrics.CACHE_FALLBACKS.labels(op).inc()
        now = time.monotonic()
        if now - _last_logged.get(op, -math.inf) >= LOG_INTERVAL_SECONDS:
            _last_logged[op] = now
            log.warning("cache unavailable: going on without it",
                        extra={"op": op, "error": str(exc)})
