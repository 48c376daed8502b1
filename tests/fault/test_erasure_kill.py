"""A worker SIGKILLed in the middle of an erasure: a new worker finishes it.

Pass criterion: the worker running the erasure is killed while it is purging the user's
koos (some done, not all: checked from the progress saved on the tombstone); a new
worker is started, and within 120 s of that restart (arq hands a killed realtime job
out again once its 30 s limit and 10 s of grace have passed) the erasure reaches
"done", nothing about the user is left in any table or in the hot cache, and every
counter it moved equals what the remaining rows count.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from feed.erasure import Erasure
from feed.services import Services
from tests.conftest import BACKEND, uid
from tests.fault._procs import spawn_worker, stop_process, tail
from tests.helpers import apply_all, event, follow, koo, react, signup
from tests.test_erasure import counters_match_rows, leftovers

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(400)]

FOLLOWERS = 200 if BACKEND == "local" else 40
KOOS = 120 if BACKEND == "local" else 40
KILL_AFTER_KOOS = 8
RECOVERY_SECONDS = 120


async def test_sigkill_mid_erasure_then_restart(services: Services, tmp_path: Path) -> None:
    victim = uid("vi")
    fans = [uid("fa") for _ in range(FOLLOWERS)]
    koos = [uid("k") for _ in range(KOOS)]
    await apply_all(services, signup(victim), *(signup(f) for f in fans),
                    *(follow(f, victim) for f in fans),
                    *(koo(k, victim, text="to be erased") for k in koos),
                    *(react("like", koos[i % KOOS], f) for i, f in enumerate(fans)))
    erasure = Erasure(services.manager, services.jobs)
    log = tmp_path / "worker.log"
    worker = spawn_worker(services.settings, log, "--queue", "realtime")
    try:
        await services.publisher.publish([event("user_deleted", user_id=victim)])
        deadline = time.monotonic() + 120
        while True:
            progress = await erasure.progress(victim)
            if progress is not None and progress.counts.get("koos", 0) >= KILL_AFTER_KOOS:
                break
            assert worker.poll() is None, tail(log)
            assert time.monotonic() < deadline, f"the erasure never got going: {progress}"
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        at_kill = await erasure.progress(victim)
        assert at_kill is not None
        assert at_kill.step == "koos", f"killed too late: {at_kill}"
        assert at_kill.counts["koos"] < KOOS
    finally:
        stop_process(worker)

    restarted = spawn_worker(services.settings, log, "--queue", "realtime")
    started = time.monotonic()
    try:
        while True:
            progress = await erasure.progress(victim)
            assert progress is not None
            if progress.step == "done":
                break
            assert restarted.poll() is None, tail(log)
            assert time.monotonic() - started < RECOVERY_SECONDS, (
                f"erasure not finished {RECOVERY_SECONDS} s after the restart: {progress}")
            await asyncio.sleep(0.5)
    finally:
        stop_process(restarted)
    assert progress.counts["koos"] == KOOS
    assert await leftovers(services, victim) == []
    assert await counters_match_rows(services, fans, []) == []
