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

CONFIGURATION_DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_setting_is_documented_in_the_configuration_page() -> None:
    text = CONFIGURATION_DOC.read_text()
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


def _feed(*argv: str, env: dict[str, str] | None = None, code: str = ""
          ) -> subprocess.CompletedProcess[str]:
    """`feed ARGV` as its own process (``code`` runs first, to break an import)."""
    script = f"import sys\n{code}\nfrom feed.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                          text=True, timeout=60, env=env)


def test_version_prints_the_installed_version() -> None:
    done = _feed("--version")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"feed \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_no_command_prints_the_help_and_exits_2() -> None:
    done = _feed()
    assert done.returncode == 2
    assert "usage: feed" in done.stderr
    assert "exit codes:" in done.stderr
    assert "Traceback" not in done.stderr


def test_publish_of_a_missing_file_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nosuch.jsonl"
    done = _feed("publish", str(missing))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"feed: cannot read {missing}: No such file or directory"


def test_the_demo_without_its_extra_names_it_in_one_line() -> None:
    done = _feed("demo", code="sys.modules['moto'] = None  # as if not installed")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("feed: the demo needs the 'demo' extra (moto is missing): "
                                   "pip install 'koo-feed[demo]'")


@pytest.mark.parametrize("name", ["FEED_API_TOKENS", "FEED_CURSOR_SECRET"])
def test_an_invalid_secret_is_named_but_never_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str,
) -> None:
    monkeypatch.setenv(name, "short")
    assert main(["tables", "create"]) == 2
    err = capsys.readouterr().err
    assert name in err
    assert "short" not in err


async def test_publish_reports_a_reused_event_id_by_line_and_publishes_the_rest(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two different events under one event_id in one batch used to make the whole
    batch's publish raise; now the later line is reported and the rest published."""
    first, other = signup(uid()), signup(uid())
    reused = {**signup(uid()), "event_id": first["event_id"]}
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(orjson.dumps(e).decode()
                              for e in (first, reused, other, first)) + "\n")
    assert await publish_file(services.settings, str(path), quiet=True) == 1
    err = capsys.readouterr().err
    assert f"line 2: event_id {first['event_id']!r} is already used by line 1" in err
    assert "published 2 events; 1 bad lines skipped" in err
    await run_workers(services.settings, burst=True, services=services)
    assert await services.stores.users.get(first["user_id"]) is not None
    assert await services.stores.users.get(other["user_id"]) is not None
    assert await services.stores.users.get(reused["user_id"]) is None
