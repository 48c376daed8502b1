"""``feed demo``: the whole service in one process, on embedded stand-ins.

DynamoDB is moto's server (in-process) and Redis is an in-process stand-in
(fakeredis), always: the demo writes synthetic users, so it never follows
FEED_DYNAMODB_ENDPOINT, FEED_REDIS_URL or the other connection variables to
real services, and its tables have their own prefix. The worker and the API
run in this process; the demo loads a synthetic graph (a few celebrities, a
long tail), publishes koos and reactions in several languages through the real
queue, measures delivery latency into active readers' cached timelines, and
prints a ranked feed and a summary. Its stdout is the tour only: logs go to
stderr, at WARNING and above, as plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from config.settings import Settings
from feed._embedded import InProcessRedis, embedded_dynamodb
from feed.demo_tour import print_next_steps, print_summary, tour
from feed.logs import setup_logging
from feed.services import Services, open_services
from feed.store import create_tables, open_dynamo
from workers.runner import run_workers

__all__ = ["DEMO_TABLE_PREFIX", "demo_settings", "run_demo"]

# feed.cli's exit code for a usage error (the CLI imports this module, not the reverse).
EXIT_USAGE = 2
DEMO_TABLE_PREFIX = "demo_"
# What would point the demo at real services (or make it serve worker metrics): it
# overrides every one of them.
IGNORED_VARIABLES = (
    "FEED_DYNAMODB_ENDPOINT",
    "FEED_REDIS_URL",
    "FEED_CACHE_REDIS_URL",
    "FEED_TABLE_PREFIX",
    "FEED_REGIONS",
    "FEED_WORKER_METRICS_PORT",
    "FEED_WORKER_METRICS_HOST",
)

DEMO_CELEBRITY_FOLLOWERS = 60


def demo_settings(
    settings: Settings, environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[str]]:
    """The demo's settings and what to tell the user about them.

    Connection variables are overridden, never followed: synthetic users must not
    land in real tables. The embedded DynamoDB's endpoint is filled in later.
    """
    env = os.environ if environ is None else environ
    defaults = Settings()
    changes: dict[str, Any] = {
        "dynamodb_endpoint": None,
        "redis_url": defaults.redis_url,
        "cache_redis_url": "",
        "table_prefix": DEMO_TABLE_PREFIX,
        "regions": {},
        # One process, no scrape: the worker serves no metrics (nor warns of a busy port).
        "worker_metrics_port": 0,
    }
    notes: list[str] = []
    ignored = [name for name in IGNORED_VARIABLES if env.get(name, "").strip()]
    if ignored:
        notes.append(f"ignoring {', '.join(ignored)}: the demo runs only on its own "
                     f"embedded stand-ins (tables prefixed {DEMO_TABLE_PREFIX}) and serves no "
                     "worker metrics")
    notes.append("DynamoDB: embedded (moto's server, in-process); "
                 "Redis: in-process stand-in")
    if not settings.api_tokens:
        changes["api_tokens"] = (f"demo-{secrets.token_urlsafe(18)}",)
    if not env.get("FEED_CELEBRITY_FOLLOWERS", "").strip():
        changes["celebrity_followers"] = DEMO_CELEBRITY_FOLLOWERS
        notes.append(f"celebrity threshold lowered to {DEMO_CELEBRITY_FOLLOWERS} followers "
                     "for this small graph")
    return settings.replace(**changes), notes


@contextlib.asynccontextmanager
async def demo_environment(
    settings: Settings,
) -> AsyncIterator[tuple[Settings, InProcessRedis, list[str]]]:
    """The demo's settings, on an embedded DynamoDB and an in-process Redis."""
    settings, notes = demo_settings(settings)
    with embedded_dynamodb() as endpoint:
        yield settings.replace(dynamodb_endpoint=endpoint), InProcessRedis(), notes


def _quiet_logs(settings: Settings) -> None:
    """Warnings and errors only, as plain text on stderr: stdout is the tour."""
    level = max(logging.WARNING, logging.getLevelName(settings.log_level))
    setup_logging(logging.getLevelName(level), json_format=False)


def _claim_port(port: int) -> socket.socket:
    """The API's port, bound before the load: a taken port fails at once, not minutes later.

    uvicorn serves on this very socket, so nothing can take the port in between.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def run_demo(
    settings: Settings, *, serve: bool = False, port: int = 8080, users: int = 120,
    seed: int = 7,
) -> int:
    started = time.monotonic()
    out = sys.stdout
    _quiet_logs(settings)
    listener: socket.socket | None = None
    if serve:
        try:
            listener = _claim_port(port)
        except OSError as exc:
            print(f"feed: cannot serve the demo's API on 127.0.0.1:{port}: "
                  f"{exc.strerror or exc}; stop what uses it or pick another with --port",
                  file=sys.stderr)
            return EXIT_USAGE
    with contextlib.ExitStack() as owned:
        if listener is not None:
            owned.callback(listener.close)
        async with demo_environment(settings) as (settings, redis, notes):
            for note in notes:
                print(f"- {note}", file=out)
            async with open_dynamo(settings) as db:
                await create_tables(db)
            async with open_services(
                settings, cache_redis=redis.cache_client(), queue_factory=redis.queue_client,
            ) as services:
                stop = asyncio.Event()

                worker = asyncio.create_task(
                    run_workers(settings, services=services, stop=stop, handle_signals=False)
                )
                _cancel_on_signals(asyncio.current_task())
                try:
                    summary = await tour(services, users=users, seed=seed, out=out)
                    summary["elapsed_s"] = time.monotonic() - started
                    print_summary(summary, out)
                    if listener is not None:
                        await _serve(settings, services, listener, out)
                    else:
                        print_next_steps(out)
                finally:
                    stop.set()
                    await worker
    return 0


def _cancel_on_signals(task: asyncio.Task[Any] | None) -> None:
    """SIGTERM or SIGINT stops the demo (the workers are stopped on the way out)."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)


async def _serve(settings: Settings, services: Services, listener: socket.socket,
                 out: Any) -> None:
    import uvicorn

    from feed.api.app import create_app

    app = create_app(settings, services)
    host, port = listener.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_config=None,
                            access_log=False, lifespan="on")
    started = asyncio.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await super().startup(sockets=sockets)
            finally:
                started.set()

    server = Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    # The commands below are printed once they work: after the app's startup.
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([serving, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if not server.started:
        await serving
        return
    token = settings.api_tokens[0]
    base = f"http://{host}:{port}"
    print(f"\nServing the API on {base} (Ctrl-C to stop). Token: {token}", file=out)
    print(f"  curl -s -H 'Authorization: Bearer {token}' {base}/v1/users/user0010/feed?limit=5",
          file=out)
    print(f"  curl -s -H 'Authorization: Bearer {token}' "
          f"'{base}/v1/users/user0010/feed?limit=5&explain=true'", file=out)
    print(f"  curl -s -H 'Authorization: Bearer {token}' "
          f"{base}/v1/users/user0010/recommendations/follows", file=out)
    # Stays open: new koos for user0010 arrive as they are published (docs/realtime.md).
    print(f"  curl -sN -H 'Authorization: Bearer {token}' "
          f"{base}/v1/users/user0010/feed/stream", file=out)
    print(f"  curl -s -H 'Authorization: Bearer {token}' "
          f"{base}/v1/users/user0042/notifications", file=out)
    print(f"  curl -s {base}/metrics | grep feed_", file=out)
    print("Every route, and how to publish events: docs/api.md.", file=out)
    out.flush()
    await serving
