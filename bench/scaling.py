"""Fan-out throughput with 1, 2 and 4 worker processes (real ``feed worker`` processes).

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.scaling --quick                  # ~2 min
    .venv/bin/python -m bench.scaling --json bench/out/scaling.json
    bash scripts/dynamodb-local.sh stop 8766

Options: ``--workers 1,2,4`` (worker processes per setting), ``--followers 2000,5000,10000``
(one author per count; default --quick: 2000,10000), ``--koos N`` (koos per author per run;
default 2, --quick 1), ``--repeat N`` (passes over the settings, the order reversed every
other pass so drift hits every setting alike; default 2, --quick 1), ``--active-fraction``
(share of followers with a cached timeline, default 0.5), ``--dynamodb-endpoint URL``
(default http://127.0.0.1:8766), ``--redis-url`` (the queue's database) and
``--cache-redis-url`` (the cache's; defaults redis://127.0.0.1:6379/6 and /7: **both
flushed** at the start and the end; database 0 is refused), ``--json PATH``.

One workload for every setting: the authors' ``koo_created`` events, published at once
through the service's publisher onto the realtime queue, then applied and fanned out by N
``python -m feed.cli worker`` processes (each with the service's defaults:
FEED_WORKER_MAX_JOBS=32, FEED_DYNAMODB_CONCURRENCY=16, chunks of 1,000 followers). An
entry is one koo delivered to one follower: a DynamoDB timeline row, plus the cached Redis
timeline for active followers. Reported per setting: entries/s (entries / time from
publishing to every koo's fan-out marked done), the queue drain time (publishing to an
empty queue with no job in progress), and the CPU the workers, DynamoDB Local and Redis
used meanwhile, in cores (CPU seconds / wall seconds), beside the machine's core count.
Workers are started, and answer on their metrics port, before the clock starts; they are
stopped with SIGTERM after each run. Every run is checked: each active follower's cached
timeline and a sample of stored timelines hold exactly the koos delivered so far.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from bench._common import (
    ROOT,
    Outcome,
    bench_document,
    bench_main,
    check_flushable_dbs,
    command_line,
    dynamodb_local_pid,
    environment,
    fmt_int,
    load_average,
    machine_busy_seconds,
    markdown_table,
    median,
    nproc,
    process_cpu_seconds,
    progress,
)
from bench.fanout import create_timelines
from config.settings import Settings
from config.tables import TIMELINES
from feed import keys
from feed._embedded import free_port
from feed.jobs import REALTIME
from feed.models import User
from feed.services import Services, open_services
from feed.store import create_tables, drop_tables
from feed.store._codec import values
from feed.store.koos import FanoutState

log = logging.getLogger("bench.scaling")

TITLE = "Fan-out throughput with 1, 2 and 4 worker processes"
DEFAULT_FOLLOWERS = (2_000, 5_000, 10_000)
QUICK_FOLLOWERS = (2_000, 10_000)
READY_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0
CHECK_SAMPLE = 50  # stored timelines counted per author after each run


# --- options ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    workers: tuple[int, ...]
    followers: tuple[int, ...]
    koos: int
    repeat: int
    active_fraction: float
    dynamodb_endpoint: str
    redis_url: str
    cache_redis_url: str
    quick: bool
    json: str | None


def _counts(raw: str) -> tuple[int, ...]:
    counts = tuple(int(x.replace("_", "")) for x in raw.split(",") if x.strip())
    if not counts or any(n <= 0 for n in counts):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return counts


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description="Fan-out throughput (entries/s into DynamoDB and Redis) and queue drain "
        "time with 1, 2 and 4 `feed worker` processes on one workload; prints Markdown.",
    )
    parser.add_argument("--workers", type=_counts, default=(1, 2, 4),
                        help="worker processes per setting (1,2,4)")
    parser.add_argument("--followers", type=_counts, default=None,
                        help="one author per follower count (default 2000,5000,10000; "
                        "--quick: 2000,10000)")
    parser.add_argument("--koos", type=int, default=None,
                        help="koos per author per run (default 2; --quick: 1)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="passes over the settings (default 2; --quick: 1)")
    parser.add_argument("--active-fraction", type=float, default=0.5,
                        help="share of followers with a cached timeline (0.5)")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766",
                        help="DynamoDB Local (bash scripts/dynamodb-local.sh start 8766)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6",
                        help="the queue's Redis database (flushed!); not database 0")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/7",
                        help="the cache's Redis database (flushed!); not database 0")
    parser.add_argument("--quick", action="store_true", help="a smaller workload, one pass")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    check_flushable_dbs(parser, args, "redis_url", "cache_redis_url")
    koos = args.koos if args.koos is not None else (1 if args.quick else 2)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 2)
    if koos < 1 or repeat < 1 or not 0 < args.active_fraction <= 1:
        parser.error("--koos and --repeat must be at least 1, --active-fraction in (0, 1]")
    return Options(
        workers=args.workers,
        followers=args.followers or (QUICK_FOLLOWERS if args.quick else DEFAULT_FOLLOWERS),
        koos=koos, repeat=repeat, active_fraction=args.active_fraction,
        dynamodb_endpoint=args.dynamodb_endpoint.rstrip("/"), redis_url=args.redis_url,
        cache_redis_url=args.cache_redis_url, quick=args.quick, json=args.json,
    )


# --- the workload -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Graph:
    authors: dict[str, list[str]]  # author -> followers
    active: list[str]  # followers with a cached timeline

    @property
    def entries_per_koo_round(self) -> int:
        return sum(len(f) for f in self.authors.values())


async def load_graph(services: Services, opts: Options) -> Graph:
    """Authors and their followers, bulk-loaded as the service stores them."""
    at = int(time.time() * 1000) - 3_600_000
    authors: dict[str, list[str]] = {}
    users: list[tuple[User, bool]] = []
    follows: list[tuple[str, str, str]] = []
    active: list[str] = []
    for size in opts.followers:
        author = f"sca{size}"
        followers = [f"scf{size}x{i:06d}" for i in range(size)]
        authors[author] = followers
        users.append((User(author, f"@{author}", "hi", "ap-south-1", at, size, 0), False))
        users += [(User(f, f"@{f}", "hi", "ap-south-1", at, 0, 1), False) for f in followers]
        follows += [(f, keys.REL_FOLLOW, author) for f in followers]
        active += followers[:max(1, round(size * opts.active_fraction))]
    await services.stores.users.load_many(users, at=at)
    await services.stores.relations.load_many(follows, at=at)
    return Graph(authors, active)


def koo_events(graph: Graph, run: int, koos: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {"type": "koo_created", "event_id": f"scale-{uuid.uuid4().hex}", "occurred_at": now + i,
         "koo_id": f"sck{run}x{author}x{i}", "author_id": author,
         "text": "scaling benchmark", "lang": "hi"}
        for author in graph.authors for i in range(koos)
    ]


# --- worker processes -------------------------------------------------------------------


@dataclass
class Workers:
    """``n`` ``python -m feed.cli worker`` processes, each serving its metrics on a port of
    its own (how the bench knows it is up)."""

    n: int
    settings: Settings
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEED_")}
        env.update({
            "FEED_REDIS_URL": self.settings.redis_url,
            "FEED_CACHE_REDIS_URL": self.settings.cache_redis_url,
            "FEED_DYNAMODB_ENDPOINT": self.settings.dynamodb_endpoint or "",
            "FEED_TABLE_PREFIX": self.settings.table_prefix,
            "FEED_CELEBRITY_FOLLOWERS": str(self.settings.celebrity_followers),
            "FEED_WORKER_METRICS_PORT": str(port),
            "FEED_LOG_LEVEL": "WARNING",
            "FEED_LOG_JSON": "false",
        })
        return env

    def start(self) -> None:
        for i in range(self.n):
            port = free_port()
            log_file = (self.log_dir / f"worker-{self.n}-{i}.log").open("ab")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "feed.cli", "worker"], cwd=ROOT, env=self.env(port),
                stdout=log_file, stderr=subprocess.STDOUT,
            ))
            log_file.close()
            self.ports.append(port)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = set(range(self.n))
        while waiting:
            for i in list(waiting):
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"worker {i} exited with {self.procs[i].returncode}; "
                                       f"see {self.log_dir}")
                if await asyncio.to_thread(_answers, self.ports[i]):
                    waiting.discard(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} worker(s) not ready in {READY_TIMEOUT} s")
            await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(p.pid) for p in self.procs)

    async def stop(self) -> list[int | None]:
        """SIGTERM every worker, SIGKILL those still running after STOP_TIMEOUT."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _ in range(int(STOP_TIMEOUT * 10)):
            if all(p.poll() is not None for p in self.procs):
                break
            await asyncio.sleep(0.1)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return [p.returncode for p in self.procs]


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


