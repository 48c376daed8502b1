"""A replicated queue Redis on loopback: a primary, its replicas and three Sentinels.

Every server is a `redis-server` of the caller's own on a free port, in a directory
of its own, logging to a file there; the primary and replicas keep an append-only
file fsynced on every write, as the queue's Redis should. ``SentinelGroup.running``
starts them all, waits until the Sentinels know each other and the replicas (without
that, no failover can happen), and kills every process it started when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from feed._embedded import free_port

__all__ = ["MASTER", "RedisProcess", "SentinelGroup"]

MASTER = "feedq"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _tail(log: Path, size: int = 2000) -> str:
    return log.read_text(errors="replace")[-size:] if log.exists() else ""


class RedisProcess:
    """One `redis-server` (data node or Sentinel) on a free port; ``arguments`` builds its
    command line for the port it is given (another is tried if that one was taken in the
    meantime)."""

    def __init__(self, directory: Path, arguments: Callable[[int], list[str]]) -> None:
        self.port = 0
        self.directory = directory
        self.arguments = arguments
        self.log = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                ["redis-server", *self.arguments(self.port)], cwd=self.directory,
                stdout=sink, stderr=sink)

    def client(self, db: int = 0) -> Redis:
        return Redis(port=self.port, db=db, socket_connect_timeout=1, socket_timeout=2,
                     decode_responses=True)

    async def started(self, within: float = 15) -> None:
        """Start, and wait until it answers PING."""
        for _ in range(5):
            self.start()
            if await self._ready(within):
                return
        raise AssertionError(f"redis-server did not start: {_tail(self.log)}")

    async def _ready(self, within: float) -> bool:
        """True once it answers; False if it exited because its port was taken."""
        deadline = time.monotonic() + within
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                assert "Address already in use" in _tail(self.log), _tail(self.log)
                return False
            client = self.client()
            try:
                if await client.ping():
                    return True
            except (RedisError, OSError):
                pass
            finally:
                await client.aclose()
            assert time.monotonic() < deadline, f"redis-server on {self.port} did not start"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients or replicas."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _data_node(directory: Path, primary: RedisProcess | None = None) -> RedisProcess:
    def arguments(port: int) -> list[str]:
        replica_of = [] if primary is None else ["--replicaof", "127.0.0.1", str(primary.port)]
        return ["--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory),
                "--daemonize", "no", *replica_of]

    return RedisProcess(directory, arguments)


def _sentinel(directory: Path, primary: RedisProcess) -> RedisProcess:
    def arguments(port: int) -> list[str]:
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\ndaemonize no\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        return [str(conf), "--sentinel"]

    return RedisProcess(directory, arguments)


class SentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels watching them (quorum
    2; none: a replicated pair or trio without failover)."""

    def __init__(self, directory: Path, *, replicas: int = 2, sentinels: int = 3) -> None:
        self.primary = _data_node(directory / "node-0")
        self.replicas = [_data_node(directory / f"node-{i + 1}", self.primary)
                         for i in range(replicas)]
        self.nodes = [self.primary, *self.replicas]
        self.sentinels = [_sentinel(directory / f"sentinel-{i}", self.primary)
                          for i in range(sentinels)]

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", s.port) for s in self.sentinels)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SentinelGroup]:
        try:
            for process in [*self.nodes, *self.sentinels]:
                await process.started()
            await self.replicated()
            await self.watching()
            yield self
        finally:
            for process in [*self.sentinels, *self.nodes]:
                process.kill()

    async def replicated(self, within: float = 30) -> None:
        """Wait until every replica's link to the primary is up."""
        deadline = time.monotonic() + within
        for node in self.replicas:
            client = node.client()
            try:
                while (await client.info("replication")).get("master_link_status") != "up":
                    assert time.monotonic() < deadline, _tail(node.log)
                    await asyncio.sleep(0.05)
            finally:
                await client.aclose()

    async def watching(self, within: float = 30) -> None:
        """Wait until each Sentinel sees the primary, its replicas and the other two."""
        deadline = time.monotonic() + within
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                while True:
                    state = await client.sentinel_master(MASTER)  # type: ignore[no-untyped-call]
                    if (int(state["num-other-sentinels"]) >= len(self.sentinels) - 1
                            and int(state["num-slaves"]) >= len(self.replicas)):
                        break
                    assert time.monotonic() < deadline, (state, _tail(sentinel.log))
                    await asyncio.sleep(0.1)
            finally:
                await client.aclose()

    async def primary_port(self) -> int | None:
        """The primary's port as the first answering Sentinel says, None if none answers."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                address = await client.sentinel_get_master_addr_by_name(MASTER)  # type: ignore[no-untyped-call]
                if address:
                    return int(address[1])
            except (RedisError, OSError):
                continue
            finally:
                await client.aclose()
        return None

    def node_on(self, port: int) -> RedisProcess:
        return next(n for n in self.nodes if n.port == port)

    def url(self, db: int = 0) -> str:
        """The first primary's URL (FEED_REDIS_URL without Sentinel)."""
        return f"redis://127.0.0.1:{self.primary.port}/{db}"

    async def promoted(self, old_port: int, within: float = 30) -> float:
        """Wait until a Sentinel names a primary other than ``old_port``; the seconds it
        took."""
        started = time.monotonic()
        while await self.primary_port() in (None, old_port):
            assert time.monotonic() - started < within, [_tail(s.log) for s in self.sentinels]
            await asyncio.sleep(0.05)
        return time.monotonic() - started
