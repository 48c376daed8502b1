"""Redis memory per cached timeline entry: the service's timelines beside Stream-Framework's.

    .venv/bin/python -m bench.memory [--quick] [--timelines 1000] [--entries 100,200,800]
        [--sf current] [--redis-url URL] [--json PATH]

For each size E, T timelines of E entries each are written through the
service's own code (``Cache.push``, one koo at a time to every timeline, as a
fan-out does) and measured two ways: the sum of ``MEMORY USAGE key SAMPLES 0``
over the timelines, and the server's ``used_memory`` before and after; each is
divided by T x E. Stream-Framework 1.4.0 writes the same number of timelines
and entries through its own feed (``add_many``) into the same Redis and is
measured the same way. Sizes under 128 stay in Redis's compact listpack
encoding; larger ones are skip lists (the table says which each got).

By default a private ``redis-server`` (no persistence) is started on a free
port, so ``used_memory`` moves only with what this bench writes; with
``--redis-url`` a shared server is used (its database is flushed; not 0) and
the delta also counts other clients' allocations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import shutil
import string
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    command_line,
    environment,
    markdown_table,
    progress,
    redis_db,
)
from bench.sf import client as sf_client
from config.settings import Settings
from feed import keys
from feed._embedded import free_port
from feed.cache import Cache

KOO_ID_CHARS = string.digits + "ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in a ULID
# Stream-Framework's feeds keep 100 entries (its max_length); 800 is the service's cap only.
SF_MAX_ENTRIES = 200
REFERENCE_SF = {"listpack": "~52", "skiplist": "136-146"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 timelines")
    parser.add_argument("--timelines", type=int, default=None,
                        help="timelines per size (default 1000; --quick 200)")
    parser.add_argument("--entries", default="100,200,800",
                        help="entries per timeline (default 100,200,800)")
    parser.add_argument("--id-length", type=int, default=26,
                        help="characters per koo id (default 26, a ULID's length)")
    parser.add_argument("--sf", default="current",
                        help="Stream-Framework variant measured beside (current, redis2, none)")
    parser.add_argument("--redis-url", default=None,
                        help="use this Redis database (flushed; not 0) instead of a private "
                        "redis-server")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.redis_url and redis_db(args.redis_url) == 0:
        parser.error("--redis-url must name a database other than 0 (it is flushed)")
    return args


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[str]:
    """A throw-away redis-server on a free port; its URL (database 1)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: pass --redis-url")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
        "no", "--daemonize", "no", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/1"
    try:
        probe = Redis.from_url(url)
        try:
            for _ in range(100):
                with contextlib.suppress(OSError, RedisConnectionError):
                    if await probe.ping():
                        break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"redis-server on port {port} did not answer")
        finally:
            await probe.aclose()
        yield url
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def koo_ids(n: int, length: int, rng: random.Random) -> list[str]:
    return ["".join(rng.choices(KOO_ID_CHARS, k=length)) for _ in range(n)]


async def measure_service(redis: Redis, cache: Cache, timelines: int, entries: int,
                          id_length: int, ttl: int) -> dict[str, Any]:
    """T timelines of E entries written by ``Cache.push``; bytes per entry both ways."""
    readers = [f"mem{i:06d}" for i in range(timelines)]
    await redis.flushdb()
    before = int((await redis.info("memory"))["used_memory"])
    pipe = redis.pipeline(transaction=False)
    for reader in readers:  # active readers: a cached timeline holding the sentinel
        pipe.zadd(keys.timeline(reader), {keys.TIMELINE_READY: math.inf})
        pipe.expire(keys.timeline(reader), ttl)
    await pipe.execute()
    created = int(time.time() * 1000) - entries * 1000
    for i, koo_id in enumerate(koo_ids(entries, id_length, random.Random(entries))):
        for start in range(0, len(readers), 1000):
            pushed = await cache.push(readers[start:start + 1000], koo_id, created + i * 1000)
            if pushed != len(readers[start:start + 1000]):
                raise RuntimeError(f"pushed {pushed} of {len(readers[start:start + 1000])}")
    after = int((await redis.info("memory"))["used_memory"])
    usage = 0
    encodings: dict[str, int] = {}
    for reader in readers:
        key = keys.timeline(reader)
        usage += int(await redis.memory_usage(key, samples=0) or 0)
        encoding = str(await redis.object("encoding", key))
        encodings[encoding] = encodings.get(encoding, 0) + 1
        held = await redis.zcard(key)
        if held != entries + 1:
            raise RuntimeError(f"{key} holds {held} members, not {entries} and the sentinel")
    example = await redis.zrange(keys.timeline(readers[0]), 0, 0, withscores=True)
    await redis.flushdb()
    total = timelines * entries
    return {"timelines": timelines, "entries": entries, "encodings": encodings,
            "memory_usage_bytes_per_entry": usage / total,
            "used_memory_delta_bytes_per_entry": (after - before) / total,
            "member_example": str(example[0][0]) if example else None,
            "score_example": float(example[0][1]) if example else None}


def encoding_of(m: dict[str, Any]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in m["encodings"].items())