# --- one run ----------------------------------------------------------------------------


@dataclass
class Run:
    workers: int
    entries: int
    delivered_s: float
    drained_s: float
    cpu: dict[str, float]  # cores used while delivering: CPU seconds / wall seconds
    exit_codes: list[int | None]
    load: str  # the load average when the run started
    lag: str  # the queue's content, last seen busy after the fan-out was done ("" if never)

    @property
    def rate(self) -> float:
        return self.entries / self.delivered_s

    @property
    def per_cpu_second(self) -> float:
        """Entries per CPU second of the parties doing the work (workers, Redis, DynamoDB
        Local): a figure that other load on the machine moves much less than entries/s."""
        cores = sum(v for k, v in self.cpu.items() if k != "whole machine")
        return self.entries / (cores * self.delivered_s)

    def as_json(self) -> dict[str, Any]:
        return {"workers": self.workers, "entries": self.entries,
                "delivered_s": self.delivered_s, "drained_s": self.drained_s,
                "entries_per_s": self.rate, "entries_per_cpu_s": self.per_cpu_second,
                "cores_used": self.cpu,
                "exit_codes": self.exit_codes, "load_average_at_start": self.load,
                "queue_after_fanout": self.lag}


class CpuMeter:
    """CPU seconds of the workers, DynamoDB Local's JVM and the Redis server(s)."""

    def __init__(self, workers: Workers, dynamodb_pid: int | None,
                 redis_servers: Sequence[Redis]) -> None:
        self.workers = workers
        self.dynamodb_pid = dynamodb_pid
        self.redis_servers = redis_servers  # one client per server (queue, cache)

    async def read(self) -> dict[str, float]:
        redis = 0.0
        for server in self.redis_servers:
            info: dict[str, Any] = await server.info("cpu")
            redis += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        out = {"workers": self.workers.cpu_seconds(), "Redis": redis}
        if self.dynamodb_pid is not None:
            out["DynamoDB Local"] = process_cpu_seconds(self.dynamodb_pid)
        out["whole machine"] = machine_busy_seconds()
        return out


