"""A real `feed api` process and raw-socket clients for the hostile-client tests.

httpx would refuse to send most of what these tests send (a 64 MiB header, bytes that
are not HTTP, a body that stops halfway), so the attacks are written with asyncio
streams, and every wait has a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from config.settings import Settings
from feed._embedded import free_port
from tests.fault._procs import TOKEN, tail, worker_env

__all__ = [
    "AUTH", "Api", "ReadProbe", "Reply", "exchange", "open_stream", "read_reply", "running_api",
]

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    """One `feed api` process on ``port``, logging to ``log``."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                assert self.process.poll() is None, tail(self.log)
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                assert time.monotonic() < deadline, tail(self.log)
                await asyncio.sleep(0.1)

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            text = (await client.get("/metrics")).text
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")) and all(w in line for w in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _spawn(settings: Settings, port: int, log: Path, env: dict[str, str]
           ) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "feed.cli", "api", "--port", str(port)],
            env=worker_env(settings, **env), stdout=sink, stderr=sink,
        )


@contextlib.asynccontextmanager
async def running_api(settings: Settings, log: Path, **env: str) -> AsyncIterator[Api]:
    """`feed api` on a free port over ``settings``' services, with extra FEED_* ``env``;
    ready for the block, stopped (SIGTERM, then SIGKILL) after it."""
    port = free_port()
    process = _spawn(settings, port, log, env)
    api = Api(process, port, log)
    try:
        await api.ready()
        yield api
    finally:
        _stop(process)


@dataclass
class Reply:
    """What came back on a raw connection before it closed (or the wait ran out)."""

    raw: bytes
    closed: bool
    seconds: float

    @property
    def status(self) -> int | None:
        line = self.raw.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else None

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]

    def json_error(self) -> dict[str, Any]:
        """The contract's error body, checked: ``{"error": {"code", "message"}}``."""
        assert self.headers.get("content-type", "").startswith("application/json"), self.raw
        body = orjson.loads(self.body)
        assert set(body) == {"error"}, body
        assert set(body["error"]) >= {"code", "message"}, body
        assert body["error"]["message"].strip(), body
        return dict(body["error"])


async def open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)


async def read_reply(reader: asyncio.StreamReader, within: float) -> Reply:
    """Everything the server sends until it closes the connection, for at most
    ``within`` seconds."""
    started = time.monotonic()
    data = b""
    closed = False
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(within):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
    return Reply(data, closed, time.monotonic() - started)


async def exchange(port: int, *parts: bytes, within: float = 10) -> Reply:
    """Send ``parts`` (in the background: a refused sender may block forever) while
    reading the reply; the connection is closed afterwards."""
    reader, writer = await open_stream(port)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for part in parts:
                writer.write(part)
                await writer.drain()

    sender = asyncio.create_task(send())
    try:
        return await read_reply(reader, within)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()


@dataclass
class ReadProbe:
    """Reads on the API, one after another, while something else happens: records each
    read's time and status."""

    api: Api
    path: str
    results: list[tuple[float, int]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.api.url, headers=AUTH, timeout=20) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                response = await client.get(self.path)
                self.results.append((time.perf_counter() - started, response.status_code))
                await asyncio.sleep(0.02)

    async def __aenter__(self) -> ReadProbe:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.2)  # a few reads before, as a baseline
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)  # and a few after
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 30)

    @property
    def slowest(self) -> float:
        return max(seconds for seconds, _ in self.results)

    @property
    def statuses(self) -> set[int]:
        return {status for _, status in self.results}