async def run(args: argparse.Namespace) -> Outcome | int:
    started = time.monotonic()
    timelines = args.timelines or (200 if args.quick else 1000)
    sizes = [int(x) for x in args.entries.split(",") if x]
    sf_variant = None if args.sf == "none" else args.sf
    notes: list[str] = []
    if sf_variant is not None:
        ready, output = sf_client.ensure([sf_variant])
        if not ready:
            notes.append(f"Stream-Framework ({sf_variant}) not run: could not build it "
                         f"({output.splitlines()[-1:]})")
            sf_variant = None
    async with contextlib.AsyncExitStack() as stack:
        url = args.redis_url or await stack.enter_async_context(private_redis())
        settings = Settings(redis_url=url, log_json=False, log_level="WARNING")
        timeline_items = max(settings.timeline_cache_items, max(sizes))
        settings = Settings(redis_url=url, log_json=False, log_level="WARNING",
                            timeline_cache_items=timeline_items)
        redis: Redis = Redis.from_url(url, decode_responses=True)
        stack.push_async_callback(redis.aclose)
        env = await environment(redis, url if args.redis_url else
                                "a private redis-server (no persistence)", None)
        env.pop("DynamoDB", None)
        env.pop("arq", None)
        config = await redis.config_get("zset-max-listpack-entries")
        env["zset-max-listpack-entries"] = str(config.get("zset-max-listpack-entries", "?"))
        cache = Cache(redis, settings)
        await cache.load_scripts()
        sf = None
        if sf_variant is not None:
            sf = await stack.enter_async_context(sf_client.StreamFramework.start(sf_variant,
                                                                                 url))
            env[f"Stream-Framework ({sf_variant})"] = (
                f"{sf.info['stream-framework']}, redis-py {sf.info['redis-py']}")
        ours: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        for entries in sizes:
            with progress(f"memory: service, {timelines:,} timelines x {entries}"):
                ours.append(await measure_service(redis, cache, timelines, entries,
                                                  args.id_length, settings.active_days * 86_400))
            if sf is not None and entries <= SF_MAX_ENTRIES:
                with progress(f"memory: Stream-Framework, {timelines:,} x {entries}"):
                    await redis.flushdb()
                    theirs.append(await sf.memory(timelines, entries))
                    await redis.flushdb()
    figures: dict[str, float | None] = {}
    targets: list[dict[str, Any]] = []  # target sets no memory target
    rows = []
    by_size = {s["entries"]: s for s in theirs}
    for m in ours:
        e = m["entries"]
        figures[f"service.{e}.memory_usage_bytes"] = m["memory_usage_bytes_per_entry"]
        figures[f"service.{e}.used_memory_delta_bytes"] = m["used_memory_delta_bytes_per_entry"]
        row = [f"{timelines:,} x {e}", "service", encoding_of(m),
               f"{m['memory_usage_bytes_per_entry']:.1f}",
               f"{m['used_memory_delta_bytes_per_entry']:.1f}", "-"]
        rows.append(row)
        if e in by_size:
            s = by_size[e]
            figures[f"sf.{e}.memory_usage_bytes"] = s["memory_usage_bytes_per_entry"]
            figures[f"sf.{e}.used_memory_delta_bytes"] = s["used_memory_delta_bytes_per_entry"]
            ratio = m["memory_usage_bytes_per_entry"] / s["memory_usage_bytes_per_entry"]
            figures[f"service_over_sf.{e}.memory_usage_ratio"] = ratio
            enc = next(iter(s["encodings"]), "?")
            rows.append([f"{timelines:,} x {e}", f"Stream-Framework ({sf_variant})",
                         encoding_of(s), f"{s['memory_usage_bytes_per_entry']:.1f}",
                         f"{s['used_memory_delta_bytes_per_entry']:.1f}",
                         REFERENCE_SF.get(enc, "-")])
    ours_example = ours[0] if ours else {}
    sf_example = theirs[0] if theirs else {}
    markdown = "\n".join([
        "### Redis memory per cached timeline entry (bytes)", "",
        markdown_table(["timelines x entries", "who", "encoding", "MEMORY USAGE",
                        "used_memory delta", "target (SF)"], rows), "",
        "MEMORY USAGE: `MEMORY USAGE key SAMPLES 0` summed over the timelines / entries "
        "(key and set overhead included, spread over the entries). used_memory delta: the "
        "server's `used_memory` after minus before / entries. The service's timelines also "
        "hold the `!ready` sentinel (counted as overhead, not as an entry) and have a TTL.",
        "",
        f"Members: the service stores the koo id ({args.id_length} characters here, e.g. "
        f"`{ours_example.get('member_example')}`) scored by its creation time in ms; "
        f"Stream-Framework stores its 26-digit serialization id as text (e.g. "
        f"`{sf_example.get('member_example')}`) scored by the same number as a float.",
        *[f"- {n}" for n in notes],
    ])
    command = command_line()
    elapsed = time.monotonic() - started
    return Outcome(
        markdown, env=env, command=command, json_path=args.json,
        document=lambda: bench_document(
            "memory", "Redis memory per cached timeline entry", command, env, markdown,
            figures, targets=targets, notes=notes, elapsed_s=elapsed,
            data={"service": ours, "stream_framework": theirs, "timelines": timelines,
                  "id_length": args.id_length}),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, log_format=None)


if __name__ == "__main__":
    sys.exit(main())
