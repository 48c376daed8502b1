"""The queue's durability: what waiting for a replica costs a batch, and a failover.

    .venv/bin/python -m bench.failover --quick              # ~1 min
    .venv/bin/python -m bench.failover --json bench/out/failover.json

Options: ``--rounds N`` (batches per size and setting; default 200, --quick 60),
``--json PATH``. It needs ``redis-server`` only: the queue is a primary with two
replicas (append-only file, fsync always) and three Sentinels (quorum 2, down after
1 s, failover timeout 5 s), all started by the bench on free ports of 127.0.0.1 and
killed at the end. No DynamoDB, no workers: the jobs stay on the queue, where they are
counted.

1. **WAIT per batch**: batches of 1 and of 500 signups published through the service's
   publisher (validation, one arq job per event, 64 enqueues in flight), with
   FEED_QUEUE_MIN_REPLICAS 0 and 1, the two settings alternating batch by batch so both
   see the same machine. Latency per batch (median and p99), and the median's
   difference: what acknowledging only replicated batches costs.
2. **Failover**: for each setting, a producer publishes batches of 5 every 50 ms through
   the Sentinels; the primary is SIGKILLed; the time until a Sentinel names a new
   primary, until the first batch is acknowledged again, and how many acknowledged
   events are missing from the new primary's queue (lost) are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arq.constants import job_key_prefix

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    command_line,
    environment,
    markdown_table,
    median,
    percentile,
    progress,
)
from config.settings import Settings
from feed import keys
from feed.errors import StorageUnavailable
from feed.events import event_digest
from feed.publisher import EventPublisher
from feed.queue import ArqJobQueue, open_queue_redis
from tests.fault._sentinel import MASTER, SentinelGroup

SIZES = (1, 500)
FAILOVER_BATCH = 5
FAILOVER_PAUSE_SECONDS = 0.05
AFTER_RESUME_BATCHES = 20


@dataclass(frozen=True)
class Options:
    rounds: int
    quick: bool
    json: str | None


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=0,
                   help="batches per size and setting (default 200, --quick 60)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None, help="write the JSON document here")
    args = p.parse_args(argv)
    return Options(rounds=args.rounds or (60 if args.quick else 200), quick=args.quick,
                   json=args.json)


def _signups(n: int, now_ms: int) -> list[dict[str, Any]]:
    return [{"type": "user_signed_up", "event_id": f"b-{uuid.uuid4().hex}",
             "occurred_at": now_ms, "user_id": f"u{uuid.uuid4().hex[:12]}",
             "handle": "@b", "lang": "hi", "region": "ap-south-1"} for _ in range(n)]


async def wait_cost(group: SentinelGroup, rounds: int) -> dict[tuple[int, int], list[float]]:
    """Seconds per batch, by (batch size, min replicas)."""
    base = Settings(redis_url=group.url(), redis_sentinels=group.addresses,
                    redis_sentinel_master=MASTER, queue_replica_timeout=5.0)
    redis = open_queue_redis(base)
    seconds: dict[tuple[int, int], list[float]] = {}
    try:
        publishers = {n: EventPublisher.over(ArqJobQueue(redis),
                                             base.replace(queue_min_replicas=n))
                      for n in (0, 1)}
        for size in SIZES:
            rounds = rounds if size == 1 else max(10, rounds // 10)
            for publisher in publishers.values():  # warm: connections, scripts
                await publisher.publish(_signups(size, int(time.time() * 1000)))
            for _ in range(rounds):
                for replicas, publisher in publishers.items():
                    batch = _signups(size, int(time.time() * 1000))
                    started = time.perf_counter()
                    await publisher.publish(batch)
                    seconds.setdefault((size, replicas), []).append(
                        time.perf_counter() - started)
            await redis.flushdb()
    finally:
        await redis.aclose()
    return seconds


@dataclass
class Failover:
    replicas: int
    promoted_s: float = 0.0
    resumed_s: float = 0.0
    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    lost: int = 0


async def failover(directory: Path, replicas: int) -> Failover:
    """One failover under a steady producer, with FEED_QUEUE_MIN_REPLICAS=``replicas``."""
    group = SentinelGroup(directory, replicas=2)
    result = Failover(replicas)
    async with group.running():
        settings = Settings(redis_url=group.url(), redis_sentinels=group.addresses,
                            redis_sentinel_master=MASTER, queue_min_replicas=replicas,
                            queue_replica_timeout=1.0, redis_timeout=0.5)
        redis = open_queue_redis(settings)
        try:
            publisher = EventPublisher.over(ArqJobQueue(redis), settings)
            stop = asyncio.Event()
            answers: list[tuple[float, float, bool]] = []  # sent, answered, acknowledged

            async def produce() -> None:
                while not stop.is_set():
                    batch = _signups(FAILOVER_BATCH, int(time.time() * 1000))
                    sent = time.monotonic()
                    try:
                        await publisher.publish(batch)
                    except StorageUnavailable:
                        result.refused += 1
                        answers.append((sent, time.monotonic(), False))
                    else:
                        result.acknowledged += batch
                        answers.append((sent, time.monotonic(), True))
                    await asyncio.sleep(FAILOVER_PAUSE_SECONDS)

            producer = asyncio.create_task(produce())
            try:
                await asyncio.sleep(2.0)
                killed = time.monotonic()
                group.primary.kill()
                result.promoted_s = await group.promoted(group.primary.port)
                # Resumed: the first batch sent after the kill that is acknowledged.
                while not any(ok and sent > killed for sent, _, ok in answers):
                    assert time.monotonic() - killed < 60, "posting never resumed"
                    await asyncio.sleep(0.01)
                result.resumed_s = min(at for sent, at, ok in answers
                                       if ok and sent > killed) - killed
                resumed = len(answers)
                while len(answers) < resumed + AFTER_RESUME_BATCHES:
                    assert time.monotonic() - killed < 120, "the producer stalled"
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await producer
            job_keys = [job_key_prefix + keys.event_job(e["event_id"], event_digest(e))
                        for e in result.acknowledged]
            present = 0
            for start in range(0, len(job_keys), 500):
                present += int(await redis.exists(*job_keys[start:start + 500]))
            result.lost = len(job_keys) - present
        finally:
            await redis.aclose()
    return result


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def run(opts: Options) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        root = Path(tmp)
        group = SentinelGroup(root / "cost", replicas=1, sentinels=3)
        async with group.running():
            probe = group.primary.client()
            try:
                env = await environment(probe, group.url(), None)
            finally:
                await probe.aclose()
            for unused in ("aioboto3", "DynamoDB"):  # no DynamoDB here
                env.pop(unused, None)
            env["queue"] = ("primary + 1 replica (appendonly yes, appendfsync always) for the "
                            "cost; primary + 2 replicas for the failover; 3 Sentinels, "
                            "quorum 2, down-after 1000 ms, failover-timeout 5000 ms")
            with progress("WAIT per batch"):
                cost = await wait_cost(group, opts.rounds)
        runs = []
        for replicas in (0, 1):
            with progress(f"failover, min replicas {replicas}"):
                runs.append(await failover(root / f"failover-{replicas}", replicas))
    rows = []
    figures: dict[str, float | None] = {}
    for size in SIZES:
        plain, waited = cost[(size, 0)], cost[(size, 1)]
        extra = median(waited) - median(plain)
        rows.append([f"{size} event{'s' if size > 1 else ''}", str(len(plain)),
                     _ms(median(plain)), _ms(percentile(plain, 99)),
                     _ms(median(waited)), _ms(percentile(waited, 99)), f"{extra * 1000:+.2f} ms"])
        figures[f"wait_extra_ms_batch_{size}"] = extra * 1000
        figures[f"batch_ms_p50_batch_{size}_replicas_0"] = median(plain) * 1000
        figures[f"batch_ms_p50_batch_{size}_replicas_1"] = median(waited) * 1000
    cost_table = markdown_table(
        ["batch", "batches", "min 0 p50", "min 0 p99", "min 1 p50", "min 1 p99",
         "WAIT's cost (p50)"], rows)
    fail_rows = []
    for r in runs:
        fail_rows.append([str(r.replicas), f"{r.promoted_s:.1f} s", f"{r.resumed_s:.1f} s",
                          str(len(r.acknowledged)), str(r.refused), str(r.lost)])
        figures[f"failover_promoted_s_replicas_{r.replicas}"] = r.promoted_s
        figures[f"failover_resumed_s_replicas_{r.replicas}"] = r.resumed_s
        figures[f"failover_lost_replicas_{r.replicas}"] = float(r.lost)
    fail_table = markdown_table(
        ["min replicas", "new primary named", "publishing resumed", "events acknowledged",
         "batches refused", "acknowledged, then lost"], fail_rows)
    markdown = (f"### WAIT per batch\n\n{cost_table}\n\n### Failover (primary SIGKILLed)\n\n"
                f"{fail_table}")
    notes = ["Times are from the SIGKILL; publishing resumed: the first batch sent after "
             "the kill that was acknowledged. 'Lost' counts acknowledged events whose job "
             "is not on the new primary (no workers run, so every job should still be "
             "there)."]
    elapsed = time.monotonic() - started
    command = command_line()
    return Outcome(
        markdown=markdown, heading="## The queue's durability: WAIT and failover",
        env=env, command=command, after=notes, elapsed_s=elapsed, json_path=opts.json,
        document=lambda: bench_document(
            "failover", "The queue's durability: WAIT and failover", command, env, markdown,
            figures, latency_ms={f"batch {s}, min replicas {n}": [v * 1000 for v in cost[(s, n)]]
                                 for s in SIZES for n in (0, 1)},
            notes=notes, elapsed_s=elapsed),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse, run)


if __name__ == "__main__":
    sys.exit(main())
