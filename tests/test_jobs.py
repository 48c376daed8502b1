"""The job registry: every job once, on a known queue, with its queue's time limit."""

from __future__ import annotations

from feed import jobs, keys


def test_names_are_unique() -> None:
    names = [job.name for job in jobs.JOBS]
    assert len(names) == len(set(names))


def test_every_job_is_on_a_queue_the_workers_serve() -> None:
    assert {job.queue for job in jobs.JOBS} == set(keys.QUEUES) == set(jobs.QUEUE_TIMEOUTS)


def test_a_job_takes_its_queue_s_time_limit() -> None:
    assert jobs.APPLY_EVENT.timeout == jobs.QUEUE_TIMEOUTS[jobs.REALTIME]
    assert jobs.REBUILD_TIMELINE.timeout == jobs.QUEUE_TIMEOUTS[jobs.BACKFILL]
    # Realtime jobs stay short: a killed worker's job runs again after its timeout + 10 s.
    assert jobs.QUEUE_TIMEOUTS[jobs.REALTIME] < jobs.QUEUE_TIMEOUTS[jobs.BACKFILL]


def test_every_registered_job_is_exported_by_name() -> None:
    exported = [getattr(jobs, name) for name in jobs.__all__]
    assert all(job in exported for job in jobs.JOBS)
