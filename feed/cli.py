"""The ``feed`` command line.

Commands whose modules are heavy (the workers, the API server, the demo, the
DynamoDB client, the queue's client) import them when they run, so ``feed --help``
and usage errors stay quick.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from config.settings import Settings, SettingsError
from feed.backfill import add_backfill_parser, run_backfill
from feed.errors import StorageError, ValidationFailed
from feed.events import event_digest, validate_event
from feed.logs import setup_logging
from feed.progress import Progress

__all__ = ["main"]

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
# Top-level modules of the `demo` extra: importing the demo without them is a usage
# error with a one-line fix, not a crash.
DEMO_EXTRA = frozenset({"moto", "fakeredis", "lupa", "flask", "werkzeug"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feed",
        description="koo-feed: event workers, fan-out, hot timeline cache and the read API. "
        "Configuration comes from FEED_* environment variables (see the README).",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"feed {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="run the embedded demo (no services needed)",
        description="Start an embedded DynamoDB (moto) and an in-process Redis stand-in "
        "unless FEED_DYNAMODB_ENDPOINT / FEED_REDIS_URL point at real ones, run the worker "
        "and the API in one process, load a synthetic social graph, publish koos and "
        "reactions, and print a ranked feed and a summary.",
    )
    demo.add_argument("--serve", action="store_true",
                      help="keep the API up on http://127.0.0.1:8080 afterwards")
    demo.add_argument("--port", type=int, default=8080, help="port for --serve (8080)")
    demo.add_argument("--users", type=int, default=120, help="users in the graph (120)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (7)")

    api = sub.add_parser("api", help="serve the read API until SIGTERM/SIGINT",
                         description="Serve the read API; on SIGTERM/SIGINT stop accepting "
                         "connections, finish in-flight requests, and exit 0.")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    api.add_argument("--port", type=int, default=8080, help="port (8080)")
    api.add_argument("--workers", type=int, default=1,
                     help="API processes (1; about one per core)")

    worker = sub.add_parser("worker", help="run the arq workers until SIGTERM/SIGINT",
                            description="Run arq workers. On SIGTERM/SIGINT they stop taking "
                            "jobs, let running ones finish (20 s at most), hand the rest "
                            "back to the queue, and exit 0.")
    worker.add_argument("--queue", choices=["realtime", "backfill", "all"], default="all",
                        help="which queue to serve (all)")
    worker.add_argument("--burst", action="store_true",
                        help="exit once the queues are empty")

    tables = sub.add_parser("tables", help="manage the DynamoDB tables")
    tables_sub = tables.add_subparsers(dest="tables_command", required=True, metavar="ACTION")
    tables_sub.add_parser("create", help="create every table and index if missing "
                          "(idempotent) and wait until active")

    publish = sub.add_parser(
        "publish", help="publish events from a JSON-lines file",
        description="Publish events from a JSON-lines file ('-' for stdin), one event per "
        "line, with a progress bar. Bad lines are reported by line number and skipped; the "
        "exit code is 1 if any line was bad, 0 otherwise.",
    )
    publish.add_argument("file", help="path of the .jsonl file, or - for stdin")
    publish.add_argument("--batch", type=int, default=500, help="events per enqueue batch")
    publish.add_argument("--quiet", action="store_true", help="no progress bar")

    add_backfill_parser(sub)
    return parser


EXIT_CODES = """exit codes:
  0  done
  1  bad input (feed publish: some lines were bad and skipped)
  2  usage or configuration error (a missing file, an invalid FEED_* variable, a
     missing extra)
  3  a service did not answer or refused (Redis, DynamoDB, credentials)
  130 interrupted"""


def _version() -> str:
    try:
        return importlib.metadata.version("koo-feed")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"feed: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings.log_level, json_format=settings.log_json)
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except StorageError as exc:
        print(f"feed: storage error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "demo":
        from feed.demo import run_demo

        try:
            return asyncio.run(run_demo(settings, serve=args.serve, port=args.port,
                                        users=args.users, seed=args.seed))
        except ModuleNotFoundError as exc:
            # The embedded services are imported when started, not with the demo.
            missing = (exc.name or "").split(".")[0]
            if missing not in DEMO_EXTRA:
                raise
            print(f"feed: the demo needs the 'demo' extra ({missing} is missing): "
                  "pip install 'koo-feed[demo]'", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "api":
        return _serve_api(settings, args.host, args.port, args.workers)
    if args.command == "worker":
        from workers.settings import run_workers

        queues = ["realtime", "backfill"] if args.queue == "all" else [args.queue]
        asyncio.run(run_workers(settings, queues, burst=args.burst))
        return EXIT_OK
    if args.command == "tables":
        return asyncio.run(_create_tables(settings))
    if args.command == "publish":
        return asyncio.run(publish_file(settings, args.file, batch=args.batch,
                                        quiet=args.quiet))
    if args.command == "backfill":
        return asyncio.run(run_backfill(settings, args))
    raise AssertionError(args.command)


def _serve_api(settings: Settings, host: str, port: int, workers: int) -> int:
    import uvicorn

    from feed.api._server import ConnectionLimits, guarded_protocol

    if not settings.api_tokens:
        print("feed: FEED_API_TOKENS is empty: every /v1 request would be refused",
              file=sys.stderr)
        return EXIT_USAGE
    # uvicorn drains, then re-raises the signal it caught; the contract wants exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    # The guarded protocol bounds what one client can make a process hold (header size,
    # time to send a request) and answers parse errors with the JSON error body; no
    # WebSocket is served, so an upgrade request is answered as plain HTTP.
    uvicorn.run(
        "feed.api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
        loop="uvloop", http=guarded_protocol(ConnectionLimits(settings.api_request_timeout)),
        ws="none", log_config=None, access_log=False, timeout_graceful_shutdown=20,
        lifespan="on",
    )
    return EXIT_OK


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)


async def _create_tables(settings: Settings) -> int:
    from feed.store import create_regional_tables, create_tables, open_dynamo, open_regions

    async with open_dynamo(settings) as db, open_regions(settings) as regions:
        created = await create_tables(db)
        created += await create_regional_tables(regions)
    names = ", ".join(created) if created else "none (all existed)"
    print(f"tables ready; created: {names}")
    return EXIT_OK


# A command-line tool with nothing else on its loop: plain blocking file reads are fine.
def _open_text(path: str) -> TextIO:
    return open(path, encoding="utf-8")


def _count_lines(path: str) -> int:
    with open(path, "rb") as counter:
        return sum(1 for _ in counter)


async def publish_file(settings: Settings, path: str, *, batch: int = 500,
                       quiet: bool = False) -> int:
    """Publish a JSON-lines file; returns the exit code (1 if any line was bad)."""
    from feed.publisher import connect_publisher

    try:
        source: TextIO = sys.stdin if path == "-" else _open_text(path)
        total = None if path == "-" else _count_lines(path)
    except OSError as exc:
        print(f"feed: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress("publishing", total, sys.stderr, quiet=quiet)
    bad = 0
    done = 0
    published = 0
    pending: list[dict[str, Any]] = []
    # event_id -> (digest, line) within the batch being built: a batch with one id on
    # two different events is refused whole, so the later line is reported instead.
    in_batch: dict[str, tuple[str, int]] = {}
    try:
        async with connect_publisher(settings) as publisher:
            for number, line in enumerate(source, start=1):
                if not line.strip():
                    done += 1
                    continue
                try:
                    event = validate_event(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    bad += 1
                    print(f"line {number}: not JSON: {exc}", file=sys.stderr)
                except ValidationFailed as exc:
                    bad += 1
                    print(f"line {number}: {exc}", file=sys.stderr)
                else:
                    digest = event_digest(event)
                    first = in_batch.get(event["event_id"])
                    if first is None:
                        in_batch[event["event_id"]] = (digest, number)
                        pending.append(event)
                    elif first[0] != digest:
                        bad += 1
                        print(f"line {number}: event_id {event['event_id']!r} is already "
                              f"used by line {first[1]} for a different event",
                              file=sys.stderr)
                done += 1
                if len(pending) >= batch:
                    published += await publisher.publish(pending)
                    pending = []
                    in_batch = {}
                    progress.update(done, bad)
            if pending:
                published += await publisher.publish(pending)
    finally:
        if source is not sys.stdin:
            source.close()
    progress.update(done, bad, final=True)
    print(f"published {published} events; {bad} bad lines skipped", file=sys.stderr)
    return EXIT_BAD_INPUT if bad else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
