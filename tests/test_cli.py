"""The ``feed`` command line: publish, tables, backfill, help, configuration errors."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from feed.backfill import BackfillRun, run_backfill, run_id_for
from feed.cli import main, publish_file, service_failure
from feed.errors import CacheUnavailable
from feed.services import Services
from tests.conftest import CACHE_URL, QUEUE_URL, uid
from tests.helpers import apply_all, follow, koo, signup
from workers.runner import QueueOutage, backoff_delays, run_workers

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


@pytest.mark.parametrize(("flag", "value"), [
    ("--chunk", "0"), ("--chunk", "-5"), ("--chunk", "ten"),
    ("--timeout", "-1"), ("--timeout", "nan"), ("--timeout", "inf"),
])
def test_backfill_refuses_a_chunk_or_timeout_out_of_range(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["backfill", "timelines", "--all", flag, value])
    assert stopped.value.code == 2
    assert flag in capsys.readouterr().err


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


# Nothing listens on port 1: connections to it are refused at once.
CLOSED_REDIS = "redis://:redis-password-9@127.0.0.1:1/0"
CLOSED_DYNAMODB = "http://127.0.0.1:1"


def _env(**variables: str) -> dict[str, str]:
    """The environment of a `feed` process whose services are all at closed ports, with
    ``variables`` on top; warnings and errors only, so a failure's stderr is its one line."""
    return {**os.environ, "FEED_REDIS_URL": CLOSED_REDIS, "FEED_CACHE_REDIS_URL": CLOSED_REDIS,
            "FEED_DYNAMODB_ENDPOINT": CLOSED_DYNAMODB, "FEED_REGIONS": "",
            "FEED_WORKER_METRICS_PORT": "0", "FEED_LOG_LEVEL": "WARNING",
            "FEED_LOG_JSON": "true", **variables}


@pytest.mark.parametrize("argv", [
    ["backfill", "timelines", "--all", "--dry-run"],
    ["backfill", "recommendations", "--user", "u1", "--no-wait"],
    ["publish", "EVENTS"],
    ["worker", "--burst"],
])
def test_a_queue_that_does_not_answer_is_one_line_naming_its_variable(
    argv: list[str], tmp_path: Path,
) -> None:
    """These ended in a traceback, a line without the variable, or (worker --burst) a
    retry every second forever."""
    events = tmp_path / "events.jsonl"
    events.write_text(orjson.dumps(signup(uid())).decode() + "\n")
    done = _feed(*[str(events) if a == "EVENTS" else a for a in argv], env=_env())
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith(
        "feed: the queue's Redis at redis://127.0.0.1:1/0 is unavailable "
        "(check FEED_REDIS_URL): "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "redis-password-9" not in done.stderr


@pytest.mark.parametrize("argv", [
    ["tables", "create"],
    ["backfill", "timelines", "--all", "--dry-run"],
])
def test_a_dynamodb_that_does_not_answer_is_one_line_naming_its_variable(
    argv: list[str],
) -> None:
    """The queue answers (the tests' Redis); DynamoDB's endpoint is a closed port."""
    done = _feed(*argv, env=_env(FEED_REDIS_URL=QUEUE_URL, FEED_CACHE_REDIS_URL=CACHE_URL))
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith(
        f"feed: DynamoDB at {CLOSED_DYNAMODB} is unavailable "
        "(check FEED_DYNAMODB_ENDPOINT): "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_the_cache_that_does_not_answer_is_named_with_its_own_variable() -> None:
    """No command but the API reaches the cache outside a job: the mapping on its own."""
    settings = Settings(redis_url="redis://127.0.0.1:6379/0",
                        cache_redis_url="redis://:cache-secret@10.0.0.7:6380/2")
    line = service_failure(CacheUnavailable("redis: gone", "ConnectionError"), settings)
    assert line == ("the cache's Redis at redis://10.0.0.7:6380/2 is unavailable "
                    "(check FEED_CACHE_REDIS_URL): redis: gone")


def test_a_bug_is_not_dressed_up_as_a_service_failure() -> None:
    assert service_failure(ValueError("a bug"), Settings()) is None


def test_a_bad_user_id_is_a_usage_error_not_a_traceback() -> None:
    done = _feed("backfill", "timelines", "--user", "not an id", "--dry-run", env=_env())
    assert done.returncode == 2, done.stderr
    assert "argument --user: user_id must be" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_batch_the_publisher_would_refuse_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(orjson.dumps(signup(uid())).decode() for _ in range(501)))
    done = _feed("publish", str(path), "--batch", "501", env=_env())
    assert done.returncode == 2, done.stderr
    assert "argument --batch: must be 1-500, not 501" in done.stderr


def test_a_line_that_is_not_utf8_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xff\xfe{}\n")
    done = _feed("publish", str(path), "--quiet", env=_env())
    assert done.returncode == 1, done.stderr
    assert "line 1: not JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert "published 0 events; 1 bad lines skipped" in done.stderr


def test_the_help_lists_every_exit_code_the_docs_list() -> None:
    done = _feed("--help")
    listed = set(re.findall(r"^ {2}(\d+) ", done.stdout, re.MULTILINE))
    section = CONFIGURATION_DOC.read_text().split("## Exit codes", 1)[1]
    documented = set(re.findall(r"^\| (\d+) \|", section, re.MULTILINE))
    assert listed == documented == {"0", "1", "2", "3", "4", "130"}
    for variable in ("FEED_REDIS_URL", "FEED_CACHE_REDIS_URL", "FEED_DYNAMODB_ENDPOINT"):
        assert variable in done.stdout


def test_a_worker_without_its_queue_warns_naming_it_keeps_trying_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """It used to retry every second forever, saying only "queue Redis unreachable"."""
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "feed.cli", "worker"], stdout=sink, stderr=sink,
            env=_env(FEED_LOG_JSON="false"))
    try:
        deadline = time.monotonic() + 30
        while "check FEED_REDIS_URL" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # Retries after about 1 s and 2 s follow, and the warning is not repeated.
        time.sleep(3.5)
        assert worker.poll() is None, log.read_text()
        text = log.read_text()
        assert text.count("does not answer") == 1, text
        assert "address=redis://127.0.0.1:1/0" in text
        assert "redis-password-9" not in text
        assert "Traceback" not in text
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0, log.read_text()
        assert time.monotonic() - started < 5
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)


def test_the_reconnect_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    def first(rand: float, count: int = 8) -> list[float]:
        delays = backoff_delays(1.0, 30.0, rand=lambda: rand)
        return [next(delays) for _ in range(count)]

    assert first(1.0) == [1, 2, 4, 8, 16, 30, 30, 30]
    assert first(0.0) == [0.5, 1, 2, 4, 8, 15, 15, 15]
    jittered = backoff_delays(1.0, 30.0)
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30]
    delays = [next(jittered) for _ in ceilings]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) > 1  # jitter: not the same sequence for every worker


def test_an_outage_warns_at_first_then_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = QueueOutage("redis://:sekret-pw@10.0.0.9:6379/0", warn_every=60.0)
    with caplog.at_level(logging.INFO, logger="workers.runner"):
        for _ in range(5):
            outage.failed(ConnectionError("refused"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "check FEED_REDIS_URL" in warnings[0].getMessage()
    assert "redis://10.0.0.9:6379/0" in warnings[0].getMessage()
    assert "sekret-pw" not in warnings[0].getMessage()
    assert outage.failures == 5
    caplog.clear()
    outage.warned_at = time.monotonic() - 61
    with caplog.at_level(logging.INFO, logger="workers.runner"):
        outage.failed(ConnectionError("refused"))
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
