"""Run every benchmark and write the performance report.

    .venv/bin/python -m bench.report [--quick] [--only fanout,sf,...] [--out bench/out]
    make bench                         (BENCH_ARGS=--quick for a short run)

Each bench runs as a subprocess, ``python -m bench.<name> --json
bench/out/<name>.json [--quick]``, pointed at the benches' own services: Redis
database 8 (flushed before each bench; never 0) and a DynamoDB Local on port
8775, started here with scripts/dynamodb-local.sh (and stopped at the end if
this run started it). A bench that takes a separate cache database
(``--cache-redis-url``) gets database 1 of a private ``redis-server`` (no
persistence) that this run starts on a free port and stops; ``bench.memory``
starts its own. A bench that does not exist yet, or fails, gets a
"not run: <reason>" line instead of its section. The report is built from the
JSON documents only (bench/README.md, "JSON shape"):

- ``bench/out/report.md``: a headline table of every target target checked,
  then a section per bench: machine, date, command, versions, its tables,
  and its plots;
- ``bench/out/<name>-latency.png`` (latency distributions) and
  ``bench/out/<name>-throughput.png`` (rate against follower or worker count);
- ``bench/out/report.json``: every figure (``<bench>.<figure>``), every target,
  and each bench's whole document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import math
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bench._common import (
    ROOT,
    cpu_model,
    dynamodb_identity,
    load_average,
    markdown_table,
    nproc,
    redis_db,
    write_json,
)
from feed._embedded import free_port

BENCHES = ("sf", "memory", "fanout", "reads", "spike", "koo_ops", "client_cpu", "events",
           "scaling", "capacity", "queue", "stream", "notifications", "failover", "privacy")
REDIS_URL = "redis://127.0.0.1:6379/8"
DYNAMODB_PORT = 8775
BENCH_TIMEOUT = 45 * 60  # seconds one bench may take before it is stopped
TAIL = 12  # lines of a failed bench's stderr quoted in the report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every bench")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {BENCHES}")
    parser.add_argument("--out", default="bench/out", help="output directory")
    parser.add_argument("--redis-url", default=REDIS_URL,
                        help="the benches' Redis database (flushed; not 0)")
    parser.add_argument("--dynamodb-port", type=int, default=DYNAMODB_PORT,
                        help="port of the DynamoDB Local started for the benches")
    parser.add_argument("--timeout", type=float, default=BENCH_TIMEOUT,
                        help="seconds one bench may run (default 2700)")
    args = parser.parse_args(argv)
    if redis_db(args.redis_url) == 0:
        parser.error("--redis-url must name a database other than 0 (it is flushed)")
    return args


# --- services ---------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[str | None]:
    """A throw-away redis-server on a free port (database 1), or None without the binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def dynamodb_local(port: int, log: list[str]) -> Iterator[str | None]:
    """DynamoDB Local on ``port`` (started unless already ours and running); its URL."""
    script = ["bash", str(ROOT / "scripts" / "dynamodb-local.sh")]
    running = subprocess.run([*script, "status", str(port)], cwd=ROOT, capture_output=True,
                             check=False).returncode == 0
    started = False
    if not running:
        done = subprocess.run([*script, "start", str(port)], cwd=ROOT, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            log.append(f"DynamoDB Local did not start on port {port}: "
                       f"{(done.stdout + done.stderr).strip().splitlines()[-1:]}")
            yield None
            return
        started = True
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if started:
            subprocess.run([*script, "stop", str(port)], cwd=ROOT, capture_output=True,
                           check=False)


def flush(url: str) -> None:
    async def go() -> None:
        redis = Redis.from_url(url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()

    asyncio.run(go())


# --- running the benches ----------------------------------------------------------------


def options_of(name: str) -> set[str]:
    """The long options ``bench.<name>`` accepts (from its --help)."""
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=120)
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", done.stdout))


def command_for(name: str, json_path: Path, quick: bool, redis_url: str,
                cache_url: str | None, endpoint: str | None) -> list[str]:
    accepted = options_of(name)
    command = [sys.executable, "-m", f"bench.{name}", "--json", str(json_path)]
    if quick and "--quick" in accepted:
        command.append("--quick")
    if name != "memory":  # it measures on a redis-server of its own
        for option in ("--redis-url", "--queue-redis-url"):
            if option in accepted:
                command += [option, redis_url]
        if "--cache-redis-url" in accepted:
            command += ["--cache-redis-url", cache_url or redis_url]
    if endpoint and "--dynamodb-endpoint" in accepted:
        command += ["--dynamodb-endpoint", endpoint]
    if name == "fanout" and "--sf" in accepted:
        command += ["--sf", "auto"]
    return command


def relative(command: Sequence[str]) -> str:
    parts = []
    for part in command:
        with contextlib.suppress(ValueError):
            part = str(Path(part).relative_to(ROOT))
        parts.append(part)
    return " ".join(parts)


def shown_path(path: Path) -> Path:
    """A path as the report shows it: relative to the repository when inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def run_bench(name: str, out: Path, args: argparse.Namespace, endpoint: str | None,
              cache_url: str | None) -> dict[str, Any]:
    """Run one bench; its document, or a status saying why there is none."""
    if importlib.util.find_spec(f"bench.{name}") is None:
        return {"status": "not run: bench/" + name + ".py does not exist yet"}
    json_path = out / f"{name}.json"
    json_path.unlink(missing_ok=True)
    log_path = out / f"{name}.log"
    shown = shown_path(json_path)
    command = command_for(name, shown, args.quick, args.redis_url, cache_url, endpoint)
    for url in (args.redis_url, cache_url):
        if url:
            flush(url)
    print(f"[report] {name}: {relative(command)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with log_path.open("wb") as log:
        try:
            done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=args.timeout, check=False)
            code: int | None = done.returncode
        except subprocess.TimeoutExpired:
            code = None
    wall = time.monotonic() - started
    for url in (args.redis_url, cache_url):
        if url:
            flush(url)
    print(f"[report] {name}: exit {code}, {wall:.0f} s", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"wall_s": wall, "exit": code, "command": relative(command),
                              "log": str(shown_path(log_path))}
    if code != 0 or not json_path.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-TAIL:]
        reason = "timed out" if code is None else f"exit {code}"
        if code == 0:
            reason = "wrote no JSON"
        result.update(status=f"not run: {reason} (see {result['log']})", tail=tail)
        return result
    result.update(status="ok", document=orjson.loads(json_path.read_bytes()))
    return result


# --- plots ------------------------------------------------------------------------------


def plots(name: str, document: dict[str, Any], out: Path) -> list[str]:
    """PNG files for the bench's series; their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    series = document.get("series") or {}
    latency = {k: [float(x) for x in v if x is not None]
               for k, v in (series.get("latency_ms") or {}).items()}
    latency = {k: v for k, v in latency.items() if v}
    if latency:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, samples in latency.items():
            ordered = sorted(samples)
            n = len(ordered)
            ax.step(ordered, [(i + 1) / n * 100 for i in range(n)], where="post",
                    label=f"{label} (n={n:,}, p50 {ordered[n // 2]:.2f} ms)")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("share of requests at or below (%)")
        ax.set_title(f"{document.get('title', name)}: latency distributions")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out / f"{name}-latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path.name)
    throughput = {k: v for k, v in (series.get("throughput") or {}).items() if v}
    if throughput:
        axes = (document.get("axes") or {}).get("throughput") or {}
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, points in throughput.items():
            xy = sorted((float(x), float(y)) for x, y in points.items() if y is not None)
            ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=label)
        xs = {float(x) for points in throughput.values() for x in points}
        if len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(str(axes.get("x", "followers")))
        ax.set_ylabel(str(axes.get("y", "per second")) + " (log scale)")
        ax.set_title(f"{document.get('title', name)}: throughput")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{name}-throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path.name)
    return made


