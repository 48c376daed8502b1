"""Read benchmark: feed pages of 20 ranked, hydrated items, in-process and over HTTP, from
the hot cache, after the cache is lost (at several rates) and on freshly started API
processes.

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.reads [--quick] [--dynamodb-endpoint URL] [--json out.json]

Setup: a synthetic graph (``--readers`` users, default 1,000; each follows ~25 others with
a Zipf-like preference, plus the 3 celebrities whom about half of everyone follows; 4 koos
each over the last 12 hours; ~10 reactions each) is bulk-loaded with the stores' own
loaders into fresh DynamoDB tables (``benchr<hex>_*``, dropped at the end): profiles,
follows, koos, reactions and every reader's stored timeline (~100 rows). Celebrities'
koos are pulled at read time, as the service does for them. Every reader's feed is then
read twice in-process, which makes all of them active with a complete cached timeline,
cached relation sets, affinity, koo bodies, celebrity and trending sets.

What it measures, one after the other:

1. **in-process, cache hit**: ``feed.reader.Reader.feed(user, limit=20)`` and the page's
   ``as_json()``, called directly (uvloop), one read at a time over all readers in turn;
   p50/p99 over ``--reads`` reads, with the Redis round trips (and commands) and DynamoDB
   calls per read; in 5 blocks alternating with Stream-Framework 1.4.0's 25-item hydrated
   read (``bench.sf``, in its own venv and process, on the same Redis server) when
   ``bash bench/sf-env.sh`` has built its venvs.
2. **in-process, cache miss**: the cache Redis database is flushed, then ``--miss-reads``
   distinct readers are read once each, one at a time (each first read answers from
   DynamoDB and starts that reader's single-flight cache rebuild; koo bodies, trending
   and celebrity sets that earlier reads re-cached are shared).
3. **HTTP, closed loop**: ``feed api`` run as a real process (uvicorn, uvloop, httptools;
   ``--api-workers`` processes), loaded by **wrk** (Debian's, with a Lua script that
   rotates over the readers and sends the bearer token): 32 connections for
   ``--closed-seconds``; requests/s and wrk's p50/p99. Without wrk, a Python aiohttp
   closed loop stands in, and the report says so.
4. **HTTP, open loop, cache hit**: 200 requests/s for ``--open-seconds`` from a separate
   Python process (``bench._load``: an asyncio scheduler on uvloop with aiohttp) that
   sends every request at its intended time and measures latency from that intended
   time, so a stall delays every request behind it in the figures too (no coordinated
   omission).
5. **HTTP, open loop, after a cache loss, at several rates**: for each rate of
   ``--miss-rates`` (100, 200 and 400 requests/s), in turn: the previous run's background
   cache rebuilds finish, the cache database is flushed, then the same open loop at that
   rate reads every reader exactly once (their first read after the loss, served from
   DynamoDB while it rebuilds their cache; the first reads also recompute what readers
   share: trending, celebrity sets). Each rate starts from a fully flushed cache, so the
   rates compare; reported per rate: reads answered 200 (count and share), the other
   answers, p50/p99/max.
6. **HTTP, open loop, warm cache, fresh API processes**: every reader's cache is rebuilt
   (two reads each, in-process, as in the setup), the API processes of parts 3-5 are
   stopped and new ones started with the same settings (``feed api --workers N``, on a
   new port); once ``/readyz`` answers, the open loop reads every reader exactly once at
   ``--open-rate``. It shows what a process pays on its first requests (connection pools,
   first-use imports, script loading) that a long-running process hides.

Targets (docs/performance.md): in-process hit p50 no slower than Stream-Framework's 25-item read in
the same run (the faster of its variants; without its venvs, the 0.7 ms measured before); HTTP
closed loop ≥ 1,000 requests/s with 32 clients; open loop p99 ≤ 10 ms at 200
requests/s, every answer 200; after a cache loss, at 200 requests/s: p99 ≤ 50 ms and
≥ 99% of the reads answered 200 (100 and 400 requests/s are reported without a target);
fresh API processes on a warm cache at 200 requests/s: p99 ≤ 10 ms.

Figures (JSON ``figures``) of the HTTP parts: ``http.closed.*``, ``http.open_hit.*``;
``http.open_miss.<rate>.p50_ms`` / ``.p99_ms`` / ``.max_ms`` / ``.ok_share`` (share
answered 200) for each rate, and ``http.open_miss.p50_ms`` / ``.p99_ms`` for the 200/s
run (the names of the single after-loss run there used to be); ``http.fresh_warm.p50_ms``
/ ``.p99_ms`` / ``.max_ms`` / ``.ok_share`` / ``.ready_s`` (start to ``/readyz``).

Options: ``--readers N``, ``--reads N``, ``--miss-reads N``, ``--closed-seconds S``,
``--connections N`` (32), ``--open-rate R`` (200; parts 4 and 6), ``--open-seconds S``,
``--miss-rates R,R,..`` (100,200,400; part 5), ``--api-workers N`` (2),
``--dynamodb-endpoint URL`` (default ``http://127.0.0.1:8766``), ``--queue-redis-url`` /
``--cache-redis-url`` (defaults ``redis://127.0.0.1:6379/10`` and ``/11``: **both
databases are flushed** at the start and the end, the cache one also in the middle;
database 0 is refused), ``--skip http`` (leaves out parts 3-6), ``--json PATH``,
``--quick`` (300 readers, shorter runs: about 2 min).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    check_flushable_dbs,
    command_line,
    environment,
    fmt_int,
    markdown_table,
    median,
    percentile,
    progress,
    target,
    version,
)
from bench._load import (
    OpenLoopResult,
    Segment,
    Stream,
    api_process,
    closed_loop_python,
    free_port,
    load_graph,
    make_graph,
    run_open_loop,
    service_env,
    source_revision,
    wait_quiet,
    warm_feeds,
    worst_seconds,
    wrk_available,
    wrk_closed_loop,
    wrk_version,
)
from config.settings import Settings
from feed import metrics
from feed.reader import Reader
from feed.services import open_services
from feed.store import create_tables, drop_tables, open_dynamo

# Stream-Framework 1.4.0's 25-item read, p50, measured 2026-11-26: the target
SF_READ_P50_MS = 0.7
CLOSED_RPS_TARGET = 1_000.0
OPEN_P99_TARGET_MS = 10.0
MISS_P99_TARGET_MS = 50.0
MISS_TARGET_RATE = 200.0  # the after-a-cache-loss target is set at this rate
MISS_OK_SHARE_TARGET = 0.99  # ... with at least this share of the reads answered 200
FRESH_P99_TARGET_MS = 10.0


@dataclass(frozen=True, slots=True)
class Options:
    readers: int
    reads: int
    miss_reads: int
    closed_seconds: float
    connections: int
    open_rate: float
    open_seconds: float
    miss_rates: tuple[float, ...]
    api_workers: int
    dynamodb_endpoint: str
    queue_redis_url: str
    cache_redis_url: str
    skip_http: bool
    json: str | None
    quick: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reads",
        description="Feed reads (20 ranked, hydrated items) in-process and over HTTP, from "
        "the hot cache, after a cache loss and on fresh API processes; prints a Markdown "
        "report.")
    parser.add_argument("--readers", type=int, help="users in the graph (1000; --quick 300)")
    parser.add_argument("--reads", type=int, help="in-process cache-hit reads (3000; --quick "
                        "1000)")
    parser.add_argument("--miss-reads", type=int,
                        help="in-process cache-miss reads, distinct readers (300; --quick 150)")
    parser.add_argument("--closed-seconds", type=float,
                        help="closed-loop run length (20; --quick 8)")
    parser.add_argument("--connections", type=int, default=32,
                        help="closed-loop clients (32)")
    parser.add_argument("--open-rate", type=float, default=200.0,
                        help="open-loop requests per second: cache hit, fresh processes (200)")
    parser.add_argument("--open-seconds", type=float,
                        help="open-loop cache-hit run length (30; --quick 10)")
    parser.add_argument("--miss-rates", default="100,200,400",
                        help="open-loop rates after a cache loss, each from a flushed cache, "
                        "each reading every reader once (100,200,400)")
    parser.add_argument("--api-workers", type=int, default=2,
                        help="`feed api --workers` (2: one per core, as the README advises)")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766",
                        help="DynamoDB endpoint (start one: bash scripts/dynamodb-local.sh "
                        "start 8766)")
    parser.add_argument("--queue-redis-url", default="redis://127.0.0.1:6379/10",
                        help="the queue's Redis database (flushed!)")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/11",
                        help="the hot cache's Redis database (flushed!)")
    parser.add_argument("--skip", default="", help="'http' to leave out parts 3-6")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--quick", action="store_true", help="a small run (about 2 min)")
    args = parser.parse_args(argv)
    check_flushable_dbs(parser, args, "queue_redis_url", "cache_redis_url")
    if args.queue_redis_url == args.cache_redis_url:
        parser.error("the queue and the cache need different databases (the cache is "
                     "flushed in the middle of the run)")
    try:
        rates = [float(x) for x in args.miss_rates.split(",") if x.strip()]
    except ValueError:
        parser.error("--miss-rates: comma-separated requests per second, e.g. 100,200,400")
    if not rates or min(rates) <= 0:
        parser.error("--miss-rates: at least one rate, every one above 0")
    if args.open_rate <= 0:
        parser.error("--open-rate must be above 0")
    quick = args.quick
    readers = args.readers or (300 if quick else 1_000)
    return Options(
        readers=readers,
        reads=args.reads or (1_000 if quick else 3_000),
        miss_reads=min(readers, args.miss_reads or (150 if quick else 300)),
        closed_seconds=args.closed_seconds or (8.0 if quick else 20.0),
        connections=args.connections,
        open_rate=args.open_rate,
        open_seconds=args.open_seconds or (10.0 if quick else 30.0),
        miss_rates=tuple(dict.fromkeys(rates)),
        api_workers=args.api_workers,
        dynamodb_endpoint=args.dynamodb_endpoint.rstrip("/"),
        queue_redis_url=args.queue_redis_url,
        cache_redis_url=args.cache_redis_url,
        skip_http=args.skip.strip() == "http",
        json=args.json,
        quick=quick,
    )


# --- counting round trips ---------------------------------------------------------------


@contextlib.contextmanager
def count_redis_round_trips() -> Iterator[list[int]]:
    """Count requests written to any redis.asyncio connection (one per command or per
    pipeline) and the commands they carry while the block runs; yields a two-element
    list: [round trips, commands]."""
    from redis.asyncio.connection import AbstractConnection

    counter = [0, 0]
    send = AbstractConnection.send_packed_command
    pack = AbstractConnection.pack_command

    async def counting_send(self: AbstractConnection, command: Any, check_health: bool = True
                            ) -> None:
        counter[0] += 1
        await send(self, command, check_health)

    def counting_pack(self: AbstractConnection, *args: Any) -> list[bytes]:
        counter[1] += 1
        return pack(self, *args)

    AbstractConnection.send_packed_command = counting_send  # type: ignore[method-assign]
    AbstractConnection.pack_command = counting_pack  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
        AbstractConnection.pack_command = pack  # type: ignore[method-assign]


def dynamodb_calls() -> dict[str, float]:
    """DynamoDB calls made by this process so far, by operation."""
    found: dict[str, float] = {}
    for family in metrics.DYNAMODB_CALLS.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                found[sample.labels.get("operation", "?")] = sample.value
    return found


def calls_between(before: dict[str, float], after: dict[str, float], reads: int
                  ) -> dict[str, float]:
    return {op: (n - before.get(op, 0.0)) / reads for op, n in after.items()
            if n > before.get(op, 0.0)}


# --- parts ------------------------------------------------------------------------------


@dataclass
class InProcess:
    latencies_ms: list[float]
    round_trips: float
    commands: float
    dynamodb: dict[str, float]
    items: float

    def as_json(self) -> dict[str, Any]:
        return {"reads": len(self.latencies_ms), "p50_ms": median(self.latencies_ms),
                "p99_ms": percentile(self.latencies_ms, 99),
                "max_ms": max(self.latencies_ms, default=math.nan),
                "redis_round_trips_per_read": self.round_trips,
                "redis_commands_per_read": self.commands,
                "dynamodb_calls_per_read": self.dynamodb, "items_per_page": self.items}


async def read_in_process(reader: Reader, users: Sequence[str], reads: int) -> InProcess:
    """``reads`` sequential feed reads over ``users`` in turn."""
    latencies: list[float] = []
    items = 0
    before = dynamodb_calls()
    with count_redis_round_trips() as trips:
        for i in range(reads):
            user = users[i % len(users)]
            started = time.perf_counter()
            page = await reader.feed(user, limit=20)
            page.as_json()
            latencies.append((time.perf_counter() - started) * 1000)
            items += len(page.items)
        round_trips, commands = trips
    return InProcess(latencies, round_trips / reads, commands / reads,
                     calls_between(before, dynamodb_calls(), reads), items / reads)


SF_READERS = 100  # Stream-Framework timelines read (100 entries each, its default length)
ROUNDS = 5  # service and Stream-Framework reads alternate in this many blocks


async def read_beside_stream_framework(
    reader: Reader, users: Sequence[str], reads: int, redis_url: str, notes: list[str],
) -> tuple[InProcess, dict[str, dict[str, Any]]]:
    """The service's in-process cache-hit reads, alternating block by block with
    Stream-Framework's 25-item hydrated reads (bench.sf, in its own venv and process, on the
    same Redis server) so both see the same machine; Stream-Framework is left out with a
    note when its venv is not built (``bash bench/sf-env.sh``)."""
    try:
        from bench.sf import client as sf_client
    except ImportError as exc:
        notes.append(f"bench.sf cannot be imported ({exc}): the in-process read is compared "
                     f"with the target's {SF_READ_P50_MS} ms")
        return await read_in_process(reader, users, reads), {}
    variants = sf_client.available()
    if not variants:
        notes.append("Stream-Framework's venvs are not built (`bash bench/sf-env.sh`): the "
                     f"in-process read is compared with the target's {SF_READ_P50_MS} ms")
    block = max(1, reads // ROUNDS)
    parts: list[InProcess] = []
    sf: dict[str, dict[str, Any]] = {v: {"latency_ms": [], "info": {}} for v in variants}
    sf_created = int(time.time() * 1000) - 3_600_000
    async with contextlib.AsyncExitStack() as stack:
        runners = {v: await stack.enter_async_context(
            sf_client.StreamFramework.start(v, redis_url)) for v in variants}
        for variant, runner in runners.items():
            sf[variant]["info"] = runner.info
        for _ in range(ROUNDS):
            parts.append(await read_in_process(reader, users, block))
            for variant, runner in runners.items():
                # The same "created" every block: the runner stores each activity once and
                # hydrates later reads from that storage.
                answer = await runner.request({"op": "read", "readers": SF_READERS,
                                               "samples": block, "created": sf_created})
                sf[variant]["latency_ms"] += answer["latency_ms"]
    n = sum(len(p.latencies_ms) for p in parts)
    merged = InProcess(
        [x for p in parts for x in p.latencies_ms],
        sum(p.round_trips * len(p.latencies_ms) for p in parts) / n,
        sum(p.commands * len(p.latencies_ms) for p in parts) / n,
        {op: sum(p.dynamodb.get(op, 0.0) * len(p.latencies_ms) for p in parts) / n
         for op in {op for p in parts for op in p.dynamodb}},
        sum(p.items * len(p.latencies_ms) for p in parts) / n,
    )
    return merged, sf


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": median(samples), "p90_ms": percentile(samples, 90),
            "p99_ms": percentile(samples, 99), "max_ms": max(samples, default=math.nan)}


def open_part(result: OpenLoopResult, stream: str, segment: str, bound_ms: float
              ) -> dict[str, Any]:
    """One open-loop run's figures: latency summary, answers, worst seconds, samples."""
    lat = result.all_latencies(stream)
    return {**summary(lat), "sent": result.sent[stream],
            "seconds": worst_seconds(result.offsets_s[segment][stream],
                                     result.latency_ms[segment][stream], bound_ms),
            "statuses": result.statuses.get(stream, {}),
            "sender_lateness_max_ms": result.lateness_ms_max, "samples": lat}


