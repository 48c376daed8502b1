"""The realtime feed stream: latency, idle streams, and the delivery path's cost.

    .venv/bin/python -m bench.stream [--quick] [--redis-url URL] [--cache-redis-url URL]
        [--dynamodb-endpoint URL] [--json PATH]

Three parts, each in one run:

1. Latency: `feed api` processes of their own hold a stream open for every follower of
   an author (100 followers on one process, then 3,000 on one, then 3,000 dealt to two:
   one process per core of a 2-core machine), while a worker in this process
   applies the author's koos, published as events. Per koo: the time from the publish to
   the koo's ``koo`` event on every follower's stream, beside the time to the koo in
   every follower's cached timeline (the delivery latency, polled as bench.fanout does).
   Target: stream p99 <= delivery p99 + 50 ms. Also the CPU time the API process and
   the clients' process spent per streamed frame (from the publish until every stream
   had the koo), which the noise of shared cores moves far less than latencies.
2. Idle streams: 5,000 streams open on a fresh `feed api` process: its RSS before and
   after (per stream), and its CPU over an idle window, keep-alives included. Target:
   <= 250 MB RSS at 5,000 streams.
3. The delivery path's cost (the transport choice): pushing a koo to 1,000 readers'
   cached timelines with the plain push script; with the live check when no reader
   streams; when every reader streams (the live append and one wake-up per batch); and
   the alternative of a pub/sub message per streaming reader (no resumption).

Without ``--dynamodb-endpoint`` DynamoDB is an embedded moto server in this process.
The streams' clients are plain sockets (no SSE library): in part 1 in a process of their
own (``bench/_sse.py``), so they do not share this process's time with the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    command_line,
    environment,
    fmt_ms,
    markdown_table,
    percentile,
    process_cpu_seconds,
    progress,
    target,
)
from bench._sse import api_process, arrival, open_streams, rss_mb, stream_clients
from bench.fanout import (
    _MISSING,
    VISIBLE_TIMEOUT,
    create_timelines,
    koo_event,
    stop_worker,
    wait_idle,
    wait_visible,
)
from config.settings import Settings
from feed import keys
from feed._embedded import embedded_dynamodb
from feed.jobs import REALTIME
from feed.models import User
from feed.services import Services, open_services
from feed.store import create_tables, open_dynamo

TOKEN = "bench-stream-token-0123"
# (followers, API processes their streams are dealt to): one process is the worst case;
# two is one per core of this machine, as a deployment would run them.
LATENCY_RUNS = ((100, 1), (3_000, 1), (3_000, 2))
LATENCY_SIZES = sorted({n for n, _ in LATENCY_RUNS})
IDLE_STREAMS = 5_000
RSS_TARGET_MB = 250.0
SLACK_S = 0.050  # stream p99 may exceed delivery p99 by this much
COST_READERS = 1_000


@dataclass(frozen=True, slots=True)
class Options:
    redis_url: str
    cache_redis_url: str
    dynamodb_endpoint: str | None
    samples: int
    idle_streams: int
    idle_window_s: float
    json: str | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6",
                        help="the queue's Redis database (flushed!)")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/7",
                        help="the cache's Redis database (flushed!)")
    parser.add_argument("--dynamodb-endpoint", default=None,
                        help="DynamoDB endpoint (default: an embedded moto server)")
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter window")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    return Options(args.redis_url, args.cache_redis_url, args.dynamodb_endpoint,
                   samples=5 if args.quick else 20, idle_streams=IDLE_STREAMS,
                   idle_window_s=15.0 if args.quick else 30.0, json=args.json)


@contextlib.contextmanager
def dynamodb(endpoint: str | None) -> Iterator[str]:
    if endpoint:
        yield endpoint
        return
    with embedded_dynamodb() as embedded:
        yield embedded


async def load_users(services: Services, users: Sequence[str],
                     follows: Sequence[tuple[str, str]]) -> None:
    at = int(time.time() * 1000) - 3_600_000
    await services.stores.users.load_many(
        [(User(u, f"@{u}", "hi", "ap-south-1", at, 0, 1), False) for u in users], at=at)
    if follows:
        await services.stores.relations.load_many(
            [(f, keys.REL_FOLLOW, a) for f, a in follows], at=at)


# --- part 1: latency --------------------------------------------------------------------


async def latency_part(opts: Options, settings: Settings, services: Services
                       ) -> list[dict[str, float]]:
    from workers.runner import run_workers  # imports every job module: only when needed

    rows: list[dict[str, float]] = []
    authors = {n: f"bsa{n}" for n in LATENCY_SIZES}
    fans = {n: [f"bsf{n}x{i:05d}" for i in range(n)] for n in LATENCY_SIZES}
    with progress("latency: loading authors and followers"):
        await load_users(services, [*authors.values(), *(f for fs in fans.values() for f in fs)],
                         [(f, authors[n]) for n, fs in fans.items() for f in fs])
        await services.stores.users.load_many(
            [(User(a, "@a", "hi", "ap-south-1", 0, n, 0), False) for n, a in authors.items()],
            at=int(time.time() * 1000) - 3_600_000)
        await create_timelines(services.cache.redis, [f for fs in fans.values() for f in fs],
                               settings.active_days * 86_400)
    checker = Redis.from_url(settings.cache_redis_url)
    missing = checker.register_script(_MISSING)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_workers(settings, (REALTIME,), services=services,
                                             stop=stop, handle_signals=False))
    try:
        async with contextlib.AsyncExitStack() as apis:
            started = [await apis.enter_async_context(
                api_process(settings, TOKEN, IDLE_STREAMS + 100))
                for _ in range(max(n for _, n in LATENCY_RUNS))]
            for size, processes in LATENCY_RUNS:
                pids = [pid for pid, _ in started[:processes]]
                ports = [port for _, port in started[:processes]]
                with progress(f"latency: {size:,} streams on {processes} API process(es), "
                              f"{opts.samples} koos"):
                    async with stream_clients(ports, TOKEN, fans[size]) as clients:
                        row = await _measure(opts, services, missing, authors[size],
                                             fans[size], clients, pids)
                        rows.append({**row, "api_processes": processes})
    finally:
        await stop_worker(stop, worker)
        await checker.aclose()
    return rows


async def _measure(opts: Options, services: Services, missing: object, author: str,
                   readers: list[str], clients: asyncio.subprocess.Process,
                   api_pids: Sequence[int]) -> dict[str, float]:
    """Latencies, and the CPU the API processes and the clients' process spent per
    streamed frame (from the koo's publish until every stream had it; keep-alives and
    the idle pause between koos are outside that window)."""

    def api_seconds() -> float:
        return sum(process_cpu_seconds(pid) for pid in api_pids)

    delivery: list[float] = []
    streamed: list[float] = []
    api_cpu = client_cpu = 0.0
    for i in range(opts.samples + 2):  # the first two warm up
        koo_id = f"bs{len(readers)}k{i}{uuid.uuid4().hex[:6]}"
        waiting = asyncio.create_task(arrival(clients, koo_id))
        await asyncio.sleep(0.05)  # the clients expect it before it is published
        api0, client0 = api_seconds(), process_cpu_seconds(clients.pid)
        started, started_mono = time.perf_counter(), time.monotonic()
        await services.publisher.publish([koo_event(koo_id, author)])
        visible = await wait_visible(missing, readers, koo_id, started,  # type: ignore[arg-type]
                                     VISIBLE_TIMEOUT)
        arrived = await waiting
        if i >= 2 and visible[1] is not None and arrived is not None:
            delivery.append(visible[1])
            streamed.append(arrived - started_mono)
            api_cpu += api_seconds() - api0
            client_cpu += process_cpu_seconds(clients.pid) - client0
        await wait_idle(services)
        await asyncio.sleep(0.2)
    return {"followers": len(readers), "samples": len(delivery),
            "delivery_p50_s": percentile(delivery, 50), "delivery_p99_s": percentile(delivery, 99),
            "stream_p50_s": percentile(streamed, 50), "stream_p99_s": percentile(streamed, 99),
            "api_cpu_per_frame_us": 1e6 * api_cpu / max(1, len(delivery) * len(readers)),
            "client_cpu_per_frame_us": 1e6 * client_cpu / max(1, len(delivery) * len(readers))}


# --- part 2: idle streams ---------------------------------------------------------------


async def idle_part(opts: Options, settings: Settings, services: Services) -> dict[str, float]:
    readers = [f"bsi{i:05d}" for i in range(opts.idle_streams)]
    with progress(f"idle: loading {len(readers):,} readers"):
        await load_users(services, readers, [])
    async with api_process(settings, TOKEN, IDLE_STREAMS + 100) as (pid, port):
        warm = await open_streams(port, readers[:10], TOKEN)
        for stream in warm:
            stream.close()
        await asyncio.sleep(1.0)
        before = rss_mb(pid)
        with progress(f"idle: opening {len(readers):,} streams"):
            streams = await open_streams(port, readers, TOKEN)
        await asyncio.sleep(2.0)
        after = rss_mb(pid)
        cpu0, wall0 = process_cpu_seconds(pid), time.perf_counter()
        comments0 = sum(s.comments for s in streams)
        with progress(f"idle: {opts.idle_window_s:.0f} s with every stream idle"):
            await asyncio.sleep(opts.idle_window_s)
        cpu = process_cpu_seconds(pid) - cpu0
        wall = time.perf_counter() - wall0
        keepalives = sum(s.comments for s in streams) - comments0
        open_now = sum(not s.ended for s in streams)
        for stream in streams:
            stream.close()
    return {"streams": len(readers), "open_at_end": open_now, "rss_before_mb": before,
            "rss_after_mb": after, "rss_per_stream_kb": (after - before) * 1024 / len(readers),
            "idle_cpu_pct": 100 * cpu / wall, "keepalives": keepalives, "window_s": wall}


# --- part 3: the delivery path's cost ---------------------------------------------------


async def cost_part(services: Services, rounds: int = 30) -> dict[str, float]:
    """Microseconds per reader of delivering one koo to 1,000 readers' cached timelines."""
    cache = services.cache
    readers = [f"bsc{i:05d}" for i in range(COST_READERS)]
    await create_timelines(cache.redis, readers, 3_600)
    redis: Redis = cache.redis  # type: ignore[assignment]

    async def timed(run: object) -> float:
        best = []
        for i in range(rounds):
            started = time.perf_counter()
            await run(f"bcost{i}{uuid.uuid4().hex[:6]}")  # type: ignore[operator]
            best.append(time.perf_counter() - started)
        return 1e6 * percentile(best, 50) / len(readers)

    async def plain(koo_id: str) -> None:
        await cache.push(readers, koo_id, 1_000)

    async def live(koo_id: str) -> None:
        await cache.push_live(readers, koo_id, 1_000, "bsauthor")

    async def pubsub(koo_id: str) -> None:
        await cache.push(readers, koo_id, 1_000)
        pipe = redis.pipeline(transaction=False)
        for reader in readers:
            pipe.publish(f"bench:live:{{{reader}}}", koo_id)
        await pipe.execute()

    found = {"plain_push_us": await timed(plain), "live_check_idle_us": await timed(live)}
    for reader in readers:
        await cache.open_live(reader)
    found["live_append_all_us"] = await timed(live)
    found["pubsub_per_reader_us"] = await timed(pubsub)
    return found


