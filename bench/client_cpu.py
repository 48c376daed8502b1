"""Client CPU per DynamoDB call: the service's direct transport beside aioboto3, in one run.

    bash scripts/dynamodb-local.sh start 8766
    .venv/bin/python -m bench.client_cpu --quick                 # ~1 min
    .venv/bin/python -m bench.client_cpu --json bench/out/client_cpu.json
    bash scripts/dynamodb-local.sh stop 8766

Options: ``--dynamodb-endpoint URL`` (default http://127.0.0.1:8766), ``--callers N``
(concurrent callers of the throughput loop, default 10), ``--rounds N`` (default 10,
--quick 4), ``--json PATH``.

Seven data-plane operations: GetItem, PutItem, UpdateItem, a Query returning 20 items,
BatchGetItem of 25 keys, BatchWriteItem of 25 items and TransactWriteItems of 2 items.
Each is sent, in the same wire-format request, by:

- ``direct``: ``Dynamo.call`` on the service's default transport (aiohttp, orjson,
  its own SigV4);
- ``aioboto3 transport``: ``Dynamo.call`` with ``FEED_DYNAMODB_CLIENT=aioboto3``;
- ``bare aioboto3``: an aioboto3 client with botocore's default config, calling the
  operation's method with the request as keyword arguments (the old baseline);
- ``aiodynamo`` (when it is importable): ``Client.send_request`` over aiohttp.

Two figures per operation and client: client CPU per call (``time.process_time()`` of
this process over a block of sequential calls by one caller, divided by the calls) and
calls/s with ``--callers`` concurrent callers. Requests are built before any clock
starts. After a warm-up (which also checks every client's answers), each round runs one
block per client for each operation, the clients' order rotating every round, so
machine noise hits them alike; a figure is the total over every round, and "per round"
is the median (and interquartile range) of the ratio of the same round's blocks.
Target (docs/performance.md): client CPU per data-plane call ≤ 40% of
aioboto3's (the bare client's), for every operation.

Tables are created under a fresh ``bench<hex>_`` prefix and dropped at the end. Writes
overwrite a bounded set of keys, so the tables stay the same size through the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import importlib
import logging
import math
import platform
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioboto3

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    command_line,
    cpu_model,
    dynamodb_identity,
    fmt_int,
    fmt_pct,
    load_average,
    markdown_table,
    median,
    nproc,
    percentile,
    progress,
    target,
    version,
)
from config.settings import Settings
from config.tables import KOOS, TIMELINES
from feed import keys
from feed.store import Dynamo, create_tables, drop_tables, open_dynamo
from feed.store._boto import METHODS
from feed.store._codec import to_wire

log = logging.getLogger("bench.client_cpu")

Send = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

CPU_TARGET = 0.40  # direct over bare aioboto3, client CPU per call (docs/performance.md)
BASE = "aioboto3"  # the target's baseline
CLIENTS = {  # key -> label
    "direct": "direct",
    "aioboto3_transport": "aioboto3 transport",
    "aioboto3": "bare aioboto3",
    "aiodynamo": "aiodynamo",
}
SEEDED_KOOS = 200
TIMELINE_ENTRIES = 30  # per reader the Query reads (it returns 20)
POOL = 32  # distinct requests per operation and caller, reused in turn
WARMUP_CALLS = 10
SEQUENTIAL_CALLS = {False: 100, True: 40}  # per block, full and --quick
CONCURRENT_CALLS = {False: 20, True: 10}  # per caller and block
BASE_MS = 1_764_000_000_000
TTL_S = 30 * 86_400  # expires_at in the future: DynamoDB Local deletes expired items


# --- options ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    dynamodb_endpoint: str
    callers: int
    rounds: int
    quick: bool
    json: str | None


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.client_cpu",
        description="Client CPU per DynamoDB call and calls/s: the service's direct transport "
        "beside aioboto3 (and aiodynamo if installed); prints a Markdown report.",
    )
    parser.add_argument("--dynamodb-endpoint", default="http://127.0.0.1:8766",
                        help="DynamoDB Local (start one: bash scripts/dynamodb-local.sh start "
                        "8766)")
    parser.add_argument("--callers", type=int, default=10,
                        help="concurrent callers of the throughput loop (default 10)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of every client and operation (default 10; --quick: 4)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls (~1 min)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (4 if args.quick else 10)
    if rounds < 1 or args.callers < 1:
        parser.error("--rounds and --callers must be at least 1")
    return Options(dynamodb_endpoint=args.dynamodb_endpoint.rstrip("/"), callers=args.callers,
                   rounds=rounds, quick=args.quick, json=args.json)


# --- the requests -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    key: str  # dotted name of its figures
    name: str  # DynamoDB's
    label: str
    requests: list[list[dict[str, Any]]]  # per caller, POOL requests
    check: Callable[[dict[str, Any]], bool]  # a correct answer?


def koo_item(koo_id: str, n: int) -> dict[str, Any]:
    """A koo about as large as the service stores (text, counters, hashtags)."""
    return {
        "koo_id": koo_id, "author_id": f"author{n % 20:02d}", "created_at": BASE_MS + n,
        "text": f"koo {koo_id}: benchmark text of a typical length, about a hundred "
                "characters in all.", "lang": "hi", "hashtags": ["bench", "koo"],
        "likes": 0, "rekoos": 0, "comments": 0,
    }


def timeline_item(reader: str, n: int, run: str) -> dict[str, Any]:
    koo_id = f"{run}k{n % SEEDED_KOOS:04d}"
    return {"reader_id": reader, "sk": keys.sort_key(BASE_MS + n, koo_id), "koo_id": koo_id,
            "author_id": f"author{n % 20:02d}", "expires_at": int(time.time()) + TTL_S}


def answered(response: dict[str, Any]) -> bool:
    """Any answer will do: an error would have raised."""
    return True


def operations(db: Dynamo, run: str, callers: int) -> list[Operation]:
    """The seven operations, their requests for every caller, and their checks."""
    koos, timelines = db.table(KOOS), db.table(TIMELINES)
    seeded = [f"{run}k{i:04d}" for i in range(SEEDED_KOOS)]

    def pool(build: Callable[[int, int], dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [[build(c, i) for i in range(POOL)] for c in range(callers)]

    def any_koo(c: int, i: int, k: int = 0) -> dict[str, Any]:
        return {"koo_id": {"S": seeded[(c * 37 + i * 7 + k) % SEEDED_KOOS]}}

    def own_koo(c: int) -> dict[str, Any]:  # a caller's own item: no write contention
        return {"koo_id": {"S": seeded[c % SEEDED_KOOS]}}

    counter = {"UpdateExpression": "ADD #c :d", "ExpressionAttributeNames": {"#c": "likes"},
               "ExpressionAttributeValues": {":d": {"N": "1"}}}
    return [
        Operation("get_item", "GetItem", "GetItem", pool(lambda c, i: {
            "TableName": koos, "Key": any_koo(c, i)}), lambda r: "Item" in r),
        Operation("put_item", "PutItem", "PutItem", pool(lambda c, i: {
            "TableName": koos, "Item": to_wire(koo_item(f"{run}p{c}-{i}", i))}),
            lambda r: "Attributes" not in r),
        Operation("update_item", "UpdateItem", "UpdateItem (ADD a counter)", pool(lambda c, i: {
            "TableName": koos, "Key": own_koo(c), **counter}), lambda r: "Attributes" not in r),
        Operation("query_20", "Query", "Query, 20 items", pool(lambda c, i: {
            "TableName": timelines, "KeyConditionExpression": "reader_id = :r",
            "ExpressionAttributeValues": {":r": {"S": f"{run}q{(c + i) % callers}"}},
            "ScanIndexForward": False, "Limit": 20}), lambda r: len(r.get("Items", [])) == 20),
        Operation("batch_get_25", "BatchGetItem", "BatchGetItem, 25 keys", pool(lambda c, i: {
            "RequestItems": {koos: {"Keys": [any_koo(c, i, k) for k in range(25)]}}}),
            lambda r: len(r.get("Responses", {}).get(koos, [])) == 25
            and not r.get("UnprocessedKeys")),
        Operation("batch_write_25", "BatchWriteItem", "BatchWriteItem, 25 items",
                  pool(lambda c, i: {"RequestItems": {timelines: [
                      {"PutRequest": {"Item": to_wire(timeline_item(f"{run}w{c}-{k}", i, run))}}
                      for k in range(25)]}}),
                  lambda r: not r.get("UnprocessedItems")),
        Operation("transact_write_2", "TransactWriteItems", "TransactWriteItems, 2 items",
                  pool(lambda c, i: {"TransactItems": [
                      {"Put": {"TableName": timelines,
                               "Item": to_wire(timeline_item(f"{run}t{c}", i, run))}},
                      {"Update": {"TableName": koos, "Key": own_koo(c), **counter}},
                  ]}), answered),
    ]


async def seed(db: Dynamo, run: str, callers: int) -> None:
    koos = [koo_item(f"{run}k{i:04d}", i) for i in range(SEEDED_KOOS)]
    entries = [timeline_item(f"{run}q{c}", n, run) for c in range(callers)
               for n in range(TIMELINE_ENTRIES)]
    await db.batch_write(KOOS, puts=koos)
    await db.batch_write(TIMELINES, puts=entries)


# --- the clients ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_clients(settings: Settings) -> AsyncIterator[tuple[Dynamo, dict[str, Send],
                                                                  list[str]]]:
    """The service's Dynamo (direct) and every client's send; notes on the clients."""
    notes: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        direct = await stack.enter_async_context(open_dynamo(settings))
        on_boto = await stack.enter_async_context(
            open_dynamo(dataclasses.replace(settings, dynamodb_client="aioboto3")))
        session = aioboto3.Session(region_name=settings.aws_region,
                                   **direct.credentials.botocore_kwargs())
        bare = await stack.enter_async_context(
            session.client("dynamodb", endpoint_url=settings.dynamodb_endpoint))

        async def bare_send(operation: str, request: dict[str, Any]) -> dict[str, Any]:
            response: dict[str, Any] = await getattr(bare, METHODS[operation])(**request)
            return response

        sends: dict[str, Send] = {"direct": direct.call, "aioboto3_transport": on_boto.call,
                                  "aioboto3": bare_send}
        aiodynamo = await stack.enter_async_context(open_aiodynamo(settings, direct))
        if aiodynamo is None:
            notes.append("aiodynamo: not installed (its column is left out).")
        else:
            sends["aiodynamo"] = aiodynamo
        yield direct, sends, notes


@contextlib.asynccontextmanager
async def open_aiodynamo(settings: Settings, db: Dynamo) -> AsyncIterator[Send | None]:
    """aiodynamo's ``send_request`` over an aiohttp session, or None if not importable."""
    try:
        client_module = importlib.import_module("aiodynamo.client")
        credentials_module = importlib.import_module("aiodynamo.credentials")
        http_module = importlib.import_module("aiodynamo.http.aiohttp")
    except ImportError:
        yield None
        return
    import aiohttp
    from yarl import URL

    current = await db.credentials.current()
    key = credentials_module.Key(current.access_key, current.secret_key, current.token)
    async with aiohttp.ClientSession() as session:
        client = client_module.Client(
            http_module.AIOHTTP(session), credentials_module.StaticCredentials(key),
            settings.aws_region, endpoint=URL(settings.dynamodb_endpoint or ""))

        async def send(operation: str, request: dict[str, Any]) -> dict[str, Any]:
            response: dict[str, Any] = await client.send_request(action=operation,
                                                                 payload=request)
            return response

        yield send


