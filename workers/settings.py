"""Worker settings for the two queues, and the loop that runs them until a signal.

``realtime`` carries events, fan-outs of new koos and follow backfills;
``backfill`` carries purges, rebuilds, celebrity demotions and
recommendations, so a large backfill never delays a fresh koo. Each queue is
served by its own arq Worker; ``feed worker --queue all`` runs both in one
process, and either can be scaled out on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import Any

from arq import Worker, cron
from arq.worker import func
from prometheus_client import start_http_server
from redis.exceptions import RedisError

from config.settings import Settings
from feed import keys, metrics
from feed.jobs import BACKFILL, REALTIME
from feed.services import Services, deserialize_job, open_services, serialize_job
from workers.backfill import (
    backfill_chunk,
    compute_recommendations,
    rebuild_timeline,
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

__all__ = ["build_worker", "run_workers", "worker_functions"]

log = logging.getLogger(__name__)

# A killed worker's job is picked up again once arq's in-progress mark expires,
# which is the longest job timeout of the queue plus 10 s: realtime jobs are
# kept short so a SIGKILLed fan-out chunk is redone within a minute.
REALTIME_TIMEOUT = 30
BACKFILL_TIMEOUT = 600
SOFT_TIMEOUT_MARGIN = 5  # seconds before arq's job timeout that a job gives up and retries
SHUTDOWN_GRACE_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 5.0
QUEUE_RECONNECT_SECONDS = 1.0


def worker_functions(queue: str, settings: Settings) -> list[Any]:
    """The jobs one queue's workers run."""
    keep = 120  # results double as a short-lived dedupe of job ids; the ledger is the real one
    if queue == REALTIME:
        return [
            func(apply_event, name="apply_event", timeout=REALTIME_TIMEOUT, keep_result=keep),
            func(fan_out_koo, name="fan_out_koo", timeout=REALTIME_TIMEOUT, keep_result=keep),
            func(deliver_koo_chunk, name="deliver_koo_chunk", timeout=REALTIME_TIMEOUT,
                 keep_result=keep),
            func(merge_author_into_timeline, name="merge_author_into_timeline",
                 timeout=REALTIME_TIMEOUT, keep_result=keep),
        ]
    return [
        func(purge_deleted_koo, name="purge_deleted_koo", timeout=BACKFILL_TIMEOUT),
        func(purge_author_from_timeline, name="purge_author_from_timeline",
             timeout=BACKFILL_TIMEOUT),
        func(demote_celebrity, name="demote_celebrity", timeout=BACKFILL_TIMEOUT),
        func(rebuild_timeline, name="rebuild_timeline", timeout=BACKFILL_TIMEOUT),
        func(trim_timeline, name="trim_timeline", timeout=BACKFILL_TIMEOUT),
        func(compute_recommendations, name="compute_recommendations",
             timeout=BACKFILL_TIMEOUT),
        func(backfill_chunk, name="backfill_chunk", timeout=BACKFILL_TIMEOUT),
    ]


