"""Fixtures of the unit tests: a fake clock, and clients over ``httpx.MockTransport``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
from client_fakes import TOKEN, FakeTime

from koo_feed_client import FeedClient

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
MakeClient = Callable[..., FeedClient]


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def make_client(fake_time: FakeTime) -> AsyncIterator[MakeClient]:
    """Builds clients over a handler, on the fake clock; closes them after the test."""
    made: list[FeedClient] = []

    def make(handler: Handler, **options: Any) -> FeedClient:
        options.setdefault("sleep", fake_time.sleep)
        options.setdefault("clock", fake_time.clock)
        client = FeedClient("http://feed.test/", TOKEN,
                            transport=httpx.MockTransport(handler), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
