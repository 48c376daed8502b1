"""The realtime stream through faults: an API process killed mid-stream, and the cache
Redis restarted under open streams.

Pass criteria: after the API process is killed and another started, a client that
reconnects with its ``Last-Event-ID`` gets every koo delivered meanwhile, in order,
without a reset. When the cache Redis restarts, open streams end (the response
finishes, nothing hangs); a client that reconnects resumes from its last id when the
cache kept its data (AOF), or is told to reset when it did not, and then gets live koos.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from feed._embedded import free_port
from feed.api.app import create_app
from feed.services import Services, open_services
from tests.api.conftest import seed
from tests.conftest import uid
from tests.fault._procs import RedisServer, stop_process, tail, worker_env
from tests.helpers import follow, koo, signup
from tests.stream_client import Stream, open_stream, serve

pytestmark = [pytest.mark.fault, pytest.mark.default_client_only, pytest.mark.slow]


def _spawn_api(services: Services, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "feed.cli", "api", "--port", str(port), "--workers", "1"],
            env=worker_env(services.settings), stdout=sink, stderr=sink)


async def _api_process(services: Services, port: int, log: Path
                       ) -> subprocess.Popen[bytes]:
    """`feed api` on ``port`` over the test's services, once it answers."""
    process = _spawn_api(services, port, log)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            assert process.poll() is None, tail(log)
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, tail(log)
            await asyncio.sleep(0.2)


async def test_api_process_killed_mid_stream_client_resumes_missing_nothing(
    services: Services, tmp_path: Path
) -> None:
    p = {n: uid(n) for n in ("r", "a")}
    await seed(services.settings, [signup(u) for u in p.values()], [follow(p["r"], p["a"])])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    process = await _api_process(services, port, log)
    try:
        first = uid("k")
        async with open_stream(url, p["r"]) as stream:
            assert stream.status == 200
            await seed(services.settings, [koo(first, p["a"])])
            seen = await stream.next_of("koo", 20)
            assert seen.data["koo_id"] == first
            stop_process(process)  # SIGKILL, mid-stream
            async with asyncio.timeout(10):
                await stream.ended.wait()
        missed = [uid("k") for _ in range(4)]
        for koo_id in missed:  # delivered while no API process runs
            await seed(services.settings, [koo(koo_id, p["a"])])
        process = await _api_process(services, port, log)
        async with open_stream(url, p["r"], last_event_id=seen.id) as stream:
            caught = [await stream.next(20) for _ in missed]
            assert [e.event for e in caught] == ["koo"] * len(missed)
            assert [e.data["koo_id"] for e in caught] == missed
            live = uid("k")
            await seed(services.settings, [koo(live, p["a"])])
            assert (await stream.next_of("koo", 20)).data["koo_id"] == live
    finally:
        stop_process(process)


@pytest.fixture(params=[True, False], ids=["aof", "empty-restart"])
async def cache_server(request: pytest.FixtureRequest, tmp_path: Path
                       ) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path / "cache", aof=request.param).serving() as server:
        yield server


async def _reopen(url: str, reader: str, last_id: str | None
                  ) -> tuple[Stream, contextlib.AbstractAsyncContextManager[Stream]]:
    """Open a stream, retrying while the process answers 503 (the cache is back only
    once the hub has subscribed again)."""
    deadline = time.monotonic() + 30
    while True:
        manager = open_stream(url, reader, last_event_id=last_id)
        stream = await manager.__aenter__()
        if stream.status == 200:
            return stream, manager
        await manager.__aexit__(None, None, None)
        assert stream.status == 503, (stream.status, stream.body)
        assert time.monotonic() < deadline, "the stream never opened again"
        await asyncio.sleep(0.3)


async def test_cache_redis_restart_ends_streams_and_clients_resume(
    services: Services, cache_server: RedisServer
) -> None:
    settings = services.settings.replace(cache_redis_url=cache_server.url(0),
                                         redis_timeout=0.5)
    p = {n: uid(n) for n in ("r", "a")}
    await seed(settings, [signup(u) for u in p.values()], [follow(p["r"], p["a"])])
    async with open_services(settings) as svc:
        app = create_app(settings, svc)
        async with app.router.lifespan_context(app), serve(app) as url:
            first = uid("k")
            async with open_stream(url, p["r"]) as stream:
                await seed(settings, [koo(first, p["a"])])
                seen = await stream.next_of("koo", 20)
                cache_server.kill()
                async with asyncio.timeout(10):
                    await stream.ended.wait()  # ended, not hanging
                cache_server.start()
                await cache_server.ready()
            stream, manager = await _reopen(url, p["r"], seen.id)
            try:
                if cache_server.aof:
                    later = uid("k")
                    await seed(settings, [koo(later, p["a"])])
                    got = await stream.next(20)
                    assert (got.event, got.data["koo_id"]) == ("koo", later)
                else:
                    assert (await stream.next(20)).event == "reset"
                    later = uid("k")
                    await seed(settings, [koo(later, p["a"])])
                    assert (await stream.next_of("koo", 20)).data["koo_id"] == later
            finally:
                await manager.__aexit__(None, None, None)
