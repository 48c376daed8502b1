"""The queue's Redis: commands, CPU and memory per event, and where one Redis saturates.

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.queue --quick                 # ~2 min
    .venv/bin/python -m bench.queue --json bench/out/queue.json
    bash scripts/dynamodb-local.sh stop 8766

Options: ``--events N`` (per event type, part 1; default 500, --quick 200), ``--jobs N``
(no-op jobs per run, part 2; default 40,000, --quick 15,000), ``--workers 1,2,4`` (worker
processes per run), ``--producers N`` (enqueueing processes, default 2),
``--dynamodb-endpoint URL`` (default http://127.0.0.1:8766), ``--cache-redis-url`` (the
cache's database, default redis://127.0.0.1:6379/7, **flushed**; not 0), ``--json``.

The queue's Redis is a private ``redis-server`` this bench starts on a free port (no
persistence), so its ``INFO commandstats``, ``INFO cpu`` and ``used_memory`` move only
with the queue's traffic.

1. **Per event**: for each event type (``bench.events``' workload: signups, follows,
   koos of 10 followers, reactions, unfollows, blocks, mutes, deletes), N events are
   published through the service's publisher, then applied by an in-process burst worker
   (``workers.runner.run_workers``, both queues, follow-up jobs included). Commands, the
   server's CPU and its memory are read before, after publishing and after applying; an
   empty burst run's share (start, polls, stop: the median of three) is subtracted.
   Memory after publishing is what a waiting event holds; after applying, what its
   results hold until they expire.
2. **Saturation**: no-op jobs through arq as the service enqueues them (its JSON
   serializer, job ids, the realtime queue) by ``--producers`` processes (64 in flight
   each), run by W worker processes (arq with the realtime worker's settings: poll every
   10 ms, 32 jobs at a time, results kept 120 s); jobs/s from the first enqueue to an
   empty queue, the Redis server's CPU (cores busy), and its CPU per job. Redis runs
   commands on one thread, so one core's worth of CPU divided by the CPU per job is the
   rate at which it saturates; on this machine the clients, on the same cores, give out
   first, so that rate is an extrapolation from the measured CPU per job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from arq.worker import Worker, func
from redis.asyncio import Redis

from bench._common import (
    ROOT,
    Outcome,
    bench_document,
    bench_main,
    check_flushable_dbs,
    command_line,
    environment,
    fmt_int,
    machine_busy_seconds,
    markdown_table,
    median,
    process_cpu_seconds,
    progress,
)
from bench.events import PHASES, World, events_of
from config.settings import Settings
from feed import keys
from feed._embedded import free_port
from feed.jobs import REALTIME, Job
from feed.queue import ArqJobQueue, deserialize_job, open_queue_redis, serialize_job
from feed.services import open_services
from feed.store import create_tables, drop_tables
from workers.runner import run_workers
from workers.settings import REALTIME_KEEP_RESULT_SECONDS, RealtimeWorker

TITLE = "The queue's Redis: commands per event and saturation"
NOOP = Job("noop", REALTIME)
IN_FLIGHT = 64  # enqueues in flight per producer, as the publisher allows


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port (no persistence); its URL, database 1."""
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                               "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/1"
    finally:
        server.terminate()
        server.wait(10)


async def server_state(redis: Redis) -> dict[str, float]:
    """Commands run so far, CPU seconds and memory in use of one Redis server."""
    stats: dict[str, Any] = await redis.info("commandstats")
    cpu: dict[str, Any] = await redis.info("cpu")
    memory: dict[str, Any] = await redis.info("memory")
    state = {f"cmd.{name.removeprefix('cmdstat_')}": float(v["calls"])
             for name, v in stats.items()}
    state["commands"] = sum(v for k, v in state.items() if k.startswith("cmd."))
    state["cpu_s"] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    state["memory"] = float(memory["used_memory"])
    return state


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


# --- part 1: per event ------------------------------------------------------------------


