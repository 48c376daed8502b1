"""Operators' commands end to end: `feed dead-letters ...` and `feed worker --check`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from config.tables import KOOS
from feed import keys
from feed.services import Services, open_services
from tests.conftest import uid
from tests.fault._procs import stop_process, worker_env
from tests.helpers import apply_all, drain, follow, koo, react, signup


def feed(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """`feed ARGV` as its own process, on ``settings``' services."""
    return subprocess.run([sys.executable, "-m", "feed.cli", *argv], capture_output=True,
                          text=True, timeout=120, env=worker_env(settings))


@pytest.fixture
async def impatient(settings: Settings) -> AsyncIterator[Services]:
    """Services that dead-letter an event after its first failed try."""
    async with open_services(settings.replace(job_max_tries=1)) as svc:
        yield svc


async def test_dead_letters_listed_shown_replayed_and_purged(impatient: Services) -> None:
    settings = impatient.settings
    author, fan, koo_id = uid(), uid(), uid("k")
    like = react("like", koo_id, fan)
    await apply_all(impatient, signup(author), signup(fan), like)  # its koo is not there
    dl_id = keys.dead_letter_of_event(like["event_id"])

    listed = feed(settings, "dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = [row for row in map(orjson.loads, listed.stdout.splitlines()) if row["id"] == dl_id]
    assert len(mine) == 1
    assert (mine[0]["event_id"], mine[0]["type"]) == (like["event_id"], "reaction_added")
    assert "not stored" in mine[0]["reason"]
    plain = feed(settings, "dead-letters", "list")
    assert any(line.split("\t")[:3] == [dl_id, like["event_id"], "reaction_added"]
               for line in plain.stdout.splitlines())

    shown = feed(settings, "dead-letters", "show", dl_id)
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["payload"]["koo_id"] == koo_id

    await apply_all(impatient, koo(koo_id, author))  # the cause, fixed
    replayed = feed(settings, "dead-letters", "replay", dl_id, "no-such-letter")
    assert replayed.stdout.splitlines() == [f"{dl_id}: replayed", "no-such-letter: not found"]
    assert replayed.returncode == 1  # one could not be replayed
    await drain(impatient)
    item = await impatient.stores.db.get(KOOS, {"koo_id": koo_id}, consistent=True) or {}
    assert int(item.get("likes", 0)) == 1
    missing = feed(settings, "dead-letters", "show", dl_id)
    assert missing.returncode == 1
    assert "no dead letter" in missing.stderr

    purged = feed(settings, "dead-letters", "purge", "--older-than", "36500")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("purged 0 dead letters")


def test_dead_letters_usage_errors_exit_2(settings: Settings) -> None:
    for argv in (["dead-letters"], ["dead-letters", "replay"],
                 ["dead-letters", "purge", "--older-than", "soon"]):
        done = feed(settings, *argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr


def test_worker_check_follows_a_live_worker(settings: Settings, tmp_path: Path) -> None:
    before = feed(settings, "worker", "--check")
    assert before.returncode == 1, before.stdout
    assert "no worker" in before.stderr
    log = tmp_path / "worker.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "feed.cli", "worker"],
                                env=worker_env(settings), stdout=sink, stderr=sink)
    try:
        for _ in range(100):
            done = feed(settings, "worker", "--check", "--queue", "realtime")
            if done.returncode == 0:
                break
            time.sleep(0.2)
        assert done.returncode == 0, log.read_text()
        assert done.stdout.strip() == "healthy: realtime"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        stop_process(proc)
    # A worker that stopped cleanly takes its report with it.
    after = feed(settings, "worker", "--check")
    assert after.returncode == 1


async def test_inspect_answers_as_json(services: Services) -> None:
    me, friend, k = uid(), uid(), uid("k")
    await apply_all(services, signup(me), signup(friend), follow(me, friend), koo(k, friend))
    done = feed(services.settings, "inspect", "feed", me, k)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {"in_feed": True, "reason": "following"}
    user = feed(services.settings, "inspect", "user", me)
    assert user.returncode == 0, user.stderr
    assert orjson.loads(user.stdout)["relations"]["following"] == 1
    nobody = feed(services.settings, "inspect", "user", uid("nobody"))
    assert nobody.returncode == 1
    assert "no user" in nobody.stderr
    assert feed(services.settings, "inspect", "feed", me, "not an id").returncode == 2
