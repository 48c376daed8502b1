"""The ``feed`` command line.

Commands whose modules are heavy (the workers, the API server, the demo, the
DynamoDB client, the queue's client) import them when they run, so ``feed --help``
and usage errors stay quick.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, BinaryIO

import orjson

from config.settings import Settings, SettingsError
from feed.admin import (
    add_dead_letters_parser,
    add_inspect_parser,
    check_workers,
    create_tables,
    run_dead_letters,
    run_inspect,
)
from feed.backfill import add_backfill_parser, run_backfill
from feed.errors import (
    CacheUnavailable,
    QueueNotReplicated,
    StorageError,
    StorageUnavailable,
    ValidationFailed,
)
from feed.events import MAX_BATCH, event_digest, validate_event
from feed.export import add_users_parser, run_users
from feed.logs import redacted_url, setup_logging
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
        "(always: the demo never touches real services or tables, whatever FEED_* "
        "variables say), run the worker and the API in one process, load a synthetic "
        "social graph, publish koos and reactions, and print a ranked feed and a summary.",
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
                            "back to the queue, and exit 0. While the queue's Redis does "
                            "not answer they wait for it, warning with FEED_REDIS_URL; with "
                            "--burst they exit 3 instead.")
    worker.add_argument("--queue", choices=["realtime", "backfill", "all"], default="all",
                        help="which queue to serve (all)")
    worker.add_argument("--burst", action="store_true",
                        help="exit once the queues are empty")
    worker.add_argument("--check", action="store_true",
                        help="run nothing: exit 0 if a worker of the queue(s) reported "
                        "itself alive in the last 30 s, else 1 (a container healthcheck)")

    tables = sub.add_parser("tables", help="manage the DynamoDB tables")
    tables_sub = tables.add_subparsers(dest="tables_command", required=True, metavar="ACTION")
    create = tables_sub.add_parser(
        "create", help="create or update the tables to match their definitions (idempotent)",
        description="Reconcile every table with its definition (config/tables.py), also "
        "the users table of every FEED_REGIONS region: create missing tables, add missing "
        "global secondary indexes one at a time, enable TTL where a table defines it and "
        "point-in-time recovery on the system-of-record tables (FEED_DYNAMODB_PITR; by "
        "default on AWS only), waiting until each table and index is ACTIVE. It only "
        "adds: one line per change. What it cannot change (an index whose key differs "
        "from its definition, a missing local index) is reported and left as it is, and "
        "the exit code is then 1.",
    )
    create.add_argument("--dry-run", action="store_true",
                        help="print what would change, change nothing")
    create.add_argument("--wait", type=float, default=3600.0, metavar="SECONDS",
                        help="longest wait for each table or new index to become ACTIVE "
                        "(3600); a new index on a big table takes a while to build, and "
                        "running the command again keeps waiting")

    publish = sub.add_parser(
        "publish", help="publish events from a JSON-lines file",
        description="Publish events from a JSON-lines file ('-' for stdin), one event per "
        "line, with a progress bar. Bad lines are reported by line number and skipped; the "
        "exit code is 1 if any line was bad, 0 otherwise.",
    )
    publish.add_argument("file", help="path of the .jsonl file, or - for stdin")
    publish.add_argument("--batch", type=_batch_size, default=MAX_BATCH,
                         help=f"events per enqueue batch (1-{MAX_BATCH}; {MAX_BATCH})")
    publish.add_argument("--quiet", action="store_true", help="no progress bar")

    add_backfill_parser(sub)
    add_dead_letters_parser(sub)
    add_inspect_parser(sub)
    add_users_parser(sub)
    return parser


EXIT_CODES = """exit codes:
  0  done
  1  bad input (feed publish: some lines were bad and skipped; feed tables create: a
     difference it cannot change; feed dead-letters: a letter not found or not
     replayable; feed worker --check: no worker reported in the last 30 s)
  2  usage or configuration error (a missing file, an invalid FEED_* variable, a
     missing extra)
  3  a service did not answer or refused (Redis, DynamoDB, credentials); the message
     names the variable to check: FEED_REDIS_URL (the queue), FEED_CACHE_REDIS_URL
     (the cache) or FEED_DYNAMODB_ENDPOINT. feed worker waits for its queue instead
     (a warning in its log); feed worker --burst does not
  4  feed backfill --timeout: stopped waiting; the same command resumes the run
  130 interrupted"""


def _batch_size(text: str) -> int:
    """``--batch``: a batch the publisher accepts, checked before a line is read."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= size <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_BATCH}, not {size}")
    return size


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
    except Exception as exc:
        message = service_failure(exc, settings)
        if message is None:
            raise
        print(f"feed: {message}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def service_failure(exc: BaseException, settings: Settings) -> str | None:
    """The line for a service that did not answer or refused, naming the variable that
    points at it (without its password); None for anything else, which is a bug and keeps
    its traceback."""
    from redis.exceptions import RedisError

    if isinstance(exc, CacheUnavailable):
        return _unavailable("the cache's Redis", settings.cache_redis_url,
                            "FEED_CACHE_REDIS_URL", exc)
    # Outside the API and the workers' jobs, the queue's is the only Redis a command uses.
    cause = next((e for e in _causes(exc) if isinstance(e, RedisError)), None)
    if cause is not None or isinstance(exc, QueueNotReplicated):
        from feed.queue import queue_failure

        return queue_failure(settings, cause or exc)
    if isinstance(exc, StorageUnavailable):
        where, check = (f"at {redacted_url(settings.dynamodb_endpoint)}",
                        "FEED_DYNAMODB_ENDPOINT") if settings.dynamodb_endpoint else (
            f"(AWS, {settings.aws_region})", "FEED_DYNAMODB_ENDPOINT and FEED_AWS_REGION")
        if settings.regions:
            check += ", or FEED_REGIONS for a home region's endpoint"
        return f"DynamoDB {where} is unavailable (check {check}): {exc}"
    if isinstance(exc, StorageError):  # refused credentials name where they came from
        return f"storage error: {exc}"
    return None


def _unavailable(service: str, url: str, variable: str, exc: BaseException) -> str:
    return (f"{service} at {redacted_url(url)} is unavailable (check {variable}): "
            f"{str(exc) or type(exc).__name__}")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


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
        from workers.runner import run_workers

        queues = ["realtime", "backfill"] if args.queue == "all" else [args.queue]
        if args.check:
            return asyncio.run(check_workers(settings, queues))
        asyncio.run(run_workers(settings, queues, burst=args.burst))
        return EXIT_OK
    if args.command == "tables":
        return asyncio.run(create_tables(settings, dry_run=args.dry_run, wait=args.wait))
    if args.command == "publish":
        return asyncio.run(publish_file(settings, args.file, batch=args.batch,
                                        quiet=args.quiet))
    if args.command == "backfill":
        return asyncio.run(run_backfill(settings, args))
    if args.command == "dead-letters":
        return asyncio.run(run_dead_letters(settings, args))
    if args.command == "inspect":
        return asyncio.run(run_inspect(settings, args))
    if args.command == "users":
        return asyncio.run(run_users(settings, args))
    raise AssertionError(args.command)


MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _serve_api(settings: Settings, host: str, port: int, workers: int) -> int:
    if not settings.api_tokens:
        print("feed: FEED_API_TOKENS is empty: every /v1 request would be refused",
              file=sys.stderr)
        return EXIT_USAGE
    # The API's processes write their metrics to files in one directory and /metrics adds
    # them up (prometheus-client's multiprocess mode), so any process answering a scrape
    # shows them all; one process (--workers 1) uses it too, so /metrics reads one way.
    # prometheus_client reads the variable when first imported: it is set before anything
    # here imports it, and uvicorn's workers are spawned and inherit it. A new private
    # directory per run holds no file of an earlier run (whatever the variable said) and
    # goes with the run.
    metrics_dir = tempfile.mkdtemp(prefix="feed-api-metrics-")
    inherited = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = metrics_dir
    try:
        return _run_uvicorn(settings, host, port, workers)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if inherited is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = inherited


def _run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> int:
    import uvicorn

    from feed.api._server import ConnectionLimits, guarded_protocol

    # uvicorn drains, then re-raises the signal it caught; `feed api` exits 0 on a signal.
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


# A command-line tool with nothing else on its loop: plain blocking file reads are fine.
# Lines are read as bytes: one that is not UTF-8 is a bad line (orjson says so), not a
# crash of the whole run.
def _open_binary(path: str) -> BinaryIO:
    return open(path, "rb")


def _count_lines(path: str) -> int:
    with open(path, "rb") as counter:
        return sum(1 for _ in counter)


async def publish_file(settings: Settings, path: str, *, batch: int = 500,
                       quiet: bool = False) -> int:
    """Publish a JSON-lines file; returns the exit code (1 if any line was bad)."""
    from feed.publisher import connect_publisher

    try:
        source: BinaryIO = sys.stdin.buffer if path == "-" else _open_binary(path)
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
        if source is not sys.stdin.buffer:
            source.close()
    progress.update(done, bad, final=True)
    print(f"published {published} events; {bad} bad lines skipped", file=sys.stderr)
    return EXIT_BAD_INPUT if bad else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
