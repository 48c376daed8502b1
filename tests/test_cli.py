"""The ``feed`` command line: publish, tables, backfill, help, configuration errors."""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from feed.backfill import BackfillRun, run_backfill, run_id_for
from feed.cli import main, publish_file
from feed.services import Services
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, signup
from workers.settings import run_workers

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    documented = set(re.findall(r"FEED_[A-Z_]+", text))
    source = (Path(__file__).resolve().parents[1] / "config" / "settings.py").read_text()
    names = {f"FEED_{n}" for n in re.findall(r'reader\.get\(\s*"([A-Z_]+)"', source)}
    missing = names - documented
    assert names, "no settings found: the pattern above is out of date"
    assert not missing, f"undocumented settings: {sorted(missing)}"


def test_help_explains_every_command() -> None:
    for argv in (["--help"], ["demo", "--help"], ["api", "--help"], ["worker", "--help"],
                 ["tables", "create", "--help"], ["publish", "--help"],
                 ["backfill", "timelines", "--help"]):
        done = subprocess.run([sys.executable, "-m", "feed.cli", *argv], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "usage: feed" in done.stdout


def test_an_invalid_setting_stops_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEED_CELEBRITY_FOLLOWERS", "lots")
    assert main(["tables", "create"]) == 2
    assert "FEED_CELEBRITY_FOLLOWERS" in capsys.readouterr().err


async def test_publish_reports_bad_lines_and_skips_them(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    author, reader = uid(), uid()
    k = uid("k")
    good = [signup(author), signup(reader), follow(reader, author), koo(k, author)]
    lines = [orjson.dumps(e).decode() for e in good]
    lines.insert(1, "{not json")
    lines.insert(3, orjson.dumps({"type": "koo_created", "event_id": "x"}).decode())
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    code = await publish_file(services.settings, str(path), quiet=True)

    err = capsys.readouterr().err
    assert code == 1
    assert "line 2: not JSON" in err
    assert "line 4:" in err
    assert "published 4 events; 2 bad lines skipped" in err
    await apply_all(services)
    rows, _ = await services.stores.timelines.page(reader, limit=5)
    assert [e.koo_id for e in rows] == [k]


async def test_publish_of_a_clean_file_exits_zero(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(orjson.dumps(signup(uid())).decode() + "\n\n")
    assert await publish_file(services.settings, str(path), quiet=True) == 0


def _backfill_args(kind: str, users: list[str], **extra: object) -> argparse.Namespace:
    base = {"kind": kind, "user": users, "all": False, "chunk": 2, "dry_run": False,
            "restart": False, "no_wait": False, "timeout": 60.0}
    base.update(extra)
    return argparse.Namespace(**base)


async def test_backfill_rebuilds_timelines_and_resumes(services: Services) -> None:
    settings: Settings = services.settings
    author = uid()
    readers = [uid() for _ in range(5)]
    k = uid("k")
    await apply_all(services, signup(author), *(signup(r) for r in readers),
                    *(follow(r, author) for r in readers), koo(k, author))
    # Lose the stored timelines, as a botched migration might.
    for reader in readers:
        rows, _ = await services.stores.timelines.page(reader, limit=10)
        await services.stores.timelines.remove_keys(reader, [e.sort_key for e in rows])

    # Enqueue only; nothing runs yet. Then the same command again resumes and waits.
    args = _backfill_args("timelines", readers, no_wait=True)
    assert await run_backfill(settings, args) == 0
    run = BackfillRun(services.queue_redis, run_id_for("timelines", readers))
    assert len(await run.enqueued()) == 3  # 5 users in chunks of 2
    assert await run.done() == set()

    stop = asyncio.Event()
    worker = asyncio.create_task(run_workers(settings, services=services, stop=stop,
                                             handle_signals=False))
    try:
        assert await run_backfill(settings, _backfill_args("timelines", readers)) == 0
    finally:
        stop.set()
        await worker
    assert len(await run.done()) == 3
    for reader in readers:
        rows, _ = await services.stores.timelines.page(reader, limit=10)
        assert [e.koo_id for e in rows] == [k]


async def test_backfill_dry_run_changes_nothing(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    readers = [uid() for _ in range(3)]
    args = _backfill_args("recommendations", readers, dry_run=True)
    assert await run_backfill(services.settings, args) == 0
    assert "dry run: would recompute" in capsys.readouterr().out
    run = BackfillRun(services.queue_redis, run_id_for("recommendations", readers))
    assert await run.enqueued() == {}
    assert await services.jobs.depth("backfill") == 0
