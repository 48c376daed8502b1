"""Jobs give up before arq's own timeout and are retried, instead of being failed for good.

Pass criterion: a job (and apply_event) still running at the worker's soft deadline
raises arq's Retry with a positive deferral; a job that finishes in time is untouched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from arq import Retry

from feed.errors import NotReady, StorageUnavailable
from feed.jobs import QUEUE_TIMEOUTS
from feed.services import Services
from workers._context import retry_later, retrying
from workers.events import apply_event
from workers.settings import create_queue_worker


@retrying
async def _slow(ctx: dict[str, Any], seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


async def test_a_job_past_its_soft_deadline_is_retried_later() -> None:
    ctx = {"job_soft_timeout": 0.05, "job_try": 1, "job_id": "j1"}
    with pytest.raises(Retry) as caught:
        await _slow(ctx, 5)
    assert caught.value.defer_score is not None
    assert caught.value.defer_score > 0
    assert await _slow(ctx, 0) == "done"


async def test_apply_event_past_its_soft_deadline_is_retried_later() -> None:
    class SlowApplier:
        async def apply(self, event: dict[str, Any]) -> str:
            await asyncio.sleep(5)
            return "applied"

    class Settings:
        job_max_tries = 8

    class Svc:
        applier = SlowApplier()
        settings = Settings()

    ctx = {"services": Svc(), "job_soft_timeout": 0.05, "job_try": 1, "job_id": "j2"}
    raw = {"type": "user_followed", "event_id": "ev-1", "occurred_at": 1_700_000_000_000,
           "follower_id": "a", "followee_id": "b"}
    with pytest.raises(Retry):
        await apply_event(ctx, raw)


async def test_workers_set_a_soft_deadline_below_arqs_timeout(services: Services) -> None:
    for queue, hard in QUEUE_TIMEOUTS.items():
        worker = create_queue_worker(services.settings, queue, services=services)
        try:
            soft = worker.ctx["job_soft_timeout"]
            assert 0 < soft < hard
            assert all(soft < (f.timeout_s or hard) for f in worker.functions.values())
        finally:
            await worker.pool.aclose(close_connection_pool=True)


@pytest.mark.parametrize(("exc", "level"), [
    (NotReady("koo k1 is not stored (yet)"), logging.INFO),
    (StorageUnavailable("DynamoDB timed out", "timeout"), logging.WARNING),
])
def test_an_event_early_for_what_it_names_is_no_warning(
    exc: NotReady | StorageUnavailable, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Pass: a deferral because an event came before what it refers to is logged at
    INFO (events may come out of order); one because storage failed, at WARNING."""
    with caplog.at_level(logging.DEBUG, logger="workers._context"):
        assert retry_later({"job_try": 1, "job_id": "j3"}, exc).defer_score is not None
    (record,) = [r for r in caplog.records if r.name == "workers._context"]
    assert record.levelno == level
    assert record.getMessage() == "job deferred after a transient failure"
