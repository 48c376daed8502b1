"""Process hygiene: `feed api` and `feed worker` as real processes, signals, JSON logs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from config.settings import Settings
from feed._embedded import free_port
from feed.services import Services
from tests.conftest import uid
from tests.helpers import event

pytestmark = pytest.mark.slow

TOKEN = "test-token-123456"


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
        "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "FEED_TABLE_PREFIX": settings.table_prefix,
        "FEED_API_TOKENS": TOKEN,
        "FEED_WORKER_METRICS_PORT": "0",
        "FEED_LOG_LEVEL": "INFO",
    }


def _spawn(args: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "feed.cli", *args], env=_env(settings),
                                stdout=sink, stderr=sink)


async def test_api_serves_then_drains_and_exits_zero_on_sigterm(
    services: Services, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    api = _spawn(["api", "--port", str(port)], services.settings, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                await asyncio.sleep(0.2)
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            in_flight = asyncio.create_task(client.get(
                f"/v1/users/{uid()}", headers={"Authorization": f"Bearer {TOKEN}"}))
            await asyncio.sleep(0.05)
            api.send_signal(signal.SIGTERM)
            answered = await in_flight
            assert answered.status_code == 404  # answered, not cut off
        assert api.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if api.poll() is None:
            api.kill()
            api.wait(10)
    assert TOKEN not in log.read_text()


async def test_worker_logs_json_with_ids_and_exits_zero_on_sigterm(
    services: Services, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = _spawn(["worker"], services.settings, log)
    poison = event("koo_deleted", koo_id=uid("k"), author_id=uid())
    try:
        # A delete by someone who is not the author can never apply: it is dead-lettered
        # and logged with its event id.
        k, author = uid("k"), uid()
        await services.publisher.publish([
            event("koo_created", koo_id=k, author_id=author, text="x", lang="hi"),
        ])
        await asyncio.sleep(0.5)
        poison = event("koo_deleted", koo_id=k, author_id=uid())
        await services.publisher.publish([poison])
        deadline = time.monotonic() + 30
        while await services.stores.dead_letters.get(f"event:{poison['event_id']}") is None:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            await asyncio.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(40) == 0, log.read_text()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    records = [orjson.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert records, "the worker logged nothing"
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    dead = [r for r in records if r["message"] == "event dead-lettered"]
    assert dead
    assert dead[0]["event_id"] == poison["event_id"]
    assert "not by" in dead[0]["reason"]
