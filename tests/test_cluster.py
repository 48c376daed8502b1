"""The hot cache on a 3-master Redis Cluster (started by this module from redis-server).

Every key of one user must live on one slot, and the whole write and read path
(fan-out pushes, rebuilds, relation sets, rate limiting) must work there.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from feed import keys
from feed._embedded import free_port
from feed.api.ratelimit import TokenBuckets
from feed.reader import Reader
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, relation, signup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if not server or not cli:
        # Never a silent skip: the suite needs Redis anyway, and so do its packages.
        pytest.fail("redis-server and redis-cli are needed for the cluster test")
    base = tmp_path_factory.mktemp("cluster")
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    for port in ports:
        workdir = Path(base, str(port))
        workdir.mkdir()
        procs.append(subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    try:
        for port in ports:
            _wait_for(cli, port)
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        deadline = time.monotonic() + 30
        while "cluster_state:ok" not in subprocess.run(
            [cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True
        ).stdout:
            assert time.monotonic() < deadline, "the cluster never became ready"
            time.sleep(0.2)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) exists and is free too."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


def _wait_for(cli: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while subprocess.run([cli, "-p", str(port), "ping"], capture_output=True,
                         text=True).stdout.strip() != "PONG":
        assert time.monotonic() < deadline, f"redis-server on {port} did not start"
        time.sleep(0.1)


@pytest.fixture
async def on_cluster(services: Services, cluster_url: str) -> AsyncIterator[Services]:
    settings = services.settings.replace(cache_redis_url=cluster_url)
    async with open_services(settings) as svc:
        assert isinstance(svc.cache.redis, RedisCluster)
        yield svc


async def test_feed_works_with_the_cache_on_a_cluster(on_cluster: Services) -> None:
    svc = on_cluster
    author, reader, muted = uid(), uid(), uid()
    reader_obj = Reader(svc.manager)
    await apply_all(svc, signup(author, lang="xx"), signup(reader, lang="xx"),
                    signup(muted, lang="xx"), follow(reader, author), follow(reader, muted))
    first = await reader_obj.feed(reader)  # inactive: rebuilds the cached timeline
    assert first.items == []
    await svc.manager.drain()
    assert await svc.cache.is_cached(reader)

    k1, k2, k3 = uid("k"), uid("k"), uid("k")
    await apply_all(svc, koo(k1, author, lang="xx"), koo(k2, muted, lang="xx"))
    members = await svc.cache.redis.zrange(keys.timeline(reader), 0, -1)
    assert {k1, k2} <= set(members)  # pushed by fan-out into the cluster
    # The mute's purge drops the cached window; the next read rebuilds it.
    await apply_all(svc, relation("user_muted", reader, muted), koo(k3, author, lang="xx"))
    page = await reader_obj.feed(reader, limit=10)
    await svc.manager.drain()  # the read started a rebuild of the dropped window
    assert [i.koo.koo_id for i in page.items if i.reason != "recommended"] == [k3, k1]

    # Every key of the reader sits on the reader's slot.
    slot = key_slot(reader.encode())
    reader_keys = [keys.timeline(reader), keys.following(reader), keys.muting(reader),
                   keys.blocking(reader), keys.blocked_by(reader), keys.affinity(reader),
                   keys.profile(reader)]
    assert {key_slot(k.encode()) for k in reader_keys} == {slot}
    for key in reader_keys[:3]:
        assert await svc.cache.redis.exists(key)


async def test_single_flight_rebuild_and_rate_limit_on_a_cluster(on_cluster: Services) -> None:
    svc = on_cluster
    reader = uid()
    tokens = await asyncio.gather(*(svc.cache.acquire_rebuild(reader) for _ in range(20)))
    assert sum(t is not None for t in tokens) == 1
    bucket = keys.rate_limit(keys.token_digest("t" * 12))
    limiter = TokenBuckets(svc.cache.redis)
    waits = [await limiter.take(bucket, interval_ms=200, burst=5, now_ms=1_000_000)
             for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert all(w > 0 for w in waits[5:])


async def test_notifications_are_cached_on_a_cluster(on_cluster: Services) -> None:
    """Pass: on a Redis Cluster, likes settle into one notification (the settle lock and
    generation keys work there), reads are served from the cached keys, which share the
    recipient's slot, and the answer equals the one rebuilt after the keys are dropped."""
    from feed.notifications import Notifications
    from tests.helpers import react

    svc = on_cluster
    author, a, b = uid(), uid(), uid()
    k = uid("k")
    await apply_all(svc, signup(author), signup(a), signup(b), koo(k, author),
                    react("like", k, a), react("like", k, b))
    notes = Notifications.over(svc.manager)
    first = await notes.page(author, limit=10)
    assert [(i["actor_count"], i["actors"]) for i in first["items"]] == [(2, [b, a])]
    group = notes.store.group_of("like", k, first["items"][0]["updated_at"])
    cached = [keys.notifications(author), keys.notification_bodies(author)]
    locks = [keys.notify_settle_lock(author, group), keys.notify_settle_gen(author, group)]
    assert {key_slot(key.encode()) for key in cached + locks} == {key_slot(author.encode())}
    assert all([await svc.cache.redis.exists(key) for key in cached])
    await notes.mark_seen(author, first["items"][0]["updated_at"])
    warm = await notes.page(author, limit=10)
    assert warm["unseen"] == 0
    await svc.cache.redis.delete(*cached)
    assert await notes.page(author, limit=10) == warm
