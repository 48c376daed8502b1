"""``feed backfill``: queue-driven batch rebuilds, resumable, with progress of completion.

A run has an id derived from what it does (``timelines`` or
``recommendations``, and for whom), so running the same command again
resumes it. Users are listed (``--user``) or paged from a Scan of the users
table (``--all``) into chunks; each chunk is one job on the backfill queue
with its own job id. The run's state lives in the queue's Redis: where the
Scan got to, which chunks were enqueued, which are done. The command shows
progress of completion and can be interrupted at any point: the next run
skips done chunks, re-enqueues lost ones and continues the Scan.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from typing import Any

import orjson

from config.settings import Settings
from feed import keys
from feed.errors import ValidationFailed
from feed.events import check_id
from feed.jobs import BACKFILL_CHUNK, REFRESH_POPULAR
from feed.progress import Progress

__all__ = ["KINDS", "BackfillRun", "add_backfill_parser", "run_backfill"]

KINDS = ("timelines", "recommendations")
STATE_TTL_SECONDS = 7 * 86_400
# The exit code of a run that stopped waiting (--timeout) before its chunks were done.
EXIT_STOPPED_WAITING = 4


def add_backfill_parser(sub: Any) -> None:
    backfill = sub.add_parser(
        "backfill", help="queue-driven batch rebuilds of timelines and recommendations",
        description="Enqueue chunked rebuild jobs on the backfill queue and show progress "
        "of their completion. Interrupt at any time; the same command resumes the run "
        "without redoing finished chunks. Workers on the backfill queue do the work.",
    )
    kinds = backfill.add_subparsers(dest="kind", required=True, metavar="WHAT")
    for kind, text in (
        ("timelines", "rebuild stored timelines from the follow graph (and refresh the cache)"),
        ("recommendations", "recompute who-to-follow and recommended koos"),
    ):
        p = kinds.add_parser(kind, help=text, description=text)
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", action="append", metavar="USER_ID", type=_user_id,
                         help="a user to rebuild (repeatable)")
        who.add_argument("--all", action="store_true", help="every user")
        p.add_argument("--chunk", type=_chunk, default=100,
                       help="users per job (100)")
        p.add_argument("--dry-run", action="store_true",
                       help="report what would be rebuilt; change nothing")
        p.add_argument("--restart", action="store_true",
                       help="start over instead of resuming an earlier run")
        p.add_argument("--no-wait", action="store_true",
                       help="enqueue and exit without waiting for completion")
        p.add_argument("--timeout", type=_timeout, default=0,
                       help="stop waiting after this many seconds, with exit code 4 "
                       "(0: no limit)")


def _chunk(text: str) -> int:
    """``--chunk``: a usage error, before anything is opened, unless a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def _timeout(text: str) -> float:
    """``--timeout``: seconds, zero (no limit) or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero (no limit) or more, not {text}")
    return value


def _user_id(text: str) -> str:
    """``--user``: a bad id is a usage error, reported before anything is opened."""
    try:
        return check_id("user_id", text)
    except ValidationFailed as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_id_for(kind: str, users: list[str] | None) -> str:
    material = kind + "\n" + ("*" if users is None else "\n".join(sorted(set(users))))
    return hashlib.sha256(material.encode()).hexdigest()[:12]


class BackfillRun:
    """The persistent state of one run, in the queue's Redis."""

    def __init__(self, redis: Any, run_id: str) -> None:
        self.redis = redis
        self.run_id = run_id
        self.key = keys.backfill_run(run_id)
        self.enqueued_key = keys.backfill_enqueued(run_id)
        self.done_key = keys.backfill_done(run_id)

    async def load(self) -> dict[str, Any]:
        raw = await self.redis.hgetall(self.key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def save(self, **fields: Any) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping={k: str(v) for k, v in fields.items()})
        for key in (self.key, self.enqueued_key, self.done_key):
            pipe.expire(key, STATE_TTL_SECONDS)
        await pipe.execute()

    async def reset(self) -> None:
        await self.redis.delete(self.key, self.enqueued_key, self.done_key)

    async def mark_enqueued(self, chunk: str, users: list[str]) -> None:
        await self.redis.hset(self.enqueued_key, chunk, orjson.dumps(users))

    async def mark_done(self, chunk: str) -> None:
        await self.redis.sadd(self.done_key, chunk)

    async def enqueued(self) -> dict[str, list[str]]:
        raw = await self.redis.hgetall(self.enqueued_key)
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def done(self) -> set[str]:
        return {m.decode() for m in await self.redis.smembers(self.done_key)}


