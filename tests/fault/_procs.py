"""Processes the fault tests start, stop and kill: `feed worker` and `redis-server`.

Every process writes to a log file, never to a pipe (a full pipe would block
it), and the helpers that start one are used in ``try``/``finally`` blocks or
fixtures so nothing outlives its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from feed._embedded import free_port

__all__ = [
    "RedisServer", "scrape_metric", "spawn_worker", "stop_process", "tail", "worker_env",
]

TOKEN = "test-token-123456"


def tail(log: Path, size: int = 2000) -> str:
    """The end of a process's log (for failure messages)."""
    return log.read_text(errors="replace")[-size:] if log.exists() else ""


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `feed worker` process that uses ``settings``' services."""
    return {
        **os.environ,
        "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
        "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "FEED_TABLE_PREFIX": settings.table_prefix,
        "FEED_API_TOKENS": TOKEN,
        "FEED_WORKER_METRICS_PORT": "0",
        "FEED_LOG_LEVEL": "WARNING",
        **extra,
    }


def spawn_worker(settings: Settings, log: Path, *args: str, **extra: str
                 ) -> subprocess.Popen[bytes]:
    """Start `feed worker ARGS` as its own process, logging to ``log``."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "feed.cli", "worker", *args],
            env=worker_env(settings, **extra), stdout=sink, stderr=sink,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGKILL a process still running and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout)


async def scrape_metric(worker: subprocess.Popen[bytes], log: Path, port: int, name: str, *,
                        wait: float = 10) -> float:
    """The sum of one metric's samples from a worker's /metrics, waiting until it answers."""
    deadline = time.monotonic() + wait
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            assert worker.poll() is None, tail(log)
            try:
                reply = await client.get(f"http://127.0.0.1:{port}/metrics")
                if reply.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no metrics on port {port}"
            await asyncio.sleep(0.1)
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in reply.text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


class RedisServer:
    """A `redis-server` of the test's own on a free port, which it may kill and restart.

    ``aof=True`` makes every write durable before Redis answers
    (``appendonly yes``, ``appendfsync always``), in ``directory``; otherwise nothing is
    persisted and a restart starts empty.
    """

    def __init__(self, directory: Path, *, aof: bool = False, port: int | None = None) -> None:
        self.directory = directory
        self.aof = aof
        self.port = port or free_port()
        self.log = directory / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start the server (on the same port and directory as before, after a restart)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.aof
                       else ["--appendonly", "no"])
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", *persistence, "--dir", str(self.directory),
                 "--daemonize", "no"],
                stdout=sink, stderr=sink,
            )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[RedisServer]:
        """Started and answering for the block, stopped after it (whatever happened)."""
        self.start()
        try:
            await self.ready()
            yield self
        finally:
            self.stop()

    async def ready(self, within: float = 15) -> None:
        """Wait (without blocking the event loop) until the server answers PING."""
        deadline = time.monotonic() + within
        while True:
            assert self.process is not None
            assert self.process.poll() is None, tail(self.log)
            client: Redis = Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
            try:
                if await client.ping():
                    return
            except (RedisError, OSError):
                pass
            finally:
                await client.aclose()
            assert time.monotonic() < deadline, "redis-server did not start"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server: no shutdown save, no goodbye to clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

