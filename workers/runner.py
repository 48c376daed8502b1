"""Running the workers: until a signal (or, in burst mode, until the queues are empty),
through outages of the queue's Redis, and stopping them the way arq does.

The workers themselves (one arq settings class per queue, built from the job
registry) are in :mod:`workers.settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from arq import Worker
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from config.settings import Settings
from feed import metrics
from feed.jobs import BACKFILL, REALTIME
from feed.logs import redacted_url
from feed.queue import ArqJobQueue, open_queue_redis, queue_address, release_cut_off_jobs
from feed.services import Services
from workers.settings import (
    QUEUE_RECONNECT_MAX_SECONDS,
    QUEUE_RECONNECT_SECONDS,
    QUEUE_WARNING_EVERY_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
    STOP_TIMEOUT_SECONDS,
    create_queue_worker,
    stop_worker,
)

__all__ = ["QueueOutage", "backoff_delays", "run_workers"]

log = logging.getLogger(__name__)


async def run_workers(
    settings: Settings,
    queues: Sequence[str] = (REALTIME, BACKFILL),
    *,
    burst: bool = False,
    services: Services | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run workers for ``queues`` until SIGTERM/SIGINT (or, with ``burst``, until empty).

    On a signal, workers stop taking jobs, give running jobs up to 20 s to
    finish, then cancel the rest, which arq puts back on the queue. While the queue's
    Redis does not answer they wait for it, backing off, and warn naming FEED_REDIS_URL;
    a burst run raises the error instead. After a failover, jobs cut off by it run again
    as soon as workers start over the new primary (see
    :func:`feed.queue.release_cut_off_jobs`).
    """
    stop = stop or asyncio.Event()
    received: list[signal.Signals] = []
    async with contextlib.AsyncExitStack() as stack:
        if services is not None:
            depth = services.jobs
        else:
            depth = ArqJobQueue(open_queue_redis(settings))
            stack.push_async_callback(depth.pool.aclose)
        if handle_signals:
            _take_signals(stack, stop, received)
        reporter = asyncio.create_task(_report_depth(depth, queues, stop))
        stack.push_async_callback(_cancel, reporter)
        outage: QueueOutage | None = None
        while True:
            started = time.monotonic()
            try:
                if not burst:  # a batch run leaves that to the long-running workers
                    await _release(depth)
                workers = [create_queue_worker(settings, q, services=services, burst=burst)
                           for q in queues]
                await _run_until_stopped(workers, stop, received, burst=burst)
            except (RedisError, OSError) as exc:
                # A burst run is a batch: its caller decides whether to run it again.
                if burst:
                    raise
                # The queue's Redis went away (a restart, a failover) or never answered:
                # arq's loop has no reconnect, so start fresh workers as soon as it
                # answers again. Jobs cut off are still on the queue and run again when
                # arq's in-progress mark expires, or at once if the server changed (a
                # failover, a restart: _release). Workers that failed soon after starting
                # go on with the same outage: its backoff keeps growing.
                if outage is None or time.monotonic() - started >= outage.cap:
                    outage = QueueOutage.of(settings)
                if not await _wait_for_queue(depth, stop, outage, exc):
                    return
                continue
            # A burst worker that found its queue empty may see it filled again by the
            # other queue's jobs: run another round until both are empty.
            if not burst or stop.is_set() or not await _queues_busy(depth, queues):
                return


def backoff_delays(first: float = QUEUE_RECONNECT_SECONDS,
                   cap: float = QUEUE_RECONNECT_MAX_SECONDS,
                   rand: Callable[[], float] = random.random) -> Iterator[float]:
    """Exponential backoff with jitter: the n-th delay is between half and all of
    ``first * 2**n``, capped at ``cap``; never shorter than half of ``first``, so a
    dead Redis is never hammered, and spread out so workers do not retry in step."""
    ceiling = first
    while True:
        yield ceiling / 2 + rand() * ceiling / 2
        ceiling = min(cap, ceiling * 2)


class QueueOutage:
    """One stretch of time the queue's Redis does not answer: the backoff of its
    retries and its warnings, which name the variable to check (FEED_REDIS_URL, or
    FEED_REDIS_SENTINELS) and the address, without its password."""

    def __init__(self, url: str, *, first: float = QUEUE_RECONNECT_SECONDS,
                 cap: float = QUEUE_RECONNECT_MAX_SECONDS,
                 warn_every: float = QUEUE_WARNING_EVERY_SECONDS,
                 variable: str = "FEED_REDIS_URL", address: str | None = None) -> None:
        self.variable = variable
        self.address = redacted_url(url) if address is None else address
        self.cap = cap
        self.delays = backoff_delays(first, cap)
        self.warn_every = warn_every
        self.since = time.monotonic()
        self.failures = 0
        self.warned_at: float | None = None

    @classmethod
    def of(cls, settings: Settings) -> QueueOutage:
        """An outage of the queue's Redis ``settings`` point at (directly or through
        Sentinel)."""
        variable, address = queue_address(settings)
        return cls(settings.redis_url, variable=variable, address=address)

    def failed(self, exc: BaseException) -> float:
        """Count a failure, warn if it is the first or the last warning is old enough;
        the seconds to wait before the next try."""
        self.failures += 1
        delay = next(self.delays)
        now = time.monotonic()
        if self.warned_at is None or now - self.warned_at >= self.warn_every:
            self.warned_at = now
            log.warning(
                "queue Redis at %s does not answer (check %s); workers start "
                "again once it does", self.address, self.variable,
                extra={"variable": self.variable, "address": self.address,
                       "error": str(exc) or type(exc).__name__, "failures": self.failures,
                       "down_seconds": round(now - self.since, 1),
                       "retry_in_seconds": round(delay, 2)})
        return delay

    def recovered(self) -> None:
        log.info("queue Redis at %s answers again; starting the workers", self.address,
                 extra={"address": self.address, "failures": self.failures,
                        "down_seconds": round(time.monotonic() - self.since, 1)})


