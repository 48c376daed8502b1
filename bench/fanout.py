"""Fan-out benchmark: the service's own code beside raw client loops, in the same run.

    .venv/bin/python -m bench.fanout [--quick] [--followers 1000,10000,100000]
        [--dynamodb-endpoint URL] [--repeat N] [--json out.json]

1. Redis: ``feed.cache.Cache.push`` (one Lua script per reader, pipelined per
   chunk of 1,000 readers) into N existing cached timelines, beside a raw
   redis.asyncio pipelined ``ZADD`` of the same entries (1,000 commands per
   pipeline; the reference). More loops show where the gap comes from:
   the same Lua script sent with bare ``pipe.evalsha`` (no Cache wrapper),
   ``ZADD`` + ``ZREMRANGEBYRANK`` without a script, (a proposal, not the
   service's code) the script's logic over a whole chunk in one EVALSHA, and
   Stream-Framework 1.4.0's own fan-out (in its venv, bench/sf-env.sh, driven
   through ``bench.sf.client``) on the same Redis, interleaved the same way.
2. DynamoDB: ``feed.store.timelines.Timelines.add`` per chunk of 1,000 readers
   (BatchWriteItem, 25 per request, FEED_DYNAMODB_CONCURRENCY in flight) beside
   a raw *direct* BatchWriteItem loop (the direct transport's ``send``: no retry
   layer, no codec) writing the same items to the same table with the same
   concurrency, UnprocessedItems re-sent. ``--dynamodb-client aioboto3`` puts the
   service on aioboto3 (parts 2 and 3); the raw loop stays direct.
3. Delivery: koo_created events published through the service's publisher,
   applied and fanned out by an in-process worker (``workers.runner.run_workers``),
   timed until the koo is in every active follower's cached timeline.

The loops being compared write the same fan-outs side by side, alternating
chunk by chunk (the order rotates every chunk), so a noisy neighbour on this
shared 2-core machine hits them alike; each size reports total entries / total
time per loop, their ratio, and the median and interquartile range of the
per-chunk ratios. Small sizes run more often (at least 20,000 Redis entries
and 10,000 DynamoDB items per loop); DynamoDB sizes that would exceed
--dynamodb-budget get fewer runs or are skipped, and the report says so.
Everything lives in one Redis database (default 5: flushed at the start of
each part and at the end) and in DynamoDB tables under a fresh prefix
(dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from bench._common import (
    Outcome,
    Stopwatch,
    bench_document,
    bench_main,
    command_line,
    environment,
    environment_table,
    fmt_int,
    fmt_ms,
    fmt_pct,
    markdown_table,
    median,
    percentile,
    progress,
    redis_db,
    target,
)
from bench.sf import client as sf_client
from config.settings import Settings
from config.tables import TIMELINES
from feed import keys, metrics
from feed.cache import Cache, RedisClient
from feed.jobs import REALTIME
from feed.models import User
from feed.services import Services, open_cache_redis, open_services
from feed.store import Dynamo, Entry, create_tables, drop_tables, open_dynamo
from feed.store._transport import DirectTransport, Transport
from feed.store.timelines import Timelines

log = logging.getLogger("bench.fanout")

DEFAULT_FOLLOWERS = (1_000, 10_000, 100_000)
QUICK_FOLLOWERS = (1_000, 10_000)
DEFAULT_DELIVERY = ((100, 20), (10_000, 5))  # (followers, samples)
QUICK_DELIVERY = ((100, 10), (10_000, 3))
REDIS_TARGET = 0.60
SF_TARGET = 3.0  # the service's fan-out over Stream-Framework's, same Redis, same run
DYNAMODB_TARGET = 0.80  # of a raw direct BatchWriteItem loop (the cold-path target)
SERVICE_LABEL = {"direct": "direct", "aioboto3": "aioboto3"}
DELIVERY_TARGETS = {100: 0.100, 10_000: 1.0}  # p99 seconds: the delivery targets
READER = "bfr"  # reader ids of parts 1 and 2: bfr000000 ...
AUTHOR = "bfauthor"
REDIS_MIN_ENTRIES = 20_000  # per loop and size: small sizes run more often
DYNAMODB_MIN_ITEMS = 10_000
DYNAMODB_CONCURRENCY = Settings().dynamodb_concurrency
VISIBLE_TIMEOUT = 60.0

# What feed/cache.py could do instead (a proposal, measured beside the service): the
# service's _PUSH for every reader of a chunk in ONE script call. Standalone Redis only
# (on a Cluster the keys of one call must share a slot).
_PUSH_MANY = """
local keep = tonumber(ARGV[3])
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', key, ARGV[1], ARGV[2])
    if redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1)) > 0 then
      redis.call('ZREM', key, '!all')
    end
    n = n + 1
  end