async def fanouts_done(services: Services, koo_ids: Sequence[str]) -> bool:
    items = await asyncio.gather(*(services.stores.koos.get(k, consistent=True)
                                   for k in koo_ids))
    return all(i is not None and i.get("fanout_state") == FanoutState.DONE for i in items)


SWEEPER = b"sweep_fanouts:"  # the sweeper's cron job ids: not the workload's


async def queue_idle(services: Services) -> bool:
    """No job of the workload due or in progress (the sweeper's cron job left out: arq
    keeps a cron job's in-progress mark for 60 s after it ran)."""
    redis = services.queue_redis
    due = await redis.zrangebyscore(keys.QUEUES[REALTIME], "-inf", int(time.time() * 1000))
    if any(not job.startswith(SWEEPER) for job in due):
        return False
    async for key in redis.scan_iter(match="arq:in-progress:*", count=1000):
        job = key.removeprefix(b"arq:in-progress:")
        if not job.startswith(SWEEPER) and await redis.exists(b"arq:job:" + job):
            return False
    return True


async def overdue_jobs(services: Services, seconds: float = 5.0) -> str:
    """Jobs still queued ``seconds`` after they were due, with what is in progress ("" if
    none): a job that stays queued while workers are idle is worth a look."""
    redis = services.queue_redis
    now_ms = time.time() * 1000
    late = await redis.zrangebyscore(keys.QUEUES[REALTIME], "-inf", now_ms - seconds * 1000,
                                     withscores=True)
    if not late:
        return ""
    return await queue_snapshot(services)


async def server_id(redis: Redis) -> str:
    """Tells Redis servers apart (two databases of one server share it)."""
    info: dict[str, Any] = await redis.info("server")
    return str(info.get("run_id", ""))


