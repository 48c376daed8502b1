"""Soak: steady feed reads against `feed api` while fan-out runs without pause.

    .venv/bin/python -m bench.soak --seconds 60 [--rate 200] [--koos-per-second 4]
        [--redis-url redis://127.0.0.1:6379/5] [--cache-redis-url URL]
        [--dynamodb-endpoint http://127.0.0.1:8766] [--json PATH] [--check]

Starts `feed api` (one process) and `feed worker` (both queues) as real
processes on a fresh table prefix, bulk-loads a graph (authors with
followers, drawn from a pool of readers), then, for ``--warmup`` seconds
unmeasured and ``--seconds`` measured:

- an open-loop reader: ``--rate`` GET /v1/users/{reader}/feed requests per
  second, each sent at its scheduled time whatever the previous ones are doing;
- a publisher: ``--koos-per-second`` koo_created events for random authors
  through the service's publisher, so the worker fans out all the time;
- a sampler: the RSS of the API and worker processes once a second.

Before that, each reader's feed is read once, a few at a time (the state under
test is active readers, whose timelines are cached; a cold read answers from
DynamoDB and rebuilds the cache).

It reports the error rate (status other than 200, or no answer within 5 s),
the API's event-loop lag (its own ``feed_event_loop_lag_duration_seconds`` histogram:
a 50 ms sleeper's lateness, counted over the measured window), the RSS of
both processes (median of the first third of the window against the last
third), read latency, and whether every koo published was delivered once the
queue drained. Criteria (issue 7, item 11): error rate < 0.1 %, loop lag
< 100 ms (the 99th percentile of the samples; the count over 100 ms and the
slowest are reported too), RSS of API and worker flat (last third within 10 %
of the first). It also reports how much of the window the API's and the
worker's main threads spent on a CPU and waiting for one (/proc schedstat): on
a shared machine the wait, not the service, is what makes the loop late. With
``--check`` the exit code is 1 when a criterion is not met.

Both Redis databases are flushed at the start and at the end (database 0 is
refused); the tables are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    command_line,
    environment,
    fmt_ms,
    markdown_table,
    median,
    percentile,
    progress,
    redis_db,
    target,
)
from config.settings import Settings
from feed import keys
from feed._embedded import free_port
from feed.models import User
from feed.publisher import connect_publisher
from feed.queue import open_queue_redis
from feed.store import create_tables, drop_tables, open_dynamo

log = logging.getLogger("bench.soak")

TOKEN = "soak-token-0123456789"
REQUEST_TIMEOUT = 5.0
MAX_ERROR_RATE = 0.001
MAX_LOOP_LAG_SECONDS = 0.1
MAX_RSS_GROWTH = 0.10
LAG_METRIC = "feed_event_loop_lag_duration_seconds"


@dataclass
class Options:
    seconds: float = 60.0
    warmup: float = 10.0
    rate: float = 200.0
    koos_per_second: float = 4.0
    authors: int = 20
    followers: int = 250
    users: int = 1_000
    redis_url: str = "redis://127.0.0.1:6379/5"
    cache_redis_url: str = ""
    dynamodb_endpoint: str = "http://127.0.0.1:8766"
    drain_seconds: float = 60.0
    seed: int = 7


@dataclass
class Window:
    """What happened while the measured window was open."""

    latencies: list[float] = field(default_factory=list)  # seconds, answered with 200
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    sent: int = 0
    late: list[float] = field(default_factory=list)  # how late the driver sent each request
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # name -> samples
    # name -> (seconds on a CPU, seconds runnable but waiting for one) of the main thread
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    opened: float = 0.0
    slice_seconds: float = 30.0
    slices: dict[int, list[int]] = field(default_factory=dict)  # slice -> [sent, failed]

    def count(self, scheduled: float, failed: bool) -> None:
        """Requests and failures per slice of the window, by when they were due."""
        index = max(0, int((scheduled - self.opened) // self.slice_seconds))
        slot = self.slices.setdefault(index, [0, 0])
        slot[0] += 1
        slot[1] += failed

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


# --- processes ---------------------------------------------------------------------------


def _env(settings: Settings, port: int = 0) -> dict[str, str]:
    env = {
        **os.environ,
        "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
        "FEED_TABLE_PREFIX": settings.table_prefix,
        "FEED_API_TOKENS": TOKEN,
        "FEED_WORKER_METRICS_PORT": "0",
        "FEED_LOG_LEVEL": "WARNING",
    }
    if settings.dynamodb_endpoint:
        env["FEED_DYNAMODB_ENDPOINT"] = settings.dynamodb_endpoint
    return env


def _spawn(args: Sequence[str], settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as sink:  # a file, not a pipe: a full pipe would block it
        return subprocess.Popen([sys.executable, "-m", "feed.cli", *args], env=_env(settings),
                                stdout=sink, stderr=sink)


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> int | None:
    """SIGTERM, wait, then SIGKILL; the exit code of a clean stop, else None."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds waiting for one) of a process's main thread, from
    /proc/PID/schedstat: the wait is what a loaded machine adds to the loop lag."""
    try:
        on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return math.nan, math.nan
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- metrics -----------------------------------------------------------------------------


def lag_buckets(metrics_text: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of the loop-lag histogram."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != LAG_METRIC:
            continue
        for sample in family.samples:
            if sample.name == LAG_METRIC + "_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


@dataclass(frozen=True)
class LagSummary:
    samples: int
    over_limit: int  # samples above MAX_LOOP_LAG_SECONDS
    p99_bound: float  # upper bound of the bucket holding the 99th percentile (seconds)
    max_bound: float  # upper bound of the bucket holding the slowest sample

    def as_json(self) -> dict[str, float]:
        return {"samples": self.samples, "over_limit": self.over_limit,
                "p99_le_s": self.p99_bound, "max_le_s": self.max_bound}


def summarize_lag(before: dict[float, float], after: dict[float, float]) -> LagSummary:
    """The loop-lag samples taken between two scrapes of the histogram."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    bounds = sorted(delta)
    total = int(delta.get(math.inf, 0.0))
    if not total:
        return LagSummary(0, 0, math.nan, math.nan)
    within_limit = int(delta.get(MAX_LOOP_LAG_SECONDS, 0.0))
    p99 = next(le for le in bounds if delta[le] >= 0.99 * total)
    slowest = next(le for le in bounds if delta[le] >= total)
    return LagSummary(total, total - within_limit, p99, slowest)


