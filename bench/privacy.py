"""Data privacy: how long an erasure takes, and what a profile kept in its home region
costs a read.

    bash scripts/dynamodb-local.sh start 8769
    .venv/bin/python -m bench.privacy --quick                   # 200 followers, 30 koos
    .venv/bin/python -m bench.privacy --json bench/out/privacy.json
    bash scripts/dynamodb-local.sh stop 8769

Options: ``--dynamodb-endpoint URL`` (default http://127.0.0.1:8769), ``--redis-url URL``
(the queue's Redis; default redis://127.0.0.1:6379/8) and ``--cache-redis-url URL``
(default redis://127.0.0.1:6379/9): both are **flushed** at the start and the end
(database 0 is refused), ``--followers N`` (2,000) and ``--koos N`` (300), ``--reads N``
(timed reads per row; default 300), ``--quick``, ``--json PATH``.

1. Erasure. A user whose profile lives in another home region (a second table prefix
   on the same endpoint stands in for it) with ``--followers`` followers and ``--koos``
   koos, each delivered to every follower's timeline (one row per follower and koo, as
   a fan-out leaves them), one like per follower on their koos, their own reaction and
   follows. Users, relations, koos and timeline rows are loaded in bulk in the form the
   events produce; then the ``user_deleted`` event is applied and the erasure runs
   (``Erasure.run``, in this process, one run after another as the job would) until it
   is done. Reported: the wall time, per step, and what was removed.
2. Reads. Two readers with the same follows and timeline, one whose profile lives here
   and one whose profile lives in its home region (so the cache here holds only its id,
   region pointer and counters). A feed page (``Reader.feed``, limit 20, warm cache) and
   the profile (``Reader.profile``) of each are timed, alternating, ``--reads`` times;
   the regional reader's page reads its language from its region only when the page
   has recommended slots and no stored recommended list (``with trending``), which is
   timed as a third row. The regional store is on the same machine here, so its extra
   cost is one local round trip; across regions it is one cross-region round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    check_flushable_dbs,
    command_line,
    environment,
    fmt_ms,
    markdown_table,
    percentile,
    target,
)
from config.settings import Settings
from feed import keys
from feed.erasure import STEPS, Erasure
from feed.events import typed, validate_event
from feed.models import User
from feed.reader import Reader
from feed.services import Services, open_services
from feed.store import Entry, create_regional_tables, create_tables, drop_tables, open_regions
from feed.store.koos import FanoutState

HOME = "ap-south-1"
AWAY = "eu-west-1"


@dataclass
class Args:
    dynamodb_endpoint: str
    redis_url: str
    cache_redis_url: str
    followers: int
    koos: int
    reads: int
    json: str | None
    steps: dict[str, float] = field(default_factory=dict)


def parse(argv: Sequence[str] | None) -> Args:
    parser = argparse.ArgumentParser(prog="python -m bench.privacy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8769")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--followers", type=int, default=2000)
    parser.add_argument("--koos", type=int, default=300)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="200 followers, 30 koos, 100 reads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    check_flushable_dbs(parser, args, "redis_url", "cache_redis_url")
    if args.quick:
        args.followers, args.koos, args.reads = 200, 30, 100
    return Args(args.dynamodb_endpoint, args.redis_url, args.cache_redis_url, args.followers,
                args.koos, args.reads, args.json)


async def _flush(*urls: str) -> None:
    for url in urls:
        redis = Redis.from_url(url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()


async def load(svc: Services, victim: str, followers: list[str], koo_ids: list[str],
               friend: str) -> int:
    """The victim's world in bulk; returns the timeline rows written."""
    now = int(time.time() * 1000) - 3_600_000
    users = [(User(victim, "@victim", "pt", AWAY, now, len(followers), 1), False),
             (User(friend, "@friend", "hi", HOME, now, 1, 0), False)]
    users += [(User(f, f"@{f}", "hi", HOME, now, 0, 1), False) for f in followers]
    await svc.stores.users.load_many(users, at=now)
    await svc.stores.relations.load_many(
        [(f, keys.REL_FOLLOW, victim) for f in followers] + [(victim, keys.REL_FOLLOW, friend)],
        at=now)
    rows = 0
    for i, koo_id in enumerate(koo_ids):
        created = now + i
        event = typed(validate_event({
            "type": "koo_created", "event_id": f"bench-{koo_id}", "occurred_at": created,
            "koo_id": koo_id, "author_id": victim, "text": f"text {i}", "lang": "pt"}))
        item = svc.stores.koos.create_item(event, pull=False)["Put"]["Item"]  # type: ignore[arg-type]
        item["fanout_state"] = FanoutState.DONE
        for name in ("fanout_shard", "fanout_deadline"):
            item.pop(name, None)
        await svc.stores.db.put("koos", item)
        rows += await svc.stores.timelines.add([victim, *followers], Entry(koo_id, victim,
                                                                           created))
    for i, f in enumerate(followers):
        await svc.applier.apply(typed(validate_event({
            "type": "reaction_added", "event_id": f"bench-like-{f}", "occurred_at": now + i,
            "koo_id": koo_ids[i % len(koo_ids)], "user_id": f, "kind": "like"})))
    return rows


