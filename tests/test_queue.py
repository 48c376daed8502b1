"""The queue's Redis: which connection the settings choose, what WAIT's outcome means,
and WAIT against a real primary and replica (quick; the failovers are in the fault
suite)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from prometheus_client import REGISTRY
from redis.asyncio import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from config.settings import Settings
from feed import keys
from feed.api.app import create_app
from feed.cli import service_failure
from feed.errors import QueueNotReplicated, StorageUnavailable
from feed.events import event_digest
from feed.publisher import EventPublisher
from feed.queue import (
    ArqJobQueue,
    check_replicated,
    connection_options,
    open_queue_redis,
    queue_address,
    release_cut_off_jobs,
    uses_sentinel,
)
from feed.services import Services, open_services
from tests.conftest import QUEUE_URL, uid
from tests.fault._sentinel import MASTER, SentinelGroup
from tests.helpers import signup
from workers.runner import QueueOutage

SENTINELS = (("10.0.0.5", 26379), ("10.0.0.6", 26380))


def _sentinel_settings(**changes: object) -> Settings:
    return Settings.from_env({
        "FEED_REDIS_URL": "redis://:sekret-pw@queue.internal:6379/4",
        "FEED_REDIS_SENTINELS": "10.0.0.5:26379,10.0.0.6:26380",
        "FEED_REDIS_SENTINEL_MASTER": "feed-queue",
    }).replace(**changes)


# --- settings -> connection ----------------------------------------------------------


def test_without_sentinels_the_url_is_the_queue() -> None:
    settings = Settings.from_env({"FEED_REDIS_URL": "redis://:sekret-pw@10.0.0.9:6380/2"})
    assert not uses_sentinel(settings)
    assert queue_address(settings) == ("FEED_REDIS_URL", "redis://10.0.0.9:6380/2")
    redis = open_queue_redis(settings)
    pool = redis.connection_pool
    assert type(pool) is ConnectionPool
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"],
            pool.connection_kwargs["db"]) == ("10.0.0.9", 6380, 2)


def test_sentinels_take_precedence_over_the_url() -> None:
    settings = _sentinel_settings()
    assert settings.redis_sentinels == SENTINELS
    assert uses_sentinel(settings)
    variable, address = queue_address(settings)
    assert variable == "FEED_REDIS_SENTINELS"
    assert "'feed-queue'" in address
    assert "10.0.0.5:26379,10.0.0.6:26380" in address
    assert "queue.internal" not in address
    assert "sekret-pw" not in address
    redis = open_queue_redis(settings)
    pool = redis.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "feed-queue"
    assert pool.is_master
    # The address comes from the Sentinels; the database and password from the URL.
    assert "host" not in pool.connection_kwargs
    assert pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["password"] == "sekret-pw"
    asked = [(c.connection_pool.connection_kwargs["host"],
              c.connection_pool.connection_kwargs["port"]) for c in pool.sentinel_manager.sentinels]
    assert tuple(asked) == SENTINELS


def test_sentinels_without_a_primary_name_are_refused() -> None:
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env({"FEED_REDIS_SENTINELS": "10.0.0.5:26379"})


def test_a_reply_may_wait_as_long_as_wait_does() -> None:
    options = connection_options(Settings(redis_timeout=0.5, queue_replica_timeout=8.0))
    assert options["socket_timeout"] >= 8.0 + 0.5
    assert options["socket_connect_timeout"] == 0.5
    assert connection_options(Settings())["socket_timeout"] >= 5.0


def test_an_outage_through_sentinel_names_its_variable(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    outage = QueueOutage.of(_sentinel_settings())
    with caplog.at_level(logging.WARNING, logger="workers.runner"):
        outage.failed(ConnectionError("No master found for 'feed-queue'"))
    message = caplog.records[-1].getMessage()
    assert "check FEED_REDIS_SENTINELS" in message
    assert "sekret-pw" not in message


# --- WAIT's outcome ------------------------------------------------------------------


@pytest.mark.parametrize(("acknowledged", "required"), [(1, 1), (2, 1), (3, 3), (0, 0)])
def test_enough_acknowledgements_acknowledge_the_batch(acknowledged: int, required: int
                                                       ) -> None:
    check_replicated(acknowledged, required)


@pytest.mark.parametrize(("acknowledged", "required"), [(0, 1), (1, 2), (2, 3)])
def test_too_few_acknowledgements_are_unavailable(acknowledged: int, required: int) -> None:
    with pytest.raises(QueueNotReplicated) as caught:
        check_replicated(acknowledged, required)
    assert isinstance(caught.value, StorageUnavailable)  # the API answers 503 unavailable
    assert (caught.value.acknowledged, caught.value.required) == (acknowledged, required)
    assert f"{acknowledged} of the {required} replicas" in str(caught.value)


def test_a_primary_changed_during_the_batch_is_not_an_acknowledgement() -> None:
    with pytest.raises(QueueNotReplicated, match="primary changed"):
        check_replicated(5, 1, changed=True)


def test_the_cli_names_the_setting_when_replicas_are_missing() -> None:
    line = service_failure(QueueNotReplicated("the batch reached 0 of the 1", 0, 1),
                           _sentinel_settings())
    assert line is not None
    assert "FEED_QUEUE_MIN_REPLICAS" in line
    assert "feed-queue" in line


# --- against real servers ------------------------------------------------------------


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    """A primary and one replica of the test's own, no Sentinel."""
    async with SentinelGroup(tmp_path / "pair", replicas=1, sentinels=0).running() as group:
        yield group