async def settle_cache(cache: Redis, *, limit_s: float = 30.0, interval_s: float = 0.25,
                       polls: int = 4) -> float:
    """Until the cache database's key count stays the same for ``polls`` polls in a row
    (the API's background cache rebuilds from the previous run are done, so a flush after
    this leaves the cache empty); returns the seconds waited."""
    started = time.monotonic()
    last, same = -1, 0
    while same < polls and time.monotonic() - started < limit_s:
        size = int(await cache.dbsize())
        same = same + 1 if size == last else 0
        last = size
        await asyncio.sleep(interval_s)
    return time.monotonic() - started


async def http_parts(opts: Options, settings: Settings, reader: Reader, users: list[str],
                     cache: Redis, notes: list[str]) -> dict[str, Any]:
    token = settings.api_tokens[0]
    port = free_port()
    env = service_env(settings)
    out: dict[str, Any] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    print(f"[bench] service logs: {log_dir}", file=sys.stderr, flush=True)
    with api_process(env, port=port, workers=opts.api_workers,
                     log_path=log_dir / "api.log") as base:
        with progress("http: warm-up (closed loop, 3 s)"):
            await closed_loop_python(base, token, users, connections=8, seconds=3)
        with progress(f"http: closed loop, {opts.connections} connections, "
                      f"{opts.closed_seconds:.0f} s"):
            if wrk_available():
                out["closed"] = await asyncio.to_thread(
                    wrk_closed_loop, base, token, users, connections=opts.connections,
                    threads=2, seconds=opts.closed_seconds)
            else:
                notes.append("wrk is not installed: the closed loop ran on the Python "
                             "aiohttp fallback (one process), which loads the 2 cores more")
                out["closed"] = await closed_loop_python(
                    base, token, users, connections=opts.connections,
                    seconds=opts.closed_seconds)
        await wait_quiet(base)
        reads = Stream("reads", "feed", tuple(users))
        with progress(f"http: open loop, {opts.open_rate:.0f}/s for {opts.open_seconds:.0f} s"):
            hit = await run_open_loop(
                base, token, [reads],
                [Segment("hit", opts.open_seconds, {"reads": opts.open_rate})])
        out["open_hit"] = open_part(hit, "reads", "hit", OPEN_P99_TARGET_MS)
        # Each rate from a fully flushed cache: the previous run's background rebuilds
        # finish first, so none of them refills the cache after the flush.
        out["open_miss"] = {}
        once = Stream("first reads", "feed", tuple(users), distinct=True)
        for rate in opts.miss_rates:
            await wait_quiet(base)
            await settle_cache(cache)
            await cache.flushdb()
            with progress(f"http: cache lost; open loop, {rate:g}/s, each of {len(users)} "
                          "readers once"):
                miss = await run_open_loop(
                    base, token, [once], [Segment("miss", len(users) / rate,
                                                  {"first reads": rate})])
            out["open_miss"][f"{rate:g}"] = {
                "rate": rate, **open_part(miss, "first reads", "miss", MISS_P99_TARGET_MS)}
        await wait_quiet(base)
        await settle_cache(cache)
    # Fresh API processes on a warm cache: whatever a process pays on its first requests
    # (connection pools, first-use imports, script loading) and a long-running one hides.
    with progress("warming every reader's cache (two reads each, in-process)"):
        await warm_feeds(reader, users)
    print(f"[bench] http: fresh `feed api --workers {opts.api_workers}`, until /readyz "
          "answers ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    with api_process(env, port=free_port(), workers=opts.api_workers,
                     log_path=log_dir / "api-fresh.log", ready_path="/readyz") as fresh_base:
        ready_s = time.monotonic() - started
        fresh = Stream("fresh reads", "feed", tuple(users), distinct=True)
        with progress(f"http: fresh processes ready after {ready_s:.1f} s; warm cache, open "
                      f"loop, {opts.open_rate:.0f}/s, each of {len(users)} readers once"):
            got = await run_open_loop(
                fresh_base, token, [fresh],
                [Segment("fresh", len(users) / opts.open_rate,
                         {"fresh reads": opts.open_rate})])
    out["fresh_warm"] = {"rate": opts.open_rate, "ready_s": ready_s,
                         **open_part(got, "fresh reads", "fresh", FRESH_P99_TARGET_MS)}
    return out


