"""Shared pieces of the benchmarks: ``bench_main`` (what every bench's ``main`` does), the
environment table, statistics, Markdown, JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis

__all__ = [
    "LOG_FORMAT",
    "Outcome",
    "Stopwatch",
    "bench_document",
    "bench_main",
    "check_flushable_dbs",
    "command_line",
    "cpu_model",
    "dynamodb_identity",
    "dynamodb_local_pid",
    "environment",
    "environment_table",
    "fmt_int",
    "fmt_ms",
    "fmt_pct",
    "machine_busy_seconds",
    "markdown_table",
    "median",
    "nproc",
    "percentile",
    "process_cpu_seconds",
    "redis_db",
    "target",
    "version",
    "write_json",
]

ROOT = Path(__file__).resolve().parent.parent
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Parsed = TypeVar("Parsed")


# --- environment ------------------------------------------------------------------------


def nproc() -> int:
    """CPUs this process may run on (what ``nproc`` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 0


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "n/a"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """The command as typed, with the interpreter relative to the repository when inside."""
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(Path.cwd())
    module = sys.modules["__main__"].__spec__
    target = ["-m", module.name] if module is not None else [sys.argv[0]]
    return shlex.join([str(exe), *target, *sys.argv[1:]])


def redis_db(url: str) -> int:
    """The database number a redis:// URL names (0 when it names none)."""
    parsed = urllib.parse.urlparse(url)
    path = parsed.path.strip("/")
    query = urllib.parse.parse_qs(parsed.query)
    if path:
        return int(path)
    return int(query.get("db", ["0"])[0])


def check_flushable_dbs(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        *names: str) -> None:
    """Stop with a usage error unless each of the Redis URL options ``names`` (attribute
    names, e.g. ``cache_redis_url``) names a database other than 0: benches flush them."""
    for name in names:
        option = "--" + name.replace("_", "-")
        try:
            db = redis_db(getattr(args, name))
        except ValueError:
            parser.error(f"{option}: cannot tell the database number")
        if db == 0:
            parser.error(f"{option} must name a database other than 0 (it is flushed)")


async def redis_server_version(redis: Redis) -> str:
    info: dict[str, Any] = await redis.info("server")
    return str(info.get("redis_version", "unknown"))


def dynamodb_identity(endpoint: str | None) -> str:
    """What answers at ``endpoint``: DynamoDB Local (and which jar), moto, or something else."""
    if not endpoint:
        return "AWS (default endpoint)"
    auth = ("AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0")
    request = urllib.request.Request(
        endpoint.rstrip("/") + "/", data=b"{}", method="POST",
        headers={"Content-Type": "application/x-amz-json-1.0",
                 "X-Amz-Target": "DynamoDB_20120810.ListTables", "Authorization": auth},
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            server = response.headers.get("Server", "")
    except OSError as exc:
        return f"not answering ({exc})"
    if "Jetty" in server:
        return f"DynamoDB Local{_local_jar(endpoint)} ({server})"
    if "Werkzeug" in server or "moto" in server.lower():
        return f"moto server ({server})"
    return f"unknown server ({server or 'no Server header'})"


def dynamodb_local_pid(endpoint: str) -> int | None:
    """The process scripts/dynamodb-local.sh started for ``endpoint``'s port, if it runs."""
    port = urllib.parse.urlparse(endpoint).port
    with contextlib.suppress(OSError, ValueError):
        pid = int((ROOT / ".cache" / f"dynamodb-local-{port}.pid").read_text().strip())
        if Path(f"/proc/{pid}").exists():
            return pid
    return None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (Linux) has used so far; NaN if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle, not waiting on I/O)
    since boot, all processes together (Linux); NaN if unknown."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return math.nan
    ticks = [int(x) for x in first[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    busy = sum(ticks[:8]) - idle  # guest time is already counted in user time
    return busy / os.sysconf("SC_CLK_TCK")


def _local_jar(endpoint: str) -> str:
    """The jar the repository's scripts/dynamodb-local.sh started on this port, if it did."""
    port = urllib.parse.urlparse(endpoint).port
    pid_file = ROOT / ".cache" / f"dynamodb-local-{port}.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        for arg in args:
            text = arg.decode(errors="replace")
            if text.endswith("DynamoDBLocal.jar"):
                jar_dir = Path(text).parent.name
                mode = " -inMemory" if b"-inMemory" in args else ""
                return f" {jar_dir}{mode}"
    return ""


async def environment(redis: Redis, redis_url: str, endpoint: str | None) -> dict[str, str]:
    """Everything the result depends on, as label -> value."""
    hiredis = version("hiredis")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": f"{nproc()} CPUs (nproc), {cpu_model()}, {platform.machine()}; "
                   f"load average at start {load_average()}",
        "Python": platform.python_version(),
        "redis-py": f"{version('redis')} (hiredis {hiredis})",
        "aioboto3": f"{version('aioboto3')} (aiobotocore {version('aiobotocore')}, "
                    f"botocore {version('botocore')})",
        "arq": version("arq"),
        "Redis server": f"{await redis_server_version(redis)} at {redis_url}",
        "DynamoDB": f"{endpoint or 'AWS'}: {dynamodb_identity(endpoint)}",
    }


# --- statistics -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 20 samples, p99 is the largest."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Stopwatch:
    """``with Stopwatch() as sw: ...``; then ``sw.seconds``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


@contextlib.contextmanager
def progress(label: str) -> Iterator[None]:
    """A line on stderr before and after a phase (stdout carries only the report)."""
    started = time.monotonic()
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    yield
    print(f"[bench] {label}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


# --- output -----------------------------------------------------------------------------


def fmt_int(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def fmt_pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:.0f}%"


def fmt_ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    ms = seconds * 1000
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; columns after the first are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *(line(r) for r in rows)])


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON (NaN becomes null)."""
    Path(path).write_bytes(
        orjson.dumps(_no_nan(data), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def bench_document(
    name: str, title: str, command: str, environment: dict[str, str], markdown: str,
    figures: Mapping[str, float | None], *, latency_ms: dict[str, list[float]] | None = None,
    throughput: dict[str, dict[str, float]] | None = None,
    axes: dict[str, dict[str, str]] | None = None,
    targets: Sequence[dict[str, Any]] = (), notes: Sequence[str] = (),
    elapsed_s: float | None = None, **extra: Any,
) -> dict[str, Any]:
    """The JSON object every bench writes (see bench/README.md, "JSON shape")."""
    series: dict[str, Any] = {}
    if latency_ms:
        series["latency_ms"] = latency_ms
    if throughput:
        series["throughput"] = throughput
    document: dict[str, Any] = {
        "name": name, "title": title, "command": command, "environment": environment,
        "markdown": markdown, "figures": figures, "series": series,
        "targets": list(targets), "notes": list(notes),
    }
    if axes:
        document["axes"] = axes
    if elapsed_s is not None:
        document["elapsed_s"] = elapsed_s
    document.update(extra)
    return document


def target(text: str, measured: str | float, met: bool | None) -> dict[str, Any]:
    """One entry of a bench document's ``targets`` list."""
    return {"target": text, "measured": measured, "met": met}


def environment_table(env: dict[str, str], command: str) -> str:
    """The environment as a two-column table, the command as its last row."""
    return markdown_table(["", "value"], [[k, v] for k, v in env.items()]
                          + [["command", f"`{command}`"]])


# --- main -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a bench's run hands :func:`bench_main` to print (stdout) and write (--json).

    Printed in order: ``heading`` and a blank line; the environment table (``env`` and
    ``command``) and a blank line; ``markdown``; each of ``after``; ``Total time``.
    """

    markdown: str
    heading: str | None = None
    env: dict[str, str] | None = None
    command: str = ""
    after: Sequence[str] = ()
    elapsed_s: float | None = None
    json_path: str | None = None
    document: Callable[[], dict[str, Any]] | None = None  # built only when it is written
    exit_code: int = 0


def bench_main(
    argv: Sequence[str] | None,
    parse: Callable[[Sequence[str] | None], Parsed],
    run: Callable[[Parsed], Coroutine[Any, Any, Outcome | int]],
    *,
    log_format: str | None = LOG_FORMAT,
    uvloop: bool = False,
) -> int:
    """Every bench's ``main``: parse the command line, set up logging (warnings on
    stderr; ``log_format`` None leaves logging alone), run, then print the report and
    write its JSON document. A run that returns a number exits with it, printing nothing
    (it said on stderr why it could not measure)."""
    options = parse(argv)
    if log_format is not None:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=log_format)
    if uvloop:
        with contextlib.suppress(ImportError):
            import uvloop as loop

            loop.install()
    outcome: Outcome | int = asyncio.run(run(options))
    if isinstance(outcome, int):
        return outcome
    if outcome.heading is not None:
        print(f"{outcome.heading}\n")
    if outcome.env is not None:
        print(environment_table(outcome.env, outcome.command))
        print()
    print(outcome.markdown)
    for line in outcome.after:
        print(line)
    if outcome.elapsed_s is not None:
        print(f"\nTotal time: {outcome.elapsed_s:.0f} s.")
    if outcome.json_path and outcome.document is not None:
        write_json(outcome.json_path, outcome.document())
    return outcome.exit_code
