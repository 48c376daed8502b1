"""Notification benchmark: a burst of likes on one koo (fan-in), and cached notification
reads over HTTP at a steady rate (open loop).

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.notifications [--quick] [--dynamodb-endpoint URL] [--json out.json]

1. **Fan-in**: one author, one koo, then ``--likes`` (10,000) ``reaction_added`` events by
   distinct users published as one burst (batches of 500) while ``--workers`` ``feed
   worker --queue realtime`` processes (real processes, started before the burst) apply
   them and run the notification jobs. Measured from the first publish until the koo's
   like notification counts every liker with nothing left pending: the burst's
   throughput (likes per second, end to end), how many notifications the author has
   (must be exactly one) and its ``actor_count`` (must be ``--likes``), and how many
   times the notification's row was written (its revision: once per settled batch).
2. **Reads, open loop, cache hit**: ``--recipients`` users (500), each with
   ``--groups`` notifications (8) of 2 actors, built in-process through the service's
   own code, every recipient read once in-process (which caches them), then ``feed api``
   (``--api-workers`` processes) as a real process is read at ``--open-rate`` (200)
   requests/s for ``--open-seconds`` (30) by a separate process that sends each request
   at its intended time and times it from then (no coordinated omission), rotating over
   the recipients: ``GET /v1/users/{id}/notifications?limit=20``. The first 2 s warm the
   connections and are left out of the figures.

Targets: exactly one notification with ``actor_count`` equal to the likes; cached reads at
200 requests/s with p99 ≤ 10 ms, every answer 200.

Figures (JSON ``figures``): ``fanin.*`` (likes, seconds, likes_per_s, publish_s,
notifications, actor_count, group_writes) and ``reads.*`` (p50_ms, p99_ms, max_ms,
ok_share, rate).

Options (``--help``): sizes, rates, ``--dynamodb-endpoint`` (``http://127.0.0.1:8766``),
``--queue-redis-url`` / ``--cache-redis-url`` (``redis://127.0.0.1:6379/10`` and ``/11``:
**both are flushed** at the start and the end; database 0 is refused), ``--json PATH``,
``--quick`` (2,000 likes, 100 recipients, 15 s of reads).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
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
    markdown_table,
    percentile,
    target,
)
from bench._load import free_port, service_env, source_revision, wait_quiet
from config.settings import Settings
from config.tables import NOTIFICATIONS, NOTIFY_PENDING
from feed.events import typed, validate_event
from feed.models import User
from feed.notifications import Notifications
from feed.services import open_services
from feed.store import create_tables, drop_tables, open_dynamo
from feed.store.notifications import Source

READ_P99_TARGET_MS = 10.0
START_LIMIT_SECONDS = 60.0
WARMUP_SECONDS = 2.0
FANIN_LIMIT_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class Options:
    likes: int
    workers: int
    recipients: int
    groups: int
    open_rate: float
    open_seconds: float
    api_workers: int
    dynamodb_endpoint: str
    queue_redis_url: str
    cache_redis_url: str
    json: str | None
    quick: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.notifications",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--likes", type=int, help="likes in the burst (10000; --quick 2000)")
    parser.add_argument("--workers", type=int, default=2, help="feed worker processes (2)")
    parser.add_argument("--recipients", type=int, help="recipients read (500; --quick 100)")
    parser.add_argument("--groups", type=int, default=8, help="notifications each (8)")
    parser.add_argument("--open-rate", type=float, default=200.0, help="reads per second")
    parser.add_argument("--open-seconds", type=float, help="seconds of reads (30; --quick 15)")
    parser.add_argument("--api-workers", type=int, default=1, help="feed api processes (1)")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766")
    parser.add_argument("--queue-redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--quick", action="store_true", help="a small run")
    args = parser.parse_args(argv)
    check_flushable_dbs(parser, args, "queue_redis_url", "cache_redis_url")
    return Options(
        likes=args.likes or (2_000 if args.quick else 10_000), workers=args.workers,
        recipients=args.recipients or (100 if args.quick else 500), groups=args.groups,
        open_rate=args.open_rate, open_seconds=args.open_seconds or (15 if args.quick else 30),
        api_workers=args.api_workers, dynamodb_endpoint=args.dynamodb_endpoint,
        queue_redis_url=args.queue_redis_url, cache_redis_url=args.cache_redis_url,
        json=args.json, quick=args.quick,
    )


@contextlib.contextmanager
def _service(args: list[str], env: dict[str, str], log: Path
             ) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m feed.cli ARGS`` as a real process of this interpreter (the ``feed``
    script's interpreter may be another), stopped with SIGTERM at the end."""
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "feed.cli", *args], env=env,
                                stdout=sink, stderr=sink, cwd=ROOT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


async def _ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"feed api exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if await asyncio.to_thread(_status, url) == 200:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready within {START_LIMIT_SECONDS:.0f} s")


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status)


async def _flush(*urls: str) -> None:
    for url in urls:
        async with Redis.from_url(url) as redis:
            await redis.flushdb()


