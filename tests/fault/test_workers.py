"""Workers stopped mid-fan-out, and events delivered many times over (issue 7, items 2-3).

Item 2: two `feed worker` processes share a fan-out; one gets SIGTERM while it runs
chunks of it. Item 3: one event enqueued 100 times at once, and again after arq has
forgotten the job's result.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from arq.constants import result_key_prefix
from prometheus_client import REGISTRY

from config.tables import KOOS, REACTIONS, RELATIONS, USERS
from feed import keys
from feed._embedded import free_port
from feed.jobs import APPLY_EVENT
from feed.models import User
from feed.services import Services
from tests.conftest import uid
from tests.fault._procs import scrape_metric, spawn_worker, stop_process, tail
from tests.helpers import drain, event_job, follow, koo, now_ms, react

pytestmark = pytest.mark.fault

# --- item 2: SIGTERM one of two workers mid-fan-out -------------------------------------

FOLLOWERS = 4_000
CHUNK = 200
ACTIVE = 200
TERM_AT = 0.25  # SIGTERM once this share of the chunks is done
FINISH_SECONDS = 60


async def _load_author(services: Services, followers_count: int) -> tuple[str, list[str]]:
    """An author and their followers, bulk-loaded as the events would have stored them."""
    author = uid("author")
    followers = [f"{author}-f{i:05d}" for i in range(followers_count)]
    at = now_ms()
    await services.stores.users.load_many(
        [(User(author, "@a", "hi", "ap-south-1", at, followers_count, 0), False)]
        + [(User(f, "@f", "hi", "ap-south-1", at, 0, 1), False) for f in followers],
        at=at,
    )
    await services.stores.relations.load_many(
        [(f, keys.REL_FOLLOW, author) for f in followers], at=at
    )
    return author, followers


async def _activate(services: Services, readers: list[str]) -> None:
    """Make readers active: their cached timeline exists, so fan-out pushes into it."""
    semaphore = asyncio.Semaphore(16)

    async def one(reader: str) -> None:
        async with semaphore:
            assert await services.manager.populate(reader)

    await asyncio.gather(*(one(r) for r in readers))


async def _koo_item(services: Services, koo_id: str) -> dict[str, Any]:
    return await services.stores.koos.get(koo_id, consistent=True) or {}


def _stopping_jobs(log: Path) -> int | None:
    """How many jobs the worker said it was running when the signal came."""
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = orjson.loads(line)
            if record.get("message") == "stopping: waiting for running jobs":
                return int(record["jobs"])
    return None


@pytest.mark.slow
async def test_sigterm_one_of_two_workers_mid_fanout(services: Services, tmp_path: Path
                                                     ) -> None:
    """Pass criterion: two workers share a 4,000-follower fan-out (20 chunks of 200);
    the one SIGTERMed while running chunks of it exits 0 before the fan-out is done, and
    the other finishes it within 60 s (the koo's fan-out is done), every follower has the koo
    exactly once in DynamoDB (one row, under the koo's key) and every active follower
    exactly once in the hot cache."""
    settings = services.settings
    author, followers = await _load_author(services, FOLLOWERS)
    active = followers[:ACTIVE]
    await _activate(services, active)
    total_chunks = FOLLOWERS // CHUNK

    ports = free_port(), free_port()
    logs = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    worker_a, worker_b = (
        spawn_worker(settings, log, "--queue", "realtime", FEED_FANOUT_CHUNK_SIZE=str(CHUNK),
                     FEED_WORKER_MAX_JOBS="2", FEED_LOG_LEVEL="INFO",
                     FEED_WORKER_METRICS_PORT=str(port))
        for log, port in zip(logs, ports, strict=True)
    )
    log_a, log_b = logs
    try:
        # Both workers are up (a worker serves its metrics once its services are open)
        # before the koo comes.
        for worker, log, port in ((worker_a, log_a, ports[0]), (worker_b, log_b, ports[1])):
            await scrape_metric(worker, log, port, "feed_fanout_entries_total", wait=60)

        koo_id = uid("k")
        await services.publisher.publish([koo(koo_id, author)])
        deadline = time.monotonic() + 120
        while len((await _koo_item(services, koo_id)).get("fanout_done") or ()) \
                < total_chunks * TERM_AT:
            assert worker_a.poll() is None, tail(log_a)
            assert time.monotonic() < deadline, "the fan-out never got going"
            await asyncio.sleep(0.05)
        worker_a.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker_a.wait, 40) == 0, tail(log_a)
        done_when_a_left = len((await _koo_item(services, koo_id)).get("fanout_done") or ())
        running_at_term = _stopping_jobs(log_a)
        assert running_at_term is not None, tail(log_a)
        assert running_at_term >= 1, "worker A was idle when SIGTERMed: not mid-fan-out"
        assert done_when_a_left < total_chunks, (
            "the SIGTERMed worker finished the whole fan-out: the other had nothing to do")

        started = time.monotonic()
        while (item := await _koo_item(services, koo_id)).get("fanout_state") != "done":
            assert worker_b.poll() is None, tail(log_b)
            assert time.monotonic() - started < FINISH_SECONDS, (
                f"the remaining worker did not finish within {FINISH_SECONDS} s: "
                f"{len(item.get('fanout_done') or ())}/{total_chunks} chunks")
            await asyncio.sleep(0.2)
        finished_in = time.monotonic() - started
        by_b = await scrape_metric(worker_b, log_b, ports[1], "feed_fanout_entries_total")
        worker_b.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker_b.wait, 40) == 0, tail(log_b)
    finally:
        stop_process(worker_a)
        stop_process(worker_b)

    assert by_b >= CHUNK, f"the remaining worker delivered {by_b} entries"
    sort_key = keys.sort_key(int(item["created_at"]), koo_id)
    rows = await services.stores.db.batch_get(
        "timelines", [{"reader_id": f, "sk": sort_key} for f in [author, *followers]]
    )
    assert len(rows) == FOLLOWERS + 1
    assert {row["reader_id"] for row in rows} == {author, *followers}
    # No second row for the koo under another key in any active follower's timeline.
    for reader in active[:50]:
        entries, _ = await services.stores.timelines.page(reader, limit=100)
        assert [e.koo_id for e in entries].count(koo_id) == 1, reader
    pipe = services.cache.redis.pipeline(transaction=False)
    for reader in active:
        pipe.zrange(keys.timeline(reader), 0, -1)
    cached = await pipe.execute()
    assert all(members.count(koo_id) == 1 for members in cached)
    print(f"SIGTERM with {running_at_term} jobs running; {done_when_a_left}/{total_chunks} "
          f"chunks done when it exited; the other delivered {by_b:.0f} entries and finished "
          f"{finished_in:.1f} s later")


# --- item 3: the same event 100 times at once, and after arq's result expired ---------------

COPIES = 100
FAN = 20
ACTIVE_FANS = 5


def _runs(event: dict[str, Any], outcome: str) -> float:
    """How many times this process's workers applied an event of this type with this
    outcome (the feed_events_total counter)."""
    value = REGISTRY.get_sample_value(
        "feed_events_total", {"type": event["type"], "outcome": outcome})
    return value or 0.0


async def _publish_copies(services: Services, events: list[dict[str, Any]]) -> None:
    """Each event published COPIES times, all at once."""
    await asyncio.gather(*(
        services.publisher.publish([dict(e)]) for e in events for _ in range(COPIES)
    ))


async def _queued(services: Services) -> int:
    """Jobs waiting on the realtime queue (this test's database holds nothing else)."""
    return int(await services.queue_redis.zcard(keys.QUEUE_REALTIME))


async def _state(services: Services, koo_id: str, author: str, fan: str, readers: list[str],
                 active: list[str]) -> dict[str, Any]:
    """Everything the events touched: rows, counters, timelines, cached entries."""
    db = services.stores.db
    koo_item = await db.get(KOOS, {"koo_id": koo_id}, consistent=True) or {}
    koo_item.pop("fanout_deadline", None)
    state: dict[str, Any] = {"koo": koo_item}
    for user in (author, fan):
        state[f"user:{user}"] = await db.get(USERS, {"user_id": user}, consistent=True)
    state["relation"] = await db.get(
        RELATIONS, {"user_id": fan, "rel": keys.relation_sk(keys.REL_FOLLOW, author)},
        consistent=True)
    state["reaction"] = await db.get(
        REACTIONS, {"koo_id": koo_id, "rk": keys.reaction_sk(fan, "like")}, consistent=True)
    for reader in readers:
        entries, _ = await services.stores.timelines.page(reader, limit=100)
        state[f"timeline:{reader}"] = [(e.koo_id, e.created_at) for e in entries]
    redis = services.cache.redis
    for reader in active:
        state[f"cached:{reader}"] = await redis.zrange(keys.timeline(reader), 0, -1,
                                                       withscores=True)
    cached_koo: Any = redis.hgetall(keys.koo(koo_id))
    state["cached koo"] = await cached_koo
    return state


async def test_same_event_100_times_at_once_then_after_result_expired(
    services: Services,
) -> None:
    """Pass criterion: each of three events (a koo fanned out to 20 followers, a like of
    it, a follow of its author) published 100 times at once is queued once and applied
    exactly once; published 100 times again after arq's result for it is gone (deleted,
    as its expiry would), it is queued and run exactly once more, as a duplicate; and
    the rows, counters (followers, following, likes), stored and cached timelines are
    the same as after the first time: one timeline entry per reader, likes 1, followers
    and following up by exactly 1."""
    author, fans = await _load_author(services, FAN)
    active = fans[:ACTIVE_FANS]
    at = now_ms()
    fan = uid("fan")  # follows the author and likes the koo
    await services.stores.users.load_many([(User(fan, "@n", "hi", "ap-south-1", at, 0, 0),
                                            False)], at=at)
    await _activate(services, [*active, fan])
    koo_id = uid("k")
    created = koo(koo_id, author)
    later = [follow(fan, author), react("like", koo_id, fan)]
    everything = [created, *later]
    readers = [author, fan, *fans]

    applied_before = [_runs(e, "applied") for e in everything]
    duplicates_before = [_runs(e, "duplicate") for e in everything]
    # The koo first (the like needs it), then the follow and the like.
    for batch in ([created], later):
        await _publish_copies(services, batch)
        assert await _queued(services) == len(batch)
        await drain(services)
    assert [_runs(e, "applied") - b for e, b in zip(everything, applied_before, strict=True)] \
        == [1, 1, 1]
    first = await _state(services, koo_id, author, fan, readers, [*active, fan])
    assert int(first["koo"]["likes"]) == 1
    assert int(first[f"user:{author}"]["followers"]) == FAN + 1
    assert int(first[f"user:{fan}"]["following"]) == 1
    for reader in readers:
        assert [k for k, _ in first[f"timeline:{reader}"]].count(koo_id) == 1, reader
    for reader in [*active, fan]:
        assert [m for m, _ in first[f"cached:{reader}"]].count(koo_id) == 1, reader

    # While arq keeps the result, a re-enqueue is refused outright.
    for e in everything:
        assert not await services.jobs.enqueue(APPLY_EVENT, e,
                                               job_id=event_job(e))
    # Then the result expires: arq forgets the job id.
    results = [result_key_prefix + event_job(e) for e in everything]
    assert await services.queue_redis.delete(*results) == len(everything)

    await _publish_copies(services, everything)
    assert await _queued(services) == len(everything)
    await drain(services)
    assert await services.queue_redis.exists(*results) == len(everything)  # they ran again
    assert [_runs(e, "applied") - b for e, b in zip(everything, applied_before, strict=True)] \
        == [1, 1, 1]
    assert [_runs(e, "duplicate") - b
            for e, b in zip(everything, duplicates_before, strict=True)] == [1, 1, 1]
    second = await _state(services, koo_id, author, fan, readers, [*active, fan])
    changed = sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))
    assert not changed, {k: (first.get(k), second.get(k)) for k in changed}