# --- the graph ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Graph:
    authors: list[str]
    readers: list[str]


async def load_graph(settings: Settings, opts: Options, run: str) -> Graph:
    """Authors, each followed by ``opts.followers`` readers of the pool, bulk-loaded."""
    rng = random.Random(opts.seed)
    authors = [f"{run}a{i:03d}" for i in range(opts.authors)]
    readers = [f"{run}r{i:05d}" for i in range(opts.users)]
    edges = [(r, author) for author in authors for r in rng.sample(readers, opts.followers)]
    following: dict[str, int] = {}
    for reader, _ in edges:
        following[reader] = following.get(reader, 0) + 1
    at = int(time.time() * 1000) - 3_600_000
    users = [(User(a, f"@{a}", "hi", "ap-south-1", at, opts.followers, 0), False)
             for a in authors]
    users += [(User(r, f"@{r}", "hi", "ap-south-1", at, 0, following.get(r, 0)), False)
              for r in readers]
    async with open_dynamo(settings) as db:
        await create_tables(db)
        from feed.store import Stores

        stores = Stores(db)
        await stores.users.load_many(users, at=at)
        await stores.relations.load_many([(r, keys.REL_FOLLOW, a) for r, a in edges], at=at)
    return Graph(authors, readers)


# --- the load ----------------------------------------------------------------------------