def _batch(n: int) -> list[dict[str, object]]:
    return [signup(uid("w")) for _ in range(n)]


def _job_keys(batch: list[dict[str, object]]) -> list[str]:
    return [job_key_prefix + keys.event_job(str(e["event_id"]), event_digest(e))
            for e in batch]


async def test_a_batch_acknowledged_with_a_replica_is_on_the_replica(
    pair: SentinelGroup,
) -> None:
    """Pass criterion: with FEED_QUEUE_MIN_REPLICAS=1, publish returns only once the
    replica holds every job of the batch (read from the replica right after)."""
    settings = Settings(redis_url=pair.url(), queue_min_replicas=1, queue_replica_timeout=10)
    redis = open_queue_redis(settings)
    replica = pair.replicas[0].client()
    try:
        publisher = EventPublisher.over(ArqJobQueue(redis), settings)
        for size in (1, 200):
            batch = _batch(size)
            assert await publisher.publish(batch) == size
            assert await replica.exists(*_job_keys(batch)) == size
    finally:
        await replica.aclose()
        await redis.aclose()


async def test_a_stalled_replica_makes_the_batch_unacknowledged(pair: SentinelGroup) -> None:
    """Pass criterion: with the replica stopped (SIGSTOP), publish raises
    QueueNotReplicated after about FEED_QUEUE_REPLICA_TIMEOUT (0.3 s), not before and
    not much after; asking for more replicas than exist fails the same way; once the
    replica runs again, publishing is acknowledged again (the publishes expected to
    succeed may wait 10 s: a loaded machine must not fail them)."""
    settings = Settings(redis_url=pair.url(), queue_min_replicas=1, queue_replica_timeout=10)
    redis = open_queue_redis(settings)
    replica = pair.replicas[0].process
    assert replica is not None
    try:
        publisher = EventPublisher.over(ArqJobQueue(redis), settings)
        impatient = EventPublisher.over(ArqJobQueue(redis),
                                        settings.replace(queue_replica_timeout=0.3))
        assert await publisher.publish(_batch(3)) == 3
        refused = _unreplicated()
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(QueueNotReplicated) as caught:
                await impatient.publish(_batch(3))
            took = time.monotonic() - started
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        assert caught.value.acknowledged == 0
        assert 0.3 <= took < 5.0
        assert _unreplicated() == refused + 1  # counted in feed_queue_unreplicated_total
        greedy = EventPublisher.over(ArqJobQueue(redis), settings.replace(
            queue_min_replicas=2, queue_replica_timeout=0.3))
        with pytest.raises(QueueNotReplicated) as caught:
            await greedy.publish(_batch(1))
        assert (caught.value.acknowledged, caught.value.required) == (1, 2)
        assert await publisher.publish(_batch(3)) == 3
    finally:
        await redis.aclose()


