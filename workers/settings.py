"""The workers of the two queues, in arq's own shape, and the loop that runs them.

Each queue has a settings class in arq's WorkerSettings convention
(:class:`RealtimeWorker`, :class:`BackfillWorker`), turned into a Worker by
:func:`arq.worker.create_worker`. ``realtime`` carries events, fan-outs of new
koos and follow merges; ``backfill`` carries purges, rebuilds, celebrity
demotions and recommendations, so a large backfill never delays a fresh koo.
``feed worker --queue all`` runs both in one process, and either can be scaled
out on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, Final

from arq import Worker, cron
from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, create_worker, func
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from config.settings import Settings
from feed import keys, metrics
from feed.jobs import (
    APPLY_EVENT,
    BACKFILL,
    BACKFILL_CHUNK,
    COMPUTE_RECOMMENDATIONS,
    DELIVER_KOO_CHUNK,
    DEMOTE_CELEBRITY,
    FAN_OUT_KOO,
    MERGE_AUTHOR,
    PURGE_AUTHOR,
    PURGE_DELETED_KOO,
    QUEUE_TIMEOUTS,
    REALTIME,
    REBUILD_TIMELINE,
    REFRESH_POPULAR,
    SWEEP_FANOUTS,
    TRIM_TIMELINE,
    Job,
)
from feed.logs import redacted_url
from feed.queue import ArqJobQueue, deserialize_job, open_queue_redis, serialize_job
from feed.services import Services, open_services
from workers.backfill import (
    backfill_chunk,
    compute_recommendations,
    rebuild_timeline,
    refresh_popular_authors,
    trim_timeline,
)
from workers.deletion import purge_deleted_koo
from workers.events import apply_event
from workers.fanout import deliver_koo_chunk, fan_out_koo, sweep_fanouts
from workers.relations import (
    demote_celebrity,
    merge_author_into_timeline,
    purge_author_from_timeline,
)

__all__ = [
    "CRON_SECONDS",
    "JOB_FUNCTIONS",
    "SCHEDULED_MINUTES",
    "WORKER_SETTINGS",
    "BackfillWorker",
    "RealtimeWorker",
    "create_queue_worker",
    "run_workers",
]

log = logging.getLogger(__name__)

JobCoroutine = Callable[..., Coroutine[Any, Any, Any]]

# Every registered job and the coroutine that runs it: the one place the two meet.
JOB_FUNCTIONS: Final[Mapping[Job, JobCoroutine]] = {
    APPLY_EVENT: apply_event,
    FAN_OUT_KOO: fan_out_koo,
    DELIVER_KOO_CHUNK: deliver_koo_chunk,
    MERGE_AUTHOR: merge_author_into_timeline,
    SWEEP_FANOUTS: sweep_fanouts,
    PURGE_DELETED_KOO: purge_deleted_koo,
    PURGE_AUTHOR: purge_author_from_timeline,
    DEMOTE_CELEBRITY: demote_celebrity,
    REBUILD_TIMELINE: rebuild_timeline,
    TRIM_TIMELINE: trim_timeline,
    COMPUTE_RECOMMENDATIONS: compute_recommendations,
    REFRESH_POPULAR: refresh_popular_authors,
    BACKFILL_CHUNK: backfill_chunk,
}
# The jobs arq runs on a schedule rather than from the queue: the seconds of each minute.
CRON_SECONDS: Final[Mapping[Job, frozenset[int]]] = {
    SWEEP_FANOUTS: frozenset({0, 15, 30, 45}),
}
# Jobs enqueued like any other that also run on a schedule: the minutes of each hour
# (at second 0). The scheduled run has its own name, "<job>_on_schedule".
SCHEDULED_MINUTES: Final[Mapping[Job, frozenset[int]]] = {
    REFRESH_POPULAR: frozenset({7, 37}),
}

SOFT_TIMEOUT_MARGIN = 5  # seconds before arq's job timeout that a job gives up and retries
SHUTDOWN_GRACE_SECONDS = 20
STOP_TIMEOUT_SECONDS = 5.0
# While the queue's Redis does not answer, the workers try it again after 1 s, then twice
# as long each time up to 30 s (with jitter, so many workers do not come back in step),
# and warn once at first and then once a minute at most.
QUEUE_RECONNECT_SECONDS = 1.0
QUEUE_RECONNECT_MAX_SECONDS = 30.0
QUEUE_WARNING_EVERY_SECONDS = 60.0
KEEP_RESULT_SECONDS = 600
# A worker reports it is alive this often, in a key that lives a second longer: the key
# exists if and only if a worker of that queue reported within the last 30 s.
HEALTH_REPORT_SECONDS = 29
# On the realtime queue a result doubles as a short-lived dedupe of its job id (the
# ledger is the real one), and there are many of them: kept for two minutes only.
REALTIME_KEEP_RESULT_SECONDS = 120


def queue_functions(queue: str) -> list[Function]:
    """arq's functions for one queue's registered jobs (the cron jobs apart)."""
    keep = REALTIME_KEEP_RESULT_SECONDS if queue == REALTIME else None
    return [func(coroutine, name=job.name, timeout=job.timeout,
                 keep_result=keep if job.keep_result is None else job.keep_result)
            for job, coroutine in JOB_FUNCTIONS.items()
            if job.queue == queue and job not in CRON_SECONDS]


def queue_cron_jobs(queue: str) -> list[CronJob]:
    """arq's cron jobs for one queue; each runs at a worker's start too, once per slot."""
    sweeps = [cron(JOB_FUNCTIONS[job], name=job.name, second=set(seconds),
                   run_at_startup=True, timeout=job.timeout, unique=True)
              for job, seconds in CRON_SECONDS.items() if job.queue == queue]
    return sweeps + [
        cron(JOB_FUNCTIONS[job], name=f"{job.name}_on_schedule", minute=set(minutes), second=0,
             timeout=job.timeout, unique=True)
        for job, minutes in SCHEDULED_MINUTES.items() if job.queue == queue
    ]


async def start_worker(ctx: dict[Any, Any]) -> None:
    """arq's on_startup: open the worker's own services unless it was given shared ones,
    then serve the process's metrics (a worker is up once its services are)."""
    if ctx.get("services") is None:
        owned = ctx["owned_services"] = contextlib.AsyncExitStack()
        ctx["services"] = await owned.enter_async_context(open_services(ctx["settings"]))
    if ctx.get("serve_metrics"):
        _serve_metrics(ctx["settings"])


