"""Many Server-Sent Events streams from one process, as cheap as a socket each: the
bench's clients only look for the koo id they expect and count comment lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence

from config.settings import Settings
from feed._embedded import free_port

OPEN_CONCURRENCY = 20
TAIL = 256  # bytes kept from the last read, so an id split across two reads is found


class RawStream:
    """One open stream over a plain socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.wanted = b""
        self.arrived: float | None = None
        self.comments = 0
        self.ended = False
        self.on_arrival: Callable[[], None] = lambda: None
        self.task = asyncio.create_task(self._read())

    def expect(self, koo_id: str) -> None:
        self.wanted = f'"koo_id":"{koo_id}"'.encode()
        self.arrived = None

    async def _read(self) -> None:
        tail = b""
        try:
            while chunk := await self.reader.read(65_536):
                now = time.perf_counter()
                data = tail + chunk
                self.comments += chunk.count(b"\n: keep-alive")
                if self.wanted and self.arrived is None and self.wanted in data:
                    self.arrived = now
                    self.on_arrival()
                tail = data[-TAIL:]
        except OSError:
            pass
        finally:
            self.ended = True

    def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()

async def open_stream(port: int, user: str, token: str, *, tries: int = 10) -> RawStream:
    """Open one stream, retrying a 503 after its Retry-After as a client would."""
    for _ in range(tries):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /v1/users/{user}/feed/stream HTTP/1.1\r\nHost: bench\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            return RawStream(reader, writer)
        writer.close()
        if not head.startswith(b"HTTP/1.1 503"):
            break
        await asyncio.sleep(1.0)
    raise RuntimeError(f"stream of {user} refused: {head[:200]!r}")


async def open_streams(port: int, users: Sequence[str], token: str) -> list[RawStream]:
    """Open one stream per user, ``OPEN_CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(user: str) -> RawStream:
        async with gate:
            return await open_stream(port, user, token)

    return list(await asyncio.gather(*(one(u) for u in users)))


# --- the processes of the stream bench ------------------------------------------------


def _spawn(port: int, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "feed.cli", "api", "--port", str(port), "--workers", "1"],
            env=env, stdout=sink, stderr=sink)


@contextlib.asynccontextmanager
async def api_process(settings: Settings, token: str, max_streams: int
                      ) -> AsyncIterator[tuple[int, int]]:
    """A `feed api` process (uvicorn serves in the process itself with one worker) over
    ``settings``; yields (pid, port) once it answers."""
    port = free_port()
    env = {**os.environ, "FEED_REDIS_URL": settings.redis_url,
           "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
           "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
           "FEED_TABLE_PREFIX": settings.table_prefix, "FEED_API_TOKENS": token,
           "FEED_STREAM_MAX_PER_PROCESS": str(max_streams),
           "FEED_LOG_LEVEL": "WARNING"}
    log = os.path.join(tempfile.gettempdir(), f"bench-stream-api-{port}.log")
    process = _spawn(port, env, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"feed api did not start; see {log}")
            await asyncio.sleep(0.2)
        yield process.pid, port
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.asynccontextmanager
async def stream_clients(ports: Sequence[int], token: str, users: Sequence[str]
                         ) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process of its own holding one stream per user (bench/_sse.py), so the clients
    do not share a core's time with this process's worker; the users are dealt in turn
    to the API processes on ``ports``, as a load balancer would."""
    with tempfile.NamedTemporaryFile("w", suffix=".users", delete=False) as names:
        names.write("\n".join(users))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench._sse", ",".join(map(str, ports)), token, names.name,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 300)
        if line.strip() != b"ready":
            raise RuntimeError(f"the stream clients did not start: {line!r}")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.unlink(names.name)


async def arrival(clients: asyncio.subprocess.Process, koo_id: str) -> float | None:
    """When (time.monotonic()) every client stream had the koo; None on a timeout."""
    assert clients.stdin is not None
    assert clients.stdout is not None
    clients.stdin.write(f"expect {koo_id}\n".encode())
    await clients.stdin.drain()
    word, got, *at = (await clients.stdout.readline()).decode().split()
    assert got == koo_id, (got, koo_id)
    return float(at[0]) if word == "arrived" else None


# --- a client process: `python -m bench._sse PORT[,PORT...] TOKEN USERS_FILE` ---------
# Opens a stream per user, prints "ready"; then for each line "expect KOO_ID" on stdin
# prints "arrived KOO_ID T" once every stream has the koo (T: time.monotonic(), which
# is the same clock in every process), or "timeout KOO_ID".


class _Countdown:
    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.done.set()


async def _client_main(ports: list[int], token: str, users: list[str]) -> None:
    streams = [stream for i, port in enumerate(ports)
               for stream in await open_streams(port, users[i::len(ports)], token)]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := (await stdin.readline()).decode().split():
        if line[0] != "expect":
            continue
        koo_id = line[1]
        countdown = _Countdown(len(streams))
        for stream in streams:
            stream.on_arrival = countdown.tick
            stream.expect(koo_id)
        try:
            async with asyncio.timeout(60):
                await countdown.done.wait()
        except TimeoutError:
            print(f"timeout {koo_id}", flush=True)
            continue
        last = max(s.arrived for s in streams if s.arrived is not None)
        # Arrival times are perf_counter(); report them on the monotonic clock.
        print(f"arrived {koo_id} {last - time.perf_counter() + time.monotonic():.6f}",
              flush=True)
    for stream in streams:
        stream.close()


if __name__ == "__main__":
    import uvloop  # the clients stand for thousands of devices: keep their own cost low

    with open(sys.argv[3]) as names:
        uvloop.run(_client_main([int(p) for p in sys.argv[1].split(",")], sys.argv[2],
                                names.read().split()))