async def run_backfill(settings: Settings, args: argparse.Namespace) -> int:
    # The queue's and DynamoDB's clients are heavy to import, and `feed` imports this
    # module for its parser on every start.
    from feed.queue import ArqJobQueue, open_queue_redis
    from feed.store import open_dynamo
    from feed.store.users import Users

    users = None
    if args.user:
        users = [check_id("user_id", u) for u in args.user]
    chunk_size = max(1, args.chunk)
    run_id = run_id_for(args.kind, users)
    if args.restart:
        run_id = run_id_for(args.kind, users) + f"-{int(time.time())}"
    redis = open_queue_redis(settings)
    try:
        run = BackfillRun(redis, run_id)
        if args.restart:
            await run.reset()
        state = await run.load()
        jobs = ArqJobQueue(redis)
        async with open_dynamo(settings) as db:
            if args.dry_run:
                return await _dry_run(args.kind, users, Users(db), chunk_size)
            print(f"backfill {args.kind}: run {run_id}"
                  + (" (resuming)" if state else ""), file=sys.stderr)
            # Re-enqueue chunks that were enqueued but never finished (their jobs may be lost).
            done = await run.done()
            for chunk, members in (await run.enqueued()).items():
                if chunk not in done:
                    await _enqueue(jobs, run_id, args.kind, chunk, members)
            if args.kind == "recommendations":
                # Who-to-follow draws on the popular creators: refreshed first (on the
                # same queue, so ahead of most chunks), once per run.
                await jobs.enqueue(REFRESH_POPULAR, job_id=keys.popular_job(run_id))
            if state.get("listed") != "1":
                await _list_users(run, jobs, args.kind, users, Users(db), chunk_size, state)
        if args.no_wait:
            total = len(await run.enqueued())
            print(f"enqueued {total} chunks; not waiting", file=sys.stderr)
            return 0
        return await _wait(run, args.timeout)
    finally:
        await redis.aclose()


async def _list_users(
    run: BackfillRun, jobs: Any, kind: str, users: list[str] | None, store: Any,
    chunk_size: int, state: dict[str, Any],
) -> None:
    index = int(state.get("chunks", "0"))
    if users is not None:
        for start in range(index * chunk_size, len(users), chunk_size):
            members = users[start:start + chunk_size]
            await _add_chunk(run, jobs, kind, f"{index:06d}", members)
            index += 1
            await run.save(chunks=index)
    else:
        start_key = orjson.loads(state["scan"]) if state.get("scan") else None
        if state.get("scan") == "end":
            start_key = None
        async for page, next_key in store.db.scan_pages(
            "users", limit=chunk_size, start=start_key, attributes=["user_id"]
        ):
            members = [item["user_id"] for item in page]
            if members:
                await _add_chunk(run, jobs, kind, f"{index:06d}", members)
                index += 1
            await run.save(chunks=index,
                           scan=orjson.dumps(next_key).decode() if next_key else "end")
    await run.save(chunks=index, listed=1)


async def _add_chunk(run: BackfillRun, jobs: Any, kind: str, chunk: str, members: list[str]
                     ) -> None:
    await run.mark_enqueued(chunk, members)
    await _enqueue(jobs, run.run_id, kind, chunk, members)


async def _enqueue(jobs: Any, run_id: str, kind: str, chunk: str, members: list[str]) -> None:
    await jobs.enqueue(BACKFILL_CHUNK, run_id, kind, chunk, members,
                       job_id=keys.backfill_chunk_job(run_id, chunk))


async def _wait(run: BackfillRun, wait_limit: float) -> int:
    started = time.monotonic()
    progress: Progress | None = None
    while True:
        state = await run.load()
        total = len(await run.enqueued())
        finished = len(await run.done())
        listed = state.get("listed") == "1"
        if progress is None:
            progress = Progress("completed chunks", total if listed else None, sys.stderr,
                                quiet=False)
        progress.total = total if listed else None
        if listed and finished >= total:
            progress.update(finished, final=True)
            print(f"backfill complete: {finished} chunks", file=sys.stderr)
            return 0
        progress.update(finished)
        if wait_limit and time.monotonic() - started > wait_limit:
            print(f"stopped waiting after {wait_limit:.0f} s: {finished}/{total} chunks done; "
                  "run the same command to resume", file=sys.stderr)
            return EXIT_STOPPED_WAITING
        await asyncio.sleep(0.5)


async def _dry_run(kind: str, users: list[str] | None, store: Any, chunk_size: int) -> int:
    if users is None:
        count = len(await store.all_ids())
        label = "every user"
    else:
        count = len(users)
        label = ", ".join(users[:5]) + (" ..." if len(users) > 5 else "")
    jobs = (count + chunk_size - 1) // chunk_size
    action = ("rebuild the stored timeline (recent koos of each followee, the per-reader cap,"
              " the cache)" if kind == "timelines"
              else "recompute who-to-follow and recommended koos")
    print(f"dry run: would {action} of {count} users ({label}) in {jobs} jobs of up to "
          f"{chunk_size}; nothing was changed")
    return 0