class Soak:
    def __init__(self, opts: Options, settings: Settings, graph: Graph, base_url: str,
                 pids: dict[str, int]) -> None:
        self.opts = opts
        self.settings = settings
        self.graph = graph
        self.base_url = base_url
        self.pids = pids
        self.window: Window | None = None  # set while the measured window is open
        self.published: list[str] = []
        self.publish_errors = 0
        self.in_flight: set[asyncio.Task[None]] = set()
        self.rng = random.Random(opts.seed + 1)

    async def read_once(self, client: aiohttp.ClientSession, scheduled: float) -> None:
        window = self.window
        reader = self.rng.choice(self.graph.readers)
        sent = time.monotonic()
        kind = ""
        try:
            async with client.get(f"/v1/users/{reader}/feed", params={"limit": "20"}) as r:
                await r.read()
                if r.status != 200:
                    kind = f"http {r.status}"
        except TimeoutError:
            kind = "timeout"
        except aiohttp.ClientError as exc:
            kind = type(exc).__name__
        took = time.monotonic() - sent
        if window is None or window is not self.window:
            return  # outside the measured window (warm-up, or it closed meanwhile)
        window.sent += 1
        window.late.append(max(0.0, sent - scheduled))
        window.count(scheduled, bool(kind))
        if kind:
            window.errors[kind] = window.errors.get(kind, 0) + 1
        else:
            window.latencies.append(took)

    async def drive_reads(self, client: aiohttp.ClientSession, until: float) -> None:
        """Open loop: request i goes out at start + i / rate, whatever the others do."""
        start = time.monotonic()
        interval = 1.0 / self.opts.rate
        i = 0
        while True:
            scheduled = start + i * interval
            if scheduled >= until:
                return
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.read_once(client, scheduled))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            i += 1

    async def drive_koos(self, until: float, run: str) -> None:
        """Koos for random authors at a steady rate, through the service's publisher."""
        interval = 1.0 / self.opts.koos_per_second
        start = time.monotonic()
        async with connect_publisher(self.settings) as publisher:
            i = 0
            while True:
                scheduled = start + i * interval
                if scheduled >= until:
                    return
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                koo_id = f"{run}k{i:06d}"
                event = {
                    "type": "koo_created", "event_id": f"{run}-e{i}",
                    "occurred_at": int(time.time() * 1000), "koo_id": koo_id,
                    "author_id": self.rng.choice(self.graph.authors),
                    "text": f"soak koo {i}", "lang": "hi",
                }
                try:
                    await publisher.publish([event])
                    self.published.append(koo_id)
                except Exception:
                    self.publish_errors += 1
                    log.exception("publish failed")
                i += 1

    async def sample_rss(self, until: float) -> None:
        while time.monotonic() < until:
            window = self.window
            if window is not None:
                now = time.monotonic()
                for name, pid in self.pids.items():
                    window.rss.setdefault(name, []).append((now, rss_bytes(pid)))
            await asyncio.sleep(1.0)

    async def run(self, client: aiohttp.ClientSession, run: str) -> tuple[Window, LagSummary]:
        opts = self.opts
        begin = time.monotonic()
        opened = begin + opts.warmup
        until = opened + opts.seconds
        drivers = [
            asyncio.create_task(self.drive_reads(client, until)),
            asyncio.create_task(self.drive_koos(until, run)),
            asyncio.create_task(self.sample_rss(until)),
        ]
        await asyncio.sleep(max(0.0, opened - time.monotonic()))
        before = lag_buckets(await _text(client, "/metrics"))
        cpu_before = {name: schedstat(pid) for name, pid in self.pids.items()}
        window = Window(opened=time.monotonic(), slice_seconds=max(5.0, opts.seconds / 10))
        self.window = window
        await asyncio.gather(*drivers)
        self.window = None
        after = lag_buckets(await _text(client, "/metrics"))
        for name, pid in self.pids.items():
            (run0, wait0), (run1, wait1) = cpu_before[name], schedstat(pid)
            window.cpu[name] = (run1 - run0, wait1 - wait0)
        # Requests sent inside the window still count: wait for their answers.
        self.window = window
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=REQUEST_TIMEOUT + 1)
        self.window = None
        return window, summarize_lag(before, after)


# --- after the load ----------------------------------------------------------------------


async def wait_delivered(settings: Settings, koo_ids: list[str], wait_seconds: float
                         ) -> tuple[int, float]:
    """(how many of ``koo_ids`` finished their fan-out, seconds waited)."""
    started = time.monotonic()
    async with open_dynamo(settings) as db:
        pending = set(koo_ids)
        while True:
            if pending:
                items = await db.batch_get("koos", [{"koo_id": k} for k in pending],
                                           attributes=["koo_id", "fanout_state"],
                                           consistent=True)
                pending -= {i["koo_id"] for i in items if i.get("fanout_state") == "done"}
            waited = time.monotonic() - started
            if not pending or waited >= wait_seconds:
                return len(koo_ids) - len(pending), waited
            await asyncio.sleep(0.5)


