"""The workers' settings classes, as arq reads them, and how the workers start and stop.

Pass criteria: every registered job has exactly one worker function, on its own queue,
with its queue's time limit, and nothing else is registered; a worker given services
shares them, one given none opens its own and closes them; on a stop, a job shorter
than the grace period finishes and one longer is cancelled and put back on the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix, result_key_prefix
from arq.worker import create_worker

from config.settings import Settings
from feed import keys
from feed.jobs import JOBS, QUEUE_TIMEOUTS, REALTIME
from feed.queue import deserialize_job, serialize_job
from feed.services import Services
from tests.conftest import uid
from tests.helpers import event_job, follow
from workers.runner import run_workers
from workers.settings import (
    JOB_FUNCTIONS,
    SCHEDULED_MINUTES,
    WORKER_SETTINGS,
    create_queue_worker,
)


async def test_every_registered_job_has_one_worker_function_on_its_queue() -> None:
    registered = {(job.queue, job.name): job for job in JOBS}
    found: Counter[tuple[str, str]] = Counter()
    for queue, settings_cls in WORKER_SETTINGS.items():
        worker = create_worker(settings_cls)  # arq's own reading of the settings class
        assert worker.queue_name == keys.QUEUES[queue]
        assert worker.job_timeout_s == QUEUE_TIMEOUTS[queue]
        assert worker.job_serializer is serialize_job
        assert worker.job_deserializer is deserialize_job
        for name, function in worker.functions.items():
            scheduled = name.removesuffix("_on_schedule")
            if scheduled != name:  # the scheduled run of a job also enqueued as usual
                assert scheduled in {job.name for job in SCHEDULED_MINUTES}
                assert function.coroutine is JOB_FUNCTIONS[registered[queue, scheduled]]
                continue
            found[queue, name] += 1
            job = registered.get((queue, name))
            assert job is not None, f"{name} runs on {queue} but is not registered there"
            assert function.timeout_s == job.timeout
            assert function.coroutine is JOB_FUNCTIONS[job]
    assert set(found) == set(registered), set(registered) ^ set(found)
    assert all(count == 1 for count in found.values()), found
    assert set(JOB_FUNCTIONS) == set(JOBS)
    assert all(c.__module__.startswith("workers.") for c in JOB_FUNCTIONS.values())


def test_the_sweeper_and_the_popular_refresh_run_on_a_schedule_not_in_burst_mode(
    settings: Settings,
) -> None:
    scheduled = {c.name for cls in WORKER_SETTINGS.values() for c in cls.cron_jobs or ()}
    assert scheduled == {"sweep_fanouts", "refresh_popular_authors_on_schedule"}
    burst = create_queue_worker(settings, REALTIME, burst=True)
    assert burst.burst
    assert not burst.cron_jobs


class _SlowApplier:
    """Stands in for the event applier: each apply takes ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.finished = 0

    async def apply(self, event: dict[str, Any]) -> str:
        self.started.set()
        await asyncio.sleep(self.seconds)
        self.finished += 1
        return "applied"


async def test_a_worker_given_services_shares_them(services: Services) -> None:
    reader, author = uid(), uid()
    await services.publisher.publish([follow(reader, author)])
    worker = create_queue_worker(services.settings, REALTIME, services=services, burst=True)
    await worker.async_run()
    await worker.close()
    assert worker.ctx["services"] is services
    assert await services.stores.relations.is_active(reader, keys.REL_FOLLOW, author)
    assert await services.cache.redis.ping()  # still open


async def test_a_worker_without_services_opens_its_own_and_closes_them(
    services: Services,
) -> None:
    reader, author = uid(), uid()
    await services.publisher.publish([follow(reader, author)])
    worker = create_queue_worker(services.settings, REALTIME, burst=True)
    assert worker.ctx["services"] is None
    await worker.async_run()
    owned = worker.ctx["services"]
    assert isinstance(owned, Services)
    assert owned is not services
    await worker.close()
    assert worker.ctx["services"] is None
    assert "owned_services" not in worker.ctx
    assert await services.stores.relations.is_active(reader, keys.REL_FOLLOW, author)


async def _stop_while_running(services: Services, monkeypatch: pytest.MonkeyPatch, *,
                              job_seconds: float, grace: int) -> tuple[str, float]:
    """Publish one event, stop the workers while its job runs; the job id and how long
    the stop took."""
    applier = _SlowApplier(job_seconds)
    monkeypatch.setattr(services, "applier", applier)
    monkeypatch.setattr(WORKER_SETTINGS[REALTIME], "job_completion_wait", grace)
    event = follow(uid(), uid())
    await services.publisher.publish([event])
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(
        services.settings, (REALTIME,), services=services, stop=stop, handle_signals=False))
    await asyncio.wait_for(applier.started.wait(), 10)
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(running, grace + 10)
    return event_job(event), time.monotonic() - started


async def test_a_stop_lets_a_running_job_finish_within_the_grace(
    services: Services, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id, took = await _stop_while_running(services, monkeypatch, job_seconds=0.5, grace=5)
    assert took < 5
    redis = services.queue_redis
    assert await redis.exists(result_key_prefix + job_id)
    assert await redis.zscore(keys.QUEUE_REALTIME, job_id) is None


async def test_a_stop_puts_a_job_running_past_the_grace_back_on_the_queue(
    services: Services, monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id, took = await _stop_while_running(services, monkeypatch, job_seconds=60, grace=1)
    assert 1 <= took < 10
    redis = services.queue_redis
    assert await redis.zscore(keys.QUEUE_REALTIME, job_id) is not None
    assert not await redis.exists(in_progress_key_prefix + job_id)
    assert not await redis.exists(result_key_prefix + job_id)