async def queue_snapshot(services: Services) -> str:
    """What keeps the queue busy: the first queued job ids (when due) and those in progress."""
    redis = services.queue_redis
    now_ms = time.time() * 1000
    queued = await redis.zrange(keys.QUEUES[REALTIME], 0, 4, withscores=True)
    waiting = [f"{m.decode()} (due {(score - now_ms) / 1000:+.1f} s)" for m, score in queued]
    running = [k.decode().removeprefix("arq:in-progress:")
               async for k in redis.scan_iter(match="arq:in-progress:*", count=1000)]
    return (f"queued: {', '.join(waiting) or 'none'}; in progress: "
            f"{', '.join(running[:5]) or 'none'}")


async def one_run(services: Services, graph: Graph, opts: Options, n: int, index: int,
                  log_dir: Path, dynamodb_pid: int | None, redis_cpu: Sequence[Redis]
                  ) -> Run:
    with progress(f"run {index}: resetting {len(graph.active):,} cached timelines"):
        await create_timelines(services.cache.redis, graph.active,
                               services.settings.active_days * 86_400)
    workers = Workers(n, services.settings, log_dir)
    try:
        with progress(f"run {index}: starting {n} worker process(es)"):
            workers.start()
            await workers.wait_ready()
            await asyncio.sleep(0.5)  # past start-up: the sweeper's first pass, arq's polling
        meter = CpuMeter(workers, dynamodb_pid, redis_cpu)
        events = koo_events(graph, index, opts.koos)
        koo_ids = [e["koo_id"] for e in events]
        load = load_average()
        with progress(f"run {index}: {n} worker(s) fanning out {len(events)} koos"):
            cpu0 = await meter.read()
            started = time.perf_counter()
            await services.publisher.publish(events)
            delivered = drained = next_look = math.nan
            lag = ""  # what was still in the queue after the fan-out was done, if anything
            deadline = started + RUN_TIMEOUT
            quiet = 0
            while time.perf_counter() < deadline:
                now = time.perf_counter() - started
                if math.isnan(delivered) and await fanouts_done(services, koo_ids):
                    delivered = now
                    cpu1 = await meter.read()
                    next_look = now + 1.0  # a queue still busy a second later is noted
                if await queue_idle(services):
                    quiet += 1
                    if quiet == 1:
                        drained = now
                    if quiet >= 3 and not math.isnan(delivered):
                        late = await overdue_jobs(services)
                        lag = lag or (f"when the queue drained: {late}" if late else "")
                        break
                else:
                    quiet, drained = 0, math.nan
                    if not math.isnan(delivered) and now >= next_look:
                        lag = f"{now - delivered:.1f} s after the fan-out: " + \
                            await queue_snapshot(services)
                        next_look = now + 1.0
                await asyncio.sleep(0.02)
            else:
                raise TimeoutError(f"{n} worker(s): fan-out not done in {RUN_TIMEOUT} s")
    finally:
        codes = await workers.stop()
    cores = {k: (cpu1[k] - cpu0[k]) / delivered for k in cpu0}
    entries = graph.entries_per_koo_round * opts.koos
    await check_run(services, graph, opts, index)
    return Run(n, entries, delivered, drained, cores, codes, load, lag)