def thirds(samples: list[tuple[float, int]]) -> tuple[float, float]:
    """Median RSS of the first and of the last third of the samples."""
    values = [v for _, v in samples]
    third = max(1, len(values) // 3)
    return median(values[:third]), median(values[-third:])


def _mb(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value / 2**20:,.1f} MB"


def report(opts: Options, window: Window, lag: LagSummary, delivered: int, published: int,
           drained_in: float, publish_errors: int, exits: dict[str, int | None],
           env: dict[str, str], elapsed: float) -> dict[str, Any]:
    sent = window.sent
    error_rate = window.failed / sent if sent else math.nan
    lat = window.latencies
    rss = {name: thirds(samples) for name, samples in sorted(window.rss.items())}
    growth = {name: (last - first) / first if first else math.nan
              for name, (first, last) in rss.items()}
    achieved = sent / opts.seconds if opts.seconds else math.nan
    lag_ok = lag.samples > 0 and lag.p99_bound <= MAX_LOOP_LAG_SECONDS
    rss_ok = {name: g <= MAX_RSS_GROWTH for name, g in growth.items()}
    criteria = [
        target("error rate < 0.1%", f"{error_rate * 100:.3f}% ({window.failed} of {sent})",
               bool(sent) and error_rate < MAX_ERROR_RATE),
        target("event-loop lag of the API: p99 of 50 ms samples within 100 ms",
               f"{lag.over_limit} of {lag.samples} samples over 100 ms; "
               f"p99 ≤ {fmt_ms(lag.p99_bound)}, max ≤ {fmt_ms(lag.max_bound)}", lag_ok),
        *(target(f"{name} RSS flat (last third ≤ first third + 10%)",
                 f"{_mb(rss[name][0])} → {_mb(rss[name][1])} ({growth[name] * 100:+.1f}%)",
                 rss_ok[name]) for name in rss),
        target("every koo published is delivered once the queue drains",
               f"{delivered} of {published} (drained in {drained_in:.1f} s)",
               published > 0 and delivered == published),
        target("reads sent at the requested rate (open loop)",
               f"{achieved:,.1f}/s of {opts.rate:,.0f}/s", achieved >= 0.95 * opts.rate),
    ]
    rows = [[c["target"], str(c["measured"]), "met" if c["met"] else "**not met**"]
            for c in criteria]
    details = [
        ["feed reads sent (measured window)", f"{sent:,} in {opts.seconds:.0f} s"],
        ["read latency p50 / p99 / max (answered)",
         f"{fmt_ms(median(lat))} / {fmt_ms(percentile(lat, 99))} / "
         f"{fmt_ms(max(lat) if lat else math.nan)}"],
        *([f"{name} main thread: on a CPU / waiting for one",
           f"{run / opts.seconds * 100:.0f}% / {wait / opts.seconds * 100:.0f}% of the window"]
          for name, (run, wait) in sorted(window.cpu.items())),
        [f"failed / sent per {window.slice_seconds:g} s of the window",
         ", ".join(f"{window.slices[k][1]}/{window.slices[k][0]}"
                   for k in sorted(window.slices))],
        ["errors by kind", ", ".join(f"{k}: {v}" for k, v in window.errors.items()) or "none"],
        ["driver lateness p99 (request sent after its slot)",
         fmt_ms(percentile(window.late, 99))],
        ["koos published (whole run, incl. warm-up)",
         f"{published:,} ({opts.koos_per_second:g}/s x {opts.followers} followers)"],
        ["publish errors", str(publish_errors)],
        ["exit codes after SIGTERM", ", ".join(f"{k}: {v}" for k, v in sorted(exits.items()))],
    ]
    markdown = "\n\n".join([
        f"### Soak: {opts.rate:g} feed reads/s for {opts.seconds:g} s "
        f"(after {opts.warmup:g} s warm-up) with continuous fan-out",
        markdown_table(["criterion", "measured", "result"], rows),
        markdown_table(["detail", "value"], details),
    ])
    figures: dict[str, float | None] = {
        "soak.reads_sent": float(sent),
        "soak.reads_per_s": achieved,
        "soak.error_rate_ratio": error_rate,
        "soak.read_p50_ms": median(lat) * 1000,
        "soak.read_p99_ms": percentile(lat, 99) * 1000,
        "soak.loop_lag_samples": float(lag.samples),
        "soak.loop_lag_over_100ms": float(lag.over_limit),
        "soak.loop_lag_p99_le_ms": lag.p99_bound * 1000,
        "soak.loop_lag_max_le_ms": lag.max_bound * 1000,
        "soak.api_cpu_ratio": window.cpu.get("api", (math.nan, math.nan))[0] / opts.seconds,
        "soak.api_cpu_wait_ratio": window.cpu.get("api", (math.nan, math.nan))[1]
        / opts.seconds,
        "soak.koos_published": float(published),
        "soak.koos_delivered": float(delivered),
        "soak.drain_s": drained_in,
    }
    for name, (first, last) in rss.items():
        figures[f"soak.{name}_rss_first_third_bytes"] = first
        figures[f"soak.{name}_rss_last_third_bytes"] = last
        figures[f"soak.{name}_rss_growth_ratio"] = growth[name]
    return bench_document(
        "soak", f"Soak: {opts.rate:g} feed reads/s with continuous fan-out", command_line(),
        env, markdown, figures, latency_ms={"feed read": [x * 1000 for x in lat]},
        targets=criteria, elapsed_s=elapsed, passed=all(c["met"] for c in criteria),
        options=vars(opts), errors=window.errors, loop_lag=lag.as_json(),
        slices={"seconds": window.slice_seconds,
                "sent_failed": [window.slices[k] for k in sorted(window.slices)]},
        rss_series={name: [v for _, v in s] for name, s in window.rss.items()},
    )


# --- main --------------------------------------------------------------------------------


async def soak(opts: Options, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    this = asyncio.current_task()
    assert this is not None
    # SIGTERM cancels the run, so the processes it started are stopped and its tables dropped.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    for url in {opts.redis_url, opts.cache_redis_url or opts.redis_url}:
        if redis_db(url) == 0:
            raise SystemExit(f"refusing to flush database 0 of {url}: pass another database")
    run = f"s{uuid.uuid4().hex[:6]}"
    settings = Settings(
        redis_url=opts.redis_url, cache_redis_url=opts.cache_redis_url,
        dynamodb_endpoint=opts.dynamodb_endpoint, table_prefix=f"soak{run}_",
        api_tokens=(TOKEN,),
    )
    probe = Redis.from_url(settings.redis_url)
    try:
        env = await environment(probe, settings.redis_url, settings.dynamodb_endpoint)
    finally:
        await probe.aclose()
    await _flush(settings)
    api: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    exits: dict[str, int | None] = {}
    try:
        with progress("tables and graph"):
            graph = await load_graph(settings, opts, run)
        port = free_port()
        with progress("api and worker"):
            api = _spawn(["api", "--port", str(port)], settings, workdir / "api.log")
            worker = _spawn(["worker"], settings, workdir / "worker.log")
            base_url = f"http://127.0.0.1:{port}"
            await _wait_ready(base_url, api, workdir / "api.log")
        # aiohttp, not httpx: httpx's pool costs grow with the requests waiting in it, so
        # under an open loop a slow moment would turn the driver into the bottleneck.
        async with aiohttp.ClientSession(
            base_url=base_url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            connector=aiohttp.TCPConnector(limit=200),
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            load = Soak(opts, settings, graph, base_url, {"api": api.pid, "worker": worker.pid})
            with progress(f"first read of each of {len(graph.readers):,} readers"):
                cold = await prewarm(client, graph.readers)
            with progress(f"load: {opts.warmup:g} s warm-up, {opts.seconds:g} s measured"):
                window, lag = await load.run(client, run)
        with progress("queue drain and delivery check"):
            delivered, drained_in = await wait_delivered(settings, load.published,
                                                         opts.drain_seconds)
            depth = await _queue_depth(settings)
        exits = {"api": _stop(api), "worker": _stop(worker)}
        document = report(opts, window, lag, delivered, len(load.published), drained_in,
                          load.publish_errors, exits, env, time.monotonic() - started)
        document["queue_depth_after"] = depth
        document["prewarm_errors"] = cold
        document["log_tails"] = {name: _tail(workdir / f"{name}.log")
                                 for name in ("api", "worker")}
        return document
    finally:
        for proc in (api, worker):
            if proc is not None and proc.poll() is None:
                _stop(proc)
        with contextlib.suppress(Exception):
            async with open_dynamo(settings) as db:
                await drop_tables(db)
        with contextlib.suppress(Exception):
            await _flush(settings)


async def _flush(settings: Settings) -> None:
    for url in {settings.redis_url, settings.cache_redis_url}:
        redis = Redis.from_url(url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()


async def _queue_depth(settings: Settings) -> int:
    redis = open_queue_redis(settings)
    try:
        return sum([int(await redis.zcard(q)) for q in keys.QUEUES.values()])
    finally:
        await redis.aclose()


async def _wait_ready(base_url: str, api: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(base_url=base_url,
                                     timeout=aiohttp.ClientTimeout(total=2)) as client:
        while True:
            if api.poll() is not None:
                raise RuntimeError(f"feed api exited: {_tail(log_path)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with client.get("/readyz") as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"feed api not ready in 60 s: {_tail(log_path)}")
            await asyncio.sleep(0.2)


async def prewarm(client: aiohttp.ClientSession, readers: Sequence[str],
                  concurrency: int = 8) -> int:
    """One read of each reader's feed, a few at a time: the steady state under test is
    active readers, whose timelines are cached. Returns how many reads failed."""
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(reader: str) -> None:
        nonlocal failed
        async with gate:
            try:
                async with client.get(f"/v1/users/{reader}/feed", params={"limit": "20"}) as r:
                    await r.read()
                    failed += r.status != 200
            except (aiohttp.ClientError, TimeoutError):
                failed += 1

    await asyncio.gather(*(one(r) for r in readers))
    return failed


async def _text(client: aiohttp.ClientSession, path: str) -> str:
    async with client.get(path) as response:
        response.raise_for_status()
        return await response.text()


def _tail(path: Path) -> str:
    return path.read_text()[-2000:]


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, str | None, bool]:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=d.seconds, help="measured window")
    p.add_argument("--warmup", type=float, default=d.warmup, help="unmeasured load first")
    p.add_argument("--rate", type=float, default=d.rate, help="feed reads per second")
    p.add_argument("--koos-per-second", type=float, default=d.koos_per_second)
    p.add_argument("--authors", type=int, default=d.authors)
    p.add_argument("--followers", type=int, default=d.followers, help="per author")
    p.add_argument("--users", type=int, default=d.users, help="readers in the pool")
    p.add_argument("--redis-url", default=d.redis_url,
                   help="the queue's Redis (its database is flushed)")
    p.add_argument("--cache-redis-url", default="",
                   help="the cache's Redis (default: the queue's; its database is flushed)")
    p.add_argument("--dynamodb-endpoint", default=d.dynamodb_endpoint)
    p.add_argument("--drain-seconds", type=float, default=d.drain_seconds)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--json", dest="json_path", help="write the result document here")
    p.add_argument("--check", action="store_true", help="exit 1 if a criterion is not met")
    args = p.parse_args(argv)
    if args.followers > args.users:
        p.error("--followers cannot exceed --users")
    if args.rate <= 0 or args.koos_per_second <= 0 or args.seconds <= 0:
        p.error("--rate, --koos-per-second and --seconds must be positive")
    opts = Options(
        seconds=args.seconds, warmup=args.warmup, rate=args.rate,
        koos_per_second=args.koos_per_second, authors=args.authors, followers=args.followers,
        users=args.users, redis_url=args.redis_url, cache_redis_url=args.cache_redis_url,
        dynamodb_endpoint=args.dynamodb_endpoint, drain_seconds=args.drain_seconds,
        seed=args.seed,
    )
    return opts, args.json_path, args.check


async def run(parsed: tuple[Options, str | None, bool]) -> Outcome:
    opts, json_path, check = parsed
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        document = await soak(opts, Path(tmp))
    summary = orjson.dumps({k: v for k, v in document.items()
                            if k not in {"markdown", "series", "rss_series"}},
                           default=str).decode()
    return Outcome(document["markdown"], after=["", summary], json_path=json_path,
                   document=lambda: document,
                   exit_code=1 if check and not document["passed"] else 0)


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, log_format=logging.BASIC_FORMAT)


if __name__ == "__main__":
    sys.exit(main())
