"""A small TCP fault proxy for the fault tests: put it between the service and Redis or
DynamoDB, then switch its mode while the service runs.

Modes (``proxy.set_mode(...)``, effective at once, for new and open connections):

- ``Mode.passing()`` forwards bytes both ways unchanged;
- ``Mode.latency(ms)`` delays every chunk by ``ms`` milliseconds in each direction
  (order kept, so a round trip costs about ``2 * ms``);
- ``Mode.reset()`` resets (TCP RST) every open connection and every new one at once;
  ``Mode.reset(lose_reply=True)`` forwards requests but resets a connection as soon as
  the upstream answers: the request was executed, the client never sees the reply;
- ``Mode.blackhole()`` accepts connections and swallows every byte in both directions,
  never closing anything: only the client's own timeouts get it out.

The proxy runs its own event loop in a daemon thread, so it keeps working whatever the
test's loop is doing, and it can serve subprocesses::

    with FaultProxy("127.0.0.1", 6379) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/2"
        proxy.set_mode(Mode.latency(100))
        ...
        assert proxy.stats.resets > 0
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["FaultProxy", "Mode", "ProxyStats"]

_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Mode:
    """What the proxy does with traffic; build one with the class methods."""

    name: str
    delay_ms: float = 0.0
    lose_reply: bool = False

    @classmethod
    def passing(cls) -> Mode:
        return cls("pass")

    @classmethod
    def latency(cls, ms: float) -> Mode:
        return cls("latency", delay_ms=ms)

    @classmethod
    def reset(cls, *, lose_reply: bool = False) -> Mode:
        return cls("reset", lose_reply=lose_reply)

    @classmethod
    def blackhole(cls) -> Mode:
        return cls("blackhole")


@dataclass
class ProxyStats:
    """What the proxy saw: so a test can check that its fault really happened."""

    connections: int = 0
    resets: int = 0
    bytes_up: int = 0  # client -> upstream, forwarded
    bytes_down: int = 0  # upstream -> client, forwarded
    swallowed: int = 0  # bytes dropped by a blackhole or a reset
    delayed_chunks: int = 0
    modes: list[str] = field(default_factory=list)


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def reset(self) -> None:
        """Close both sides with an RST (SO_LINGER 0) rather than a FIN."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """A TCP proxy from 127.0.0.1:``port`` (picked free) to ``host:target_port``."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.stats = ProxyStats()
        self._mode = Mode.passing()
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- control, from any thread ------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; a reset mode also resets every open connection, before returning."""
        self._call(self._switch, mode)

    @contextlib.contextmanager
    def fault(self, mode: Mode) -> Iterator[None]:
        """``mode`` inside the block, back to passing after it."""
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode(Mode.passing())

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _call(self, fn: object, *args: object) -> None:
        """Run ``fn(*args)`` on the proxy's loop and wait for it."""
        assert self._loop is not None, "the proxy is not started"
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)  # type: ignore[operator]
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the fault proxy's loop does not answer")

    # --- the proxy's own loop ----------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _switch(self, mode: Mode) -> None:
        self._mode = mode
        self.stats.modes.append(mode.name)
        if mode.name == "reset" and not mode.lose_reply:
            for link in list(self._links):
                self._reset(link)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._reset(link)

    def _reset(self, link: _Link) -> None:
        if not link.closed:
            self.stats.resets += 1
        link.reset()
        self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self.stats.connections += 1
        self._links.add(link)
        mode = self._mode
        if mode.name == "reset" and not mode.lose_reply:
            self._reset(link)
            return
        if mode.name != "blackhole":
            try:
                up_reader, link.upstream = await asyncio.open_connection(
                    self.host, self.target_port
                )
            except OSError:
                self._reset(link)
                return
        else:
            up_reader = None
        pumps = [asyncio.ensure_future(self._pump(link, reader, upstream=True))]
        if up_reader is not None:
            pumps.append(asyncio.ensure_future(self._pump(link, up_reader, upstream=False)))
        link.tasks = pumps
        try:
            await asyncio.gather(*pumps)
        except (asyncio.CancelledError, OSError):
            self._reset(link)
        finally:
            if not link.closed:
                link.closed = True
                for w in (link.client, link.upstream):
                    if w is not None:
                        w.close()
            self._links.discard(link)

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, *, upstream: bool) -> None:
        """Copy one direction, applying the mode current when each chunk arrives."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        writer_task = asyncio.ensure_future(self._deliver(link, queue, upstream=upstream))
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                mode = self._mode
                if mode.name == "blackhole" or link.upstream is None:
                    self.stats.swallowed += len(data)
                    continue
                if mode.name == "reset":
                    if mode.lose_reply and upstream:
                        queue.put_nowait((time.monotonic(), data))
                        continue
                    self.stats.swallowed += len(data)
                    self._reset(link)
                    return
                due = time.monotonic()
                if mode.name == "latency":
                    due += mode.delay_ms / 1000
                    self.stats.delayed_chunks += 1
                queue.put_nowait((due, data))
            queue.put_nowait((0.0, b""))  # end of stream: pass the half-close on
            await writer_task
        finally:
            writer_task.cancel()

    async def _deliver(self, link: _Link, queue: asyncio.Queue[tuple[float, bytes]], *,
                       upstream: bool) -> None:
        target = link.upstream if upstream else link.client
        assert target is not None
        while True:
            due, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if target.can_write_eof():
                        target.write_eof()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._mode.name == "blackhole":
                self.stats.swallowed += len(data)
                continue
            try:
                target.write(data)
                await target.drain()
            except (OSError, RuntimeError):
                self._reset(link)
                return
            if upstream:
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)