# --- the report -------------------------------------------------------------------------


def fmt_measured(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.3g}"
    return str(value)


def met_cell(met: Any) -> str:
    return {True: "met", False: "**not met**"}.get(met, "not measured")


def build(results: dict[str, dict[str, Any]], header: dict[str, str], out: Path
          ) -> tuple[str, dict[str, Any]]:
    lines = ["# Performance report", "", markdown_table(["", "value"],
                                                       [[k, v] for k, v in header.items()])]
    all_targets: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    for name, result in results.items():
        document = result.get("document")
        if not document:
            continue
        for key, value in (document.get("figures") or {}).items():
            figures[f"{name}.{key}"] = value
        for t in document.get("targets") or []:
            all_targets.append({"bench": name, **t})
    lines += ["", "## Targets", ""]
    if all_targets:
        lines.append(markdown_table(
            ["bench", "target", "measured", "result"],
            [[t["bench"], str(t.get("target")), fmt_measured(t.get("measured")),
              met_cell(t.get("met"))] for t in all_targets]))
        count = {k: sum(1 for t in all_targets if t.get("met") is k) for k in (True, False)}
        lines += ["", f"{count[True]} met, {count[False]} not met, "
                  f"{len(all_targets) - count[True] - count[False]} not measured."]
    else:
        lines.append("No bench reported a target.")
    lines += ["", "## Benches", "", markdown_table(
        ["bench", "status", "wall time"],
        [[name, r["status"], f"{r['wall_s']:.0f} s" if "wall_s" in r else "-"]
         for name, r in results.items()])]
    for name, result in results.items():
        document = result.get("document")
        if not document:
            lines += ["", f"## {name}", "", result["status"]]
            if result.get("tail"):
                lines += ["", "```", *result["tail"], "```"]
            continue
        lines += ["", f"## {document.get('title', name)} (`bench.{name}`)", ""]
        env = dict(document.get("environment") or {})
        env["command"] = f"`{document.get('command', result.get('command'))}`"
        env["wall time"] = f"{result['wall_s']:.0f} s"
        lines.append(markdown_table(["", "value"], [[k, str(v)] for k, v in env.items()]))
        lines += ["", str(document.get("markdown", "")).strip()]
        notes = [n for n in document.get("notes") or [] if f"- {n}" not in lines[-1]]
        lines += [f"- {n}" for n in notes]
        try:
            images = plots(name, document, out)
        except Exception as exc:  # a plot must not cost the report
            images = []
            lines += ["", f"(plots failed: {type(exc).__name__}: {exc})"]
        result["plots"] = images
        lines += ["", *[f"![{image}]({image})" for image in images]]
    summary = {
        "header": header, "targets": all_targets, "figures": figures,
        "benches": {name: {k: v for k, v in r.items() if k != "tail"}
                    for name, r in results.items()},
    }
    return "\n".join(lines) + "\n", summary


