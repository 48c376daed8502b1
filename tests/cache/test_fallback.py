"""The cache fallback policy: absorbed, counted per operation, logged at a bounded rate."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import REGISTRY

from feed.cache import fallback
from feed.cache.fallback import without_cache
from feed.errors import CacheUnavailable, StorageUnavailable
from feed.reader import Reader
from feed.services import Services
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, signup


def fallbacks(op: str) -> float:
    return REGISTRY.get_sample_value("feed_cache_fallbacks_total", {"op": op}) or 0.0


def test_a_cache_failure_is_absorbed_counted_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = uid("op")
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.WARNING, logger=fallback.__name__)
    for _ in range(3):
        with without_cache(op):
            raise CacheUnavailable("redis: gone", "ConnectionError")
    assert fallbacks(op) == 3
    assert len([r for r in caplog.records if getattr(r, "op", None) == op]) == 1
    clock[0] += fallback.LOG_INTERVAL_SECONDS
    with without_cache(op):
        raise CacheUnavailable("redis: gone", "ConnectionError")
    assert len([r for r in caplog.records if getattr(r, "op", None) == op]) == 2
    assert fallbacks(op) == 4


def test_a_storage_failure_is_not_the_cache_s_to_absorb() -> None:
    op = uid("op")
    with pytest.raises(StorageUnavailable), without_cache(op):
        raise StorageUnavailable("dynamodb: throttled", "ThrottlingException")
    assert fallbacks(op) == 0


def test_without_a_failure_nothing_is_counted() -> None:
    op = uid("op")
    with without_cache(op):
        pass
    assert fallbacks(op) == 0


async def test_a_feed_read_with_the_cache_down_answers_and_counts_its_fallbacks(
    services: Services, monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader, author = uid(), uid()
    await apply_all(services, signup(reader), signup(author), follow(reader, author),
                    koo(uid("k"), author))
    before = {op: fallbacks(op) for op in ("snapshot", "get_koos")}
    # The cache skips Redis after a connection failure: every call now fails at once.
    monkeypatch.setattr(services.cache, "_skip_until", time.monotonic() + 60)
    page = await Reader(services.manager).feed(reader, limit=10)
    assert [r.reason for r in page.items] == ["following"]
    assert fallbacks("snapshot") == before["snapshot"] + 1
    assert fallbacks("get_koos") > before["get_koos"]