async def _pending(notes: Notifications, recipient: str, group: str) -> int:
    items, _ = await notes.stores.db.query_page(
        NOTIFICATIONS, "user_id = :u AND begins_with(pend, :p)",
        values={":u": {"S": recipient}, ":p": {"S": f"{group}#"}}, index=NOTIFY_PENDING,
        consistent=True, limit=1)
    return len(items)


async def fan_in(opts: Options, settings: Settings, notes: Notifications, log_dir: Path
                 ) -> dict[str, float]:
    """One koo, a burst of likes through real workers: seconds until exactly counted."""
    author, koo_id = f"nb-au-{uuid.uuid4().hex[:6]}", f"nb-k-{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000) - 60_000
    async with open_services(settings) as svc:
        for raw in ({"type": "user_signed_up", "event_id": f"{author}-s", "occurred_at": now,
                     "user_id": author, "handle": "@a", "lang": "hi", "region": "ap-south-1"},
                    {"type": "koo_created", "event_id": f"{koo_id}-c", "occurred_at": now,
                     "koo_id": koo_id, "author_id": author, "text": "viral", "lang": "hi"}):
            await svc.applier.apply(typed(validate_event(raw)))
        likes = [{"type": "reaction_added", "event_id": f"{koo_id}-l{i}",
                  "occurred_at": now + 1 + i % 50_000, "koo_id": koo_id,
                  "user_id": f"nb-l{i:06d}", "kind": "like"} for i in range(opts.likes)]
        group = notes.store.group_of("like", koo_id, now + 1)
        env = service_env(settings)
        with contextlib.ExitStack() as stack:
            for n in range(opts.workers):
                stack.enter_context(_service(["worker", "--queue", "realtime"], env,
                                             log_dir / f"worker{n}.log"))
            await asyncio.sleep(3)  # the workers are up and polling
            started = time.perf_counter()
            for at in range(0, len(likes), 500):
                await svc.publisher.publish(likes[at:at + 500])
            published = time.perf_counter() - started
            while True:
                body = await notes.store.group(author, group)
                # At least all of them, nothing pending: a count past them shows as such.
                if (body and body["actor_count"] >= opts.likes
                        and not await _pending(notes, author, group)):
                    break
                if time.perf_counter() - started > FANIN_LIMIT_SECONDS:
                    raise RuntimeError(f"not counted after {FANIN_LIMIT_SECONDS:.0f} s: "
                                       f"{body and body['actor_count']}")
                await asyncio.sleep(0.1)
            seconds = time.perf_counter() - started
    page = await notes.page(author, limit=20)
    return {"likes": opts.likes, "seconds": seconds, "likes_per_s": opts.likes / seconds,
            "publish_s": published, "notifications": len(page["items"]),
            "actor_count": page["items"][0]["actor_count"] if page["items"] else 0,
            "group_writes": (await notes.store.group(author, group) or {}).get("rev", 0)}


async def build_recipients(opts: Options, notes: Notifications) -> list[str]:
    """Recipients with ``--groups`` notifications of two actors each, through the
    service's own switch and settle, then read once (which caches them)."""
    recipients = [f"nb-r{i:05d}" for i in range(opts.recipients)]
    now = int(time.time() * 1000) - 3_600_000
    await notes.stores.users.load_many(
        [(User(r, f"@{r}", "hi", "ap-south-1", now), False) for r in recipients], at=now)
    gate = asyncio.Semaphore(16)

    async def one(r: str) -> None:
        async with gate:
            for g in range(opts.groups):
                for a in range(2):
                    at = now + g * 1000 + a
                    await notes._switch(Source(r, "like", f"{r}-k{g}", f"nb-a{a}", "-", True,
                                               at, at))

    await asyncio.gather(*(one(r) for r in recipients))
    for r in recipients:
        await notes.page(r, limit=20)
    return recipients


async def _send(spec: dict[str, Any]) -> dict[str, Any]:
    """The open-loop sender (run in a process of its own)."""
    import aiohttp

    users, rate, seconds = spec["users"], float(spec["rate"]), float(spec["seconds"])
    latency: list[float] = []
    statuses: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {spec['token']}"}
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), headers=headers,
            timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(n: int, intended: float, measured: bool) -> None:
            status = "error"
            try:
                user = users[n % len(users)]
                async with session.get(f"{spec['base']}/v1/users/{user}/notifications"
                                       "?limit=20") as response:
                    await response.read()
                    status = str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            if measured:
                latency.append((time.perf_counter() - intended) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

        t0 = time.perf_counter()
        warm = round(WARMUP_SECONDS * rate)
        total = warm + round(seconds * rate)
        tasks = []
        for n in range(total):
            intended = t0 + n / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, intended, n >= warm)))
        await asyncio.gather(*tasks)
    return {"latency_ms": latency, "statuses": statuses}


async def open_loop(base: str, token: str, users: list[str], rate: float, seconds: float
                    ) -> dict[str, Any]:
    spec = {"base": base, "token": token, "users": users, "rate": rate, "seconds": seconds}
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as handle:
        handle.write(orjson.dumps(spec))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.notifications", "--generate", handle.name, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
    finally:
        os.unlink(handle.name)
    if proc.returncode != 0:
        raise RuntimeError(f"the open-loop sender failed: {err.decode()[-2000:]}")
    found: dict[str, Any] = orjson.loads(out)
    return found