def without_samples(value: Any) -> Any:
    """``value`` with every ``samples`` entry left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_samples(v) for k, v in value.items() if k != "samples"}
    return value


# --- report -----------------------------------------------------------------------------


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} ms"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def ok_status(statuses: dict[str, int]) -> str:
    good = statuses.get("200", 0)
    total = sum(statuses.values())
    return f"{good:,}/{total:,}"


def ok_share(part: dict[str, Any]) -> float:
    """The share of a run's requests answered 200."""
    total = sum(part["statuses"].values())
    return part["statuses"].get("200", 0) / total if total else math.nan


def other_answers(statuses: dict[str, int]) -> str:
    others = sorted(((k, n) for k, n in statuses.items() if k != "200"),
                    key=lambda kn: (-kn[1], kn[0]))
    return ", ".join(f"{k}: {n:,}" for k, n in others) or "none"


async def run(opts: Options) -> Outcome | int:
    started = time.monotonic()
    command = command_line()
    token = f"bench-{secrets.token_urlsafe(18)}"
    graph = make_graph(opts.readers)
    settings = Settings(
        redis_url=opts.queue_redis_url, cache_redis_url=opts.cache_redis_url,
        dynamodb_endpoint=opts.dynamodb_endpoint, table_prefix=f"benchr{uuid.uuid4().hex[:8]}_",
        api_tokens=(token,), celebrity_followers=graph.threshold, log_json=False,
        log_level="WARNING",
    )
    queue = Redis.from_url(opts.queue_redis_url)
    cache = Redis.from_url(opts.cache_redis_url)
    env = await environment(cache, opts.cache_redis_url, opts.dynamodb_endpoint)
    env["service code"] = source_revision()
    env["HTTP"] = (f"uvicorn {version('uvicorn')}, uvloop {version('uvloop')}, httptools "
                   f"{version('httptools')}, starlette {version('starlette')}; "
                   f"`feed api --workers {opts.api_workers}`")
    env["load generators"] = (f"closed loop: {wrk_version() if wrk_available() else 'aiohttp'}"
                              f"; open loop: bench._load (aiohttp {version('aiohttp')}, uvloop, "
                              "one process)")
    if env["DynamoDB"].split(": ", 1)[1].startswith("not answering"):
        print(f"DynamoDB does not answer at {opts.dynamodb_endpoint}: start it with "
              "`bash scripts/dynamodb-local.sh start 8766`", file=sys.stderr)
        return 3
    notes: list[str] = []
    counts: dict[str, int] = {}
    http: dict[str, Any] = {}
    sf: dict[str, dict[str, Any]] = {}
    await queue.flushdb()
    await cache.flushdb()
    try:
        async with open_dynamo(settings) as db:
            with progress(f"dynamodb: creating tables {settings.table_prefix}*"):
                await create_tables(db)
            try:
                async with open_services(settings) as services:
                    with progress(f"loading {opts.readers:,} users in bulk"):
                        load_started = time.monotonic()
                        counts = await load_graph(services, graph)
                        load_s = time.monotonic() - load_started
                    reader = Reader(services.manager)
                    users = graph.user_ids
                    with progress("warming every reader's cache (two reads each)"):
                        await warm_feeds(reader, users)
                    with progress(f"in-process: {opts.reads:,} cache-hit reads"):
                        await read_in_process(reader, users, min(200, opts.reads))  # warm-up
                        hit, sf = await read_beside_stream_framework(
                            reader, users, opts.reads, opts.cache_redis_url, notes)
                    await cache.flushdb()
                    with progress(f"in-process: {opts.miss_reads:,} first reads after a "
                                  "cache loss"):
                        miss = await read_in_process(reader, users[:opts.miss_reads],
                                                     opts.miss_reads)
                        await services.manager.drain()
                    with progress("warming every reader's cache again"):
                        await warm_feeds(reader, users)
                    if not opts.skip_http:
                        # In here: part 6 rebuilds every reader's cache with ``reader``.
                        http = await http_parts(opts, settings, reader, users, cache, notes)
            finally:
                with contextlib.suppress(Exception):
                    await drop_tables(db)
    finally:
        await queue.flushdb()
        await cache.flushdb()
        await queue.aclose()
        await cache.aclose()
    elapsed = time.monotonic() - started
    markdown, figures, targets = report(opts, counts, load_s, hit, miss, sf, http, notes)

    def json_document() -> dict[str, Any]:
        latency: dict[str, list[float]] = {
            "in-process, cache hit": hit.latencies_ms,
            "in-process, first read after cache loss": miss.latencies_ms,
        }
        for variant, got in sf.items():
            latency[f"Stream-Framework ({variant}), 25-item read"] = got["latency_ms"]
        if http:
            latency[f"HTTP open loop {opts.open_rate:.0f}/s, cache hit"] = \
                http["open_hit"]["samples"]
            for key, part in http["open_miss"].items():
                latency[f"HTTP open loop {key}/s, after cache loss"] = part["samples"]
            latency[f"HTTP open loop {opts.open_rate:.0f}/s, warm cache, fresh API "
                    "processes"] = http["fresh_warm"]["samples"]
        return bench_document(
            "reads", "Feed reads: in-process and over HTTP, cache hit, cache loss, fresh "
            "processes",
            command, env, markdown, figures, latency_ms=latency, targets=targets,
            notes=notes, elapsed_s=elapsed,
            data={"graph": counts, "in_process_hit": hit.as_json(),
                  "in_process_miss": miss.as_json(),
                  "stream_framework": {v: {"p50_ms": median(g["latency_ms"]),
                                           "p99_ms": percentile(g["latency_ms"], 99),
                                           "reads": len(g["latency_ms"]), "info": g["info"]}
                                       for v, g in sf.items()},
                  "http": without_samples(http)},
        )

    return Outcome(markdown, heading="# Read benchmark", env=env, command=command,
                   elapsed_s=elapsed, json_path=opts.json, document=json_document)


