"""Shared fixtures: real Redis, and DynamoDB from moto's server or DynamoDB Local.

``FEED_TEST_BACKEND`` picks the DynamoDB backend: ``moto`` (default; the
suite starts moto's server in-process) or ``local`` (DynamoDB Local at
``FEED_TEST_DYNAMODB_ENDPOINT``, default http://127.0.0.1:8765). Tests that
touch DynamoDB are marked ``dynamodb`` automatically, so CI runs them against
both. Redis is the one at ``FEED_TEST_REDIS_URL`` (default
redis://127.0.0.1:6379), databases 14 (queue) and 15 (cache) unless
``FEED_TEST_REDIS_DBS=Q,C`` says otherwise, flushed before each test.
``FEED_DYNAMODB_CLIENT`` (``direct`` or ``aioboto3``) picks the data-plane client, in
the tests' own settings and, through the environment, in the processes they start.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from feed._embedded import embedded_dynamodb
from feed.services import Services, open_services
from feed.store import Stores, create_tables, open_dynamo

BACKEND = os.environ.get("FEED_TEST_BACKEND", "moto")
CLIENT = os.environ.get("FEED_DYNAMODB_CLIENT", "direct")
REDIS_BASE = os.environ.get("FEED_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
_QUEUE_DB, _CACHE_DB = os.environ.get("FEED_TEST_REDIS_DBS", "14,15").split(",")
QUEUE_URL = f"{REDIS_BASE}/{_QUEUE_DB}"
CACHE_URL = f"{REDIS_BASE}/{_CACHE_DB}"

DYNAMODB_FIXTURES = {"dynamo_endpoint", "settings", "services", "stores", "tables"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if DYNAMODB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dynamodb)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uid(prefix: str = "u") -> str:
    """A fresh id in the contract's alphabet, so tests never see each other's data."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def dynamo_endpoint() -> Iterator[str]:
    if BACKEND == "local":
        yield os.environ.get("FEED_TEST_DYNAMODB_ENDPOINT", "http://127.0.0.1:8765")
        return
    if BACKEND != "moto":
        raise pytest.UsageError(f"FEED_TEST_BACKEND must be moto or local, not {BACKEND!r}")
    with embedded_dynamodb() as endpoint:
        yield endpoint


def make_settings(endpoint: str, **overrides: Any) -> Settings:
    base = Settings(
        redis_url=QUEUE_URL,
        cache_redis_url=CACHE_URL,
        dynamodb_endpoint=endpoint,
        aws_region="ap-south-1",
        dynamodb_client=CLIENT,
        table_prefix=f"t{uuid.uuid4().hex[:6]}_",
        api_tokens=("test-token-123456",),
        cursor_secret="test-cursor-secret-0123456789",
        dynamodb_connect_timeout=2.0,
        dynamodb_read_timeout=10.0,
        # Reads past FEED_API_TIMEOUT answer 503; the fault tests hold the real bound,
        # the rest of the suite must not fail because a loaded machine is slow.
        api_timeout=30.0,
    )
    return base.replace(**overrides) if overrides else base


@pytest.fixture(scope="session")
def session_settings(dynamo_endpoint: str) -> Settings:
    return make_settings(dynamo_endpoint)


@pytest.fixture(scope="session")
async def tables(session_settings: Settings) -> str:
    """Create the session's tables once; returns their prefix."""
    async with open_dynamo(session_settings) as db:
        await create_tables(db)
    return session_settings.table_prefix


@pytest.fixture
async def settings(session_settings: Settings, tables: str) -> Settings:
    for url in (QUEUE_URL, CACHE_URL):
        redis = Redis.from_url(url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()
    return session_settings


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    async with open_services(settings) as svc:
        yield svc


@pytest.fixture
def stores(services: Services) -> Stores:
    return services.stores