async def stop_worker(ctx: dict[Any, Any]) -> None:
    """arq's on_shutdown: close the services this worker opened; shared ones stay open."""
    owned: contextlib.AsyncExitStack | None = ctx.pop("owned_services", None)
    if owned is not None:
        ctx["services"] = None
        await owned.aclose()


_DEFAULTS: Final = Settings()

# arq reads a settings class's own attributes only (not inherited ones), so each queue's
# class spells out all of them (typed as arq's settings protocol types them). ``max_jobs``
# and ``max_tries`` are the defaults of their FEED_* settings; create_queue_worker passes
# the configured values.
class RealtimeWorker:
    """Events, fan-outs and follow merges: short jobs, polled often, and the sweeper."""

    functions: Sequence[WorkerCoroutine | Function] = queue_functions(REALTIME)
    cron_jobs: Sequence[CronJob] | None = queue_cron_jobs(REALTIME)
    queue_name = keys.QUEUES[REALTIME]
    health_check_key = keys.worker_health(REALTIME)
    job_timeout = QUEUE_TIMEOUTS[REALTIME]
    max_jobs = _DEFAULTS.worker_max_jobs
    max_tries = _DEFAULTS.job_max_tries
    poll_delay = 0.01
    keep_result = KEEP_RESULT_SECONDS
    retry_jobs = True
    health_check_interval = HEALTH_REPORT_SECONDS
    # Several workers share one process (--queue all) and arq's handlers would replace one
    # another: run_workers takes the signals and stops each worker the way arq's handler
    # does, waiting job_completion_wait for running jobs.
    handle_signals = False
    job_completion_wait = SHUTDOWN_GRACE_SECONDS
    job_serializer = serialize_job
    job_deserializer = deserialize_job
    on_startup: StartupShutdown | None = start_worker
    on_shutdown: StartupShutdown | None = stop_worker
    log_results = False