async def run(opts: Options) -> Outcome:
    started = time.perf_counter()
    token = secrets.token_hex(16)
    settings = Settings(
        redis_url=opts.queue_redis_url, cache_redis_url=opts.cache_redis_url,
        dynamodb_endpoint=opts.dynamodb_endpoint, table_prefix=f"benchn{uuid.uuid4().hex[:6]}_",
        api_tokens=(token,), cursor_secret=secrets.token_hex(16),
    )
    await _flush(opts.queue_redis_url, opts.cache_redis_url)
    redis = Redis.from_url(opts.cache_redis_url)
    env_table = await environment(redis, opts.cache_redis_url, opts.dynamodb_endpoint)
    await redis.aclose()
    env_table["source"] = source_revision()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    async with open_dynamo(settings) as db:
        await create_tables(db)
    try:
        async with open_services(settings) as svc:
            notes = Notifications.over(svc.manager)
            fan = await fan_in(opts, settings, notes, log_dir)
            recipients = await build_recipients(opts, notes)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with _service(["api", "--port", str(port), "--workers", str(opts.api_workers)],
                      service_env(settings), log_dir / "api.log") as api:
            await _ready(base + "/readyz", api)
            await wait_quiet(base)
            reads = await open_loop(base, token, recipients, opts.open_rate, opts.open_seconds)
    finally:
        async with open_dynamo(settings) as db:
            await drop_tables(db)
        await _flush(opts.queue_redis_url, opts.cache_redis_url)
    latency = reads["latency_ms"]
    ok = reads["statuses"].get("200", 0)
    figures: dict[str, float | None] = {f"fanin.{k}": float(v) for k, v in fan.items()}
    figures.update({"reads.p50_ms": percentile(latency, 50), "reads.p99_ms":
                    percentile(latency, 99), "reads.max_ms": max(latency, default=0.0),
                    "reads.ok_share": ok / max(1, len(latency)), "reads.rate": opts.open_rate})
    exact = fan["notifications"] == 1 and fan["actor_count"] == opts.likes
    p99 = figures["reads.p99_ms"] or 0.0
    targets = [
        target(f"{fmt_int(opts.likes)} likes on one koo: exactly one notification with "
               "actor_count equal to the likes",
               f"{fan['notifications']:.0f} notification(s), actor_count "
               f"{fmt_int(fan['actor_count'])}", exact),
        target(f"cached notification reads at {opts.open_rate:.0f}/s (open loop): "
               f"p99 ≤ {READ_P99_TARGET_MS:.0f} ms, every answer 200",
               f"p99 {p99:.2f} ms, {ok}/{len(latency)} answered 200",
               p99 <= READ_P99_TARGET_MS and ok == len(latency)),
    ]
    markdown = "\n\n".join([
        "### Fan-in: a burst of likes on one koo",
        markdown_table(["likes", "workers", "published in", "exactly counted after",
                        "likes/s end to end", "notifications", "actor_count",
                        "row writes of the notification"],
                       [[fmt_int(opts.likes), str(opts.workers), f"{fan['publish_s']:.1f} s",
                         f"{fan['seconds']:.1f} s", fmt_int(fan["likes_per_s"]),
                         f"{fan['notifications']:.0f}", fmt_int(fan["actor_count"]),
                         fmt_int(fan["group_writes"])]]),
        "### Cached reads over HTTP, open loop",
        markdown_table(["rate", "seconds", "recipients", "API processes", "p50", "p99",
                        "max", "answers"],
                       [[f"{opts.open_rate:.0f}/s", f"{opts.open_seconds:.0f}",
                         fmt_int(opts.recipients), str(opts.api_workers),
                         f"{figures['reads.p50_ms']:.2f} ms", f"{p99:.2f} ms",
                         f"{figures['reads.max_ms']:.2f} ms",
                         ", ".join(f"{k}: {v}" for k, v in sorted(reads["statuses"].items()))]]),
        "### Targets",
        markdown_table(["target", "measured", "met"],
                       [[t["target"], str(t["measured"]), "yes" if t["met"] else "no"]
                        for t in targets]),
    ])
    elapsed = time.perf_counter() - started
    command = command_line()
    return Outcome(
        markdown=markdown, heading="## Notifications: fan-in and cached reads",
        env=env_table, command=command, elapsed_s=elapsed, json_path=opts.json,
        document=lambda: bench_document(
            "notifications", "Notifications: fan-in and cached reads", command, env_table,
            markdown, figures, latency_ms={"cached read": latency}, targets=targets,
            elapsed_s=elapsed),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--generate"]:
        spec = orjson.loads(Path(argv[1]).read_bytes())
        sys.stdout.buffer.write(orjson.dumps(asyncio.run(_send(spec))))
        return 0
    return bench_main(argv, parse_args, run, uvloop=True)


if __name__ == "__main__":
    sys.exit(main())
