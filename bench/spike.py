"""Spike benchmark: a 20x signup burst and an 8x feed-read burst at the same time.

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.spike [--quick] [--dynamodb-endpoint URL] [--json out.json]

Setup: the read benchmark's synthetic graph (``--readers`` users, default 500) bulk-loaded
into fresh DynamoDB tables (``benchs<hex>_*``, dropped at the end), every reader's cache
warmed by two in-process reads, then ``feed api`` and ``feed worker`` started as real
processes (uvicorn with uvloop and httptools; arq on the queue's Redis).

One open-loop generator process (``bench._load``: each request sent at its intended time
and timed from it, so a stall is never hidden) runs three phases back to back:

- **before**: ``--before`` seconds at the baseline rates: feed reads
  (``GET /v1/users/{id}/feed?limit=20``, rotating over the warmed readers) at
  ``--read-rate`` per second (default 25) and signups (``POST /v1/events`` with one
  ``user_signed_up`` event each, a fresh user id every time) at ``--signup-rate`` per
  second (default 5);
- **burst**: ``--burst`` seconds with reads at ``--read-burst`` x (default 8x: 200/s) and
  signups at ``--signup-burst`` x (default 20x: 100/s) at once;
- **after**: ``--after`` seconds back at the baseline rates.

Meanwhile the bench samples the realtime queue's depth every 100 ms. It reports read and
signup p50/p99 per phase, the deepest queue, the **drain time** (from the end of the
burst until no job is waiting; and from the end of the run until the queue is empty with
no job running), whether every signup's profile was readable then, and the **count that
proves nothing was lost**: every signup the API accepted (202) is looked up in DynamoDB
afterwards (a consistent GetItem through the service's own store) and the missing ones
are counted, as are answers other than 202.

Targets (docs/performance.md): read p99 during the burst under 10 ms; nothing lost; the queue
drains.

Options: ``--readers N``, ``--read-rate R``, ``--signup-rate R``, ``--read-burst X``,
``--signup-burst X``, ``--before S`` / ``--burst S`` / ``--after S`` (10/20/10;
``--quick`` 5/10/5 and 200 readers), ``--api-workers N`` (2), ``--drain-limit S`` (120),
``--dynamodb-endpoint URL`` (``http://127.0.0.1:8766``), ``--queue-redis-url`` /
``--cache-redis-url`` (``redis://127.0.0.1:6379/10`` and ``/11``: **both flushed** at the
start and the end; database 0 is refused), ``--json PATH``.
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
from collections.abc import Sequence
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
    markdown_table,
    median,
    percentile,
    progress,
    target,
    version,
)
from bench._load import (
    Segment,
    Stream,
    api_process,
    closed_loop_python,
    free_port,
    load_graph,
    make_graph,
    run_open_loop,
    sampling,
    service_env,
    source_revision,
    wait_quiet,
    warm_feeds,
    worker_process,
    worst_seconds,
)
from config.settings import Settings
from feed import keys
from feed.reader import Reader
from feed.services import open_services
from feed.store import create_tables, drop_tables, open_dynamo

READ_P99_TARGET_MS = 10.0
PHASES = ("before", "burst", "after")


@dataclass(frozen=True, slots=True)
class Options:
    readers: int
    read_rate: float
    signup_rate: float
    read_burst: float
    signup_burst: float
    before: float
    burst: float
    after: float
    api_workers: int
    drain_limit: float
    dynamodb_endpoint: str
    queue_redis_url: str
    cache_redis_url: str
    json: str | None
    quick: bool

    def rates(self, phase: str) -> dict[str, float]:
        if phase == "burst":
            return {"reads": self.read_rate * self.read_burst,
                    "signups": self.signup_rate * self.signup_burst}
        return {"reads": self.read_rate, "signups": self.signup_rate}

    def seconds(self, phase: str) -> float:
        return {"before": self.before, "burst": self.burst, "after": self.after}[phase]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.spike",
        description="A signup burst and a feed-read burst at once, against `feed api` and "
        "`feed worker` processes; prints a Markdown report.")
    parser.add_argument("--readers", type=int, help="users in the graph (500; --quick 200)")
    parser.add_argument("--read-rate", type=float, default=25.0,
                        help="baseline feed reads per second (25)")
    parser.add_argument("--signup-rate", type=float, default=5.0,
                        help="baseline signups per second (5)")
    parser.add_argument("--read-burst", type=float, default=8.0,
                        help="read multiplier during the burst (8)")
    parser.add_argument("--signup-burst", type=float, default=20.0,
                        help="signup multiplier during the burst (20)")
    parser.add_argument("--before", type=float, help="seconds at baseline first (10; "
                        "--quick 5)")
    parser.add_argument("--burst", type=float, help="seconds of burst (20; --quick 10)")
    parser.add_argument("--after", type=float, help="seconds at baseline after (10; "
                        "--quick 5)")
    parser.add_argument("--api-workers", type=int, default=2,
                        help="`feed api --workers` (2: one per core, as the README advises)")
    parser.add_argument("--drain-limit", type=float, default=120.0,
                        help="seconds to wait for the queue to drain after the run (120)")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766",
                        help="DynamoDB endpoint (start one: bash scripts/dynamodb-local.sh "
                        "start 8766)")
    parser.add_argument("--queue-redis-url", default="redis://127.0.0.1:6379/10",
                        help="the queue's Redis database (flushed!)")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/11",
                        help="the hot cache's Redis database (flushed!)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--quick", action="store_true", help="a small run (about 1.5 min)")
    args = parser.parse_args(argv)
    check_flushable_dbs(parser, args, "queue_redis_url", "cache_redis_url")
    if args.queue_redis_url == args.cache_redis_url:
        parser.error("the queue and the cache need different databases")
    quick = args.quick
    return Options(
        readers=args.readers or (200 if quick else 500),
        read_rate=args.read_rate, signup_rate=args.signup_rate,
        read_burst=args.read_burst, signup_burst=args.signup_burst,
        before=args.before or (5.0 if quick else 10.0),
        burst=args.burst or (10.0 if quick else 20.0),
        after=args.after or (5.0 if quick else 10.0),
        api_workers=args.api_workers, drain_limit=args.drain_limit,
        dynamodb_endpoint=args.dynamodb_endpoint.rstrip("/"),
        queue_redis_url=args.queue_redis_url, cache_redis_url=args.cache_redis_url,
        json=args.json, quick=quick,
    )


# --- the queue --------------------------------------------------------------------------


async def queue_state(queue: Redis) -> tuple[int, int]:
    """(jobs due in the realtime queue, jobs running)."""
    now_ms = int(time.time() * 1000)
    depth = int(await queue.zcount(keys.QUEUES["realtime"], "-inf", now_ms))
    running = 0
    async for key in queue.scan_iter(match="arq:in-progress:*", count=1000):
        # A finished cron run leaves its in-progress mark behind, but not its job.
        job_id = key.removeprefix(b"arq:in-progress:")
        running += bool(await queue.exists(b"arq:job:" + job_id))
    return depth, running


async def wait_drained(queue: Redis, limit_s: float) -> float | None:
    """Seconds until the realtime queue is empty with nothing running (three polls in a
    row), or None if ``limit_s`` passes first."""
    started = time.time()
    quiet = 0
    while time.time() - started < limit_s:
        depth, running = await queue_state(queue)
        quiet = quiet + 1 if depth == 0 and running == 0 else 0
        if quiet >= 3:
            return time.time() - started
        await asyncio.sleep(0.05)
    return None


async def missing_profiles(services: Any, user_ids: Sequence[str]) -> list[str]:
    """The signups whose profile is not (yet) readable in DynamoDB (a consistent GetItem
    each through the service's own store, which knows each profile's home region)."""
    gate = asyncio.Semaphore(16)

    async def exists(user_id: str) -> bool:
        async with gate:
            return await services.stores.users.get(user_id, consistent=True) is not None

    found = await asyncio.gather(*(exists(u) for u in user_ids))
    return [u for u, ok in zip(user_ids, found, strict=True) if not ok]


async def wait_profiles(services: Any, user_ids: Sequence[str], limit_s: float
                        ) -> tuple[float | None, list[str], int]:
    """Poll until every profile is readable: (seconds, missing at the end, passes made)."""
    started = time.time()
    missing = list(user_ids)
    passes = 0
    while True:
        missing = await missing_profiles(services, missing)
        passes += 1
        if not missing:
            return time.time() - started, [], passes
        if time.time() - started > limit_s:
            return None, missing, passes
        await asyncio.sleep(0.5)


# --- report -----------------------------------------------------------------------------


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} ms"


def secs(value: float | None) -> str:
    return "did not drain" if value is None else f"{value:.1f} s"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


async def run(opts: Options) -> Outcome | int:
    started = time.monotonic()
    command = command_line()
    token = f"bench-{secrets.token_urlsafe(18)}"
    graph = make_graph(opts.readers, prefix="bs")
    settings = Settings(
        redis_url=opts.queue_redis_url, cache_redis_url=opts.cache_redis_url,
        dynamodb_endpoint=opts.dynamodb_endpoint,
        table_prefix=f"benchs{uuid.uuid4().hex[:8]}_", api_tokens=(token,),
        celebrity_followers=graph.threshold, log_json=False, log_level="WARNING",
    )
    queue = Redis.from_url(opts.queue_redis_url)
    cache = Redis.from_url(opts.cache_redis_url)
    env = await environment(cache, opts.cache_redis_url, opts.dynamodb_endpoint)
    env["service code"] = source_revision()
    env["processes"] = (f"`feed api --workers {opts.api_workers}` (uvicorn {version('uvicorn')}, "
                        f"uvloop, httptools) and one `feed worker` (arq {version('arq')})")
    env["load generator"] = (f"bench._load open loop (aiohttp {version('aiohttp')}, uvloop, "
                             "one process)")
    if env["DynamoDB"].split(": ", 1)[1].startswith("not answering"):
        print(f"DynamoDB does not answer at {opts.dynamodb_endpoint}: start it with "
              "`bash scripts/dynamodb-local.sh start 8766`", file=sys.stderr)
        return 3
    signup_prefix = f"sp{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {}
    await queue.flushdb()
    await cache.flushdb()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-spike-"))
    print(f"[bench] service logs: {log_dir}", file=sys.stderr, flush=True)
    try:
        async with open_dynamo(settings) as db:
            with progress(f"dynamodb: creating tables {settings.table_prefix}*"):
                await create_tables(db)
            try:
                async with open_services(settings) as services:
                    with progress(f"loading {opts.readers:,} users in bulk"):
                        counts = await load_graph(services, graph)
                    with progress("warming every reader's cache (two reads each)"):
                        await warm_feeds(Reader(services.manager), graph.user_ids)
                    child_env = service_env(settings)
                    with worker_process(child_env, log_path=log_dir / "worker.log"), \
                            api_process(child_env, port=free_port(), workers=opts.api_workers,
                                        log_path=log_dir / "api.log") as base:
                        result = await spike(opts, base, token, graph.user_ids, signup_prefix,
                                             queue, services)
                    result["graph"] = counts
            finally:
                with contextlib.suppress(Exception):
                    await drop_tables(db)
    finally:
        await queue.flushdb()
        await cache.flushdb()
        await queue.aclose()
        await cache.aclose()
    elapsed = time.monotonic() - started
    markdown, figures, targets = report(opts, result)

    def json_document() -> dict[str, Any]:
        latency = {f"reads, {p}": result["reads"][p]["samples"] for p in PHASES}
        latency.update({f"signups, {p}": result["signups"][p]["samples"] for p in PHASES})
        data = {k: v for k, v in result.items() if k not in ("reads", "signups")}
        data["reads"] = {p: {k: v for k, v in s.items() if k != "samples"}
                         for p, s in result["reads"].items()}
        data["signups"] = {p: {k: v for k, v in s.items() if k != "samples"}
                           for p, s in result["signups"].items()}
        return bench_document(
            "spike", "Spike: a 20x signup burst and an 8x feed-read burst at once", command,
            env, markdown, figures, latency_ms=latency, targets=targets, elapsed_s=elapsed,
            data=data)

    return Outcome(markdown, heading="# Spike benchmark", env=env, command=command,
                   elapsed_s=elapsed, json_path=opts.json, document=json_document)


async def spike(opts: Options, base: str, token: str, users: list[str], prefix: str,
                queue: Redis, services: Any) -> dict[str, Any]:
    with progress("warm-up over HTTP (closed loop, 3 s)"):
        await closed_loop_python(base, token, users, connections=4, seconds=3)
        await wait_quiet(base)
    streams = [Stream("reads", "feed", tuple(users)), Stream("signups", "signup", prefix=prefix)]
    segments = [Segment(p, opts.seconds(p), opts.rates(p)) for p in PHASES]
    total = sum(opts.seconds(p) for p in PHASES)
    with progress(f"open loop: {' / '.join(f'{opts.seconds(p):.0f} s' for p in PHASES)}, "
                  f"reads {opts.read_rate:.0f}/s -> {opts.rates('burst')['reads']:.0f}/s, "
                  f"signups {opts.signup_rate:.0f}/s -> "
                  f"{opts.rates('burst')['signups']:.0f}/s"):
        async with sampling(0.1, lambda: queue_state(queue)) as depth_samples:
            load = await run_open_loop(base, token, streams, segments)
            ended = time.time()
            with progress("waiting for the queue to drain"):
                drained = await wait_drained(queue, opts.drain_limit)
    burst_end = load.started_at + opts.before + opts.burst
    # The burst's backlog is gone at the first sample after the burst with no job waiting
    # (baseline signups keep arriving, so "nothing running" is left to the final drain).
    first_empty = next((t for t, (depth, _) in depth_samples if t >= burst_end and depth == 0),
                       None)
    if first_empty is not None:
        drain_after_burst: float | None = first_empty - burst_end
    else:
        drain_after_burst = None if drained is None else ended + drained - burst_end
    with progress(f"checking {len(load.accepted_ids):,} accepted signups in DynamoDB"):
        visible_s, missing, passes = await wait_profiles(
            services, load.accepted_ids, opts.drain_limit if drained is None else 10.0)
    out: dict[str, Any] = {"reads": {}, "signups": {}}
    for stream in ("reads", "signups"):
        for phase in PHASES:
            samples = load.latency_ms.get(phase, {}).get(stream, [])
            out[stream][phase] = {
                "rate_per_s": opts.rates(phase)[stream], "seconds": opts.seconds(phase),
                "n": len(samples), "p50_ms": median(samples),
                "p99_ms": percentile(samples, 99), "max_ms": max(samples, default=math.nan),
                "samples": samples,
            }
    burst_reads = worst_seconds(load.offsets_s.get("burst", {}).get("reads", []),
                                load.latency_ms.get("burst", {}).get("reads", []),
                                READ_P99_TARGET_MS)
    depth_series = [(t - load.started_at, d, r) for t, (d, r) in depth_samples]
    out.update({
        "statuses": load.statuses, "sent": load.sent,
        "accepted": len(load.accepted_ids), "missing": len(missing),
        "missing_sample": missing[:10],
        "queue_depth_max": max((d for _, d, _ in depth_series), default=0),
        "queue_depth_series": depth_series,
        "drain_after_run_s": drained, "drain_after_burst_s": drain_after_burst,
        "profiles_visible_after_drain_s": visible_s, "profile_check_passes": passes,
        "schedule_s": total,
        "sender_lateness_max_ms": load.lateness_ms_max, "burst_read_seconds": burst_reads,
    })
    return out


def report(opts: Options, r: dict[str, Any]
           ) -> tuple[str, dict[str, float | None], list[dict[str, Any]]]:
    out: list[str] = []
    g = r.get("graph", {})
    out += [f"Graph: {g.get('users', 0):,} users (all with a warm cache), "
            f"{g.get('follows', 0):,} follows, {g.get('koos', 0):,} koos, "
            f"{g.get('timeline_rows', 0):,} stored timeline rows. Reads rotate over every "
            "user; each signup is a fresh user id in its own `POST /v1/events`.", ""]
    rows = []
    for stream in ("reads", "signups"):
        for phase in PHASES:
            s = r[stream][phase]
            rows.append([f"{stream}, {phase}", f"{s['rate_per_s']:.0f}/s for "
                         f"{s['seconds']:.0f} s", f"{s['n']:,}", ms(s["p50_ms"]),
                         ms(s["p99_ms"]), ms(s["max_ms"])])
    out.append(markdown_table(["stream, phase", "offered", "answered", "p50", "p99", "max"],
                              rows))
    statuses = r["statuses"]
    read_bad = sum(n for k, n in statuses.get("reads", {}).items() if k != "200")
    signup_bad = sum(n for k, n in statuses.get("signups", {}).items() if k != "202")
    out += ["", "Latency is measured from each request's intended send time (open loop); the "
            f"sender fell at most {r['sender_lateness_max_ms']:.1f} ms behind its schedule. "
            f"Answers: reads {statuses.get('reads', {})}, signups {statuses.get('signups', {})}."]
    sec = r["burst_read_seconds"]
    if sec["worst_at_s"] is not None:
        out += [f"During the burst, {sec['over']} of {sec['windows']} one-second windows of "
                f"reads (by intended send time) had a p99 over {READ_P99_TARGET_MS:.0f} ms; the "
                f"worst, starting {sec['worst_at_s']} s into the run: {ms(sec['worst_p99_ms'])}."]
    out += [""]
    out.append(markdown_table(["queue and durability", "value"], [
        ["deepest realtime queue (sampled every 100 ms)", f"{r['queue_depth_max']:,} jobs"],
        ["drain: end of the burst -> no job waiting (100 ms samples)",
         secs(r["drain_after_burst_s"])],
        ["drain: end of the run -> queue empty, nothing running", secs(r["drain_after_run_s"])],
        ["every accepted signup's profile readable after the drain",
         "at the first check (it took " + secs(r["profiles_visible_after_drain_s"]) + ")"
         if r["profile_check_passes"] == 1 else
         f"after {secs(r['profiles_visible_after_drain_s'])} "
         f"({r['profile_check_passes']} checks)"],
        ["signups sent / accepted (202)", f"{r['sent'].get('signups', 0):,} / "
         f"{r['accepted']:,}"],
        ["accepted signups missing from DynamoDB afterwards", f"**{r['missing']:,}**"],
    ]))
    burst_p99 = r["reads"]["burst"]["p99_ms"]
    nothing_lost = r["missing"] == 0 and r["accepted"] > 0
    targets = [
        target("read p99 during the burst < 10 ms", ms(burst_p99),
               burst_p99 < READ_P99_TARGET_MS),
        target("nothing lost (every signup the API accepted has its profile in DynamoDB)",
               f"{r['missing']} missing of {r['accepted']} accepted ({signup_bad} not "
               "accepted)", nothing_lost),
        target("the queue drains", secs(r["drain_after_run_s"]),
               r["drain_after_run_s"] is not None),
    ]
    out += ["", "### Targets (docs/performance.md)", ""]
    out.append(markdown_table(["target", "measured", "result"],
                              [[t["target"], str(t["measured"]), verdict(t["met"])]
                               for t in targets]))
    if signup_bad:
        out += ["", f"- {signup_bad} signups were not accepted (an answer other than 202, or "
                "a connection error: the producer knows and retries; they are not counted "
                "as lost)."]
    if read_bad:
        out += ["", f"- {read_bad} reads were not answered 200 (their latency is counted: "
                "it is what the client waited); the API answers 503 when a read takes "
                "longer than its bound, which an overloaded server does."]
    figures: dict[str, float | None] = {
        "reads.before.p99_ms": r["reads"]["before"]["p99_ms"],
        "reads.burst.p99_ms": burst_p99, "reads.burst.p50_ms": r["reads"]["burst"]["p50_ms"],
        "reads.after.p99_ms": r["reads"]["after"]["p99_ms"],
        "signups.burst.p99_ms": r["signups"]["burst"]["p99_ms"],
        "queue.depth_max_jobs": float(r["queue_depth_max"]),
        "queue.drain_after_burst_s": r["drain_after_burst_s"],
        "signups.accepted_count": float(r["accepted"]),
        "signups.missing_count": float(r["missing"]),
    }
    return "\n".join(out), figures, targets


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, uvloop=True)


if __name__ == "__main__":
    sys.exit(main())