# --- measurement ------------------------------------------------------------------------


@dataclass
class Block:
    """One client's block of calls: CPU and wall seconds, and how many calls."""

    cpu: float
    wall: float
    calls: int


@dataclass
class Result:
    """One operation: every client's blocks, sequential and concurrent."""

    operation: Operation
    sequential: dict[str, list[Block]] = field(default_factory=dict)
    concurrent: dict[str, list[Block]] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=dict)  # concurrent, seconds

    def cpu_per_call(self, client: str, concurrent: bool = False) -> float:
        blocks = (self.concurrent if concurrent else self.sequential).get(client, [])
        calls = sum(b.calls for b in blocks)
        return sum(b.cpu for b in blocks) / calls if calls else math.nan

    def calls_per_s(self, client: str) -> float:
        blocks = self.concurrent.get(client, [])
        wall = sum(b.wall for b in blocks)
        return sum(b.calls for b in blocks) / wall if wall else math.nan

    def busy(self, client: str) -> float:
        """Share of one core this process used during the concurrent blocks."""
        blocks = self.concurrent.get(client, [])
        wall = sum(b.wall for b in blocks)
        return sum(b.cpu for b in blocks) / wall if wall else math.nan

    def cpu_ratio(self, client: str, base: str) -> float:
        return self.cpu_per_call(client) / self.cpu_per_call(base)

    def round_ratios(self, client: str, base: str) -> list[float]:
        """CPU per call of ``client`` over ``base``'s, round by round."""
        return [(a.cpu / a.calls) / (b.cpu / b.calls) for a, b in
                zip(self.sequential.get(client, []), self.sequential.get(base, []),
                    strict=True)]