def _unreplicated() -> float:
    return REGISTRY.get_sample_value("feed_queue_unreplicated_total") or 0.0


async def test_post_events_answers_503_when_replicas_are_missing(
    settings: Settings, pair: SentinelGroup,
) -> None:
    """Pass criterion: POST /v1/events asking for more replicas than acknowledge answers
    503 ``unavailable`` with Retry-After; with as many as exist, 202."""
    for replicas, wait, status in ((2, 0.2, 503), (1, 10.0, 202)):
        changed = settings.replace(redis_url=pair.url(), queue_min_replicas=replicas,
                                   queue_replica_timeout=wait)
        async with open_services(changed) as svc:
            reply = await _post(svc, _batch(2))
        assert reply.status_code == status, reply.text
        if status == 503:
            assert reply.json()["error"]["code"] == "unavailable"
            assert int(reply.headers["Retry-After"]) >= 1
        else:
            assert reply.json() == {"accepted": 2}


async def _post(svc: Services, batch: list[dict[str, object]]) -> httpx.Response:
    app = create_app(svc.settings, svc)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test", timeout=30,
    ) as client:
        return await client.post("/v1/events", json={"events": batch},
                                 headers={"Authorization": "Bearer test-token-123456"})


async def test_the_queue_is_found_through_sentinel(tmp_path: Path) -> None:
    """Pass criterion: with only the Sentinels' addresses (FEED_REDIS_URL pointing
    nowhere), jobs land on the primary the Sentinels name, and WAIT is acknowledged by
    its replica."""
    group = SentinelGroup(tmp_path / "group", replicas=1, sentinels=1)
    async with group.running():
        settings = Settings(redis_url="redis://127.0.0.1:9/0", redis_sentinels=group.addresses,
                            redis_sentinel_master=MASTER, queue_min_replicas=1,
                            queue_replica_timeout=10)
        redis = open_queue_redis(settings)
        primary = group.primary.client()
        try:
            batch = _batch(5)
            assert await EventPublisher.over(ArqJobQueue(redis), settings).publish(batch) == 5
            assert await primary.exists(*_job_keys(batch)) == 5
        finally:
            await primary.aclose()
            await redis.aclose()


async def test_a_new_server_releases_every_in_progress_mark_once() -> None:
    """Pass criterion: the first worker start over a server it has no record of (a
    failover, or none yet) releases every in-progress mark; later starts over the same
    server release none (jobs started there are left alone); another server's record
    releases them again."""
    redis = open_queue_redis(Settings(redis_url=QUEUE_URL))
    try:
        await redis.flushdb()
        marks = [in_progress_key_prefix + f"job-{i}" for i in range(3)]
        for mark in marks:
            await redis.set(mark, b"1", px=40_000)
        assert await release_cut_off_jobs(redis) == 3
        assert await redis.exists(*marks) == 0
        for mark in marks:
            await redis.set(mark, b"1", px=40_000)
        assert await release_cut_off_jobs(redis) == 0
        assert await redis.exists(*marks) == 3
        await redis.set(keys.QUEUE_PRIMARY, b"the-old-primarys-run-id")
        assert await release_cut_off_jobs(redis) == 3
        assert await redis.exists(*marks) == 0
    finally:
        await redis.flushdb()
        await redis.aclose()


async def test_closing_the_queue_client_closes_its_connections() -> None:
    """Pass criterion: the client owns its pool: closing it leaves no connection open."""
    redis = open_queue_redis(Settings(redis_url=QUEUE_URL))
    assert await redis.ping()
    pool = redis.connection_pool
    assert any(c.is_connected for c in pool._available_connections)
    await redis.aclose()
    assert not any(c.is_connected for c in pool._available_connections)
