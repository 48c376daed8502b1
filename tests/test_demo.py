"""``feed demo`` as a newcomer meets it: a clean tour, on its own stand-ins only.

Pass criteria: a small run (40 users) exits 0 with connection variables pointing at
nothing reachable (it never follows them, and says so in one line); neither stdout nor
stderr holds a JSON log line or a log record below WARNING; the worker serves no
metrics (so a busy metrics port is no warning); a graph without celebrities says so
and names the threshold; the tour ends with what to try next. ``--serve`` on a taken
port fails before any load with a ``feed:`` message and exit 2, and on a free port
serves the API on it. ``make test`` runs the demo as a step of its own and counts its
failure like a failed test run.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from feed.demo import DEMO_TABLE_PREFIX, IGNORED_VARIABLES, demo_settings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
USERS = "40"  # the smallest graph that still has active readers and tail authors
# Addresses where nothing answers: the demo must not even try them.
UNREACHABLE = {
    "FEED_DYNAMODB_ENDPOINT": "http://127.0.0.1:9",
    "FEED_REDIS_URL": "redis://127.0.0.1:9/0",
    "FEED_TABLE_PREFIX": "real_",
}


def _env(**extra: str) -> dict[str, str]:
    """This environment without FEED_* variables (the client under test aside)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FEED_") or k == "FEED_DYNAMODB_CLIENT"}
    env.update(extra)
    return env


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "feed.cli", "demo", "--users", USERS, *args]


