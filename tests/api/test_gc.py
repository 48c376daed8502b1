"""A serving process keeps the garbage collector off what it holds for its lifetime."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from config.settings import Settings
from feed.api.app import GC_THRESHOLDS, create_app
from feed.services import open_services


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
async def test_an_app_serving_on_its_own_freezes_what_it_started_with(
    settings: Settings,
) -> None:
    """Pass: the lifespan of an app that opens its own services (a `feed api` process)
    freezes what is alive at start-up and raises the youngest generation's threshold;
    an app given services (a test, the demo) leaves the collector alone."""
    gc.unfreeze()
    app = create_app(settings, None)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    async with open_services(settings) as services:
        given = create_app(settings, services)
        async with given.router.lifespan_context(given):
            pass
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