class BackfillWorker:
    """Purges, rebuilds, demotions and recommendations: long jobs, polled less often."""

    functions: Sequence[WorkerCoroutine | Function] = queue_functions(BACKFILL)
    cron_jobs: Sequence[CronJob] | None = queue_cron_jobs(BACKFILL)
    queue_name = keys.QUEUES[BACKFILL]
    health_check_key = keys.worker_health(BACKFILL)
    job_timeout = QUEUE_TIMEOUTS[BACKFILL]
    max_jobs = _DEFAULTS.worker_max_jobs
    max_tries = _DEFAULTS.job_max_tries
    poll_delay = 0.25
    keep_result = KEEP_RESULT_SECONDS
    retry_jobs = True
    health_check_interval = HEALTH_REPORT_SECONDS
    handle_signals = False
    job_completion_wait = SHUTDOWN_GRACE_SECONDS
    job_serializer = serialize_job
    job_deserializer = deserialize_job
    on_startup: StartupShutdown | None = start_worker
    on_shutdown: StartupShutdown | None = stop_worker
    log_results = False


WORKER_SETTINGS: Final[Mapping[str, type[RealtimeWorker] | type[BackfillWorker]]] = {
    REALTIME: RealtimeWorker,
    BACKFILL: BackfillWorker,
}


def create_queue_worker(
    settings: Settings, queue: str, *, services: Services | None = None, burst: bool = False,
) -> Worker:
    """An arq Worker for one queue, from its settings class.

    Given ``services``, the worker shares them (and neither opens nor closes them);
    otherwise it opens its own on startup and closes them on shutdown.
    """
    settings_cls = WORKER_SETTINGS[queue]
    redis_pool = services.queue_factory() if services else open_queue_redis(settings)
    return create_worker(
        settings_cls,
        redis_pool=redis_pool,
        burst=burst,
        # A CronJob keeps its next run on itself: each worker schedules its own copies,
        # and a burst run (tests, backfills) none.
        cron_jobs=[] if burst else [dataclasses.replace(c, next_run=None)
                                    for c in settings_cls.cron_jobs or ()],
        max_jobs=settings.worker_max_jobs,
        max_tries=settings.job_max_tries,
        ctx={"settings": settings, "services": services, "serve_metrics": not burst,
             # Jobs give up a little before arq's own timeout and are retried later:
             # arq fails a timed-out job for good, and would drop its work.
             "job_soft_timeout": QUEUE_TIMEOUTS[queue] - SOFT_TIMEOUT_MARGIN},
    )


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
    a burst run raises the error instead.
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
            workers = [create_queue_worker(settings, q, services=services, burst=burst)
                       for q in queues]
            started = time.monotonic()
            try:
                await _run_until_stopped(workers, stop, received, burst=burst)
            except (RedisError, OSError) as exc:
                # A burst run is a batch: its caller decides whether to run it again.
                if burst:
                    raise
                # The queue's Redis went away (a restart, a failover) or never answered:
                # arq's loop has no reconnect, so start fresh workers as soon as it
                # answers again. Jobs cut off are still on the queue and run again when
                # arq's in-progress mark expires. Workers that failed soon after starting
                # go on with the same outage: its backoff keeps growing.
                if outage is None or time.monotonic() - started >= outage.cap:
                    outage = QueueOutage(settings.redis_url)
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
    retries and its warnings, which name the variable to check (FEED_REDIS_URL) and the
    address, without its password."""

    def __init__(self, url: str, *, first: float = QUEUE_RECONNECT_SECONDS,
                 cap: float = QUEUE_RECONNECT_MAX_SECONDS,
                 warn_every: float = QUEUE_WARNING_EVERY_SECONDS) -> None:
        self.address = redacted_url(url)
        self.cap = cap
        self.delays = backoff_delays(first, cap)
        self.warn_every = warn_every
        self.since = time.monotonic()
        self.failures = 0
        self.warned_at: float | None = None

    def failed(self, exc: BaseException) -> float:
        """Count a failure, warn if it is the first or the last warning is old enough;
        the seconds to wait before the next try."""
        self.failures += 1
        delay = next(self.delays)
        now = time.monotonic()
        if self.warned_at is None or now - self.warned_at >= self.warn_every:
            self.warned_at = now
            log.warning(
                "queue Redis at %s does not answer (check FEED_REDIS_URL); workers start "
                "again once it does", self.address,
                extra={"variable": "FEED_REDIS_URL", "address": self.address,
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


_metrics_started = False


def _serve_metrics(settings: Settings) -> None:
    """The worker's own /metrics (Prometheus), once per process."""
    global _metrics_started
    if _metrics_started or not settings.worker_metrics_port:
        return
    try:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    except OSError as exc:
        log.warning("worker metrics not served", extra={
            "port": settings.worker_metrics_port, "error": str(exc)})
        return
    _metrics_started = True


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
