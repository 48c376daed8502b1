"""DynamoDB capacity units per event and per feed read, as DynamoDB reports them.

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.capacity --quick             # fan-outs up to 10,000 followers
    .venv/bin/python -m bench.capacity --json bench/out/capacity.json   # up to 100,000
    bash scripts/dynamodb-local.sh stop 8766

Options: ``--events N`` (per measured type; default 200, --quick 100), ``--followers
10,1000,100000`` (fan-out sizes; --quick 10,1000,10000), ``--readers N`` (default 40,
--quick 20), ``--dynamodb-endpoint URL`` (default http://127.0.0.1:8766), ``--redis-url``
and ``--cache-redis-url`` (the queue's and the cache's databases, defaults
redis://127.0.0.1:6379/6 and /7: **both flushed**; database 0 is refused), ``--json``.

The service's own code does the work in this process: events go through the publisher
and an in-process burst worker (``workers.runner.run_workers``; follow-up jobs, fan-out
chunks, merges and purges, are counted with their event), feeds are read with
``feed.reader.Reader``. :class:`CapacityMeter`, a bench-only entry in ``Dynamo.hooks``,
adds ``ReturnConsumedCapacity: INDEXES`` to every data-plane request (the service never
sends it) and sums what each answer reports, read units for GetItem, Query, Scan and
BatchGetItem, write units for the rest. DynamoDB Local prices single-item calls, batches
and queries as DynamoDB does, but gives a TransactWriteItems 2 units per table where
DynamoDB charges 2 per item and KB: a transaction's table units are computed by that
rule (a Put's size from the request, other items counted as 1 KB) and its index units
taken as reported. Failed requests carry no units in the emulator: counted apart.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    progress,
)
from config.settings import Settings
from feed import keys
from feed.models import User
from feed.reader import Reader
from feed.services import Services, open_services
from feed.store import create_tables, drop_tables
from feed.store._transport import Reply
from workers.runner import run_workers

TITLE = "DynamoDB capacity units per event and per feed read"
READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem"})
CELEBRITY_COUNTER = 10_000_000  # the celebrity author's followers counter
KOOS_PER_AUTHOR = 4  # recent koos of each followed author (what a follow merges)


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one attribute value (wire form), by its sizing rules."""
    (kind, raw), = value.items()
    if kind in ("S", "B", "N"):
        raw = [raw]
    elif kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in raw)
    elif kind == "M":
        return 3 + sum(1 + len(k.encode()) + attribute_size(v) for k, v in raw.items())
    elif kind not in ("SS", "NS", "BS"):
        return 1  # BOOL, NULL
    if kind.startswith("N"):  # numbers: about one byte per two significant digits, plus one
        return sum(1 + math.ceil(len(str(v).strip("-").replace(".", "").strip("0") or "0") / 2)
                   for v in raw)
    return sum(len(v.encode()) for v in raw)


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: names plus values."""
    return sum(len(name.encode()) + attribute_size(v) for name, v in item.items())


def transaction_write_units(request: dict[str, Any]) -> dict[str, float]:
    """Table write units of a TransactWriteItems by DynamoDB's rule (2 per item per KB),
    per table name; an item whose size the request does not show counts as 1 KB."""
    units: Counter[str] = Counter()
    for entry in request.get("TransactItems", []):
        (action, body), = entry.items()
        kb = math.ceil(item_size(body["Item"]) / 1024) if action == "Put" else 1
        units[body["TableName"]] += 2 * max(1, kb)
    return dict(units)


@dataclass
class Units:
    """Capacity units summed over a stretch of work."""

    reported_write: float = 0.0
    read: float = 0.0  # as reported
    write: float = 0.0  # as reported, with transactions' table units corrected
    index_write: float = 0.0  # of ``write``: GSI and LSI units
    calls: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)

    def minus(self, other: Units) -> Units:
        return Units(self.reported_write - other.reported_write, self.read - other.read,
                     self.write - other.write, self.index_write - other.index_write,
                     self.calls - other.calls, self.failed - other.failed)


class CapacityMeter:
    """A ``Dynamo.hooks`` entry: asks for ConsumedCapacity on every request, sums it."""

    def __init__(self) -> None:
        self.total = Units()

    def before(self, operation: str, request: dict[str, Any],
               context: dict[str, Any]) -> Reply | None:
        request["ReturnConsumedCapacity"] = "INDEXES"
        self.total.calls[operation] += 1
        self.total.failed[operation] += 1  # until its answer comes back
        return None

    def after(self, operation: str, request: dict[str, Any], response: dict[str, Any],
              context: dict[str, Any]) -> None:
        self.total.failed[operation] -= 1
        consumed = response.get("ConsumedCapacity") or []
        entries = consumed if isinstance(consumed, list) else [consumed]
        rule = transaction_write_units(request) if operation == "TransactWriteItems" else {}
        for entry in entries:
            reported = float(entry.get("CapacityUnits", 0.0))
            table = float((entry.get("Table") or {}).get("CapacityUnits", 0.0))
            index = reported - table if entry.get("Table") else 0.0
            if operation in READS:
                self.total.read += reported
            else:
                self.total.reported_write += reported
                self.total.write += rule.get(entry.get("TableName", ""), table) + index
                self.total.index_write += index

    def snapshot(self) -> Units:
        return self.total.minus(Units())


Clock = Callable[[], int]  # increasing event times


def event(type_: str, clock: Clock, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": f"cap-{uuid.uuid4().hex}", "occurred_at": clock(),
            **fields}


@dataclass
class Row:
    what: str
    count: int
    units: Units
    note: str = ""
    key: str = ""  # its figures' name

    def per(self, value: float) -> float:
        return value / self.count if self.count else math.nan


async def apply(services: Services, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        await services.publisher.publish(events[start:start + 500])
    await run_workers(services.settings, burst=True, services=services, handle_signals=False)


async def measured(meter: CapacityMeter, services: Services, what: str, key: str,
                   events: list[dict[str, Any]], note: str = "") -> Row:
    before = meter.snapshot()
    with progress(f"{what}: {len(events)} events"):
        await apply(services, events)
    return Row(what, len(events), meter.snapshot().minus(before), note, key)


def uids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{uuid.uuid4().hex[:16]}" for _ in range(n)]


async def load(services: Services, users: list[tuple[User, bool]],
               follows: list[tuple[str, str, str]], at: int) -> None:
    await services.stores.users.load_many(users, at=at)
    await services.stores.relations.load_many(follows, at=at)


def user(user_id: str, at: int, followers: int = 0, following: int = 0) -> User:
    return User(user_id, f"@{user_id[:20]}", "hi", "ap-south-1", at, followers, following)


async def event_rows(meter: CapacityMeter, services: Services, opts: Options,
                     clock: Clock) -> list[Row]:
    """Signups, koos by fan-out size and a celebrity's, follows, reactions, deletes."""
    n, at = opts.events, clock()
    rows = [await measured(meter, services, "user_signed_up", "signup", [
        event("user_signed_up", clock, user_id=u, handle=f"@{u[:20]}", lang="hi",
              region="ap-south-1") for u in uids("cs", n)])]
    text = "a koo of about a hundred characters, as most are: " + "x" * 50
    koos: list[tuple[str, str]] = []  # (koo, author) of every fanned-out koo
    for size in opts.followers:
        authors = max(1, min(n // KOOS_PER_AUTHOR, 20_000 // size))
        each = KOOS_PER_AUTHOR if size < 1_000 else 1
        with progress(f"loading {authors} author(s) with {size:,} followers each"):
            for author in uids(f"ca{size}", authors):
                fans = uids("cf", size)
                await load(services, [(user(author, at, followers=size), False),
                                      *((user(f, at, following=1), False) for f in fans)],
                           [(f, keys.REL_FOLLOW, author) for f in fans], at)
                koos += [(f"ck{uuid.uuid4().hex[:12]}", author) for _ in range(each)]
        rows.append(await measured(
            meter, services, f"koo_created, {size:,} followers", f"koo.followers_{size}",
            [event("koo_created", clock, koo_id=k, author_id=a, text=text, lang="hi")
             for k, a in koos[-authors * each:]]))
    celebrity = uids("cc", 1)[0]
    await load(services, [(user(celebrity, at, followers=CELEBRITY_COUNTER), True)], [], at)
    rows.append(await measured(
        meter, services, "koo_created, celebrity (pulled, not fanned out)", "koo.celebrity",
        [event("koo_created", clock, koo_id=f"ck{uuid.uuid4().hex[:12]}",
               author_id=celebrity, text=text, lang="hi") for _ in range(n)]))
    # Follows of the smallest authors, who have KOOS_PER_AUTHOR koos each to merge.
    small = opts.followers[0]
    followees = sorted({a for _, a in koos[: max(1, n // KOOS_PER_AUTHOR) * KOOS_PER_AUTHOR]})
    fans = uids("cn", n)
    await load(services, [(user(f, at), False) for f in fans], [], at)
    pairs = [(fans[i], followees[i % len(followees)]) for i in range(n)]
    rows.append(await measured(meter, services, "user_followed", "follow", [
        event("user_followed", clock, follower_id=f, followee_id=a) for f, a in pairs],
        f"the followee has {KOOS_PER_AUTHOR} koos, which the merge writes"))
    rows.append(await measured(meter, services, "user_unfollowed", "unfollow", [
        event("user_unfollowed", clock, follower_id=f, followee_id=a) for f, a in pairs]))
    for added in (True, False):
        rows.append(await measured(
            meter, services, "reaction_" + ("added" if added else "removed"),
            "reaction." + ("added" if added else "removed"),
            [event("reaction_added" if added else "reaction_removed", clock, koo_id=k,
                   user_id=fans[i % n], kind="like") for i, (k, _) in enumerate(koos[:n])]))
    rows.append(await measured(
        meter, services, f"koo_deleted, {small:,} followers", "koo_deleted",
        [event("koo_deleted", clock, koo_id=k, author_id=a) for k, a in koos[:n]],
        "the purge deletes it from each follower's stored timeline"))
    return rows


async def read_rows(meter: CapacityMeter, services: Services, opts: Options,
                    clock: Clock) -> list[Row]:
    """Readers who follow 25 authors of 4 koos each and one celebrity: a warm read, a
    returning reader's first read (their cache gone, the shared sets warm), and first
    reads after the whole cache is lost; a first read's cache rebuild apart."""
    at = clock()
    authors, readers = uids("cra", 40), uids("crr", opts.readers)
    celebrity = uids("crc", 1)[0]
    follows = [(r, keys.REL_FOLLOW, authors[(i + j) % len(authors)])
               for i, r in enumerate(readers) for j in range(25)]
    follows += [(r, keys.REL_FOLLOW, celebrity) for r in readers]
    followers = Counter(a for _, _, a in follows)
    with progress(f"read graph: {len(readers)} readers"):
        await load(services, [(user(a, at, followers=followers[a]), False) for a in authors]
                   + [(user(celebrity, at, followers=CELEBRITY_COUNTER), True)]
                   + [(user(r, at, following=26), False) for r in readers], follows, at)
        await apply(services, [
            event("koo_created", clock, koo_id=f"crk{uuid.uuid4().hex[:12]}", author_id=a,
                  text="read bench koo", lang="hi")
            for a in [*authors, celebrity] for _ in range(KOOS_PER_AUTHOR)])
    reader = Reader(services.manager)
    for _ in range(2):  # every reader active, every shared set cached
        for r in readers:
            await reader.feed(r, limit=20)
        await services.manager.drain()

    async def read_all(label: str, key: str, note: str = "") -> list[Row]:
        """One read of every reader, a first read's cache rebuild counted with it."""
        before = meter.snapshot()
        for r in readers:
            await reader.feed(r, limit=20)
        await services.manager.drain()
        return [Row(label, len(readers), meter.snapshot().minus(before), note, key)]

    rows = await read_all("feed read, warm (page of 20)", "read.warm")
    cache = services.cache.redis
    for r in readers:
        async for key in cache.scan_iter(match=f"*{{{r}}}*", count=1000):
            await cache.delete(key)
    rows += await read_all("feed read, cold reader (own cache gone, shared sets warm)",
                           "read.cold", "its cache rebuild included")
    await cache.flushdb()
    rows += await read_all("feed read, first after the whole cache is lost",
                           "read.cache_lost", "rebuilds included; the first reads reload the "
                           "shared sets (trending, celebrities, bodies)")
    return rows


Options = argparse.Namespace  # parse_args' result


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int)
    parser.add_argument("--followers")
    parser.add_argument("--readers", type=int)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--cache-redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    check_flushable_dbs(parser, args, "redis_url", "cache_redis_url")
    default = "10,1000,10000" if args.quick else "10,1000,100000"
    args.followers = tuple(int(x) for x in (args.followers or default).split(",") if x)
    if not args.followers or min(args.followers) < 1:
        parser.error("--followers: a comma-separated list of positive counts")
    args.events = args.events or (100 if args.quick else 200)
    args.readers = args.readers or (20 if args.quick else 40)
    return args


def fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def report(rows: list[Row]) -> tuple[str, dict[str, float | None]]:
    table: list[list[str]] = []
    figures: dict[str, float | None] = {}
    for row in rows:
        u = row.units
        calls = ", ".join(f"{op} {row.per(c):.2g}" for op, c in sorted(u.calls.items()) if c)
        failed = ", ".join(f"{op} {c}" for op, c in sorted(u.failed.items()) if c)
        table.append([row.what, f"{row.count:,}", fmt(row.per(u.read)), fmt(row.per(u.write)),
                      fmt(row.per(u.index_write)), fmt(row.per(u.reported_write)),
                      calls or "none", failed, row.note])
        figures[f"{row.key}.rcu"] = row.per(u.read)
        figures[f"{row.key}.wcu"] = row.per(u.write)
    text = "\n".join([
        "### Capacity units per event or read", "",
        markdown_table(["what", "measured", "read units each", "write units each",
                        "of which index writes", "write units as reported",
                        "calls each", "failed calls", "note"], table), "",
        "Read units: half a unit per 4 KB read eventually consistent, one strongly "
        "consistent. Write units: one per KB per item and index changed, two in a "
        "transaction (corrected from what DynamoDB Local reports: the column beside it).",
    ])
    return text, figures


async def run(opts: Options) -> Outcome:
    started = time.monotonic()
    settings = Settings(
        redis_url=opts.redis_url, cache_redis_url=opts.cache_redis_url,
        dynamodb_endpoint=opts.dynamodb_endpoint, aws_region="ap-south-1",
        table_prefix=f"cap{uuid.uuid4().hex[:6]}_",
        # Every measured author is fanned out; the celebrity's counter is over this.
        celebrity_followers=max(max(opts.followers) * 2, 10_000),
        log_json=False, log_level="WARNING")
    queue, cache = Redis.from_url(opts.redis_url), Redis.from_url(opts.cache_redis_url)
    try:
        env = await environment(cache, opts.cache_redis_url, opts.dynamodb_endpoint)
        for db in (queue, cache):
            await db.flushdb()
        async with open_services(settings) as services:
            await create_tables(services.stores.db)
            meter = CapacityMeter()
            services.stores.db.hooks.append(meter)
            try:
                clock = itertools.count(int(time.time() * 1000) - 3_600_000).__next__
                rows = await event_rows(meter, services, opts, clock)
                rows += await read_rows(meter, services, opts, clock)
            finally:
                services.stores.db.hooks.remove(meter)
                await drop_tables(services.stores.db)
    finally:
        for db in (queue, cache):
            await db.flushdb()
            await db.aclose()
    env["settings"] = (f"FEED_CELEBRITY_FOLLOWERS={settings.celebrity_followers} (every "
                       "measured author fanned out), other settings at their defaults")
    markdown, figures = report(rows)
    elapsed, command = time.monotonic() - started, command_line()
    return Outcome(markdown, heading=f"# {TITLE}", env=env, command=command,
                   elapsed_s=elapsed, json_path=opts.json,
                   document=lambda: bench_document("capacity", TITLE, command, env, markdown,
                                                   figures, elapsed_s=elapsed))


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
