"""Events applied per worker CPU-second, for each event type, on each DynamoDB client.

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.events --quick                  # ~1 min
    .venv/bin/python -m bench.events --json bench/out/events.json
    bash scripts/dynamodb-local.sh stop 8766

Options: ``--events N`` (events per type; default 1,000, --quick 200), ``--followers N``
(followers of each koo author, so a koo_created fans out to N timelines; default 10),
``--clients direct,aioboto3`` (the data-plane clients to compare, in that order),
``--baseline-tree PATH`` (also run the workers of another checkout of the code, e.g. an
earlier release, on its default client: the "before" column, in the same run),
``--dynamodb-endpoint URL`` (default http://127.0.0.1:8766), ``--redis-url`` (the
queue's database) and ``--cache-redis-url`` (the cache's; defaults
redis://127.0.0.1:6379/6 and /7: **both flushed** at the start and the end; database 0
is refused), ``--json PATH``.

What it measures: for each client, a fresh table prefix, then one phase per event type
in an order that makes each phase's events applicable (signups, follows, koos,
reactions, their removal, unfollows, blocks, unblocks, mutes, unmutes, koo deletes).
A phase publishes N events of its type onto the realtime queue through the service's
publisher, then runs ``feed worker --burst`` (all queues, the service's defaults) as a
child process until the queues are empty, and reads the child's CPU time (user +
system) from the kernel when it exits. The CPU of a burst worker that finds the queues
empty (start-up and shut-down, the median of three) is subtracted. What a worker does
for an event includes its follow-up jobs (fan-out to timelines, merges after a follow,
purges after an unfollow or block), so those count too. DynamoDB Local's and Redis's
CPU are not counted: this is the worker's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    progress,
    target,
)
from config.settings import Settings
from feed.services import open_services
from feed.store import create_tables, open_dynamo

BASELINE = "baseline"
PHASES = ("user_signed_up", "user_followed", "koo_created", "reaction_added",
          "reaction_removed", "user_unfollowed", "user_blocked", "user_unblocked",
          "user_muted", "user_unmuted", "koo_deleted")


@dataclass
class World:
    """The ids every phase's events refer to."""

    users: list[str]
    followers: int
    koos: list[str]
    now: int

    def author(self, i: int) -> str:
        return self.users[i % len(self.users)]

    def follower(self, i: int) -> str:
        # Each author's followers are the users after it, wrapping round.
        return self.users[(i // self.followers + 1 + i % self.followers) % len(self.users)]


def events_of(kind: str, world: World, n: int, at: int) -> list[dict[str, Any]]:
    """N events of one type; ``at`` keeps every phase's events later than the last's."""
    def base(i: int) -> dict[str, Any]:
        return {"type": kind, "event_id": f"ev-{uuid.uuid4().hex}", "occurred_at": at + i}

    builders: dict[str, Callable[[int], dict[str, Any]]] = {
        "user_signed_up": lambda i: {**base(i), "user_id": world.users[i], "handle": f"h{i}",
                                     "lang": "en", "region": "ap-south-1"},
        "user_followed": lambda i: {**base(i), "follower_id": world.follower(i),
                                    "followee_id": world.author(i // world.followers)},
        "user_unfollowed": lambda i: {**base(i), "follower_id": world.follower(i),
                                      "followee_id": world.author(i // world.followers)},
        "koo_created": lambda i: {**base(i), "koo_id": world.koos[i],
                                  "author_id": world.author(i % (n // world.followers or 1)),
                                  "text": f"koo {i} #bench", "lang": "en",
                                  "hashtags": ["bench"]},
        "reaction_added": lambda i: {**base(i), "koo_id": world.koos[i],
                                     "user_id": world.users[(i + 7) % len(world.users)],
                                     "kind": "like"},
        "reaction_removed": lambda i: {**base(i), "koo_id": world.koos[i],
                                       "user_id": world.users[(i + 7) % len(world.users)],
                                       "kind": "like"},
        "koo_deleted": lambda i: {**base(i), "koo_id": world.koos[i],
                                  "author_id": world.author(i % (n // world.followers or 1))},
    }
    for relation in ("user_blocked", "user_unblocked", "user_muted", "user_unmuted"):
        builders[relation] = lambda i: {
            **base(i), "user_id": world.users[(i + 3) % len(world.users)],
            "target_id": world.users[(i + 11) % len(world.users)]}
    return [builders[kind](i) for i in range(n)]


def worker_cpu(settings: Settings, client: str, tree: str | None = None) -> float:
    """Run one `feed worker --burst` until the queues are empty; its CPU seconds.
    ``tree``: the checkout whose code the worker runs (None: this one)."""
    env = {**os.environ,
           "FEED_REDIS_URL": settings.redis_url,
           "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
           "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
           "FEED_TABLE_PREFIX": settings.table_prefix,
           "FEED_DYNAMODB_CLIENT": client,
           "FEED_WORKER_METRICS_PORT": "0",
           "FEED_LOG_LEVEL": "WARNING"}
    if tree is not None:
        # Run from the tree too: `python -m` puts the working directory first on the path.
        env["PYTHONPATH"] = tree
        del env["FEED_DYNAMODB_CLIENT"]  # an earlier release may not know the setting
    child = subprocess.Popen([sys.executable, "-m", "feed.cli", "worker", "--burst"],
                             env=env, cwd=tree or ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"feed worker --burst exited with {child.returncode}")
    return usage.ru_utime + usage.ru_stime


async def run_client(base: Settings, client: str, n: int, followers: int,
                     tree: str | None = None) -> dict[str, tuple[float, float]]:
    """Per phase: (events, worker CPU seconds net of start-up)."""
    settings = base.replace(table_prefix=f"ev{uuid.uuid4().hex[:6]}_",
                            dynamodb_client="aioboto3" if tree else client)
    async with open_dynamo(settings) as db:
        await create_tables(db)
    idle = statistics.median(worker_cpu(settings, client, tree) for _ in range(3))
    users = [f"bu{uuid.uuid4().hex[:10]}" for _ in range(n)]
    world = World(users=users, followers=followers,
                  koos=[f"bk{uuid.uuid4().hex[:10]}" for _ in range(n)],
                  now=int(time.time() * 1000) - 3_600_000)
    results: dict[str, tuple[float, float]] = {}
    async with open_services(settings) as services:
        for index, kind in enumerate(PHASES):
            events = events_of(kind, world, n, world.now + index * 10 * n)
            for start in range(0, len(events), 500):
                await services.publisher.publish(events[start:start + 500])
            with progress(f"{client}: {n} {kind}"):
                cpu = await asyncio.to_thread(worker_cpu, settings, client, tree)
            results[kind] = (float(n), max(cpu - idle, 1e-9))
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int)
    parser.add_argument("--followers", type=int, default=10)
    parser.add_argument("--clients", default="direct,aioboto3")
    parser.add_argument("--baseline-tree", help="another checkout whose workers to measure too")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    check_flushable_dbs(parser, args, "redis_url", "cache_redis_url")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, log_format=None)


async def run(args: argparse.Namespace) -> Outcome:
    n = args.events or (200 if args.quick else 1_000)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if args.baseline_tree:
        clients.append(BASELINE)
    started = time.monotonic()
    base = Settings(redis_url=args.redis_url, cache_redis_url=args.cache_redis_url,
                    dynamodb_endpoint=args.dynamodb_endpoint, aws_region="ap-south-1")
    redis = Redis.from_url(args.redis_url)
    try:
        env = await environment(redis, args.redis_url, args.dynamodb_endpoint)
        measured: dict[str, dict[str, tuple[float, float]]] = {}
        for client in clients:
            for url in (args.redis_url, args.cache_redis_url):
                flush = Redis.from_url(url)
                await flush.flushdb()
                await flush.aclose()
            tree = args.baseline_tree if client == BASELINE else None
            measured[client] = await run_client(base, client, n, args.followers, tree)
    finally:
        for url in (args.redis_url, args.cache_redis_url):
            flush = Redis.from_url(url)
            await flush.flushdb()
            await flush.aclose()
        await redis.aclose()
    rows, figures, targets = [], {}, []
    before = BASELINE if BASELINE in clients else "aioboto3"
    for kind in PHASES:
        rates = {c: measured[c][kind][0] / measured[c][kind][1] for c in clients}
        row = [kind, *(fmt_int(rates[c]) for c in clients)]
        for c in clients:
            figures[f"{kind}.{c}.events_per_cpu_s"] = rates[c]
        if "direct" in rates and before in rates:
            ratio = rates["direct"] / rates[before]
            row.append(f"{ratio:.2f}x")
            figures[f"{kind}.direct_over_{before}"] = ratio
        rows.append(row)
    label = {BASELINE: f"before ({_revision(args.baseline_tree)}, aioboto3)"}
    headers = ["event type", *(f"{label.get(c, c)} (events/CPU-s)" for c in clients)]
    if "direct" in clients and before in clients:
        headers.append(f"direct / {label.get(before, before)}")
        worst = min(figures[f"{k}.direct_over_{before}"] for k in PHASES)
        name = label.get(before, before)
        targets.append(target(f"events applied per worker CPU-second: 2x {name}'s, every "
                              "event type", f"worst {worst:.2f}x", worst >= 2.0))
    markdown = "\n".join([
        "## Events applied per worker CPU-second", "",
        markdown_table(["", ""], [[k, v] for k, v in env.items()]), "",
        f"Command: `{command_line()}`", "",
        f"{n} events per type; each koo's author has {args.followers} followers.", "",
        markdown_table(headers, rows),
    ])
    elapsed = time.monotonic() - started
    # The environment table and the command are part of this bench's own Markdown.
    return Outcome(markdown, json_path=args.json, document=lambda: bench_document(
        "events", "Events applied per worker CPU-second", command_line(), env, markdown,
        figures, targets=targets, elapsed_s=elapsed))


def _revision(tree: str | None) -> str:
    if not tree:
        return "?"
    found = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
