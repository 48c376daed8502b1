"""FeedManager: the stored timeline cap kept on the write path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from config.settings import Settings
from feed.services import Services, open_services
from feed.timeline import TRIM_SLACK, trim_every
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, now_ms, signup

CAP = 6


def test_a_reader_s_cap_is_checked_about_once_per_tenth_of_it() -> None:
    assert trim_every(5_000) == 5_000 // TRIM_SLACK
    assert trim_every(5) == 1  # a small cap is checked on every delivery


async def test_deliveries_sample_cap_checks_at_the_documented_rate(services: Services) -> None:
    every = trim_every(services.settings.timeline_max_items)
    assert every > 1
    sample = 20_000
    due = sum(services.manager._trim_due("reader", f"k{i}") for i in range(sample))
    assert abs(due / sample - 1 / every) < 0.3 / every


@pytest.fixture
async def capped(settings: Settings) -> AsyncIterator[Services]:
    """Services whose timelines keep CAP rows (same tables as the session)."""
    async with open_services(settings.replace(timeline_max_items=CAP)) as svc:
        yield svc


async def test_fan_out_keeps_readers_at_the_cap_without_a_backfill(capped: Services) -> None:
    reader, author = uid(), uid()
    await apply_all(capped, signup(reader), signup(author), follow(reader, author))
    start = now_ms()
    koos = [uid("k") for _ in range(3 * CAP)]
    await apply_all(capped, *(koo(k, author, occurred_at=start + i) for i, k in enumerate(koos)))
    for user in (reader, author):
        rows, _ = await capped.stores.timelines.page(user, limit=100)
        assert [e.koo_id for e in rows] == koos[::-1][:CAP], user


async def test_a_follow_s_merge_is_trimmed_to_the_cap(capped: Services) -> None:
    reader, author = uid(), uid()
    start = now_ms()
    koos = [uid("k") for _ in range(2 * CAP)]
    await apply_all(capped, signup(reader), signup(author),
                    *(koo(k, author, occurred_at=start + i) for i, k in enumerate(koos)))
    await apply_all(capped, follow(reader, author))
    rows, _ = await capped.stores.timelines.page(reader, limit=100)
    assert [e.koo_id for e in rows] == koos[::-1][:CAP]