def report(opts: Options, counts: dict[str, int], load_s: float, hit: InProcess,
           miss: InProcess, sf: dict[str, dict[str, Any]], http: dict[str, Any],
           notes: list[str]) -> tuple[str, dict[str, float | None], list[dict[str, Any]]]:
    out: list[str] = []
    out += [f"Graph: {counts.get('users', 0):,} users, {counts.get('follows', 0):,} follows, "
            f"{counts.get('koos', 0):,} koos, {counts.get('reactions', 0):,} reactions, "
            f"{counts.get('timeline_rows', 0):,} stored timeline rows, bulk-loaded in "
            f"{load_s:.0f} s. Every page: `limit=20` (18 from the timeline and celebrity "
            "pulls, 2 recommended).", ""]
    out += ["### In-process (`Reader.feed` + `as_json`, one read at a time)", ""]
    rows = []
    for label, part in (("cache hit", hit), ("first read after a cache loss", miss)):
        calls = ", ".join(f"{op} {n:.2f}" for op, n in sorted(part.dynamodb.items())) or "0"
        rows.append([label, f"{len(part.latencies_ms):,}", ms(median(part.latencies_ms)),
                     ms(percentile(part.latencies_ms, 99)),
                     ms(max(part.latencies_ms, default=math.nan)),
                     f"{part.round_trips:.1f} ({part.commands:.0f} commands)", calls,
                     f"{part.items:.1f}"])
    for variant, got in sf.items():
        lat = got["latency_ms"]
        rows.append([f"Stream-Framework 1.4.0 ({variant}): 25-item hydrated read, same run",
                     f"{len(lat):,}", ms(median(lat)), ms(percentile(lat, 99)),
                     ms(max(lat, default=math.nan)), "", "", "25"])
    out.append(markdown_table(["", "reads", "p50", "p99", "max", "Redis round trips/read",
                               "DynamoDB calls/read", "items/page"], rows))
    hit_p50 = median(hit.latencies_ms)
    if sf:
        out += ["", f"The service's cache-hit reads and Stream-Framework's alternate in "
                f"{ROUNDS} blocks; Stream-Framework (bench.sf, its own venv and process) reads "
                f"{SF_READERS} timelines of 100 entries on the same Redis server and times "
                "each read itself."]
        best = min(sf, key=lambda v: median(sf[v]["latency_ms"]))
        sf_p50 = median(sf[best]["latency_ms"])
        figures_sf = {"inprocess.hit.p50_over_sf": hit_p50 / sf_p50 if sf_p50 else math.nan}
        targets = [target(f"in-process cache-hit read p50 ≤ Stream-Framework's 25-item read, "
                          f"same run ({best}: {ms(sf_p50)})", ms(hit_p50), hit_p50 <= sf_p50)]
    else:
        figures_sf = {}
        targets = [target(f"in-process cache-hit read p50 ≤ Stream-Framework's 25-item read "
                          f"({SF_READ_P50_MS} ms, the target's figure: not run here)",
                          ms(hit_p50), hit_p50 <= SF_READ_P50_MS)]
    figures: dict[str, float | None] = {
        "inprocess.hit.p50_ms": hit_p50, "inprocess.hit.p99_ms": percentile(hit.latencies_ms, 99),
        "inprocess.hit.redis_round_trips_per_read": hit.round_trips,
        "inprocess.hit.redis_commands_per_read": hit.commands,
        **{f"inprocess.sf_{v}.p50_ms": median(g["latency_ms"]) for v, g in sf.items()},
        **figures_sf,
        "inprocess.miss.p50_ms": median(miss.latencies_ms),
        "inprocess.miss.p99_ms": percentile(miss.latencies_ms, 99),
        "graph.load_s": load_s,
    }
    if http:
        out += http_report(opts, http, targets, figures, notes)
    out += ["", "### Targets (docs/performance.md)", ""]
    out.append(markdown_table(["target", "measured", "result"],
                              [[t["target"], str(t["measured"]), verdict(t["met"])]
                               for t in targets]))
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    out += ["", "p99 is nearest-rank over all samples of the row."]
    return "\n".join(out), figures, targets