async def per_event(opts: argparse.Namespace, queue_url: str, redis: Redis
                    ) -> dict[str, dict[str, float]]:
    settings = Settings(redis_url=queue_url, cache_redis_url=opts.cache_redis_url,
                        dynamodb_endpoint=opts.dynamodb_endpoint, aws_region="ap-south-1",
                        table_prefix=f"bq{uuid.uuid4().hex[:6]}_", log_json=False,
                        log_level="WARNING")
    n = opts.events
    world = World(users=[f"bq{uuid.uuid4().hex[:12]}" for _ in range(n)], followers=10,
                  koos=[f"bqk{uuid.uuid4().hex[:12]}" for _ in range(n)],
                  now=int(time.time() * 1000) - 3_600_000)
    out: dict[str, dict[str, float]] = {}
    async with open_services(settings) as services:
        await create_tables(services.stores.db)
        try:
            async def burst() -> None:
                await run_workers(settings, burst=True, services=services,
                                  handle_signals=False)

            idle = []
            for _ in range(3):
                before = await server_state(redis)
                await burst()
                idle.append(delta(await server_state(redis), before))
            empty = {k: median([i.get(k, 0.0) for i in idle]) for k in idle[0]}
            for index, kind in enumerate(PHASES):
                events = events_of(kind, world, n, world.now + index * 10 * n)
                with progress(f"{n} {kind}"):
                    s0 = await server_state(redis)
                    for start in range(0, n, 500):
                        await services.publisher.publish(events[start:start + 500])
                    s1 = await server_state(redis)
                    await burst()
                    await asyncio.sleep(0.2)  # the last results written
                    s2 = await server_state(redis)
                published, applied = delta(s1, s0), delta(s2, s1)
                out[kind] = {
                    "publish_commands": published["commands"] / n,
                    "worker_commands": (applied["commands"] - empty["commands"]) / n,
                    "cpu_us": (published["cpu_s"] + applied["cpu_s"] - empty["cpu_s"])
                    / n * 1e6,
                    "queued_bytes": published["memory"] / n,
                    "result_bytes": (s2["memory"] - s0["memory"]) / n,
                    **{k: (published.get(k, 0.0) + applied.get(k, 0.0) - empty.get(k, 0.0)) / n
                       for k in s2 if k.startswith("cmd.")},
                }
                await redis.flushdb()  # results and keys gone: the next type starts clean
        finally:
            await drop_tables(services.stores.db)
    return out


# --- part 2: saturation with no-op jobs ------------------------------------------------


async def noop(ctx: dict[Any, Any]) -> None:
    """A job that does nothing: what is left is the queue's own cost."""


def child_worker(url: str) -> None:
    """One arq worker process with the realtime worker's settings, running no-op jobs."""
    worker = Worker(
        functions=[func(noop, name=NOOP.name, keep_result=REALTIME_KEEP_RESULT_SECONDS)],
        redis_pool=open_queue_redis(Settings(redis_url=url)),
        queue_name=keys.QUEUES[REALTIME], poll_delay=RealtimeWorker.poll_delay,
        max_jobs=RealtimeWorker.max_jobs, keep_result=RealtimeWorker.keep_result,
        job_serializer=serialize_job, job_deserializer=deserialize_job,
        health_check_key=f"bench:noop:{os.getpid()}", handle_signals=True, log_results=False)
    worker.run()


async def child_producer(url: str, jobs: int) -> None:
    """Enqueue ``jobs`` no-op jobs as the service enqueues its jobs."""
    pool = open_queue_redis(Settings(redis_url=url))
    queue = ArqJobQueue(pool)
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with semaphore:
            await queue.enqueue(NOOP, job_id=f"noop-{uuid.uuid4().hex}")

    await asyncio.gather(*(one() for _ in range(jobs)))
    await pool.aclose()


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.queue", "--child", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL)


async def saturation_run(url: str, redis: Redis, workers: int, opts: argparse.Namespace
                         ) -> dict[str, float]:
    await redis.flushdb()
    procs = [spawn("worker", url) for _ in range(workers)]
    try:
        await asyncio.sleep(2.0)  # started and polling
        s0, busy0, started = await server_state(redis), machine_busy_seconds(), time.time()
        share = opts.jobs // opts.producers
        producers = [spawn("producer", url, str(share)) for _ in range(opts.producers)]
        queue, deadline = keys.QUEUES[REALTIME], time.monotonic() + 600
        while any(p.poll() is None for p in producers) or await redis.zcard(queue) or \
                [k async for k in redis.scan_iter(match="arq:in-progress:*", count=1000)]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} worker(s): jobs not done in 600 s")
            await asyncio.sleep(0.02)
        elapsed = time.time() - started
        if any(p.returncode for p in producers):
            raise RuntimeError(f"a producer exited with {[p.returncode for p in producers]}")
        s1, busy1 = await server_state(redis), machine_busy_seconds()
        cpu = {"workers": sum(process_cpu_seconds(p.pid) for p in procs)}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    jobs = share * opts.producers
    d = delta(s1, s0)
    return {"workers": workers, "jobs": jobs, "seconds": elapsed, "jobs_per_s": jobs / elapsed,
            "redis_cores": d["cpu_s"] / elapsed, "redis_cpu_us_per_job": d["cpu_s"] / jobs * 1e6,
            "commands_per_job": d["commands"] / jobs,
            "saturation_jobs_per_s": jobs / d["cpu_s"] if d["cpu_s"] else float("nan"),
            "worker_cores": cpu["workers"] / elapsed, "machine_cores": (busy1 - busy0) / elapsed}


# --- report -----------------------------------------------------------------------------


