"""Metrics across the API's processes, and the build they report.

`feed api --workers 2` runs as a real process. Requests and scrapes are sent on fresh
connections until both processes have served some of each (read from the files they
share), and every scrape must show the requests of both: a scrape that saw only the
process answering it would come up short.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from feed._embedded import free_port
from feed.services import Services

TOKEN = "test-token-123456"
DURATION = "feed_http_request_duration_seconds"
BATCH = 10


def _env(settings: Settings, tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
        "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "FEED_TABLE_PREFIX": settings.table_prefix,
        "FEED_API_TOKENS": TOKEN,
        "FEED_WORKER_METRICS_PORT": "0",
        "FEED_LOG_LEVEL": "WARNING",
        "TMPDIR": str(tmp),  # where `feed api` makes its metrics directory
    }


def _spawn_api(settings: Settings, tmp: Path, port: int, log: Path
               ) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "feed.cli", "api", "--port", str(port), "--workers", "2"],
            env=_env(settings, tmp), stdout=sink, stderr=sink)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _requests(text: str, route: str) -> float:
    """Requests to ``route`` in a /metrics answer."""
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == f"{DURATION}_count" and sample.labels["route"] == route)


def _per_process(metrics_dir: Path, route: str) -> dict[str, float]:
    """Requests to ``route`` recorded by each process, from its own file."""
    counts: dict[str, float] = {}
    for path in metrics_dir.glob("histogram_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        merged = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counts[pid] = sum(
            sample.value for metric in merged for sample in metric.samples
            if sample.name == f"{DURATION}_count" and sample.labels["route"] == route)
    return counts


async def _recorded(metrics_dir: Path, route: str, total: int) -> dict[str, float]:
    """The per-process counts once all ``total`` requests are in them (a request is
    recorded just after its answer is sent)."""
    deadline = time.monotonic() + 10
    while sum((counts := _per_process(metrics_dir, route)).values()) < total:
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.05)
    assert sum(counts.values()) == total, counts
    return counts


def _busy(counts: dict[str, float]) -> int:
    return sum(1 for n in counts.values() if n)


@pytest.mark.slow
async def test_every_scrape_shows_the_requests_of_every_api_process(
    services: Services, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    log = tmp_path / "api.log"
    api = _spawn_api(services.settings, tmp, port, log)
    # No keep-alive: each request is a new connection, which either process may accept.
    limits = httpx.Limits(max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                     limits=limits) as client:
            deadline = time.monotonic() + 60
            while True:  # /readyz, so that waiting counts no /healthz request
                assert api.poll() is None, _tail(log)
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, _tail(log)
                await asyncio.sleep(0.2)
            [metrics_dir] = tmp.glob("feed-api-metrics-*")
            assert metrics_dir.stat().st_mode & 0o777 == 0o700

            sent = 0
            while True:
                replies = await asyncio.gather(*(client.get("/healthz") for _ in range(BATCH)))
                assert [r.status_code for r in replies] == [200] * BATCH
                sent += BATCH
                if _busy(await _recorded(metrics_dir, "healthz", sent)) == 2:
                    break
                assert sent < 1000, "one process accepted every connection"

            scrapes = 0
            while True:
                replies = await asyncio.gather(*(client.get("/metrics") for _ in range(10)))
                for reply in replies:
                    assert reply.status_code == 200
                    assert _requests(reply.text, "healthz") == sent
                scrapes += len(replies)
                if _busy(await _recorded(metrics_dir, "metrics_endpoint", scrapes)) == 2:
                    break
                assert scrapes < 200, "one process answered every scrape"

            build = [s for f in text_string_to_metric_families(replies[0].text)
                     for s in f.samples if s.name == "feed_build_info"]
            assert [(s.labels, s.value) for s in build] == [
                ({"version": importlib.metadata.version("koo-feed"),
                  "python": platform.python_version()}, 1.0)]
        api.send_signal(signal.SIGTERM)
        assert api.wait(40) == 0, _tail(log)
    finally:
        if api.poll() is None:
            api.kill()
            api.wait(10)
    assert not metrics_dir.exists(), "the metrics directory outlived the run"


def test_the_build_is_in_this_process_registry() -> None:
    # What a `feed worker` serves: its own registry, with the build in it.
    import feed.metrics  # noqa: F401  (registers the metrics)

    labels = {"version": importlib.metadata.version("koo-feed"),
              "python": platform.python_version()}
    assert REGISTRY.get_sample_value("feed_build_info", labels) == 1.0


def test_the_cli_does_not_import_prometheus_client() -> None:
    # `feed api` must set PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported:
    # it decides then, once, whether values live in memory or in the shared directory.
    code = "import sys, feed.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