async def erase(svc: Services, victim: str, steps: dict[str, float]
                ) -> tuple[float, dict[str, int]]:
    """Apply ``user_deleted`` and run the erasure to the end; (seconds, counts)."""
    erasure = Erasure(svc.manager, svc.jobs)
    started = time.monotonic()
    await svc.applier.apply(typed(validate_event({
        "type": "user_deleted", "event_id": f"bench-erase-{victim}",
        "occurred_at": int(time.time() * 1000), "user_id": victim})))
    run = 0
    while True:
        before = await erasure.progress(victim)
        assert before is not None
        piece = time.monotonic()
        outcome = await erasure.run(victim, run, budget=0.0)  # one piece per run
        steps[before.step] = steps.get(before.step, 0.0) + time.monotonic() - piece
        run += 1
        if outcome == "done":
            progress = await erasure.progress(victim)
            assert progress is not None
            return time.monotonic() - started, progress.counts


async def time_reads(svc: Services, here: str, away: str, reads: int
                     ) -> dict[str, list[float]]:
    reader = Reader(svc.manager)
    samples: dict[str, list[float]] = {
        "feed, profile here": [], "feed, profile in its region": [],
        "feed with trending, profile here": [],
        "feed with trending, profile in its region": [],
        "profile here": [], "profile in its region": []}
    for user in (here, away):  # warm: stored lists, and a first page caches the state
        await reader.refresh_recommendations(user)
        assert await svc.stores.recommendations.load(user, "koos"), "no stored list"
        await reader.feed(user, limit=20)
        await reader.profile(user)

    async def timed(name: str, call: Callable[[], Awaitable[Any]]) -> None:
        t = time.perf_counter()
        await call()
        samples[name].append((time.perf_counter() - t) * 1000)

    for _ in range(reads):
        await timed("feed, profile here", lambda: reader.feed(here, limit=20))
        await timed("feed, profile in its region", lambda: reader.feed(away, limit=20))
        await timed("profile here", lambda: reader.profile(here))
        await timed("profile in its region", lambda: reader.profile(away))
        # No stored recommended list: the page falls back to trending, by language.
        for user, where in ((here, "here"), (away, "in its region")):
            await svc.cache.drop_recommendations(user, "koos")
            await svc.stores.recommendations.erase(user)
            await timed(f"feed with trending, profile {where}",
                        functools.partial(reader.feed, user, limit=20))
            await reader.refresh_recommendations(user)
    return samples