# --- the run ----------------------------------------------------------------------------


async def run(opts: Options) -> Outcome:
    wall = time.perf_counter()
    with dynamodb(opts.dynamodb_endpoint) as endpoint:
        settings = Settings(redis_url=opts.redis_url, cache_redis_url=opts.cache_redis_url,
                            dynamodb_endpoint=endpoint, table_prefix=f"bs{uuid.uuid4().hex[:6]}_",
                            api_tokens=(TOKEN,), celebrity_followers=100_000,
                            stream_max_per_process=IDLE_STREAMS + 100, worker_metrics_port=0)
        for url in (opts.redis_url, opts.cache_redis_url):
            flusher = Redis.from_url(url)
            await flusher.flushdb()
            env_redis = flusher
        env = await environment(env_redis, opts.cache_redis_url, endpoint)
        await env_redis.aclose()
        async with open_dynamo(settings) as db:
            await create_tables(db)
        async with open_services(settings) as services:
            cost = await cost_part(services)
            latency = await latency_part(opts, settings, services)
            idle = await idle_part(opts, settings, services)
    return _outcome(opts, env, latency, idle, cost, time.perf_counter() - wall)


def _outcome(opts: Options, env: dict[str, str], latency: list[dict[str, float]],
             idle: dict[str, float], cost: dict[str, float], elapsed: float) -> Outcome:
    command = command_line()
    targets = [target(f"stream p99 <= delivery p99 + 50 ms, {int(r['followers']):,} followers"
                      f" on {int(r['api_processes'])} API process(es)",
                      f"{fmt_ms(r['stream_p99_s'])} vs {fmt_ms(r['delivery_p99_s'])}",
                      r["stream_p99_s"] <= r["delivery_p99_s"] + SLACK_S) for r in latency]
    targets.append(target(f"RSS at {idle['streams']:,} idle streams <= {RSS_TARGET_MB:.0f} MB",
                          f"{idle['rss_after_mb']:.0f} MB",
                          idle["rss_after_mb"] <= RSS_TARGET_MB))
    md = ["### Latency: publish -> koo on every follower's stream, beside delivery",
          markdown_table(["followers (streams open)", "API processes", "koos",
                          "delivery p50", "delivery p99",
                          "stream p50", "stream p99", "target met",
                          "API CPU per frame", "clients' CPU per frame"],
                         [[f"{int(r['followers']):,}", str(int(r["api_processes"])),
                           str(int(r["samples"])),
                           fmt_ms(r["delivery_p50_s"]), fmt_ms(r["delivery_p99_s"]),
                           fmt_ms(r["stream_p50_s"]), fmt_ms(r["stream_p99_s"]),
                           "met" if t["met"] else "**not met**",
                           f"{r['api_cpu_per_frame_us']:.0f} us",
                           f"{r['client_cpu_per_frame_us']:.0f} us"]
                          for r, t in zip(latency, targets, strict=False)]),
          "", "### Idle streams on one API process",
          markdown_table(["streams", "still open", "RSS before", "RSS after",
                          "RSS per stream", "CPU while idle", "keep-alives in window"],
                         [[f"{idle['streams']:,}", f"{idle['open_at_end']:,}",
                           f"{idle['rss_before_mb']:.0f} MB", f"{idle['rss_after_mb']:.0f} MB",
                           f"{idle['rss_per_stream_kb']:.1f} KB",
                           f"{idle['idle_cpu_pct']:.1f}% of a core",
                           f"{idle['keepalives']:,} in {idle['window_s']:.0f} s"]]),
          "", f"### Delivery path cost per reader ({COST_READERS:,} readers per koo)",
          markdown_table(["variant", "us per reader (median)"], [
              ["timeline push only (no stream support)", f"{cost['plain_push_us']:.2f}"],
              ["push + live check, no reader streams", f"{cost['live_check_idle_us']:.2f}"],
              ["push + live append, every reader streams (one wake-up)",
               f"{cost['live_append_all_us']:.2f}"],
              ["push + a pub/sub message per reader (no resumption)",
               f"{cost['pubsub_per_reader_us']:.2f}"]])]
    markdown = "\n".join(md)
    figures: dict[str, float | None] = {}
    for r in latency:
        n = f"{int(r['followers'])}" + ("" if r["api_processes"] == 1
                                        else f"_{int(r['api_processes'])}_processes")
        figures[f"stream_p99_s_{n}"] = r["stream_p99_s"]
        figures[f"delivery_p99_s_{n}"] = r["delivery_p99_s"]
        figures[f"api_cpu_per_frame_us_{n}"] = r["api_cpu_per_frame_us"]
        figures[f"client_cpu_per_frame_us_{n}"] = r["client_cpu_per_frame_us"]
    figures.update({k: float(v) for k, v in idle.items()})
    figures.update(cost)
    return Outcome(
        markdown=markdown, heading="## The realtime feed stream", env=env, command=command,
        elapsed_s=elapsed, json_path=opts.json,
        document=lambda: bench_document("stream", "The realtime feed stream", command, env,
                                        markdown, figures, targets=targets, elapsed_s=elapsed),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
