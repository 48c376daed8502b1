"""Fixtures of the fault tests: a DynamoDB Local of the test's own (to pause, kill and
restart), settings with short timeouts over it, and worker processes.

The fixtures here start their own DynamoDB Local whatever ``FEED_TEST_BACKEND`` says, so the
tests using them are not marked ``dynamodb`` and run once per suite run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from feed.store import create_tables, open_dynamo
from tests.conftest import CACHE_URL, QUEUE_URL, free_port, make_settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "dynamodb-local.sh"


class DynamoDBLocal:
    """One DynamoDB Local started by ``scripts/dynamodb-local.sh`` on a free port, with
    its data in a directory so it survives :meth:`kill` and :meth:`restart`."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.paused = False

    def _script(self, action: str) -> None:
        env = {**os.environ, "DYNAMODB_LOCAL_DB_PATH": str(self.data_dir)}
        subprocess.run(["bash", str(SCRIPT), action, str(self.port)], env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=150)

    @property
    def pid(self) -> int:
        return int((ROOT / ".cache" / f"dynamodb-local-{self.port}.pid").read_text().strip())

    def start(self) -> None:
        self._script("start")

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL, and wait until the process is gone (connections are then refused)."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            if Path(f"/proc/{pid}/stat").exists() and " Z " in Path(
                    f"/proc/{pid}/stat").read_text():
                return  # a zombie: dead, waiting for its parent (gone) to be reaped
            time.sleep(0.05)
        raise RuntimeError(f"DynamoDB Local (pid {pid}) survived SIGKILL")

    def restart(self) -> None:
        """Start again on the same port, over the same data."""
        self._script("start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.paused:
                self.resume()
        self._script("stop")


@contextlib.contextmanager
def dynamodb_local(data_dir: Path) -> Iterator[DynamoDBLocal]:
    """Start a DynamoDB Local of one's own; always stopped afterwards."""
    instance = DynamoDBLocal(data_dir)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def own_dynamodb_local(tmp_path: Path) -> Iterator[DynamoDBLocal]:
    """A DynamoDB Local of this test's own on a free port; always stopped afterwards."""
    with dynamodb_local(tmp_path / "dynamodb-data") as instance:
        yield instance


async def flush_test_redis() -> None:
    """Empty this suite's two Redis databases (and only those)."""
    for url in (QUEUE_URL, CACHE_URL):
        redis = Redis.from_url(url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()


async def fault_settings(endpoint: str, **overrides: Any) -> Settings:
    """Settings over ``endpoint`` with short storage timeouts, fresh tables created, and
    this suite's Redis databases flushed."""
    options: dict[str, Any] = {
        "dynamodb_connect_timeout": 0.5,
        "dynamodb_read_timeout": 2.0,
        "dynamodb_max_attempts": 1,
        "redis_timeout": 0.5,
        "worker_metrics_port": 0,
        "api_timeout": Settings().api_timeout,  # the service's own bound, not the suite's
        **overrides,
    }
    settings = make_settings(endpoint, **options)
    async with open_dynamo(settings) as db:
        await create_tables(db)
    await flush_test_redis()
    return settings


# Settings the fault fixtures change, passed on to a `feed worker` process as FEED_<NAME>
# (see tests.fault._procs.spawn_worker, which passes the rest).
_TIMEOUT_FIELDS = (
    "dynamodb_connect_timeout", "dynamodb_read_timeout", "dynamodb_max_attempts",
    "redis_timeout", "job_max_tries",
)


def timeout_env(settings: Settings) -> dict[str, str]:
    """FEED_* variables that give a worker process the same timeouts as ``settings``."""
    return {f"FEED_{name.upper()}": str(getattr(settings, name)) for name in _TIMEOUT_FIELDS}