async def run(args: Args) -> Outcome:
    started = time.monotonic()
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    settings = Settings(redis_url=args.redis_url, cache_redis_url=args.cache_redis_url,
                        dynamodb_endpoint=args.dynamodb_endpoint, table_prefix=prefix,
                        api_tokens=("bench-token-123",), log_level="WARNING",
                        regions={AWAY: (args.dynamodb_endpoint, f"{prefix}eu_")})
    await _flush(args.redis_url, args.cache_redis_url)
    redis = Redis.from_url(args.cache_redis_url)
    env = await environment(redis, args.cache_redis_url, args.dynamodb_endpoint)
    await redis.aclose()
    victim = f"victim{uuid.uuid4().hex[:8]}"
    followers = [f"{victim}-f{i:05d}" for i in range(args.followers)]
    koo_ids = [f"{victim}-k{i:04d}" for i in range(args.koos)]
    friend = f"friend{uuid.uuid4().hex[:8]}"
    async with open_services(settings) as svc:
        try:
            await create_tables(svc.stores.db)
            async with open_regions(settings) as regions:
                await create_regional_tables(regions)
            loaded_at = time.monotonic()
            rows = await load(svc, victim, followers, koo_ids, friend)
            loaded_s = time.monotonic() - loaded_at
            erase_s, counts = await erase(svc, victim, args.steps)

            here, away = f"here{uuid.uuid4().hex[:6]}", f"away{uuid.uuid4().hex[:6]}"
            at = int(time.time() * 1000) - 60_000
            await svc.stores.users.load_many(
                [(User(here, "@here", "hi", HOME, at, 0, 1), False),
                 (User(away, "@away", "hi", AWAY, at, 0, 1), False)], at=at)
            # Trending koos in the readers' language by an author they do not follow:
            # what their stored recommended lists are made of.
            for i in range(40):
                await svc.applier.apply(typed(validate_event({
                    "type": "koo_created", "event_id": f"bench-t-{i}", "occurred_at": at + i,
                    "koo_id": f"{friend}-t{i}", "author_id": f"{friend}x", "text": "trending",
                    "lang": "hi"})))
            for user in (here, away):
                await svc.applier.apply(typed(validate_event({
                    "type": "user_followed", "event_id": f"bench-f-{user}", "occurred_at": at,
                    "follower_id": user, "followee_id": friend})))
                for i in range(40):
                    await svc.applier.apply(typed(validate_event({
                        "type": "koo_created", "event_id": f"bench-{user}-{i}",
                        "occurred_at": at + i, "koo_id": f"{user}-k{i}", "author_id": friend,
                        "text": "hello", "lang": "hi"})))
            samples = await time_reads(svc, here, away, args.reads)
        finally:
            with contextlib.suppress(Exception):
                await drop_tables(svc.stores.db)
            with contextlib.suppress(Exception):
                async with open_regions(settings) as regions:
                    for db in regions.values():
                        await drop_tables(db)
    await _flush(args.redis_url, args.cache_redis_url)

    removed = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    erase_rows = [["erasure, wall time", f"{erase_s:.1f} s",
                   f"{args.followers:,} followers, {args.koos:,} koos, {rows:,} timeline rows "
                   f"(loaded in {loaded_s:.0f} s)"]]
    erase_rows += [[f"  step {name}", f"{args.steps[name]:.1f} s", ""]
                   for name in STEPS if name in args.steps]
    read_rows = [[name, fmt_ms(percentile(v, 50) / 1000), fmt_ms(percentile(v, 99) / 1000),
                  str(len(v))]
                 for name, v in samples.items()]
    markdown = (markdown_table(["", "measured", "what"], erase_rows) + "\n\nRemoved: "
                + removed + "\n\n"
                + markdown_table(["read (warm cache)", "p50", "p99", "n"], read_rows))
    command = command_line()
    figures: dict[str, float | None] = {"erasure_s": erase_s}
    figures.update({f"{name} p50 ms": percentile(v, 50) for name, v in samples.items()})
    return Outcome(
        markdown=markdown, heading="## Data privacy: erasure time and regional profiles",
        env=env, command=command, elapsed_s=time.monotonic() - started, json_path=args.json,
        document=lambda: bench_document(
            "privacy", "Data privacy", command, env, markdown, figures,
            latency_ms=samples, notes=[f"removed: {removed}"],
            targets=[target(f"erasure <= 300 s ({args.followers:,} followers, "
                            f"{args.koos:,} koos)", erase_s, erase_s <= 300)],
            elapsed_s=time.monotonic() - started),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse, run)


if __name__ == "__main__":
    raise SystemExit(main())