async def _wait_for_queue(depth: ArqJobQueue, stop: asyncio.Event, outage: QueueOutage,
                          exc: BaseException) -> bool:
    """Wait, backing off, until the queue's Redis answers a PING (True) or a stop comes
    (False)."""
    while True:
        delay = outage.failed(exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return False
        # A Redis that swallows packets takes its connect timeout to fail: a stop meanwhile
        # is not kept waiting for it.
        ping = asyncio.create_task(_ping(depth.pool))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([ping, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if stop.is_set():
            ping.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await ping
            return False
        try:
            ping.result()
        except (RedisError, OSError) as error:
            exc = error
            continue
        outage.recovered()
        return True


async def _release(depth: ArqJobQueue) -> None:
    """Before workers start: let jobs cut off by a failover run again now."""
    released = await release_cut_off_jobs(depth.pool)
    if released:
        log.info("the queue's server changed: jobs cut off by it will run again",
                 extra={"jobs": released})


async def _ping(pool: ArqRedis) -> None:
    await pool.ping()


def _take_signals(stack: contextlib.AsyncExitStack, stop: asyncio.Event,
                  received: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
            stack.callback(loop.remove_signal_handler, sig)


async def _run_until_stopped(workers: list[Worker], stop: asyncio.Event,
                             received: list[signal.Signals], *, burst: bool) -> None:
    runs = [asyncio.create_task(worker.async_run()) for worker in workers]
    stopper = asyncio.create_task(stop.wait())
    try:
        if burst:
            everything: asyncio.Future[Any] = asyncio.gather(*runs)
            # A failed run's error is raised below from the run itself: the gathering's
            # copy is marked seen, or asyncio logs it again as never retrieved.
            everything.add_done_callback(_seen)
            await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.wait([*runs, stopper], return_when=asyncio.FIRST_COMPLETED)
        for run in runs:
            if run.done() and not run.cancelled() and (exc := run.exception()):
                raise exc
        if stop.is_set():
            running = sum(len(w.tasks) for w in workers)
            log.info("stopping: waiting for running jobs", extra={"jobs": running})
            # arq's own graceful stop: no new jobs, job_completion_wait for the running
            # ones, then cancel the rest (back on the queue) and the main loop. A stop
            # asked for without a signal is logged as the SIGTERM it stands for.
            signum = received[-1] if received else signal.SIGTERM
            for worker, run in zip(workers, runs, strict=True):
                if not run.done():
                    worker.handle_sig_wait_for_completion(signum)
            await asyncio.wait(runs, timeout=SHUTDOWN_GRACE_SECONDS + STOP_TIMEOUT_SECONDS)
    finally:
        stopper.cancel()
        for run in runs:
            run.cancel()
        # Never hang on shutdown: a main loop that ignores its cancellation is left behind.
        _, stuck = await asyncio.wait(runs, timeout=STOP_TIMEOUT_SECONDS)
        if stuck:
            log.warning("worker loops did not stop in time", extra={"loops": len(stuck)})
        for worker in workers:
            await _close(worker)


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _close(worker: Worker) -> None:
    """arq's close() (cancel what still runs, on_shutdown, close the connection), bounded
    in time; when the queue's Redis is gone, close() fails before its on_shutdown, so the
    worker's own services and its connection are released here."""
    pool: ArqRedis | None = worker.pool
    try:
        await asyncio.wait_for(worker.close(), STOP_TIMEOUT_SECONDS)
    except asyncio.CancelledError:
        # close() gathers the job tasks it cancels and re-raises their cancellation;
        # only a cancellation of this task itself goes on.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        log.debug("worker close failed", exc_info=True)
    finally:
        await stop_worker(worker.ctx)
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.aclose(close_connection_pool=True)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _queues_busy(depth: ArqJobQueue, queues: Sequence[str]) -> bool:
    for queue in queues:
        if await depth.depth(queue):
            return True
    return False


async def _report_depth(depth: ArqJobQueue, queues: Sequence[str], stop: asyncio.Event
                        ) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            for queue in queues:
                metrics.QUEUE_DEPTH.labels(queue).set(await depth.depth(queue))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5)
