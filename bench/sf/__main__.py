"""Stream-Framework 1.4.0 on its own: fan-out, 25-item hydrated read, memory per entry.

    .venv/bin/python -m bench.sf [--quick] [--variants current,redis2] [--json PATH]
        [--redis-url redis://127.0.0.1:6379/8]

Builds (once) the venvs of bench/sf-env.sh, then runs ``bench/sf/runner.py
measure`` in each variant, one after the other, on the same Redis database
(flushed before and after; database 0 is refused), and reports them side by
side. The comparison with the service's own fan-out, in the same run and
interleaved chunk by chunk, is in ``bench.fanout``; the memory comparison in
``bench.memory``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from bench._common import (
    Outcome,
    bench_document,
    bench_main,
    command_line,
    environment,
    fmt_int,
    markdown_table,
    redis_db,
)
from bench.sf import client

FULL = {"followers": "1000,10000,100000", "reads": "2000", "timelines": "300",
        "min-entries": "20000"}
QUICK = {"followers": "1000,10000", "reads": "500", "timelines": "100", "min-entries": "5000"}
REFERENCE_FANOUT = {"current": "4,300-4,900", "redis2": "10,500-17,500"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sf",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 followers")
    parser.add_argument("--variants", default=",".join(client.VARIANTS),
                        help="current, redis2 (default both)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8",
                        help="a dedicated database: it is flushed")
    parser.add_argument("--json", metavar="PATH")
    return parser.parse_args(argv)


async def flush(url: str) -> None:
    redis = Redis.from_url(url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def run_variant(variant: str, url: str, sizes: dict[str, str]) -> dict[str, Any]:
    command = [str(client.python(variant)), str(client.RUNNER), "measure", "--redis-url", url,
               *[x for k, v in sizes.items() for x in (f"--{k}", v)]]
    print(f"[bench] sf {variant}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=client.ROOT, capture_output=True, check=False)
    sys.stderr.write(done.stderr.decode(errors="replace"))
    if done.returncode != 0:
        raise RuntimeError(f"runner ({variant}) exited {done.returncode}")
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def report(results: dict[str, dict[str, Any]], notes: list[str]) -> tuple[str, dict[str, Any]]:
    figures: dict[str, float | None] = {}
    throughput: dict[str, dict[str, float]] = {}
    latency: dict[str, list[float]] = {}
    targets: list[dict[str, Any]] = []  # its target (3x) is checked in bench.fanout
    out = ["### Variants", ""]
    out.append(markdown_table(
        ["variant", "stream-framework", "redis-py", "hiredis", "celery", "shims applied"],
        [[v, r["versions"]["stream-framework"], r["versions"]["redis-py"],
          r["versions"]["hiredis"], r["versions"].get("celery", "-"),
          str(len(r["versions"]["shims"]))] for v, r in results.items()]))
    out += ["", "### Fan-out into Redis (entries/s)", ""]
    sizes = sorted({f["followers"] for r in results.values() for f in r["fanout"]})
    rows = []
    for variant, r in results.items():
        by_size = {f["followers"]: f for f in r["fanout"]}
        label = f"Stream-Framework ({variant})"
        throughput[label] = {str(n): by_size[n]["entries_per_s"] for n in sizes if n in by_size}
        for n, f in by_size.items():
            figures[f"{variant}.fanout.{n}.entries_per_s"] = f["entries_per_s"]
        rows.append([variant, *[fmt_int(by_size[n]["entries_per_s"]) if n in by_size else "-"
                                for n in sizes], REFERENCE_FANOUT.get(variant, "-")])
    out.append(markdown_table(["variant", *[f"{n:,} followers" for n in sizes],
                               "target"], rows))
    out += ["", "Manager.create_fanout_tasks with Celery tasks run eagerly (chunks of 100 "
            "followers, its default); each follower's add_many sends its own pipeline: one "
            "round trip per follower.", "", "### 25-item hydrated read (ms)", ""]
    rows = []
    for variant, r in results.items():
        read = r["read"]
        latency[f"Stream-Framework read ({variant})"] = read["latency_ms"]
        figures[f"{variant}.read25.p50_ms"] = read["p50_ms"]
        figures[f"{variant}.read25.p99_ms"] = read["p99_ms"]
        rows.append([variant, str(read["samples"]), f"{read['p50_ms']:.2f}",
                     f"{read['p99_ms']:.2f}", "0.7 / 1.2-1.4"])
    out.append(markdown_table(["variant", "reads", "p50", "p99", "target p50 / p99"], rows))
    out += ["", "`feed[:25]` on a RedisFeed holding 100 entries: ZREVRANGEBYSCORE, then the "
            "activities from its activity storage (a hash), deserialized.", "",
            "### Redis memory per cached timeline entry (bytes)", ""]
    rows = []
    for variant, r in results.items():
        for m in r["memory"]:
            enc = ", ".join(f"{k} x{v}" for k, v in m["encodings"].items())
            figures[f"{variant}.memory.{m['entries']}.memory_usage_bytes"] = (
                m["memory_usage_bytes_per_entry"])
            figures[f"{variant}.memory.{m['entries']}.used_memory_delta_bytes"] = (
                m["used_memory_delta_bytes_per_entry"])
            rows.append([variant, f"{m['timelines']:,} x {m['entries']}", enc,
                         f"{m['memory_usage_bytes_per_entry']:.1f}",
                         f"{m['used_memory_delta_bytes_per_entry']:.1f}"])
    out.append(markdown_table(["variant", "timelines x entries", "encoding", "MEMORY USAGE",
                               "used_memory delta"], rows))
    out += ["", "MEMORY USAGE (SAMPLES 0) summed over the timelines, and the server's "
            "used_memory before and after, each divided by the entries; the delta counts "
            "anything else the server allocated meanwhile (other clients of a shared Redis "
            "included). Expected: 136-146 B, ~52 B in listpack."]
    out += [f"- {n}" for n in notes]
    return "\n".join(out), {"figures": figures, "throughput": throughput, "latency": latency,
                            "targets": targets}


async def run(args: argparse.Namespace) -> Outcome | int:
    started = time.monotonic()
    if redis_db(args.redis_url) == 0:
        print("refusing Redis database 0: pass --redis-url with a dedicated one",
              file=sys.stderr)
        return 2
    wanted = [v for v in args.variants.split(",") if v]
    ready, output = client.ensure(wanted)
    notes = [f"variant {v} could not be built: {output.splitlines()[-1:]}"
             for v in wanted if v not in ready]
    if not ready:
        print(output, file=sys.stderr)
        return 3
    probe = Redis.from_url(args.redis_url)
    try:
        env = await environment(probe, args.redis_url, None)
    finally:
        await probe.aclose()
    env.pop("DynamoDB", None)
    env.pop("arq", None)
    sizes = QUICK if args.quick else FULL
    results = {}
    for variant in ready:
        await flush(args.redis_url)
        try:
            results[variant] = run_variant(variant, args.redis_url, sizes)
        finally:
            await flush(args.redis_url)
    for variant, r in results.items():
        env[f"Stream-Framework ({variant})"] = (
            f"{r['versions']['stream-framework']}, redis-py {r['versions']['redis-py']}, "
            f"hiredis {r['versions']['hiredis']}, celery {r['versions'].get('celery')}; "
            f"shims: {'; '.join(r['versions']['shims'])}")
    markdown, parts = report(results, notes)
    command = command_line().replace("bench.sf.__main__", "bench.sf")
    elapsed = time.monotonic() - started
    return Outcome(
        markdown, env=env, command=command, json_path=args.json,
        document=lambda: bench_document(
            "sf", "Stream-Framework 1.4.0 on its own", command, env, markdown,
            parts["figures"], latency_ms=parts["latency"], throughput=parts["throughput"],
            axes={"throughput": {"x": "followers", "y": "entries/s"}},
            targets=parts["targets"], notes=notes, elapsed_s=elapsed, data=results),
    )


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(argv, parse_args, run, log_format=None)


if __name__ == "__main__":
    sys.exit(main())