def ensure_matplotlib() -> str | None:
    """Install the bench extra if matplotlib is missing; an error line, or None."""
    if importlib.util.find_spec("matplotlib") is not None:
        return None
    done = subprocess.run(["bash", str(ROOT / "scripts" / "venv.sh"), "bench"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"could not install the bench extra: {done.stderr.strip()[-300:]}"
    importlib.invalidate_caches()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    out = (ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = ensure_matplotlib()
    if problem:
        print(f"[report] {problem}", file=sys.stderr)
        return 3
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n]
    unknown = set(names) - set(BENCHES)
    if unknown:
        print(f"[report] unknown bench(es): {sorted(unknown)}", file=sys.stderr)
        return 2
    log: list[str] = []
    from bench.sf import client as sf_client

    if "sf" in names or "fanout" in names or "memory" in names:
        _, output = sf_client.ensure()
        print(output, file=sys.stderr)
    header = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": f"{nproc()} CPUs (nproc), {cpu_model()}, {platform.machine()}; "
                   f"load average at start {load_average()}",
        "Python": platform.python_version(),
        "command": "`" + relative([sys.executable, "-m", "bench.report",
                                   *(argv if argv is not None else sys.argv[1:])]) + "`",
        "Redis": args.redis_url,
    }
    results: dict[str, dict[str, Any]] = {}
    with dynamodb_local(args.dynamodb_port, log) as endpoint, private_redis() as cache_url:
        header["DynamoDB"] = (f"{endpoint}: {dynamodb_identity(endpoint)}" if endpoint
                              else "not available")
        header["Redis"] += (f"; a bench's separate cache database: {cache_url} (a private "
                            "redis-server)" if cache_url else "")
        for name in names:
            results[name] = run_bench(name, out, args, endpoint, cache_url)
    header["wall time"] = f"{time.monotonic() - started:.0f} s"
    for line in log:
        header.setdefault("notes", "")
        header["notes"] += line + " "
    text, summary = build(results, header, out)
    (out / "report.md").write_text(text)
    write_json(str(out / "report.json"), summary)
    print(f"[report] wrote {out / 'report.md'} and report.json in {header['wall time']}",
          file=sys.stderr)
    for t in summary["targets"]:
        print(f"  {met_cell(t.get('met')):>13}  {t['bench']}: {t.get('target')} -> "
              f"{fmt_measured(t.get('measured'))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
