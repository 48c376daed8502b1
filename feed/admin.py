"""Operators' commands: ``feed tables create``, ``feed dead-letters``, ``feed inspect``
and ``feed worker --check``.

``feed dead-letters list`` shows each dead letter's id, event id, type, reason
and time; ``show ID`` the whole letter as JSON; ``replay ID...`` (or
``--all``) puts the events back on the queue once their cause is fixed;
``purge --older-than DAYS`` deletes old ones. ``feed worker --check`` exits 0
if a worker reported itself alive in the last 30 s, for container healthchecks.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from config.settings import Settings
from feed.fields import is_valid_id

if TYPE_CHECKING:
    from feed.deadletters import DeadLetterDesk

__all__ = [
    "add_dead_letters_parser",
    "add_inspect_parser",
    "check_workers",
    "create_tables",
    "run_dead_letters",
    "run_inspect",
]

EXIT_OK = 0
EXIT_BAD_INPUT = 1


def add_dead_letters_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "dead-letters", help="list, show, replay or purge events that could not apply",
        description="Events that could never apply are kept as dead letters, with the "
        "reason. Replay them once the cause is fixed (a replay is idempotent, like every "
        "event); one that fails again comes back with its new reason.",
    )
    actions = parser.add_subparsers(dest="dl_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="one line per dead letter, newest first: "
                                 "id, event_id, type, reason, time (UTC)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    show = actions.add_parser("show", help="one dead letter as JSON, with its event")
    show.add_argument("id")
    replay = actions.add_parser("replay", help="put dead letters' events back on the queue; "
                                "exit 1 if any cannot be replayed (each says why)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID")
    which.add_argument("--all", action="store_true", help="every dead letter")
    purge = actions.add_parser("purge", help="delete dead letters older than DAYS")
    purge.add_argument("--older-than", type=_days, required=True, metavar="DAYS")


def add_inspect_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "inspect", help="what is stored and cached about a user; why a koo is (not) in a feed",
        description="Answers as JSON. `inspect feed` asks the read path itself whether the "
        "koo is in the reader's feed and, if not, says why: no such koo, deleted, not "
        "followed, blocked either way, muted, not delivered yet, trimmed, older than the "
        "follow's share, or outside a followed celebrity's pull window.",
    )
    actions = parser.add_subparsers(dest="inspect_command", required=True, metavar="WHAT")
    user = actions.add_parser("user", help="profile, counters, relations, timeline and cache")
    user.add_argument("user_id", type=_id)
    feed = actions.add_parser("feed", help="is this koo in this reader's feed, and why (not)")
    feed.add_argument("user_id", type=_id)
    feed.add_argument("koo_id", type=_id)


def _id(text: str) -> str:
    if not is_valid_id(text):
        raise argparse.ArgumentTypeError(f"not a user or koo id: {text!r}")
    return text


async def run_inspect(settings: Settings, args: argparse.Namespace) -> int:
    from feed.inspection import Inspector
    from feed.services import open_services

    async with open_services(settings) as services:
        inspector = Inspector(services.manager)
        if args.inspect_command == "user":
            found = await inspector.user(args.user_id)
            if found is None:
                print(f"feed: no user {args.user_id!r}", file=sys.stderr)
                return EXIT_BAD_INPUT
        else:
            found = await inspector.feed(args.user_id, args.koo_id)
    print(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return days


async def run_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from feed.deadletters import DeadLetterDesk
    from feed.queue import ArqJobQueue, open_queue_redis
    from feed.store import Stores, open_dynamo

    redis = open_queue_redis(settings)
    try:
        async with open_dynamo(settings) as db:
            desk = DeadLetterDesk(Stores(db), ArqJobQueue(redis))
            return await _act(desk, args)
    finally:
        await redis.aclose()


async def _act(desk: DeadLetterDesk, args: argparse.Namespace) -> int:
    from feed.deadletters import REPLAYED

    if args.dl_command == "list":
        for letter in await desk.list(limit=max(1, args.limit)):
            summary = letter.summary()
            if args.json:
                print(orjson.dumps(summary).decode())
            else:
                print("\t".join([letter.dl_id, letter.event_id or "-", letter.type or "-",
                                 _one_line(letter.reason), _utc(letter.failed_at)]))
        return EXIT_OK
    if args.dl_command == "show":
        found = await desk.show(args.id)
        if found is None:
            print(f"feed: no dead letter {args.id!r}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(orjson.dumps({**found.summary(), "payload": found.payload},
                           option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    if args.dl_command == "replay":
        outcomes = (await desk.replay_all() if args.all
                    else {i: await desk.replay(i) for i in args.ids})
        for dl_id, outcome in outcomes.items():
            print(f"{dl_id}: {outcome}")
        return EXIT_OK if all(o == REPLAYED for o in outcomes.values()) else EXIT_BAD_INPUT
    removed = await desk.purge(older_than_days=args.older_than)
    print(f"purged {removed} dead letters older than {args.older_than:g} days")
    return EXIT_OK


async def check_workers(settings: Settings, queues: Sequence[str]) -> int:
    """0 if a worker of one of ``queues`` reported itself alive in the last 30 s."""
    from feed.queue import ArqJobQueue, open_queue_redis

    redis = open_queue_redis(settings)
    try:
        jobs = ArqJobQueue(redis)
        alive = [q for q in queues if await jobs.healthy(q)]
    finally:
        await redis.aclose()
    if alive:
        print(f"healthy: {', '.join(alive)}")
        return EXIT_OK
    print(f"feed: no worker of {', '.join(queues)} reported in the last 30 s", file=sys.stderr)
    return EXIT_BAD_INPUT


async def create_tables(settings: Settings, *, dry_run: bool = False,
                         wait: float = 3600.0) -> int:
    """``feed tables create``: changes on stdout as they are made, problems on stderr;
    exit 1 if any problem is left."""
    from feed.store import (
        Change,
        open_dynamo,
        open_regions,
        reconcile_regional_tables,
        reconcile_tables,
    )
    from feed.store.regions import regional_targets

    def show(change: Change) -> None:
        print(change.line(), flush=True)

    report = None if dry_run else show
    async with open_dynamo(settings) as db, open_regions(settings) as regions:
        result = await reconcile_tables(
            db, pitr=settings.pitr_enabled(settings.dynamodb_endpoint), dry_run=dry_run,
            wait_seconds=wait, on_change=report,
        )
        targets = regional_targets(settings)
        result += await reconcile_regional_tables(
            regions, pitr={r: settings.pitr_enabled(targets[r][0]) for r in regions},
            dry_run=dry_run, wait_seconds=wait, on_change=report,
        )
    if dry_run:
        for change in result.changes:
            print(change.line(dry_run=True))
    for note in result.notes:
        print(note)
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    count = len(result.changes)
    if not count:
        summary = "nothing to change"
    elif dry_run:
        summary = f"{count} change{'s' if count > 1 else ''} to make, nothing changed"
    else:
        summary = f"{count} change{'s' if count > 1 else ''} made"
    if result.problems:
        problems = len(result.problems)
        summary += f"; {problems} problem{'s' if problems > 1 else ''} left unfixed"
    print(f"{'dry run' if dry_run else 'tables ready'}: {summary}")
    return EXIT_BAD_INPUT if result.problems else EXIT_OK


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))