async def check_run(services: Services, graph: Graph, opts: Options, index: int) -> None:
    """Each active follower's cached timeline holds this run's koos (reset before it), and
    a sample of stored timelines holds every koo delivered so far."""
    redis = services.cache.redis
    pipe = redis.pipeline(transaction=False)
    for reader in graph.active:
        pipe.zcard(keys.timeline(reader))
    sizes = cast(list[int], await pipe.execute())
    wrong = sum(1 for s in sizes if s != opts.koos + 1)  # + the !ready sentinel
    if wrong:
        raise RuntimeError(f"run {index}: {wrong} cached timelines lack koos")
    db = services.stores.db
    for followers in graph.authors.values():
        for reader in followers[:: max(1, len(followers) // CHECK_SAMPLE)]:
            reply = await db.call("Query", {
                "TableName": db.table(TIMELINES), "Select": "COUNT",
                "KeyConditionExpression": "reader_id = :r",
                "ExpressionAttributeValues": values(r=reader), "ConsistentRead": True})
            if reply["Count"] != index * opts.koos:
                raise RuntimeError(f"run {index}: stored timeline of {reader} holds "
                                   f"{reply['Count']} rows, not {index * opts.koos}")


# --- report -----------------------------------------------------------------------------


def settings_order(opts: Options) -> list[int]:
    order: list[int] = []
    for p in range(opts.repeat):
        order += list(opts.workers) if p % 2 == 0 else list(reversed(opts.workers))
    return order


def summary(runs: list[Run], n: int) -> dict[str, float]:
    mine = [r for r in runs if r.workers == n]
    entries = sum(r.entries for r in mine)
    seconds = sum(r.delivered_s for r in mine)
    cores: dict[str, float] = {}
    for key in mine[0].cpu:
        cores[key] = median([r.cpu[key] for r in mine])
    return {"runs": len(mine), "entries": entries, "rate": entries / seconds,
            "per_cpu_s": median([r.per_cpu_second for r in mine]),
            "delivered_s": median([r.delivered_s for r in mine]),
            "drained_s": median([r.drained_s for r in mine]),
            **{f"cores {k}": v for k, v in cores.items()}}


def report(opts: Options, graph: Graph, runs: list[Run], load_s: float, cores: int
           ) -> tuple[str, dict[str, float | None], dict[str, dict[str, float]]]:
    per = {n: summary(runs, n) for n in opts.workers}
    base = per[opts.workers[0]]["rate"]
    cpu_keys = [k for k in per[opts.workers[0]] if k.startswith("cores ")]
    rows = []
    for n in opts.workers:
        s = per[n]
        rows.append([
            str(n), str(cores), str(int(s["runs"])), fmt_int(s["entries"] / s["runs"]),
            f"{s['delivered_s']:.1f} s", fmt_int(s["rate"]), f"{s['rate'] / base:.2f}x",
            f"{s['drained_s']:.1f} s",
            *(f"{s[k]:.2f}" for k in cpu_keys), fmt_int(s["per_cpu_s"]),
        ])
    sizes = ", ".join(f"{len(f):,}" for f in graph.authors.values())
    out = [
        f"Workload: {len(graph.authors)} authors with {sizes} followers, {opts.koos} koo(s) "
        f"each per run: {graph.entries_per_koo_round * opts.koos:,} entries per run (a "
        f"DynamoDB timeline row each; {opts.active_fraction:.0%} of followers also have a "
        f"cached Redis timeline). Graph bulk-loaded in {load_s:.0f} s. Settings ran in the "
        f"order {', '.join(map(str, settings_order(opts)))}.", "",
        f"### Worker processes on a {cores}-core machine", "",
        markdown_table(
            ["worker processes", "machine cores", "runs", "entries per run",
             "fan-out time (median)", "entries/s", "vs 1 process", "queue drain (median)",
             *(f"cores used: {k.removeprefix('cores ')}" for k in cpu_keys),
             "entries per CPU second"], rows),
        "",
        "entries/s: entries of every run of the setting / their fan-out times (publish "
        "until every koo's fan-out is marked done). Queue drain: publish until the realtime "
        "queue is empty with no job in progress. Cores used: CPU seconds of the worker "
        "processes, the DynamoDB Local JVM and the Redis server(s) during the fan-out / its "
        "wall time (medians over runs); whole machine: every process on it, this "
        "benchmark's own (it publishes, then polls every 20 ms) and any other included. "
        "Entries per CPU second: entries / CPU seconds of the workers, Redis and DynamoDB "
        "Local together (median over runs): how much work each entry costs, whatever share "
        "of the machine the run got.",
        "", "### Every run", "",
        markdown_table(
            ["run", "worker processes", "entries/s", "entries per CPU second", "fan-out time",
             "queue drain", "whole machine busy (cores)",
             "load average at start (1, 5, 15 min)"],
            [[str(i), str(r.workers), fmt_int(r.rate), fmt_int(r.per_cpu_second),
              f"{r.delivered_s:.1f} s", f"{r.drained_s:.1f} s",
              f"{r.cpu.get('whole machine', math.nan):.2f}", r.load]
             for i, r in enumerate(runs, start=1)]),
    ]
    figures: dict[str, float | None] = {}
    for n in opts.workers:
        s = per[n]
        figures[f"scaling.workers_{n}.entries_per_s"] = s["rate"]
        figures[f"scaling.workers_{n}.fanout_ms"] = s["delivered_s"] * 1000
        figures[f"scaling.workers_{n}.drain_ms"] = s["drained_s"] * 1000
        figures[f"scaling.workers_{n}.entries_per_cpu_s"] = s["per_cpu_s"]
        figures[f"scaling.workers_{n}.rate_over_workers_{opts.workers[0]}"] = s["rate"] / base
    throughput = {"entries/s": {str(n): per[n]["rate"] for n in opts.workers}}
    return "\n".join(out), figures, throughput


# --- main -------------------------------------------------------------------------------


async def run(opts: Options) -> Outcome | int:
    started = time.monotonic()
    command = command_line()
    settings = Settings(
        redis_url=opts.redis_url, cache_redis_url=opts.cache_redis_url,
        dynamodb_endpoint=opts.dynamodb_endpoint,
        table_prefix=f"bench{uuid.uuid4().hex[:8]}_",
        celebrity_followers=max(opts.followers) * 2,  # every author is fanned out
        log_json=False, log_level="WARNING",
    )
    queue = Redis.from_url(opts.redis_url)
    cache = Redis.from_url(opts.cache_redis_url)
    runs: list[Run] = []
    try:
        env = await environment(cache, opts.cache_redis_url, opts.dynamodb_endpoint)
        if env["DynamoDB"].split(": ", 1)[1].startswith("not answering"):
            print(f"DynamoDB does not answer at {opts.dynamodb_endpoint}: start it with "
                  "`bash scripts/dynamodb-local.sh start 8766`", file=sys.stderr)
            return 3
        env["workers"] = ("`python -m feed.cli worker` processes (both queues; "
                          f"FEED_WORKER_MAX_JOBS={settings.worker_max_jobs}, "
                          f"FEED_DYNAMODB_CONCURRENCY={settings.dynamodb_concurrency}, "
                          f"FEED_FANOUT_CHUNK_SIZE={settings.fanout_chunk_size})")
        await queue.flushdb()
        await cache.flushdb()
        dynamodb_pid = dynamodb_local_pid(opts.dynamodb_endpoint)
        servers = [cache]
        if await server_id(queue) != await server_id(cache):
            servers.append(queue)
        async with open_services(settings) as services:
            with progress(f"creating tables {settings.table_prefix}*"):
                await create_tables(services.stores.db)
            try:
                load_started = time.monotonic()
                with progress("loading the graph"):
                    graph = await load_graph(services, opts)
                load_s = time.monotonic() - load_started
                with tempfile.TemporaryDirectory(prefix="feed-scaling-") as logs:
                    for index, n in enumerate(settings_order(opts), start=1):
                        runs.append(await one_run(services, graph, opts, n, index,
                                                  Path(logs), dynamodb_pid, servers))
                        print(f"[bench] run {index}: {n} worker(s): "
                              f"{runs[-1].rate:,.0f} entries/s, drained in "
                              f"{runs[-1].drained_s:.1f} s", file=sys.stderr, flush=True)
            finally:
                with contextlib.suppress(Exception):
                    await drop_tables(services.stores.db)
    finally:
        with contextlib.suppress(Exception):
            await queue.flushdb()
            await cache.flushdb()
        await queue.aclose()
        await cache.aclose()
    elapsed = time.monotonic() - started
    cores = nproc()
    markdown, figures, throughput = report(opts, graph, runs, load_s, cores)
    notes = [f"Run {i} ({r.workers} workers): queue drained {r.drained_s - r.delivered_s:.1f} "
             f"s after the fan-out was done; {r.lag}"
             for i, r in enumerate(runs, start=1) if r.lag]
    if dynamodb_pid is None:
        notes.append("DynamoDB Local's CPU is not shown: its process was not started by "
                     "scripts/dynamodb-local.sh on this port.")
    bad_exits = [r for r in runs if any(c != 0 for c in r.exit_codes)]
    if bad_exits:
        notes.append(f"{len(bad_exits)} run(s) had a worker exit with a non-zero code after "
                     "SIGTERM: " + "; ".join(str(r.exit_codes) for r in bad_exits))
    return Outcome(
        markdown, heading=f"# {TITLE}", env=env, command=command,
        after=[f"- {note}" for note in notes], elapsed_s=elapsed, json_path=opts.json,
        document=lambda: bench_document(
            "scaling", TITLE, command, env, markdown, figures, throughput=throughput,
            axes={"throughput": {"x": "worker processes", "y": "entries/s"}},
            targets=[], notes=notes, elapsed_s=elapsed,
            data={"machine_cores": cores, "runs": [r.as_json() for r in runs],
                  "followers": list(opts.followers), "koos_per_author": opts.koos,
                  "active_fraction": opts.active_fraction},
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
