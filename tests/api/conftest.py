"""Fixtures of the API tests: the app with its lifespan running, clients, and helpers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpx
import pytest
from arq.constants import job_key_prefix
from starlette.applications import Starlette

from config.settings import Settings
from feed import keys
from feed.api.app import create_app
from feed.services import Services, open_services
from tests.helpers import apply_all, in_ledger, job_ids

TOKEN = "test-token-123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


@pytest.fixture
async def app(services: Services) -> AsyncIterator[Starlette]:
    application = create_app(services.settings, services)
    async with application.router.lifespan_context(application):
        yield application


def _transport(app: Starlette) -> httpx.ASGITransport:
    # Like a real server: an unhandled exception becomes the 500 response the app sent,
    # so a test sees the status code instead of the traceback.
    return httpx.ASGITransport(app=app, raise_app_exceptions=False)


@pytest.fixture
async def anon(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no Authorization header."""
    async with httpx.AsyncClient(transport=_transport(app), base_url="http://test") as c:
        yield c


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the valid bearer token."""
    async with httpx.AsyncClient(transport=_transport(app), base_url="http://test",
                                 headers=AUTH) as c:
        yield c


class StorageTouched(RuntimeError):
    """Raised by the guards of :func:`storage_guard` when a request reaches storage."""


@pytest.fixture
def storage_guard(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every DynamoDB call and every Redis connection (cache and queue) fail loudly;
    returns the list of what was attempted, so a test can assert it stayed empty."""
    return _guard(services, monkeypatch, cache=True)


@pytest.fixture
def data_guard(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """:func:`storage_guard` for DynamoDB and the queue only: the cache Redis stays usable,
    since a failed authentication is counted there (per client address)."""
    return _guard(services, monkeypatch, cache=False)


def _guard(services: Services, monkeypatch: pytest.MonkeyPatch, *, cache: bool) -> list[str]:
    touched: list[str] = []

    async def dynamo_call(operation: str, **request: Any) -> dict[str, Any]:
        touched.append(f"dynamodb:{operation}")
        raise StorageTouched(f"DynamoDB {operation} was called")

    def redis_guard(name: str) -> Any:
        async def get_connection(*args: Any, **kwargs: Any) -> Any:
            touched.append(f"redis:{name}:{args[:1]}")
            raise StorageTouched(f"the {name} Redis was used")

        return get_connection

    monkeypatch.setattr(services.stores.db, "call", dynamo_call)
    if cache:
        monkeypatch.setattr(services.cache.redis.connection_pool, "get_connection",
                            redis_guard("cache"))
    monkeypatch.setattr(services.queue_redis.connection_pool, "get_connection",
                        redis_guard("queue"))
    return touched


def assert_error(response: httpx.Response, status: int, code: str | None = None,
                 *, extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The response has ``status`` and exactly the contract's error body
    ``{"error": {"code": <snake_case>, "message": <sentence>}}`` (``extra`` keys allowed)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict), body
    assert {"code", "message"} <= set(err) <= {"code", "message"} | extra, body
    assert isinstance(err["code"], str), body
    assert SNAKE.fullmatch(err["code"]), body
    assert isinstance(err["message"], str), body
    assert err["message"].strip(), body
    if code is not None:
        assert err["code"] == code, body
    return dict(err)


async def seed(settings: Settings, *batches: Sequence[dict[str, Any]]) -> None:
    """Apply each batch of events in turn (with services of its own) and wait until the
    ledger has every one of them.

    Another suite sharing the Redis databases may flush them mid-run and drop queued jobs;
    events are idempotent, so a batch is simply published again (at most three times)."""
    async with open_services(settings) as svc:
        for batch in batches:
            for _ in range(3):
                await apply_all(svc, *batch)
                seen = await asyncio.gather(
                    *(in_ledger(svc, e["event_id"]) for e in batch))
                if all(seen):
                    break
            else:
                raise AssertionError("events never all applied: is another suite flushing "
                                     "this suite's Redis databases (FEED_TEST_REDIS_DBS)?")


async def queued(services: Services, events: Iterable[object]) -> int:
    """How many of ``events`` have their job waiting on the realtime arq queue.

    Counted by job id (``ev:<event_id>``), not by queue length: another suite sharing the
    Redis database may enqueue or flush at any time."""
    ids = job_ids(events)
    if not ids:
        return 0
    scores = await services.queue_redis.zmscore(keys.QUEUE_REALTIME, ids)
    return sum(score is not None for score in scores)


async def discard(services: Services, events: Iterable[object]) -> None:
    """Take the jobs of ``events`` off the queue, so that a later drain (this suite's or
    another's sharing the database) does not spend its time on them."""
    ids = job_ids(events)
    if ids:
        await services.queue_redis.zrem(keys.QUEUE_REALTIME, *ids)
        await services.queue_redis.delete(*(job_key_prefix + i for i in ids))