def http_report(opts: Options, http: dict[str, Any], targets: list[dict[str, Any]],
                figures: dict[str, float | None], notes: list[str]) -> list[str]:
    """Parts 3-6: their tables and lines (returned), targets and figures (appended)."""
    closed, open_hit, fresh = http["closed"], http["open_hit"], http["fresh_warm"]
    misses: dict[str, dict[str, Any]] = http["open_miss"]
    out = ["", f"### Over HTTP (`feed api --workers {opts.api_workers}` as a process)", ""]
    rows = [
        [f"closed loop, {opts.connections} connections ({closed['tool']})",
         f"{closed['requests']:,} in {closed['seconds']:.0f} s",
         f"{fmt_int(closed['ok_rps'])}/s answered 200", ms(closed["p50_ms"]),
         ms(closed["p99_ms"]), ms(closed["max_ms"]),
         f"{closed['requests'] - closed['errors']:,}/{closed['requests']:,} 200"],
        [f"open loop {opts.open_rate:.0f}/s, cache hit (bench._load)",
         f"{open_hit['n']:,} in {opts.open_seconds:.0f} s", f"{opts.open_rate:.0f}/s",
         ms(open_hit["p50_ms"]), ms(open_hit["p99_ms"]), ms(open_hit["max_ms"]),
         f"{ok_status(open_hit['statuses'])} 200"],
        [f"open loop {opts.open_rate:.0f}/s, warm cache, fresh API processes: each reader "
         "once (bench._load)", f"{fresh['n']:,}", f"{opts.open_rate:.0f}/s",
         ms(fresh["p50_ms"]), ms(fresh["p99_ms"]), ms(fresh["max_ms"]),
         f"{ok_status(fresh['statuses'])} 200"],
    ]
    out.append(markdown_table(["", "requests", "rate", "p50", "p99", "max", "answers"], rows))
    out += ["", "Closed loop: it keeps every connection busy and times each request from its "
            "send (its p99 hides queueing behind a stall). Open loop: every request is sent "
            "at its intended time and timed from it, so a stall counts against every request "
            "it delays. Fresh API processes: every reader's cache was rebuilt, the API "
            "processes above were stopped and new ones started with the same settings; the "
            f"reads began once `/readyz` answered ({fresh['ready_s']:.1f} s after the start; "
            "one answer, from whichever worker took it)."]
    out += ["", "#### After a cache loss (open loop, bench._load): each rate from a freshly "
            "flushed cache, every reader read once", ""]
    rows = []
    for key, part in misses.items():
        rows.append([f"{key}/s", f"{part['n']:,}",
                     f"{part['statuses'].get('200', 0):,} ({ok_share(part) * 100:.1f}%)",
                     other_answers(part["statuses"]), ms(part["p50_ms"]),
                     ms(part["p99_ms"]), ms(part["max_ms"]),
                     f"{part['sender_lateness_max_ms']:.1f} ms"])
    out.append(markdown_table(["rate", "reads", "answered 200", "other answers", "p50", "p99",
                               "max", "sender behind (max)"], rows))
    out += ["", "Each first read after the loss answers from DynamoDB and starts that "
            "reader's cache rebuild; the first reads also recompute what readers share "
            "(trending, celebrity sets). The API processes are the ones of the closed loop and "
            "the cache-hit open loop; before each flush the previous rate's rebuilds finish."]
    lines = [f"- The open-loop sender itself fell at most "
             f"{open_hit['sender_lateness_max_ms']:.1f} ms (hit) and "
             f"{fresh['sender_lateness_max_ms']:.1f} ms (fresh processes) behind schedule."]
    parts = [("cache hit", open_hit, OPEN_P99_TARGET_MS),
             *((f"after the loss, {key}/s", part, MISS_P99_TARGET_MS)
               for key, part in misses.items()),
             ("fresh API processes", fresh, FRESH_P99_TARGET_MS)]
    for label, part, bound in parts:
        sec = part["seconds"]
        if sec["worst_at_s"] is not None:
            lines.append(f"- Open loop, {label}: {sec['over']} of {sec['windows']} one-second "
                         f"windows (by intended send time) had a p99 over {bound:.0f} ms; the "
                         f"worst, starting {sec['worst_at_s']} s in: "
                         f"{ms(sec['worst_p99_ms'])}. A few bad seconds is a stall; many is "
                         "general slowness.")
    out += ["", *lines]
    hit_ok = open_hit["statuses"].get("200", 0) == open_hit["n"]
    at_target = misses.get(f"{MISS_TARGET_RATE:g}")
    targets += [
        target(f"HTTP closed loop, {opts.connections} clients ≥ 1,000 requests/s "
               "(answered 200)", f"{fmt_int(closed['ok_rps'])}/s",
               closed["ok_rps"] >= CLOSED_RPS_TARGET),
        target(f"HTTP open loop at {opts.open_rate:.0f}/s: p99 ≤ 10 ms, every answer 200",
               f"{ms(open_hit['p99_ms'])}, {ok_status(open_hit['statuses'])} 200",
               open_hit["p99_ms"] <= OPEN_P99_TARGET_MS and hit_ok),
        target(f"after a cache loss, {MISS_TARGET_RATE:.0f}/s: p99 ≤ 50 ms, ≥ 99% answered 200",
               f"{ms(at_target['p99_ms'])}, {ok_share(at_target) * 100:.1f}% answered 200"
               if at_target else f"not measured ({MISS_TARGET_RATE:g} not in --miss-rates)",
               None if at_target is None else
               at_target["p99_ms"] <= MISS_P99_TARGET_MS
               and ok_share(at_target) >= MISS_OK_SHARE_TARGET),
        target(f"fresh API processes, warm cache, open loop at {opts.open_rate:.0f}/s: "
               "p99 ≤ 10 ms", f"{ms(fresh['p99_ms'])}, {ok_status(fresh['statuses'])} 200",
               fresh["p99_ms"] <= FRESH_P99_TARGET_MS),
    ]
    all_ok = hit_ok and all(ok_share(p) == 1.0 for p in (fresh, *misses.values()))
    if not all_ok or closed["errors"]:
        notes.append("answers other than 200 are counted in the latencies (they are the time "
                     "the client waited); the API answers 503 when a read takes longer than "
                     "its bound, which an overloaded server does")
    figures.update({
        "http.closed.requests_per_s": closed["ok_rps"],
        "http.closed.all_answers_per_s": closed["rps"], "http.closed.p99_ms": closed["p99_ms"],
        "http.closed.p50_ms": closed["p50_ms"],
        "http.open_hit.p50_ms": open_hit["p50_ms"], "http.open_hit.p99_ms": open_hit["p99_ms"],
        "http.open_hit.seconds_over_target_count": float(open_hit["seconds"]["over"]),
    })
    if at_target:  # the names of the single after-loss run, which was at 200/s
        figures.update({"http.open_miss.p50_ms": at_target["p50_ms"],
                        "http.open_miss.p99_ms": at_target["p99_ms"]})
    for key, part in misses.items():
        figures.update({f"http.open_miss.{key}.p50_ms": part["p50_ms"],
                        f"http.open_miss.{key}.p99_ms": part["p99_ms"],
                        f"http.open_miss.{key}.max_ms": part["max_ms"],
                        f"http.open_miss.{key}.ok_share": ok_share(part)})
    figures.update({"http.fresh_warm.p50_ms": fresh["p50_ms"],
                    "http.fresh_warm.p99_ms": fresh["p99_ms"],
                    "http.fresh_warm.max_ms": fresh["max_ms"],
                    "http.fresh_warm.ok_share": ok_share(fresh),
                    "http.fresh_warm.ready_s": fresh["ready_s"]})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, uvloop=True)


if __name__ == "__main__":
    sys.exit(main())