def build_worker(
    settings: Settings, queue: str, services: Services, *, burst: bool = False
) -> Worker:
    """An arq Worker for one queue, sharing already-open services."""
    realtime = queue == REALTIME
    cron_jobs = []
    if realtime and not burst:
        cron_jobs.append(
            cron(sweep_fanouts, name="sweep_fanouts", second={0, 15, 30, 45}, run_at_startup=True,
                 timeout=REALTIME_TIMEOUT, unique=True)
        )
    return Worker(
        functions=worker_functions(queue, settings),
        cron_jobs=cron_jobs,
        queue_name=keys.QUEUES[queue],
        redis_pool=services.queue_factory(),
        burst=burst,
        handle_signals=False,
        max_jobs=settings.worker_max_jobs,
        job_timeout=REALTIME_TIMEOUT if realtime else BACKFILL_TIMEOUT,
        max_tries=settings.job_max_tries,
        poll_delay=0.01 if realtime else 0.25,
        keep_result=600,
        retry_jobs=True,
        health_check_interval=10,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        ctx={"services": services,
             # Jobs give up a little before arq's own timeout and are retried later:
             # arq fails a timed-out job for good, and would drop its work.
             "job_soft_timeout": (REALTIME_TIMEOUT if realtime else BACKFILL_TIMEOUT)
             - SOFT_TIMEOUT_MARGIN},
        log_results=False,
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
    finish, then cancel the rest, which arq puts back on the queue.
    """
    async with contextlib.AsyncExitStack() as stack:
        if services is None:
            services = await stack.enter_async_context(open_services(settings))
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT) if handle_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                stack.callback(loop.remove_signal_handler, sig)
        _serve_metrics(settings, burst=burst)
        depth_task = asyncio.create_task(_report_depth(services, queues, stop))
        try:
            while True:
                workers = [build_worker(settings, q, services, burst=burst) for q in queues]
                try:
                    await _run_until_stopped(workers, stop, burst=burst)
                except (RedisError, OSError) as exc:
                    # The queue's Redis went away (a restart, a failover): arq's loop has
                    # no reconnect, so start fresh workers once it answers again. Jobs cut
                    # off are still on the queue and run again when arq's in-progress mark
                    # expires.
                    log.warning("queue Redis unreachable; restarting the workers",
                                extra={"error": str(exc)})
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), QUEUE_RECONNECT_SECONDS)
                    if stop.is_set():
                        return
                    continue
                if not burst or stop.is_set() or not await _queues_busy(services, queues):
                    return
        finally:
            depth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await depth_task


async def _run_until_stopped(workers: list[Worker], stop: asyncio.Event, *, burst: bool) -> None:
    mains = []
    for worker in workers:
        worker.main_task = asyncio.create_task(worker.main())
        mains.append(worker.main_task)
    stopper = asyncio.create_task(stop.wait())
    try:
        if burst:
            everything: asyncio.Future[Any] = asyncio.gather(*mains)
            await asyncio.wait([everything, stopper], return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.wait([*mains, stopper], return_when=asyncio.FIRST_COMPLETED)
        for main in mains:
            if main.done() and not main.cancelled() and main.exception():
                raise main.exception()  # type: ignore[misc]
        if stop.is_set():
            # Stop taking jobs, and let each main loop return once its running jobs are
            # done (arq's own burst exit), within the grace period.
            for worker in workers:
                worker.allow_pick_jobs = False
                worker.burst = True
                worker.max_burst_jobs = 0
            running = sum(len(w.tasks) for w in workers)
            log.info("stopping: waiting for running jobs", extra={"jobs": running})
            await asyncio.wait(mains, timeout=SHUTDOWN_GRACE_SECONDS)
    finally:
        stopper.cancel()
        for worker in workers:
            for task in worker.tasks.values():
                if not task.done():
                    task.cancel()  # arq puts a cancelled job back on the queue
            if worker.main_task and not worker.main_task.done():
                worker.main_task.cancel()
        # Never hang on shutdown: a main loop that ignores its cancellation is left behind.
        _, stuck = await asyncio.wait(mains, timeout=STOP_TIMEOUT_SECONDS)
        if stuck:
            log.warning("worker loops did not stop in time", extra={"loops": len(stuck)})
        for worker in workers:
            try:
                await asyncio.wait_for(worker.close(), STOP_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                # close() gathers the job tasks cancelled above and re-raises their
                # cancellation; only a cancellation of this task itself goes on.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:
                log.debug("worker close failed", exc_info=True)


_metrics_started = False


def _serve_metrics(settings: Settings, *, burst: bool) -> None:
    """The worker's own /metrics (Prometheus), once per process; off in burst mode."""
    global _metrics_started
    if burst or _metrics_started or not settings.worker_metrics_port:
        return
    try:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    except OSError as exc:
        log.warning("worker metrics not served", extra={
            "port": settings.worker_metrics_port, "error": str(exc)})
        return
    _metrics_started = True


async def _queues_busy(services: Services, queues: Sequence[str]) -> bool:
    for queue in queues:
        if await services.jobs.depth(queue):
            return True
    return False


async def _report_depth(services: Services, queues: Sequence[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            for queue in queues:
                metrics.QUEUE_DEPTH.labels(queue).set(await services.jobs.depth(queue))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=5)