async def sequential(send: Send, name: str, requests: list[dict[str, Any]],
                     calls: int) -> Block:
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(calls):
        await send(name, requests[i % POOL])
    return Block(time.process_time() - cpu, time.perf_counter() - wall, calls)


async def concurrent(send: Send, name: str, requests: list[list[dict[str, Any]]],
                     calls: int, latency: list[float]) -> Block:
    async def caller(own: list[dict[str, Any]]) -> None:
        for i in range(calls):
            started = time.perf_counter()
            await send(name, own[i % POOL])
            latency.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(own) for own in requests))
    return Block(time.process_time() - cpu, time.perf_counter() - wall,
                 calls * len(requests))


async def warm_up(sends: dict[str, Send], ops: list[Operation]) -> None:
    """A few calls of every operation by every client, sequential and concurrent, each
    answer checked (the pools' connections are open after it)."""
    for op in ops:
        for client, send in sends.items():
            for i in range(WARMUP_CALLS):
                response = await send(op.name, op.requests[0][i % POOL])
                if not op.check(response):
                    raise RuntimeError(f"{CLIENTS[client]}: unexpected {op.name} answer: "
                                       f"{str(response)[:300]}")
            await concurrent(send, op.name, op.requests, 2, [])


async def measure(sends: dict[str, Send], ops: list[Operation], opts: Options) -> list[Result]:
    names = list(sends)
    seq_calls, conc_calls = SEQUENTIAL_CALLS[opts.quick], CONCURRENT_CALLS[opts.quick]
    results = []
    for op in ops:
        result = Result(op)
        with progress(f"{op.label}: {opts.rounds} rounds x {len(names)} clients"):
            for r in range(opts.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for client in order:
                    gc.collect()  # no client pays for the garbage of the one before it
                    block = await sequential(sends[client], op.name, op.requests[0], seq_calls)
                    result.sequential.setdefault(client, []).append(block)
                for client in order:
                    gc.collect()
                    samples = result.latency.setdefault(client, [])
                    block = await concurrent(sends[client], op.name, op.requests, conc_calls,
                                             samples)
                    result.concurrent.setdefault(client, []).append(block)
        results.append(result)
    return results


# --- report -----------------------------------------------------------------------------


def us(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e6:,.0f}"


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) < 2:
        return fmt_pct(median(values))
    return (f"{fmt_pct(median(values))} ({fmt_pct(percentile(values, 25))}-"
            f"{fmt_pct(percentile(values, 75))})")


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