def _json_lines(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        if not line.lstrip().startswith("{"):
            continue
        try:
            json.loads(line)
        except ValueError:
            continue
        found.append(line)
    return found


@pytest.fixture(scope="module")
def held_port() -> Iterator[int]:
    """A port some other process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def run(held_port: int) -> subprocess.CompletedProcess[str]:
    """One whole run; every test of it fails unless it went to the end."""
    env = _env(**UNREACHABLE, FEED_WORKER_METRICS_PORT=str(held_port))
    done = subprocess.run(_demo(), capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


# ---------------------------------------------------------------------------
# the settings, without running anything


def test_connection_variables_are_overridden_and_named_once() -> None:
    env = {**UNREACHABLE, "FEED_REGIONS": "sa-east-1=http://127.0.0.1:9"}
    settings, notes = demo_settings(Settings.from_env(env), env)
    assert settings.dynamodb_endpoint is None  # the embedded one is filled in later
    assert settings.table_prefix == DEMO_TABLE_PREFIX
    assert settings.regions == {}
    assert "127.0.0.1:9" not in settings.redis_url + settings.cache_redis_url
    assert settings.worker_metrics_port == 0
    ignoring = [n for n in notes if n.startswith("ignoring ")]
    assert len(ignoring) == 1, notes
    for name in (*UNREACHABLE, "FEED_REGIONS"):
        assert name in ignoring[0]


def test_nothing_is_said_to_be_ignored_when_nothing_is_set() -> None:
    settings, notes = demo_settings(Settings(), {})
    assert not [n for n in notes if n.startswith("ignoring ")], notes
    assert settings.worker_metrics_port == 0
    assert settings.api_tokens


def test_ignored_variables_are_settings_that_exist() -> None:
    source = (ROOT / "config" / "settings.py").read_text(encoding="utf-8")
    for name in IGNORED_VARIABLES:
        assert f'"{name.removeprefix("FEED_")}"' in source, name


# ---------------------------------------------------------------------------
# one small run


@pytest.mark.slow
def test_the_demo_runs_on_its_stand_ins_whatever_the_environment_says(
    run: subprocess.CompletedProcess[str],
) -> None:
    ignoring = [line for line in run.stdout.splitlines() if "ignoring" in line]
    assert len(ignoring) == 1, run.stdout
    for name in UNREACHABLE:
        assert name in ignoring[0]
    assert "Summary" in run.stdout
    assert "Ranked feed of" in run.stdout


@pytest.mark.slow
def test_the_output_has_no_json_logs_and_nothing_below_warning(
    run: subprocess.CompletedProcess[str],
) -> None:
    assert _json_lines(run.stdout) == []
    assert _json_lines(run.stderr) == []
    for level in ("DEBUG", "INFO"):
        assert f" {level} " not in run.stderr, run.stderr[-3000:]


@pytest.mark.slow
def test_the_worker_serves_no_metrics(
    run: subprocess.CompletedProcess[str],
) -> None:
    # FEED_WORKER_METRICS_PORT names a busy port: a worker that tried it would warn.
    assert "metrics" not in run.stderr, run.stderr[-3000:]


@pytest.mark.slow
def test_a_graph_without_celebrities_says_so_and_names_the_threshold(
    run: subprocess.CompletedProcess[str],
) -> None:
    graph = next(line for line in run.stdout.splitlines() if line.strip().startswith("graph"))
    assert "no celebrity" in graph
    assert "60 followers" in graph
    assert not graph.rstrip().endswith("celebrities")


@pytest.mark.slow
def test_the_tour_ends_with_what_to_try_next(
    run: subprocess.CompletedProcess[str],
) -> None:
    last = run.stdout.strip().splitlines()[-1]
    assert "feed demo --serve" in last
    assert "docs/api.md" in last


# ---------------------------------------------------------------------------
# --serve


def test_serve_on_a_taken_port_fails_at_once(held_port: int) -> None:
    started = time.monotonic()
    done = subprocess.run(_demo("--serve", "--port", str(held_port)), capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=_env(), check=False)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.startswith("feed: "), done.stderr
    assert f"127.0.0.1:{held_port}" in done.stderr
    assert "--port" in done.stderr
    # Nothing was loaded first.
    assert done.stdout == ""
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_serve_keeps_the_api_up_on_the_port_it_claimed(tmp_path: Path) -> None:
    port = free_port()
    errors = tmp_path / "stderr"
    with errors.open("w") as stderr:
        proc = subprocess.Popen(_demo("--serve", "--port", str(port)),
                                stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT,
                                env=_env())
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        token = ""
        deadline = time.monotonic() + 240
        while not token:
            assert proc.poll() is None, errors.read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo never started serving"
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line.startswith("Serving the API on"):
                assert f"http://127.0.0.1:{port}" in line
                token = line.rsplit("Token: ", 1)[1].strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/users/user0010/feed?limit=3",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
            assert "items" in json.loads(answer.read())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, errors.read_text()[-3000:]


# ---------------------------------------------------------------------------
# make test


def _demo_step() -> str:
    """scripts/test.sh's demo step, from its comment to the next step."""
    script = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    start = script.index("# The demo needs no services")
    return script[start:script.index('step "services"', start)]


@pytest.mark.parametrize("code", [0, 3])
def test_make_test_runs_the_demo_and_counts_its_failure(tmp_path: Path, code: int) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    feed = venv / "bin" / "feed"
    feed.write_text(f'#!/bin/sh\necho "$FEED_CELEBRITY_FOLLOWERS" "$@" >"{tmp_path}/args"\n'
                    f'exit {code}\n', encoding="utf-8")
    feed.chmod(0o755)
    program = ("set -euo pipefail\nfailed=()\nstep() { echo \"==> $*\"; }\n" + _demo_step()
               + 'for f in ${failed[@]+"${failed[@]}"}; do echo "failed: $f"; done\n')
    env = {k: v for k, v in os.environ.items() if k != "FEED_TEST_DEMO_USERS"}
    done = subprocess.run(["bash", "-c", program], env={**env, "VENV": str(venv)},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "==> feed demo" in done.stdout
    # A lower celebrity threshold, so that the small graph has authors pulled at read time.
    called = (tmp_path / "args").read_text(encoding="utf-8").split()
    assert called == ["15", "demo", "--users", "40"]
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed: ")]
    assert failed == ([] if code == 0 else [f"failed: feed demo (exit {code})"])
