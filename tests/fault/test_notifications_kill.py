"""A worker SIGKILLed while a burst of likes is being turned into a notification loses
no notification and doubles none.

Pass criterion: a koo gets LIKES likes from distinct users; a worker applies them and
is SIGKILLed once the notification counts at least 30% (and not all) of them; a new
worker is started, and within RECOVERY_SECONDS of that restart the author has exactly
one like notification on the koo with actor_count LIKES, exactly LIKES counted actor
rows (each actor once) and no actor left pending. On DynamoDB Local 1,000 likes; on
moto (pure Python, in the test process) 200, with the same criterion.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from config.tables import NOTIFICATIONS, NOTIFY_PENDING
from feed import keys
from feed.notifications import Notifications
from feed.services import Services
from tests.conftest import BACKEND, uid
from tests.fault._procs import spawn_worker, stop_process, tail
from tests.helpers import apply_all, koo, react, signup

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(400)]

LIKES = 1_000 if BACKEND == "local" else 200
KILL_AT = 0.3
# A killed worker's jobs run again once arq's in-progress marks expire (the realtime
# timeout, 30 s, plus 10 s), and its settle lock expires after 15 s.
RECOVERY_SECONDS = 150


async def _count(notes: Notifications, author: str, group: str) -> int:
    body = await notes.store.group(author, group)
    return int(body["actor_count"]) if body else 0


async def test_sigkill_during_a_like_burst_then_restart(services: Services, tmp_path: Path
                                                        ) -> None:
    """Kill at >= 30% counted, restart: one notification, actor_count exactly LIKES."""
    settings = services.settings
    author, k = uid("au"), uid("k")
    likers = [f"{author}-l{i:05d}" for i in range(LIKES)]
    create = koo(k, author)
    await apply_all(services, signup(author), create)
    notes = Notifications.over(services.manager)
    group = notes.store.group_of("like", k, create["occurred_at"])
    likes = [react("like", k, u, occurred_at=create["occurred_at"] + 1 + i)
             for i, u in enumerate(likers)]
    for start in range(0, LIKES, 500):
        await services.publisher.publish(likes[start:start + 500])
    log = tmp_path / "worker.log"
    worker = spawn_worker(settings, log, "--queue", "realtime")
    try:
        deadline = time.monotonic() + 240
        while (counted := await _count(notes, author, group)) < LIKES * KILL_AT:
            assert worker.poll() is None, tail(log)
            assert time.monotonic() < deadline, f"only {counted} likes counted in 240 s"
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        at_kill = await _count(notes, author, group)
        assert at_kill < LIKES, "killed too late: every like was counted"
    finally:
        stop_process(worker)

    restarted = spawn_worker(settings, log, "--queue", "realtime")
    started = time.monotonic()
    try:
        while await _count(notes, author, group) != LIKES or await _pending(
                services, author, group):
            assert restarted.poll() is None, tail(log)
            assert time.monotonic() - started < RECOVERY_SECONDS, (
                f"{await _count(notes, author, group)}/{LIKES} counted "
                f"{RECOVERY_SECONDS} s after the restart")
            await asyncio.sleep(0.25)
        done_in = time.monotonic() - started
        actors: list[str] = []
        async for row in services.stores.db.query(
                NOTIFICATIONS, "user_id = :u AND begins_with(nk, :p)",
                values={":u": {"S": author}, ":p": {"S": f"a#{group}#"}}, consistent=True):
            assert row.get("counted") is True
            assert int(row["n"]) == 1
            actors.append(row["nk"].rpartition(keys.SORT_SEP)[2])
        assert sorted(actors) == sorted(likers)
        page = await notes.page(author, limit=10)
        assert [(i["kind"], i["koo_id"], i["actor_count"]) for i in page["items"]] == [
            ("like", k, LIKES)]
        assert page["items"][0]["actors"] == likers[::-1][:3]
    finally:
        restarted.send_signal(signal.SIGTERM)
        try:
            restarted.wait(40)
        finally:
            stop_process(restarted)
    print(f"\n[notifications-kill] backend={BACKEND} likes={LIKES}; killed at {at_kill} "
          f"counted; exact {done_in:.1f} s after the restart")


async def _pending(services: Services, author: str, group: str) -> int:
    items, _ = await services.stores.db.query_page(
        NOTIFICATIONS, "user_id = :u AND begins_with(pend, :p)",
        values={":u": {"S": author}, ":p": {"S": f"{group}#"}}, index=NOTIFY_PENDING,
        consistent=True, limit=10)
    return len(items)