def report(events: dict[str, dict[str, float]], runs: list[dict[str, float]]
           ) -> tuple[str, dict[str, float | None]]:
    figures: dict[str, float | None] = {}
    rows = []
    for kind, e in events.items():
        top = sorted(((k[4:], v) for k, v in e.items() if k.startswith("cmd.") and v > 0.05),
                     key=lambda kv: -kv[1])[:6]
        total = e["publish_commands"] + e["worker_commands"]
        rows.append([kind, f"{e['publish_commands']:.1f}", f"{e['worker_commands']:.1f}",
                     f"{total:.1f}", f"{e['cpu_us']:.0f}", fmt_int(1e6 / e["cpu_us"]),
                     fmt_int(e["queued_bytes"]), fmt_int(e["result_bytes"]),
                     ", ".join(f"{k} {v:.1f}" for k, v in top)])
        figures[f"event.{kind}.commands"] = total
        figures[f"event.{kind}.redis_cpu_us"] = e["cpu_us"]
        figures[f"event.{kind}.queued_bytes"] = e["queued_bytes"]
        figures[f"event.{kind}.result_bytes"] = e["result_bytes"]
    sat = [[str(int(r["workers"])), fmt_int(r["jobs"]), f"{r['seconds']:.1f} s",
            fmt_int(r["jobs_per_s"]), f"{r['redis_cores']:.2f}",
            f"{r['redis_cpu_us_per_job']:.0f}", f"{r['commands_per_job']:.1f}",
            fmt_int(r["saturation_jobs_per_s"]), f"{r['worker_cores']:.2f}",
            f"{r['machine_cores']:.2f}"] for r in runs]
    for r in runs:
        w = int(r["workers"])
        figures[f"noop.workers_{w}.jobs_per_s"] = r["jobs_per_s"]
        figures[f"noop.workers_{w}.redis_cpu_us_per_job"] = r["redis_cpu_us_per_job"]
        figures[f"noop.workers_{w}.saturation_jobs_per_s"] = r["saturation_jobs_per_s"]
    text = "\n".join([
        "### 1. Queue Redis per event (publisher + burst worker, follow-up jobs included)", "",
        markdown_table(["event type", "commands publishing", "commands applying",
                        "commands per event", "Redis CPU µs per event",
                        "events/s at one Redis core", "bytes while queued",
                        "bytes after (results, 120 s)", "most frequent commands"], rows), "",
        "### 2. No-op jobs through arq: where one queue Redis saturates", "",
        markdown_table(["worker processes", "jobs", "time", "jobs/s", "Redis cores busy",
                        "Redis CPU µs per job", "commands per job",
                        "jobs/s at one Redis core", "worker cores", "machine cores busy"],
                       sat), "",
        "Jobs/s at one Redis core: 1 / Redis CPU per job, the rate at which the server's "
        "one command thread is fully busy (an extrapolation where fewer cores were busy).",
    ])
    return text, figures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.queue",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", default="", help="events,noop")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    check_flushable_dbs(parser, args, "cache_redis_url")
    args.events = args.events or (200 if args.quick else 500)
    args.jobs = args.jobs or (15_000 if args.quick else 40_000)
    args.workers = [int(w) for w in args.workers.split(",") if w]
    return args


async def run(opts: argparse.Namespace) -> Outcome | int:
    if opts.child:
        role, url, *rest = opts.child
        if role == "producer":
            await child_producer(url, int(rest[0]))
        return 0
    started = time.monotonic()
    events: dict[str, dict[str, float]] = {}
    runs: list[dict[str, float]] = []
    with private_redis() as url:
        redis, cache = Redis.from_url(url), Redis.from_url(opts.cache_redis_url)
        try:
            env = await environment(redis, url, opts.dynamodb_endpoint)
            await cache.flushdb()
            if "events" not in opts.skip:
                events = await per_event(opts, url, redis)
            await cache.flushdb()
            if "noop" not in opts.skip:
                for w in opts.workers:
                    with progress(f"{opts.jobs} no-op jobs, {w} worker process(es)"):
                        runs.append(await saturation_run(url, redis, w, opts))
        finally:
            await cache.flushdb()
            await cache.aclose()
            await redis.aclose()
    env["Redis server"] += " (private, no persistence: the queue's only)"
    markdown, figures = report(events, runs)
    elapsed, command = time.monotonic() - started, command_line()
    return Outcome(markdown, heading=f"# {TITLE}", env=env, command=command,
                   elapsed_s=elapsed, json_path=opts.json,
                   document=lambda: bench_document("queue", TITLE, command, env, markdown,
                                                   figures, elapsed_s=elapsed,
                                                   data={"events": events, "noop": runs}))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child and args.child[0] == "worker":
        child_worker(args.child[1])
        return 0
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
