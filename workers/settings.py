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

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final

from arq import Worker, cron
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, create_worker, func
from prometheus_client import start_http_server

from config.settings import Settings
from feed import keys
from feed.jobs import (
    APPLY_EVENT,
    BACKFILL,
    BACKFILL_CHUNK,
    COMPUTE_RECOMMENDATIONS,
    DELIVER_KOO_CHUNK,
    DEMOTE_CELEBRITY,
    ERASE_USER,
    FAN_OUT_KOO,
    MERGE_AUTHOR,
    PURGE_AUTHOR,
    PURGE_DELETED_KOO,
    PURGE_KOO_NOTIFICATIONS,
    PURGE_NOTIFICATIONS_FROM,
    QUEUE_TIMEOUTS,
    REALTIME,
    REBUILD_TIMELINE,
    REFRESH_POPULAR,
    SWEEP_FANOUTS,
    SYNC_FOLLOW_NOTIFICATION,
    SYNC_REACTION_NOTIFICATION,
    SYNC_REPLY_NOTIFICATION,
    TRIM_TIMELINE,
    Job,
)
from feed.queue import deserialize_job, open_queue_redis, serialize_job
from feed.services import Services, open_services
from workers.backfill import (
    backfill_chunk,
    compute_recommendations,
    rebuild_timeline,
    refresh_popular_authors,
    trim_timeline,
)
from workers.deletion import purge_deleted_koo
from workers.erasure import erase_user
from workers.events import apply_event
from workers.fanout import deliver_koo_chunk, fan_out_koo, sweep_fanouts
from workers.notifications import (
    purge_koo_notifications,
    purge_notifications_from,
    sync_follow_notification,
    sync_reaction_notification,
    sync_reply_notification,
)
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
    SYNC_REACTION_NOTIFICATION: sync_reaction_notification,
    SYNC_FOLLOW_NOTIFICATION: sync_follow_notification,
    SYNC_REPLY_NOTIFICATION: sync_reply_notification,
    PURGE_KOO_NOTIFICATIONS: purge_koo_notifications,
    PURGE_NOTIFICATIONS_FROM: purge_notifications_from,
    ERASE_USER: erase_user,
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
