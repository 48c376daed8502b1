"""Load generators spread over several processes, so one event loop is not the bottleneck.

``Spread(n, open_handler, setup)`` starts ``n`` processes (spawned, not forked: the
parent already runs an event loop and threads). Each runs ``open_handler(setup)``, an
async context manager yielding a handler, and then serves jobs: ``await
spread.run(jobs)`` hands one job to each process and returns their results in order.
A handler gets its job and a ``start`` coroutine function; it prepares what it needs,
awaits ``start()`` (a barrier: every process starts measuring at once), measures, and
returns a picklable result. ``open_handler`` must be a module-level function and
``setup`` picklable (plain values).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import traceback
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Handler", "OpenHandler", "Spread"]

Start = Callable[[], Awaitable[None]]
Handler = Callable[[Any, Start], Awaitable[Any]]
OpenHandler = Callable[[Any], contextlib.AbstractAsyncContextManager[Handler]]

READY_TIMEOUT = 120.0  # seconds a process may take to import and open its clients
BARRIER_TIMEOUT = 300.0  # seconds processes may wait for each other at a job's start


class Spread:
    """``processes`` load-generating processes serving one job each at a time."""

    def __init__(self, processes: int, open_handler: OpenHandler, setup: Any) -> None:
        self.processes = processes
        self._open_handler = open_handler
        self._setup = setup
        self._children: list[tuple[Any, Connection]] = []

    async def __aenter__(self) -> Spread:
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(self.processes)
        try:
            for _ in range(self.processes):
                parent, child = context.Pipe()
                process = context.Process(target=_serve, daemon=True,
                                          args=(child, barrier, self._open_handler,
                                                self._setup))
                process.start()
                child.close()
                self._children.append((process, parent))
            for reply in await asyncio.gather(*(_receive(conn, READY_TIMEOUT)
                                                for _, conn in self._children)):
                _check(reply)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, conn in self._children:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process, conn in self._children:
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.terminate()
                await asyncio.to_thread(process.join, 5)
            conn.close()
        self._children.clear()

    async def run(self, jobs: Sequence[Any]) -> list[Any]:
        """One job per process (``len(jobs) == processes``); their results."""
        if len(jobs) != len(self._children):
            raise ValueError(f"{len(jobs)} jobs for {len(self._children)} processes")
        for (_, conn), job in zip(self._children, jobs, strict=True):
            conn.send(job)
        replies = await asyncio.gather(*(_receive(conn, None) for _, conn in self._children))
        return [_check(reply) for reply in replies]


async def _receive(conn: Connection, wait_s: float | None) -> Any:
    """The next reply (waiting at most ``wait_s`` seconds; None: as long as it takes)."""
    if not await asyncio.to_thread(conn.poll, wait_s):
        raise RuntimeError(f"a load-generating process did not answer in {wait_s} s")
    try:
        return await asyncio.to_thread(conn.recv)
    except EOFError:
        raise RuntimeError("a load-generating process exited") from None


def _check(reply: Any) -> Any:
    kind, value = reply
    if kind == "error":
        raise RuntimeError(f"a load-generating process failed:\n{value}")
    return value


def _serve(conn: Connection, barrier: threading.Barrier, open_handler: OpenHandler,
           setup: Any) -> None:
    """A child process: open the handler, then answer jobs until a None arrives."""

    async def start() -> None:
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)

    async def main() -> None:
        try:
            async with open_handler(setup) as handler:
                conn.send(("ready", None))
                while True:
                    job = await asyncio.to_thread(conn.recv)
                    if job is None:
                        return
                    try:
                        conn.send(("ok", await handler(job, start)))
                    except Exception:
                        barrier.abort()  # the others stop waiting for this one
                        conn.send(("error", traceback.format_exc()))
        except Exception:
            conn.send(("error", traceback.format_exc()))

    with contextlib.suppress(EOFError, BrokenPipeError, KeyboardInterrupt):
        asyncio.run(main())