TITLE = "Client CPU per DynamoDB call: the direct transport beside aioboto3"


def report(results: list[Result], clients: list[str], opts: Options,
           notes: list[str]) -> str:
    seq_calls, conc_calls = SEQUENTIAL_CALLS[opts.quick], CONCURRENT_CALLS[opts.quick]
    labels = [CLIENTS[c] for c in clients]
    rows = []
    for res in results:
        ratio = res.cpu_ratio("direct", BASE)
        rows.append([
            res.operation.label, *(us(res.cpu_per_call(c)) for c in clients),
            fmt_pct(ratio), spread(res.round_ratios("direct", BASE)),
            fmt_pct(res.cpu_ratio("direct", "aioboto3_transport")),
            verdict(ratio <= CPU_TARGET),
        ])
    cpu_table = markdown_table(
        ["operation", *labels, "direct / bare aioboto3", "per round",
         "direct / aioboto3 transport", f"target ≤ {CPU_TARGET:.0%}"], rows)
    rate_table = markdown_table(
        ["operation", *labels, "direct / bare aioboto3"],
        [[res.operation.label, *(fmt_int(res.calls_per_s(c)) for c in clients),
          f"{res.calls_per_s('direct') / res.calls_per_s(BASE):.2f}x"] for res in results])
    detail_table = markdown_table(
        ["operation", *labels],
        [[res.operation.label, *(
            f"{us(res.cpu_per_call(c, concurrent=True))} µs, "
            f"{median(res.latency[c]) * 1000:.1f} ms, {fmt_pct(res.busy(c))}" for c in clients)]
         for res in results])
    out = [
        "### Client CPU per call (µs; one caller, sequential calls)", "", cpu_table, "",
        f"`time.process_time()` of this process over blocks of {seq_calls} sequential calls, "
        f"{opts.rounds} rounds per client, divided by the calls (answers included: the "
        "decoded JSON, not items converted to Python values). direct: `Dynamo.call` on the "
        "default transport; aioboto3 transport: `Dynamo.call` with "
        "`FEED_DYNAMODB_CLIENT=aioboto3` (botocore's retries off, the service's pool); bare "
        "aioboto3: a client with botocore's default config; aiodynamo: `Client.send_request` "
        "over an aiohttp session (when installed); every client sends the same "
        "wire-format request. per round: median (interquartile range) of the ratio of the "
        "same round's blocks. Target: client CPU per data-plane call ≤ 40% of the bare "
        "aioboto3 client's.", "",
        f"### Calls/s with {opts.callers} concurrent callers", "", rate_table, "",
        "### The same blocks: client CPU per call, p50 latency, client busy", "",
        detail_table, "",
        f"{opts.callers} callers, {conc_calls} calls each per block, {opts.rounds} rounds per "
        "client; calls/s is total calls / total wall time of the blocks. Second table: this "
        "process's CPU per call in those blocks, one call's p50 latency, and this process's "
        "CPU / wall time (100% is one core: the client is then the bottleneck). "
        "Client and DynamoDB Local share the machine's cores.",
    ]
    out += ["", *[f"- {note}" for note in notes]] if notes else []
    return "\n".join(out)