end
return n
"""

# Which of the readers (KEYS) lack the koo (ARGV[1]) in their cached timeline: 1-based
# indexes. One round trip per poll, so watching 10,000 timelines costs the worker little.
_MISSING = """
local missing = {}
for i, key in ipairs(KEYS) do
  if not redis.call('ZSCORE', key, ARGV[1]) then missing[#missing + 1] = i end
end
return missing
"""


# --- options ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    followers: tuple[int, ...]
    delivery: tuple[tuple[int, int], ...]
    redis_url: str
    dynamodb_endpoint: str
    repeat: int
    json: str | None
    quick: bool
    skip: frozenset[str]
    dynamodb_budget: float
    active_fraction: float
    chunk: int
    sf: tuple[str, ...] = ()
    dynamodb_client: str = "direct"


def _sizes(raw: str) -> tuple[int, ...]:
    sizes = tuple(int(x.replace("_", "")) for x in raw.split(",") if x.strip())
    if not sizes or any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return tuple(sorted(set(sizes)))


def _delivery(raw: str) -> tuple[tuple[int, int], ...]:
    pairs = []
    for part in raw.split(","):
        followers, _, samples = part.partition(":")
        if not samples:
            raise argparse.ArgumentTypeError("FOLLOWERS:SAMPLES pairs, e.g. 100:20,10000:5")
        pairs.append((int(followers), int(samples)))
    return tuple(pairs)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description="Fan-out into Redis and DynamoDB through the service's code, beside raw "
        "client loops, and delivery latency through the worker; prints a Markdown report.",
    )
    parser.add_argument("--followers", type=_sizes, default=None,
                        help="follower counts for parts 1 and 2 (default 1000,10000,100000; "
                        "--quick: 1000,10000)")
    parser.add_argument("--delivery", type=_delivery, default=None,
                        help="FOLLOWERS:SAMPLES for part 3 (default 100:20,10000:5; "
                        "--quick: 100:10,10000:3)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5",
                        help="Redis database for everything (flushed!); not database 0")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766",
                        help="DynamoDB endpoint (start one: bash scripts/dynamodb-local.sh "
                        "start 8766)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="fan-outs of each size per loop, at least (default 3; --quick: 2); "
                        "small sizes run more often")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="a small run: 1,000 and 10,000 followers, fewer samples")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to leave out: redis, dynamodb, delivery")
    parser.add_argument("--dynamodb-budget", type=float, default=240.0,
                        help="seconds the DynamoDB part may spend on one size; larger sizes get "
                        "fewer repeats or are skipped (default 240)")
    parser.add_argument("--active-fraction", type=float, default=1.0,
                        help="share of followers with a cached timeline in part 3 (default 1)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="readers per chunk (default: the service's FEED_FANOUT_CHUNK_SIZE, "
                        "1000)")
    parser.add_argument("--dynamodb-client", choices=("direct", "aioboto3"), default="direct",
                        help="the service's DynamoDB transport in parts 2 and 3 (default "
                        "direct, the service's default); the raw loop is always direct")
    parser.add_argument("--sf", default="auto",
                        help="Stream-Framework variants to run beside the service in part 1: "
                        "auto (those bench/sf-env.sh has built), none, or a list of "
                        "current,redis2 (built if missing)")
    args = parser.parse_args(argv)
    skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
    if skip - {"redis", "dynamodb", "delivery"}:
        parser.error(f"--skip: unknown part(s) {sorted(skip - {'redis', 'dynamodb', 'delivery'})}")
    try:
        db = redis_db(args.redis_url)
    except ValueError:
        parser.error("--redis-url: cannot tell the database number")
    if db == 0:
        parser.error("--redis-url must name a database other than 0 (it is flushed)")
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 0 < args.active_fraction <= 1:
        parser.error("--active-fraction must be in (0, 1]")
    return Options(
        followers=args.followers or (QUICK_FOLLOWERS if args.quick else DEFAULT_FOLLOWERS),
        delivery=args.delivery or (QUICK_DELIVERY if args.quick else DEFAULT_DELIVERY),
        redis_url=args.redis_url,
        dynamodb_endpoint=args.dynamodb_endpoint.rstrip("/"),
        repeat=repeat,
        json=args.json,
        quick=args.quick,
        skip=skip,
        dynamodb_budget=args.dynamodb_budget,
        active_fraction=args.active_fraction,
        chunk=args.chunk or Settings().fanout_chunk_size,
        dynamodb_client=args.dynamodb_client,
        sf=_sf_variants(args.sf, parser),
    )


def _sf_variants(raw: str, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    if raw == "none":
        return ()
    if raw == "auto":
        return tuple(sf_client.available())
    wanted = tuple(v for v in raw.split(",") if v)
    unknown = set(wanted) - set(sf_client.VARIANTS)
    if unknown:
        parser.error(f"--sf: unknown variant(s) {sorted(unknown)}")
    ready, output = sf_client.ensure(wanted)
    if set(wanted) - set(ready):
        parser.error(f"--sf: could not build {sorted(set(wanted) - set(ready))}: {output}")
    return wanted


# --- helpers ----------------------------------------------------------------------------


def chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def readers(n: int, prefix: str = READER) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


@dataclass
class Comparison:
    """Loops run side by side on the same fan-outs of ``size`` readers, interleaved chunk
    by chunk (the order rotates every chunk), so a noisy neighbour hits them alike."""

    size: int
    names: list[str]
    seconds: dict[str, list[float]] = field(default_factory=dict)  # per fan-out of size
    chunk_seconds: dict[str, list[float]] = field(default_factory=dict)  # per chunk

    def __post_init__(self) -> None:
        for name in self.names:
            self.seconds.setdefault(name, [])
            self.chunk_seconds.setdefault(name, [])

    @property
    def runs(self) -> int:
        return len(self.seconds[self.names[0]])

    def rate(self, name: str) -> float:
        """Entries per second over every run (total entries / total time)."""
        spent = sum(self.seconds[name])
        return self.size * len(self.seconds[name]) / spent if spent else math.nan

    def ratio(self, name: str, base: str) -> float:
        top, bottom = self.rate(name), self.rate(base)
        return top / bottom if bottom else math.nan

    def chunk_ratios(self, name: str, base: str) -> list[float]:
        """Rate of ``name`` over rate of ``base`` for each chunk they both wrote."""
        return [b / a for a, b in zip(self.chunk_seconds[name], self.chunk_seconds[base],
                                      strict=True)]

    def as_json(self, main: str, base: str) -> dict[str, Any]:
        per_chunk = self.chunk_ratios(main, base)
        return {
            "followers": self.size,
            "runs": self.runs,
            "rate_per_s": {k: self.rate(k) for k in self.names},
            "run_rates_per_s": {k: [self.size / s for s in v] for k, v in self.seconds.items()},
            "ratio": {k: self.ratio(k, base) for k in self.names if k != base},
            "chunk_ratio_median": median(per_chunk),
            "chunk_ratio_p25": percentile(per_chunk, 25),
            "chunk_ratio_p75": percentile(per_chunk, 75),
            "chunk_seconds": self.chunk_seconds,
        }


def ratio_cell(comparison: Comparison, name: str, base: str) -> str:
    return fmt_pct(comparison.ratio(name, base))


def spread_cell(comparison: Comparison, name: str, base: str) -> str:
    per_chunk = comparison.chunk_ratios(name, base)
    if len(per_chunk) < 2:
        return fmt_pct(median(per_chunk))
    return (f"{fmt_pct(median(per_chunk))} ({fmt_pct(percentile(per_chunk, 25))}-"
            f"{fmt_pct(percentile(per_chunk, 75))})")


ChunkLoop = Callable[[Sequence[str], str, int], Awaitable[int]]


async def interleave(
    comparison: Comparison, loops: dict[str, ChunkLoop], users: Sequence[str], runs: int,
    chunk: int, created: int, *, reset: Callable[[], Awaitable[None]] | None = None,
    reset_every: int = 0,
) -> int:
    """Run every loop ``runs`` times over ``users`` chunk by chunk, alternating loops within
    each chunk (``reset``, untimed, before every ``reset_every`` runs); returns the next
    unused ``created`` value."""
    names = comparison.names
    parts = chunks(users, chunk)
    for run in range(runs):
        if reset is not None and reset_every and run % reset_every == 0:
            await reset()
        koos = {name: (f"k{comparison.size}-{run}-{name}", created + i)
                for i, name in enumerate(names)}
        created += len(names)
        totals = dict.fromkeys(names, 0.0)
        for index, part in enumerate(parts):
            shift = (run * len(parts) + index) % len(names)
            for name in names[shift:] + names[:shift]:
                koo_id, at = koos[name]
                with Stopwatch() as sw:
                    written = await loops[name](part, koo_id, at)
                if written != len(part):
                    raise RuntimeError(f"{name}: wrote {written} of {len(part)}")
                comparison.chunk_seconds[name].append(sw.seconds)
                totals[name] += sw.seconds
        for name in names:
            comparison.seconds[name].append(totals[name])
    return created


async def flush(redis: RedisClient) -> None:
    await redis.flushdb()


# --- part 1: Redis ----------------------------------------------------------------------


def redis_loops(cache: Cache) -> dict[str, ChunkLoop]:
    """The loops of part 1 over one chunk of readers; each returns how many it wrote."""
    redis = cache.redis

    async def service(part: Sequence[str], koo_id: str, created: int) -> int:
        return await cache.push(part, koo_id, created)

    async def zadd(part: Sequence[str], koo_id: str, created: int) -> int:
        pipe = redis.pipeline(transaction=False)
        for reader in part:
            pipe.zadd(keys.timeline(reader), {koo_id: created})
        return sum(await pipe.execute())

    async def evalsha(part: Sequence[str], koo_id: str, created: int) -> int:
        sha = cache._sha["push"]  # the service's own script, already loaded
        args: tuple[Any, ...] = (created, koo_id, cache.keep)  # as Cache.push sends them
        pipe = redis.pipeline(transaction=False)
        for reader in part:
            pipe.evalsha(sha, 1, keys.timeline(reader), *args)
        return sum(await pipe.execute())

    async def zadd_trim(part: Sequence[str], koo_id: str, created: int) -> int:
        trim = -(cache.keep + 1)
        pipe = redis.pipeline(transaction=False)
        for reader in part:
            key = keys.timeline(reader)
            pipe.zadd(key, {koo_id: created})
            pipe.zremrangebyrank(key, 0, trim)
        return sum((await pipe.execute())[::2])  # what the ZADDs added

    many = redis.register_script(_PUSH_MANY) if isinstance(redis, Redis) else None

    async def batched(part: Sequence[str], koo_id: str, created: int) -> int:
        if many is None:
            raise RuntimeError("the batched script needs a standalone Redis")
        return int(await many(keys=[keys.timeline(r) for r in part],
                              args=[created, koo_id, cache.keep]))

    loops: dict[str, ChunkLoop] = {"service": service, "zadd": zadd, "evalsha": evalsha,
                                   "zadd_trim": zadd_trim}
    if many is not None:
        loops["batched"] = batched
    return loops


async def create_timelines(redis: RedisClient, users: Sequence[str], ttl: int) -> None:
    """Make readers active: a cached timeline holding only the ``!ready`` sentinel (an
    existing one is emptied first)."""
    for part in chunks(users, 1_000):
        pipe = redis.pipeline(transaction=False)
        for user in part:
            key = keys.timeline(user)
            pipe.delete(key)
            pipe.zadd(key, {keys.TIMELINE_READY: math.inf})
            pipe.expire(key, ttl)
        await pipe.execute()


def sf_loop(sf: sf_client.StreamFramework) -> ChunkLoop:
    """Stream-Framework's fan-out of one chunk (its Manager splits it into its own tasks of
    100 followers); timed here like the others, so the JSON-lines hop to its process (well
    under 1 % of its time per chunk) counts against it."""

    async def loop(part: Sequence[str], koo_id: str, created: int) -> int:
        await sf.fanout(part, koo_id, created)
        return len(part)

    return loop


async def redis_part(opts: Options, settings: Settings, env: dict[str, str]
                     ) -> list[Comparison]:
    async with contextlib.AsyncExitStack() as stack:
        sfs = [await stack.enter_async_context(
            sf_client.StreamFramework.start(v, opts.redis_url)) for v in opts.sf]
        for sf in sfs:
            env[f"Stream-Framework ({sf.variant})"] = (
                f"{sf.info['stream-framework']}, redis-py {sf.info['redis-py']} "
                f"(hiredis {sf.info['hiredis']}), celery {sf.info.get('celery')}")
        return await _redis_part(opts, settings, sfs)


async def _redis_part(opts: Options, settings: Settings,
                      sfs: Sequence[sf_client.StreamFramework]) -> list[Comparison]:
    redis = await open_cache_redis(settings)
    ttl = settings.active_days * 86_400
    try:
        await flush(redis)
        cache = Cache(redis, settings)
        await cache.load_scripts()
        everyone = readers(max(opts.followers))
        loops = redis_loops(cache)
        for sf in sfs:
            loops[f"sf_{sf.variant}"] = sf_loop(sf)
        names = list(loops)
        created = int(time.time() * 1000)
        warm = Comparison(0, names)
        await create_timelines(redis, everyone[:opts.chunk], ttl)
        created = await interleave(warm, loops, everyone[:opts.chunk], 2, opts.chunk, created)
        results = []
        for n in opts.followers:
            # Small sizes run more often, so each loop writes at least REDIS_MIN_ENTRIES.
            runs = max(opts.repeat, math.ceil(REDIS_MIN_ENTRIES / n))
            # Fresh timelines for each size, emptied again before they would reach 128
            # entries: the compact listpack encoding throughout, nothing trimmed.
            users = everyone[:n]

            async def reset(users: Sequence[str] = users) -> None:
                await create_timelines(redis, users, ttl)
                for sf in sfs:
                    await sf.reset(users)

            comparison = Comparison(n, names)
            with progress(f"redis: {n:,} followers x {runs} runs x {len(names)} loops"):
                created = await interleave(comparison, loops, users, runs, opts.chunk,
                                           created, reset=reset,
                                           reset_every=max(1, 120 // len(names)))
            results.append(comparison)
        return results
    finally:
        await flush(redis)
        await redis.aclose()


# --- part 2: DynamoDB -------------------------------------------------------------------


def dynamodb_loops(db: Dynamo, direct: Transport) -> dict[str, ChunkLoop]:
    """The loops of part 2 over one chunk of readers; each returns how many it wrote.
    ``direct``: the transport of the raw loop (``db``'s own when it is direct)."""
    timelines = Timelines(db)
    table = db.table(TIMELINES)
    concurrency = db.concurrency
    ttl = db.settings.timeline_ttl_days * 86_400

    async def service(part: Sequence[str], koo_id: str, created: int) -> int:
        return await timelines.add(part, Entry(koo_id, AUTHOR, created))

    async def write(batch: list[dict[str, Any]], gate: asyncio.Semaphore) -> None:
        async with gate:
            pending = batch
            while pending:
                response = await direct.send("BatchWriteItem", {"RequestItems": {table: pending}})
                pending = (response.get("UnprocessedItems") or {}).get(table, [])

    async def raw(part: Sequence[str], koo_id: str, created: int) -> int:
        expires = str(int(time.time()) + ttl)
        sk = keys.sort_key(created, koo_id)
        requests = [
            {"PutRequest": {"Item": {
                "reader_id": {"S": reader}, "sk": {"S": sk}, "koo_id": {"S": koo_id},
                "author_id": {"S": AUTHOR}, "expires_at": {"N": expires},
            }}}
            for reader in part
        ]
        gate = asyncio.Semaphore(concurrency)
        await asyncio.gather(*(write(requests[i:i + 25], gate)
                               for i in range(0, len(requests), 25)))
        return len(requests)

    return {"service": service, "raw": raw}


async def dynamodb_part(opts: Options, db: Dynamo, direct: Transport
                        ) -> tuple[list[Comparison], list[str]]:
    loops = dynamodb_loops(db, direct)
    names = list(loops)
    everyone = readers(max(opts.followers))
    created = int(time.time() * 1000)
    created = await interleave(Comparison(0, names), loops, everyone[:opts.chunk], 1,
                               opts.chunk, created)
    results: list[Comparison] = []
    notes: list[str] = []
    for n in opts.followers:
        runs = max(opts.repeat, math.ceil(DYNAMODB_MIN_ITEMS / n))
        if results:
            last = results[-1]
            slowest = min(last.rate(name) for name in names)
            pair = len(names) * n / slowest
            affordable = int(opts.dynamodb_budget // pair)
            if affordable < 1:
                notes.append(f"{n:,} followers skipped: one run of both loops would take "
                             f"~{pair:.0f} s at the {last.size:,}-follower rate, over the "
                             f"--dynamodb-budget of {opts.dynamodb_budget:.0f} s")
                continue
            if affordable < runs:
                notes.append(f"{n:,} followers: {affordable} run(s) instead of {runs} "
                             f"(~{pair:.0f} s per run of both loops; --dynamodb-budget "
                             f"{opts.dynamodb_budget:.0f} s)")
                runs = affordable
        comparison = Comparison(n, names)
        with progress(f"dynamodb: {n:,} followers x {runs} runs x {len(names)} loops"):
            created = await interleave(comparison, loops, everyone[:n], runs, opts.chunk,
                                       created)
        results.append(comparison)
    return results, notes


# --- part 3: delivery through the worker ------------------------------------------------


@dataclass
class Delivery:
    followers: int
    active: int
    samples: int
    latencies: list[float] = field(default_factory=list)  # published -> visible to all
    first: list[float] = field(default_factory=list)  # published -> visible to one
    timeouts: int = 0
    # DynamoDB calls the worker made per koo: operation -> (calls, seconds summed)
    calls: dict[str, tuple[float, float]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "followers": self.followers, "active_followers": self.active,
            "samples": self.samples, "timeouts": self.timeouts,
            "dynamodb_calls_per_koo": {op: {"calls": c, "seconds_summed": t}
                                       for op, (c, t) in self.calls.items()},
            "latencies_s": self.latencies, "first_visible_s": self.first,
            "p50_s": median(self.latencies), "p99_s": percentile(self.latencies, 99),
            "max_s": max(self.latencies, default=math.nan),
            "first_visible_p50_s": median(self.first),
            "target_p99_s": DELIVERY_TARGETS.get(self.followers),
        }


async def wait_visible(
    missing: AsyncScript, readers: Sequence[str], koo_id: str, started: float, limit_s: float,
) -> tuple[float | None, float | None]:
    """Poll until the koo is in every reader's cached timeline: (first seen, all seen),
    seconds after ``started``; None when the timeout passes first."""
    pending = list(readers)
    first: float | None = None
    deadline = started + limit_s
    while time.perf_counter() < deadline:
        lacking = await missing(keys=[keys.timeline(r) for r in pending], args=[koo_id])
        now = time.perf_counter()
        if first is None and len(lacking) < len(readers):
            first = now - started
        if not lacking:
            return first, now - started
        pending = [pending[int(i) - 1] for i in lacking]
        # Poll often while few remain, less often while many do (each poll costs Redis
        # ~0.2 us per pending key and the worker shares this process).
        await asyncio.sleep(0.001 + 0.000_002 * len(pending))
    return first, None


def dynamodb_calls() -> dict[str, tuple[float, float]]:
    """The service's DynamoDB call counter so far: operation -> (calls, seconds summed)."""
    found: dict[str, list[float]] = {}
    for family in metrics.DYNAMODB_CALLS.collect():
        for sample in family.samples:
            op = sample.labels.get("operation", "?")
            if sample.name.endswith("_count"):
                found.setdefault(op, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                found.setdefault(op, [0.0, 0.0])[1] = sample.value
    return {op: (c, t) for op, (c, t) in found.items()}


def per_koo(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
            koos: int) -> dict[str, tuple[float, float]]:
    diff: dict[str, tuple[float, float]] = {}
    for op, (calls, seconds) in after.items():
        calls0, seconds0 = before.get(op, (0.0, 0.0))
        if calls > calls0:
            diff[op] = ((calls - calls0) / koos, (seconds - seconds0) / koos)
    return diff


async def stop_worker(stop: asyncio.Event, worker: asyncio.Task[None]) -> str | None:
    """Stop the in-process worker; a note if it had to be cancelled a second time."""
    stop.set()
    done, _ = await asyncio.wait([worker], timeout=30)  # the queue is idle: ~instant
    if done:
        worker.result()
        return None
    # Seen here: run_workers waiting forever on an arq Worker.main task that had been
    # cancelled yet kept polling. Cancel those again rather than hang the benchmark.
    stuck = [t for t in asyncio.all_tasks()
             if getattr(t.get_coro(), "__qualname__", "") == "Worker.main"]
    for task in stuck:
        task.cancel()
    done, _ = await asyncio.wait([worker], timeout=10)
    if not done:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    return (f"the in-process worker did not stop within 30 s of stop.set(): {len(stuck)} arq "
            "Worker.main task(s) were still polling after run_workers had cancelled them; "
            "cancelled again")


async def wait_idle(services: Services, limit: float = 120.0) -> None:
    """Until the realtime queue is empty and no job is in progress."""
    redis = services.queue_redis
    deadline = time.monotonic() + limit
    quiet = 0
    while time.monotonic() < deadline:
        running = 0
        async for key in redis.scan_iter(match="arq:in-progress:*", count=1000):
            job_id = key.removeprefix(b"arq:in-progress:")
            running += bool(await redis.exists(b"arq:job:" + job_id))
        busy = running or await services.jobs.depth(REALTIME)
        quiet = 0 if busy else quiet + 1
        if quiet >= 3:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the realtime queue did not drain")


def koo_event(koo_id: str, author: str) -> dict[str, Any]:
    return {
        "type": "koo_created", "event_id": f"bench-{uuid.uuid4().hex}",
        "occurred_at": int(time.time() * 1000), "koo_id": koo_id, "author_id": author,
        "text": "fan-out benchmark", "lang": "hi",
    }


async def load_authors(services: Services, sizes: Sequence[int], fraction: float
                       ) -> dict[int, tuple[str, list[str]]]:
    """Authors with the given follower counts (plus a small warm-up author), bulk-loaded;
    returns size -> (author, active followers)."""
    at = int(time.time() * 1000) - 3_600_000
    graph: dict[int, tuple[str, list[str]]] = {}
    users: list[tuple[User, bool]] = []
    follows: list[tuple[str, str, str]] = []
    for size in (10, *sizes):
        author = f"bda{size}"
        followers = [f"bdf{size}x{i:06d}" for i in range(size)]
        users.append((User(author, f"@{author}", "hi", "ap-south-1", at, size, 0), False))
        users += [(User(f, f"@{f}", "hi", "ap-south-1", at, 0, 1), False) for f in followers]
        follows += [(f, keys.REL_FOLLOW, author) for f in followers]
        active = followers[:max(1, round(size * fraction))]
        graph[size] = (author, active)
    await services.stores.users.load_many(users, at=at)
    await services.stores.relations.load_many(follows, at=at)
    ttl = services.settings.active_days * 86_400
    await create_timelines(services.cache.redis, [f for _, a in graph.values() for f in a], ttl)
    return graph


async def delivery_part(opts: Options, settings: Settings) -> tuple[list[Delivery], list[str]]:
    from workers.runner import run_workers  # imports every job module: only when needed

    sizes = [size for size, _ in opts.delivery]
    changes: dict[str, Any] = {"celebrity_followers": max(20_000, 2 * max(sizes))}
    if "worker_metrics_port" in {f.name for f in dataclasses.fields(Settings)}:
        changes["worker_metrics_port"] = 0  # no /metrics listener from this process
    settings = settings.replace(**changes)
    results: list[Delivery] = []
    notes: list[str] = []
    async with open_services(settings) as services:
        redis = services.cache.redis
        await flush(redis)
        checker = Redis.from_url(opts.redis_url)  # its own connection, for the polls
        with progress(f"delivery: loading authors with {', '.join(map(str, sizes))} followers"):
            graph = await load_authors(services, sizes, opts.active_fraction)
        missing = checker.register_script(_MISSING)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_workers(
            settings, (REALTIME,), services=services, stop=stop, handle_signals=False
        ))
        try:
            warm_author, warm_readers = graph[10]
            for i in range(3):  # warm-up: worker start, connections, scripts
                koo_id = f"bkwarm{i}-{uuid.uuid4().hex[:8]}"
                started = time.perf_counter()
                await services.publisher.publish([koo_event(koo_id, warm_author)])
                _, done = await wait_visible(missing, warm_readers, koo_id, started,
                                             VISIBLE_TIMEOUT)
                if done is None:
                    raise RuntimeError("the warm-up koo was never delivered; is the worker up?")
            await wait_idle(services)
            for size, samples in opts.delivery:
                author, active = graph[size]
                result = Delivery(size, len(active), samples)
                calls_before = dynamodb_calls()
                with progress(f"delivery: {samples} koos by an author with {size:,} followers"):
                    for i in range(samples):
                        koo_id = f"bk{size}-{i}-{uuid.uuid4().hex[:8]}"
                        started = time.perf_counter()
                        await services.publisher.publish([koo_event(koo_id, author)])
                        first, done = await wait_visible(missing, active, koo_id,
                                                         started, VISIBLE_TIMEOUT)
                        if done is None:
                            result.timeouts += 1
                        else:
                            result.latencies.append(done)
                        if first is not None:
                            result.first.append(first)
                        await wait_idle(services)
                        await asyncio.sleep(0.1)
                result.calls = per_koo(calls_before, dynamodb_calls(), samples)
                results.append(result)
        finally:
            note = await stop_worker(stop, worker)
            if note:
                notes.append(note)
                log.warning(note)
            await flush(redis)
            await checker.aclose()
    return results, notes


# --- report -----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def fmt_x(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}x"


def document(
    env: dict[str, str], command: str, text: str, redis_rows: list[Comparison],
    dynamo_rows: list[Comparison], deliveries: list[Delivery], notes: list[str],
    elapsed: float, data: dict[str, Any], client: str = "direct",
) -> dict[str, Any]:
    """The report's JSON document (bench/README.md, "JSON shape")."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    markdown = "\n".join("#" + line if line.startswith("## ") else line
                         for line in lines[start:])
    figures: dict[str, float | None] = {}
    throughput: dict[str, dict[str, float]] = {}
    targets: list[dict[str, Any]] = []
    labels = {"service": "Cache.push", "zadd": "raw ZADD", "evalsha": "raw EVALSHA",
              "zadd_trim": "raw ZADD+trim", "batched": "batched Lua (proposal)",
              "sf_current": "Stream-Framework (current redis-py)",
              "sf_redis2": "Stream-Framework (redis-py 2.10.6)"}
    for c in redis_rows:
        for name in c.names:
            figures[f"redis.{c.size}.{name}_entries_per_s"] = c.rate(name)
            throughput.setdefault(f"Redis: {labels.get(name, name)}", {})[str(c.size)] = (
                c.rate(name))
        ratio = c.ratio("service", "zadd")
        figures[f"redis.{c.size}.service_over_zadd"] = ratio
        targets.append(target(f"fan-out into Redis ≥ 60% of raw pipelined ZADD "
                              f"({c.size:,} followers)", fmt_pct(ratio),
                              None if math.isnan(ratio) else ratio >= REDIS_TARGET))
        for name in (n for n in c.names if n.startswith("sf_")):
            ratio = c.ratio("service", name)
            figures[f"redis.{c.size}.service_over_{name}"] = ratio
            targets.append(target(
                f"fan-out into Redis ≥ 3x Stream-Framework, {labels[name]} "
                f"({c.size:,} followers)", fmt_x(ratio),
                None if math.isnan(ratio) else ratio >= SF_TARGET))
    for c in dynamo_rows:
        for name in c.names:
            figures[f"dynamodb.{c.size}.{name}_items_per_s"] = c.rate(name)
            label = (f"DynamoDB: Timelines.add (on {SERVICE_LABEL[client]})" if name == "service"
                     else "DynamoDB: raw direct batch")
            throughput.setdefault(label, {})[str(c.size)] = c.rate(name)
        ratio = c.ratio("service", "raw")
        figures[f"dynamodb.{c.size}.service_over_raw"] = ratio
        on = "" if client == "direct" else ", the service on aioboto3"
        targets.append(target(f"fan-out into DynamoDB ≥ 80% of a raw direct BatchWriteItem "
                              f"loop ({c.size:,} followers{on})", fmt_pct(ratio),
                              None if math.isnan(ratio) else ratio >= DYNAMODB_TARGET))
    latency: dict[str, list[float]] = {}
    for d in deliveries:
        latency[f"delivery, {d.followers:,} followers"] = [s * 1000 for s in d.latencies]
        p99 = percentile(d.latencies, 99)
        figures[f"delivery.{d.followers}.p50_ms"] = median(d.latencies) * 1000
        figures[f"delivery.{d.followers}.p99_ms"] = p99 * 1000
        goal = DELIVERY_TARGETS.get(d.followers)
        if goal is not None:
            met = None if math.isnan(p99) else (p99 <= goal and not d.timeouts)
            targets.append(target(f"delivery p99 ≤ {fmt_ms(goal)} ({d.followers:,} "
                                  "followers)", fmt_ms(p99), met))
    return bench_document(
        "fanout", "Fan-out into Redis and DynamoDB, and delivery latency", command, env,
        markdown, figures, latency_ms=latency, throughput=throughput,
        axes={"throughput": {"x": "followers", "y": "entries (items) per second"}},
        targets=targets, notes=notes, elapsed_s=elapsed, data=data)


def report(
    env: dict[str, str], command: str, opts: Options, redis_rows: list[Comparison],
    dynamo_rows: list[Comparison], dynamo_notes: list[str], deliveries: list[Delivery],
    delivery_notes: list[str], elapsed: float,
) -> str:
    out = ["# Fan-out benchmark", "", environment_table(env, command)]
    how = ("rates are total entries / total time over every run; the loops alternate chunk "
           "by chunk; 'per chunk' is the median (and interquartile range) of the ratio "
           "between the same chunk's times")
    if "redis" not in opts.skip:
        out += ["", f"## 1. Fan-out into Redis (entries/s; chunks of {opts.chunk:,} readers, "
                "one pipeline each)", "", how + ".", ""]
        rows = [
            [f"{c.size:,}", str(c.runs), fmt_int(c.rate("service")), fmt_int(c.rate("zadd")),
             ratio_cell(c, "service", "zadd"), spread_cell(c, "service", "zadd"),
             verdict(c.ratio("service", "zadd") >= REDIS_TARGET),
             fmt_int(c.rate("evalsha")), ratio_cell(c, "evalsha", "zadd"),
             ratio_cell(c, "service", "evalsha"), fmt_int(c.rate("zadd_trim")),
             ratio_cell(c, "zadd_trim", "zadd"),
             fmt_int(c.rate("batched")) if "batched" in c.names else "n/a",
             ratio_cell(c, "batched", "zadd") if "batched" in c.names else "n/a"]
            for c in redis_rows
        ]
        out.append(markdown_table(
            ["followers", "runs", "Cache.push", "raw ZADD", "service/raw", "per chunk",
             "target ≥ 60%", "raw EVALSHA", "EVALSHA/ZADD", "Cache.push/EVALSHA",
             "raw ZADD+trim", "ZADD+trim/ZADD", "batched Lua", "batched/ZADD"], rows))
        out += ["", "Cache.push: the service (`feed.cache.Cache.push`: on a standalone Redis one "
                "EVALSHA per 500 readers of a Lua script doing EXISTS, ZADD and the trim for "
                "each; one call per reader on a Redis Cluster). raw ZADD: redis.asyncio "
                "pipelined ZADD, the reference. raw EVALSHA: the service's one-reader "
                "script sent per reader with a bare `pipe.evalsha`. raw ZADD+trim: ZADD and "
                "ZREMRANGEBYRANK pipelined, no script (and no existence check). batched Lua: "
                "the per-reader script logic over all the chunk's readers in one EVALSHA, "
                "written here (the service's own script is the one Cache.push runs). "
                "Timelines hold the `!ready` sentinel and under 128 entries (nothing is "
                "trimmed)."]
        sf_names = [n for n in (redis_rows[0].names if redis_rows else []) if
                    n.startswith("sf_")]
        if sf_names:
            out += ["", "## 1b. The service beside Stream-Framework 1.4.0 (entries/s, same "
                    "Redis, same run, interleaved chunk by chunk)", ""]
            headers = ["followers", "Cache.push"]
            for name in sf_names:
                label = name.removeprefix("sf_")
                headers += [f"SF ({label})", f"Cache.push/SF ({label})", "per chunk",
                            f"target ≥ {SF_TARGET:.0f}x"]
            rows = []
            for c in redis_rows:
                row = [f"{c.size:,}", fmt_int(c.rate("service"))]
                for name in sf_names:
                    per_chunk = c.chunk_ratios("service", name)
                    row += [fmt_int(c.rate(name)), fmt_x(c.ratio("service", name)),
                            f"{fmt_x(median(per_chunk))} ({fmt_x(percentile(per_chunk, 25))}"
                            f"-{fmt_x(percentile(per_chunk, 75))})",
                            verdict(c.ratio("service", name) >= SF_TARGET)]
                rows.append(row)
            out.append(markdown_table(headers, rows))
            out += ["", "SF (current): Stream-Framework on today's redis-py and hiredis; SF "
                    "(redis2): on redis-py 2.10.6 (bench/sf-env.sh). Its Manager fans out "
                    "in eager Celery tasks of 100 followers, one pipeline (round trip) per "
                    "follower, into its own sorted sets (`sf:feed:<reader>`), which are reset "
                    "with the service's. Its time includes passing the chunk's reader ids to "
                    "its process (bench/sf/client.py)."]
    if "dynamodb" not in opts.skip:
        service = SERVICE_LABEL[opts.dynamodb_client]
        out += ["", f"## 2. Fan-out into DynamoDB (items/s; BatchWriteItem of 25, "
                f"{opts.chunk:,} readers per chunk, {DYNAMODB_CONCURRENCY} in flight; the "
                f"service on {'the direct transport' if service == 'direct' else 'aioboto3'})",
                "", how + ".", ""]
        rows = [
            [f"{c.size:,}", str(c.runs), fmt_int(c.rate("service")), fmt_int(c.rate("raw")),
             ratio_cell(c, "service", "raw"), spread_cell(c, "service", "raw"),
             verdict(c.ratio("service", "raw") >= DYNAMODB_TARGET)]
            for c in dynamo_rows
        ]
        out.append(markdown_table(
            ["followers", "runs", f"Timelines.add (on {service})", "raw direct BatchWriteItem",
             "service/raw", "per chunk", "target ≥ 80%"], rows))
        on = ("the service's Dynamo on its default, direct transport" if
              opts.dynamodb_client == "direct" else "**the service's Dynamo on aioboto3** "
              "(`--dynamodb-client aioboto3`), not its default direct transport")
        out += ["", f"Timelines.add: the service (`feed.store.timelines.Timelines.add` per "
                f"chunk), {on}. raw: `send(\"BatchWriteItem\", ...)` of a direct transport "
                "(the service's own when it is direct), no retry layer and no codec: the same "
                "items and table, the same number in flight, UnprocessedItems re-sent."]
        out += [f"- {note}" for note in dynamo_notes]
    if "delivery" not in opts.skip:
        out += ["", "## 3. Delivery through the worker (event published -> koo in every active "
                "follower's cached timeline)", ""]
        rows = []
        for d in deliveries:
            target = DELIVERY_TARGETS.get(d.followers)
            p99 = percentile(d.latencies, 99)
            ok = target is not None and not d.timeouts and p99 <= target
            rows.append([
                f"{d.followers:,}", f"{d.active:,}", f"{len(d.latencies)}/{d.samples}",
                fmt_ms(median(d.latencies)), fmt_ms(p99),
                fmt_ms(median(d.first)),
                f"≤ {fmt_ms(target)}" if target else "-",
                verdict(ok) if target else "-",
            ])
        out.append(markdown_table(
            ["author's followers", "active", "delivered", "p50", "p99 (nearest rank)",
             "first follower p50", "target p99", "result"], rows))
        out += ["", "In-process worker (`workers.runner.run_workers`, realtime queue): the "
                "fan-out shows the koo in cached timelines as it pages the followers "
                "(FeedManager.announce), then writes the rows and pushes again "
                "(FeedManager.push). With fewer than 100 "
                "samples p99 is the slowest sample. DynamoDB calls the service made per koo "
                "(count x mean latency; batch writes run 16 at a time):", ""]
        for d in deliveries:
            calls = ", ".join(
                f"{op} {c:.1f} x {t / c * 1000:.1f} ms"
                for op, (c, t) in sorted(d.calls.items(), key=lambda kv: -kv[1][1])
            )
            out.append(f"- {d.followers:,} followers: {calls or 'none recorded'}")
        out += [f"- {note}" for note in delivery_notes]
    out += ["", f"Total time: {elapsed:.0f} s."]
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------


async def run(opts: Options) -> Outcome | int:
    started = time.monotonic()
    command = command_line()
    settings = Settings(
        redis_url=opts.redis_url, dynamodb_endpoint=opts.dynamodb_endpoint,
        table_prefix=f"bench{uuid.uuid4().hex[:8]}_", fanout_chunk_size=opts.chunk,
        dynamodb_client=opts.dynamodb_client, log_json=False, log_level="WARNING",
    )
    probe = Redis.from_url(opts.redis_url)
    try:
        env = await environment(probe, opts.redis_url, opts.dynamodb_endpoint)
    finally:
        await probe.aclose()
    env["service's DynamoDB client"] = (
        "direct transport (the default)" if opts.dynamodb_client == "direct"
        else "aioboto3 (--dynamodb-client aioboto3)")
    need_dynamo = not {"dynamodb", "delivery"} <= opts.skip
    if need_dynamo and env["DynamoDB"].split(": ", 1)[1].startswith("not answering"):
        print(f"DynamoDB does not answer at {opts.dynamodb_endpoint}: start it with "
              "`bash scripts/dynamodb-local.sh start 8766` or pass --skip dynamodb,delivery",
              file=sys.stderr)
        return 3
    redis_rows: list[Comparison] = []
    dynamo_rows: list[Comparison] = []
    dynamo_notes: list[str] = []
    deliveries: list[Delivery] = []
    delivery_notes: list[str] = []
    if "redis" not in opts.skip:
        redis_rows = await redis_part(opts, settings, env)
    if need_dynamo:
        async with contextlib.AsyncExitStack() as stack:
            db = await stack.enter_async_context(open_dynamo(settings))
            direct = db.transport
            if not isinstance(direct, DirectTransport):  # the raw loop is direct regardless
                direct = (await stack.enter_async_context(open_dynamo(
                    dataclasses.replace(settings, dynamodb_client="direct")))).transport
            with progress(f"dynamodb: creating tables {settings.table_prefix}*"):
                await create_tables(db)
            try:
                if "dynamodb" not in opts.skip:
                    dynamo_rows, dynamo_notes = await dynamodb_part(opts, db, direct)
                if "delivery" not in opts.skip:
                    deliveries, delivery_notes = await delivery_part(opts, settings)
            finally:
                with contextlib.suppress(Exception):
                    await drop_tables(db)
    elapsed = time.monotonic() - started
    text = report(env, command, opts, redis_rows, dynamo_rows, dynamo_notes, deliveries,
                  delivery_notes, elapsed)

    def json_document() -> dict[str, Any]:
        data = {
            "environment": env, "command": command, "elapsed_s": elapsed,
            "options": {"followers": opts.followers, "delivery": opts.delivery,
                        "repeat": opts.repeat, "chunk": opts.chunk, "quick": opts.quick,
                        "active_fraction": opts.active_fraction,
                        "dynamodb_budget_s": opts.dynamodb_budget},
            "redis": {
                "unit": "entries/s", "target_ratio": REDIS_TARGET,
                "stream_framework": {sf: f"Stream-Framework 1.4.0, {sf_client.VARIANTS[sf][1]}"
                                     for sf in opts.sf},
                "loops": {"service": "feed.cache.Cache.push", "zadd": "raw pipelined ZADD",
                          "evalsha": "raw pipelined EVALSHA of the service's push script",
                          "zadd_trim": "raw pipelined ZADD + ZREMRANGEBYRANK",
                          "batched": "proposal: one EVALSHA per chunk over all its readers"},
                "sizes": [c.as_json("service", "zadd") for c in redis_rows],
            },
            "dynamodb": {
                "unit": "items/s", "target_ratio": DYNAMODB_TARGET,
                "loops": {"service": "feed.store.timelines.Timelines.add on "
                                     + SERVICE_LABEL[opts.dynamodb_client],
                          "raw": "raw direct-transport BatchWriteItem, same concurrency"},
                "service_client": opts.dynamodb_client,
                "concurrency": settings.dynamodb_concurrency,
                "sizes": [c.as_json("service", "raw") for c in dynamo_rows],
                "notes": dynamo_notes,
            },
            "delivery": {"authors": [d.as_json() for d in deliveries], "notes": delivery_notes},
        }
        return document(env, command, text, redis_rows, dynamo_rows, deliveries,
                        dynamo_notes + delivery_notes, elapsed, data, opts.dynamodb_client)

    # The report carries its own heading, environment table and total time.
    return Outcome(text, json_path=opts.json, document=json_document)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
