"""A worker SIGKILLed in the middle of a 5,000-follower fan-out loses nothing.

Pass criterion: after the kill and a restart, within 60 s every follower has
the koo exactly once in DynamoDB and every active follower exactly once in
the hot cache.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.settings import Settings
from feed import keys
from feed.models import User
from feed.services import Services
from tests.conftest import uid
from tests.helpers import koo, now_ms

pytestmark = [pytest.mark.fault, pytest.mark.slow]

FOLLOWERS = 5_000
CHUNK = 250
ACTIVE = 300
RECOVERY_SECONDS = 60


def _worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
        "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "FEED_TABLE_PREFIX": settings.table_prefix,
        "FEED_FANOUT_CHUNK_SIZE": str(CHUNK),
        "FEED_LOG_LEVEL": "WARNING",
        "FEED_API_TOKENS": "test-token-123456",
    }
    with log.open("ab") as sink:  # a file, not a pipe: a full pipe would block the worker
        return subprocess.Popen(
            [sys.executable, "-m", "feed.cli", "worker", "--queue", "realtime"],
            env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )


async def _chunks_done(services: Services, koo_id: str) -> int:
    item = await services.stores.koos.get(koo_id, consistent=True)
    return len((item or {}).get("fanout_done") or ())


async def test_sigkill_mid_fanout_then_restart(services: Services, tmp_path: Path) -> None:
    settings = services.settings
    author = uid("author")
    followers = [f"{author}-f{i:05d}" for i in range(FOLLOWERS)]
    at = now_ms()
    await services.stores.users.load_many(
        [(User(author, "@a", "hi", "ap-south-1", at, FOLLOWERS, 0), False)]
        + [(User(f, "@f", "hi", "ap-south-1", at, 0, 1), False) for f in followers],
        at=at,
    )
    await services.stores.relations.load_many(
        [(f, keys.REL_FOLLOW, author) for f in followers], at=at
    )
    active = followers[:ACTIVE]
    for reader in active:  # active readers: their cached timeline exists
        assert await services.manager.populate(reader)

    koo_id = uid("k")
    total_chunks = FOLLOWERS // CHUNK
    log = tmp_path / "worker.log"
    worker = _worker(settings, log)
    try:
        await services.publisher.publish([koo(koo_id, author)])
        deadline = time.monotonic() + 120
        while await _chunks_done(services, koo_id) < total_chunks * 0.4:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the fan-out never got 40% done"
            await asyncio.sleep(0.05)
        done_at_kill = await _chunks_done(services, koo_id)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert done_at_kill < total_chunks, "killed too late: the fan-out had finished"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)

    restarted = _worker(settings, log)
    try:
        started = time.monotonic()
        while True:
            item = await services.stores.koos.get(koo_id, consistent=True)
            assert item is not None
            if item.get("fanout_state") == "done":
                break
            assert time.monotonic() - started < RECOVERY_SECONDS, (
                f"fan-out not finished {RECOVERY_SECONDS} s after the restart: "
                f"{await _chunks_done(services, koo_id)}/{total_chunks} chunks"
            )
            await asyncio.sleep(0.25)
        recovered_in = time.monotonic() - started
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(40) == 0, log.read_text()[-2000:]

    # Exactly once in DynamoDB: one row per follower for this koo (rows are keyed by
    # (reader, created#koo_id), so a second delivery could only overwrite).
    sort_key = keys.sort_key(int(item["created_at"]), koo_id)
    rows = await services.stores.db.batch_get(
        "timelines", [{"reader_id": f, "sk": sort_key} for f in [author, *followers]]
    )
    assert len(rows) == FOLLOWERS + 1
    # Exactly once in the cache of every active follower.
    redis = services.cache.redis
    pipe = redis.pipeline(transaction=False)
    for reader in active:
        pipe.zrange(keys.timeline(reader), 0, -1)
    cached = await pipe.execute()
    assert all(members.count(koo_id) == 1 for members in cached)
    print(f"killed at {done_at_kill}/{total_chunks} chunks; recovered in {recovered_in:.1f} s")