def environment(endpoint: str, opts: Options) -> dict[str, str]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": f"{nproc()} CPUs (nproc), {cpu_model()}, {platform.machine()}; "
                   f"load average at start {load_average()}",
        "Python": f"{platform.python_version()} (asyncio's default event loop)",
        "aioboto3": f"{version('aioboto3')} (aiobotocore {version('aiobotocore')}, "
                    f"botocore {version('botocore')})",
        "aiohttp": version("aiohttp"),
        "orjson": version("orjson"),
        "aiodynamo": version("aiodynamo"),
        "DynamoDB": f"{endpoint}: {dynamodb_identity(endpoint)}",
        "rounds": f"{opts.rounds} per client and operation; {opts.callers} concurrent callers",
    }


def document(env: dict[str, str], command: str, results: list[Result], clients: list[str],
             markdown: str, notes: list[str], elapsed: float) -> dict[str, Any]:
    figures: dict[str, float | None] = {}
    targets = []
    latency: dict[str, list[float]] = {}
    for res in results:
        key = res.operation.key
        for c in clients:
            figures[f"{key}.{c}.cpu_per_call_ms"] = res.cpu_per_call(c) * 1000
            figures[f"{key}.{c}.concurrent_cpu_per_call_ms"] = (
                res.cpu_per_call(c, concurrent=True) * 1000)
            figures[f"{key}.{c}.calls_per_s"] = res.calls_per_s(c)
            figures[f"{key}.{c}.concurrent_p50_ms"] = median(res.latency[c]) * 1000
            if key == "get_item":
                latency[f"GetItem, {CLIENTS[c]}"] = [x * 1000 for x in res.latency[c]]
        ratio = res.cpu_ratio("direct", BASE)
        figures[f"{key}.direct_cpu_over_aioboto3"] = ratio
        figures[f"{key}.direct_cpu_over_aioboto3_transport"] = res.cpu_ratio(
            "direct", "aioboto3_transport")
        figures[f"{key}.direct_rate_over_aioboto3"] = (
            res.calls_per_s("direct") / res.calls_per_s(BASE))
        targets.append(target(
            f"client CPU per call ≤ 40% of aioboto3's ({res.operation.label})",
            fmt_pct(ratio), None if math.isnan(ratio) else ratio <= CPU_TARGET))
    return bench_document(
        "client_cpu", TITLE, command, env, markdown, figures, latency_ms=latency,
        targets=targets, notes=notes, elapsed_s=elapsed,
        data={"clients": {c: CLIENTS[c] for c in clients}, "operations": [
            {"operation": res.operation.name, "label": res.operation.label,
             "sequential": {c: [vars(b) for b in bs] for c, bs in res.sequential.items()},
             "concurrent": {c: [vars(b) for b in bs] for c, bs in res.concurrent.items()}}
            for res in results]},
    )


# --- main -------------------------------------------------------------------------------


async def run(opts: Options) -> Outcome | int:
    started = time.monotonic()
    command = command_line()
    env = environment(opts.dynamodb_endpoint, opts)
    if env["DynamoDB"].split(": ", 1)[1].startswith("not answering"):
        print(f"DynamoDB does not answer at {opts.dynamodb_endpoint}: start it with "
              "`bash scripts/dynamodb-local.sh start 8766`", file=sys.stderr)
        return 3
    settings = Settings(dynamodb_endpoint=opts.dynamodb_endpoint, dynamodb_client="direct",
                        table_prefix=f"bench{uuid.uuid4().hex[:8]}_", log_json=False,
                        log_level="WARNING")
    run_id = f"c{uuid.uuid4().hex[:6]}"
    async with open_clients(settings) as (db, sends, notes):
        with progress(f"creating tables {settings.table_prefix}*"):
            await create_tables(db, datasets=(KOOS, TIMELINES))
        try:
            await seed(db, run_id, opts.callers)
            ops = operations(db, run_id, opts.callers)
            with progress("warm-up"):
                await warm_up(sends, ops)
            results = await measure(sends, ops, opts)
        finally:
            with contextlib.suppress(Exception):
                await drop_tables(db)
    clients = list(sends)
    elapsed = time.monotonic() - started
    markdown = report(results, clients, opts, notes)
    return Outcome(
        markdown, heading=f"# {TITLE}", env=env, command=command, elapsed_s=elapsed,
        json_path=opts.json,
        document=lambda: document(env, command, results, clients, markdown, notes, elapsed),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
