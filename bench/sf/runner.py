# Stream-Framework and Celery ship no type information.
# mypy: disable-error-code="import-untyped"
"""Stream-Framework 1.4.0's side of the comparisons. Runs inside bench/sf-env.sh's venv.

    .cache/bench-sf/bin/python bench/sf/runner.py measure --redis-url redis://127.0.0.1:6379/8
        [--followers 1000,10000,100000] [--runs N] [--reads 2000] [--timelines 1000]
    .cache/bench-sf/bin/python bench/sf/runner.py serve --redis-url URL

``measure`` prints one JSON object: fan-out entries/s per follower count, the
25-item hydrated read's latencies, and Redis bytes per cached timeline entry.
``serve`` answers JSON lines on stdin (one request per line, one answer per
line on stdout), so another process can interleave Stream-Framework's fan-out
with its own chunk by chunk: ``{"op": "fanout", "readers": [...], "koo": "k1",
"created": ms}`` -> ``{"written": n, "seconds": s}``; ``{"op": "reset",
"readers": [...]}``; ``{"op": "read", "readers": [...], "samples": n}``;
``{"op": "memory", "timelines": t, "entries": e}``; ``{"op": "versions"}``;
``{"op": "quit"}``.

Only the standard library and Stream-Framework's own dependencies are used here
(this venv has none of the service's). Everything is written with
Stream-Framework's public API: a ``Manager`` whose fan-out goes through
``create_fanout_tasks`` (Celery tasks run eagerly, see _shims.py), a
``RedisFeed`` with its default ``max_length`` (100) and trim chance, activities
stored once in its activity storage and read back hydrated with ``feed[:25]``.
Its keys start with ``sf:`` in the given database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from bench.sf import _shims  # must run before stream_framework is imported

SHIMS = _shims.install()

import redis  # noqa: E402
import stream_framework  # noqa: E402
from stream_framework import settings as sf_settings  # noqa: E402

FEED_KEY = "sf:feed:%(user_id)s"  # a follower's timeline (sorted set)
USER_KEY = "sf:user:%(user_id)s"  # an author's own activities
READ_ITEMS = 25
AUTHOR = 1


def configure(url: str) -> None:
    """Point Stream-Framework's connection settings at ``url``."""
    parts = urllib.parse.urlparse(url)
    db = int(parts.path.strip("/") or 0)
    if db == 0:
        raise SystemExit("refusing Redis database 0: pass a dedicated database")
    sf_settings.STREAM_REDIS_CONFIG = {"default": {
        "host": parts.hostname or "127.0.0.1", "port": parts.port or 6379, "db": db,
        "password": parts.password,
    }}


from stream_framework.activity import Activity  # noqa: E402
from stream_framework.feed_managers.base import (  # noqa: E402
    FanoutPriority,
    Manager,
    add_operation,
)
from stream_framework.feeds.redis import RedisFeed  # noqa: E402
from stream_framework.storage.redis.connection import get_redis_connection  # noqa: E402
from stream_framework.verbs import register  # noqa: E402
from stream_framework.verbs.base import Verb  # noqa: E402

# Module level, as Stream-Framework expects: its Celery tasks pickle the manager and the
# feed class they are given.


class Post(Verb):  # type: ignore[misc]  # the built-in verbs use ids 1-4
    id = 9
    infinitive = "post"
    past_tense = "posted"


register(Post)


class Timeline(RedisFeed):  # type: ignore[misc]
    key_format = FEED_KEY


class Own(RedisFeed):  # type: ignore[misc]
    key_format = USER_KEY
    max_length = 10 ** 6


class BenchManager(Manager):  # type: ignore[misc]
    feed_classes = {"normal": Timeline}
    user_feed_class = Own

    def get_user_follower_ids(self, user_id: int) -> dict[str, list[int]]:
        return {FanoutPriority.HIGH: []}  # the bench hands followers in directly


class SF:
    """Stream-Framework's objects for this bench (connections made after ``configure``)."""

    def __init__(self, url: str) -> None:
        configure(url)
        self.timeline = Timeline
        self.manager = BenchManager()
        self.redis = get_redis_connection()
        self.objects: dict[str, int] = {}

    def activity(self, koo: str, created_ms: int) -> Any:
        """The activity for ``koo`` (stored in the activity storage the first time)."""
        first = koo not in self.objects
        object_id = self.objects.setdefault(koo, len(self.objects) + 1)
        when = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=created_ms)
        activity = Activity(AUTHOR, Post, object_id, time=when)
        if first:
            self.manager.user_feed_class.insert_activity(activity)
        return activity

    def fanout(self, readers: Sequence[int], koo: str, created_ms: int) -> int:
        """Stream-Framework's fan-out of one activity to ``readers``, as its Manager does."""
        activity = self.activity(koo, created_ms)
        self.manager.create_fanout_tasks(
            list(readers), Timeline, add_operation,
            operation_kwargs={"activities": [activity], "trim": True},
            fanout_priority=FanoutPriority.HIGH)
        return len(readers)

    def read(self, reader: int) -> list[Any]:
        return list(self.timeline(reader)[:READ_ITEMS])

    def reset(self, readers: Sequence[int]) -> None:
        for start in range(0, len(readers), 1000):
            self.redis.delete(*[FEED_KEY % {"user_id": r} for r in readers[start:start + 1000]])


# --- measurements -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank (with 20 samples, p99 is the largest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def measure_fanout(sf: SF, followers: int, runs: int, created: int) -> dict[str, Any]:
    readers = list(range(1, followers + 1))
    sf.reset(readers)
    seconds = []
    for run in range(runs):
        started = time.perf_counter()
        sf.fanout(readers, f"fan-{followers}-{run}", created + run)
        seconds.append(time.perf_counter() - started)
    sf.reset(readers)
    return {"followers": followers, "runs": runs, "seconds": seconds,
            "entries_per_s": followers * runs / sum(seconds)}


def measure_read(sf: SF, readers: int, samples: int, created: int) -> dict[str, Any]:
    """``samples`` reads of 25 hydrated items, cycling over ``readers`` timelines of 100."""
    ids = list(range(1, readers + 1))
    sf.reset(ids)
    for i in range(100):  # 100 entries each: Stream-Framework's default max_length
        sf.fanout(ids, f"read-{i}", created + i)
    for reader in ids[:min(len(ids), 50)]:  # warm-up
        sf.read(reader)
    latencies = []
    for i in range(samples):
        started = time.perf_counter()
        items = sf.read(ids[i % len(ids)])
        latencies.append((time.perf_counter() - started) * 1000)
        if len(items) != READ_ITEMS or any(a.object_id is None for a in items):
            raise RuntimeError(f"read {len(items)} items, not {READ_ITEMS} hydrated ones")
    sf.reset(ids)
    return {"items": READ_ITEMS, "samples": samples, "latency_ms": latencies,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def measure_memory(sf: SF, timelines: int, entries: int, created: int) -> dict[str, Any]:
    """Bytes per timeline entry over ``timelines`` sets of ``entries`` each."""
    ids = list(range(1, timelines + 1))
    sf.reset(ids)
    raw = redis.StrictRedis(connection_pool=sf.redis.connection_pool)
    before = used_memory(raw)
    for i in range(entries):
        activity = sf.activity(f"mem-{entries}-{i}", created + i)
        # add_many straight into each timeline, trim=False: Stream-Framework would trim
        # to its max_length (100) now and then, and this measures given sizes.
        for start in range(0, len(ids), 1000):
            with sf.timeline.get_timeline_batch_interface() as batch:
                for reader in ids[start:start + 1000]:
                    sf.timeline(reader).add_many([activity], batch_interface=batch,
                                                 trim=False)
    after = used_memory(raw)
    usage = 0
    encodings: dict[str, int] = {}
    for reader in ids:
        key = FEED_KEY % {"user_id": reader}
        usage += int(raw.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0"))  # type: ignore[no-untyped-call]
        encoding = raw.object("encoding", key)
        encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        encodings[encoding] = encodings.get(encoding, 0) + 1
        if int(raw.zcard(key)) != entries:
            raise RuntimeError(f"{key} holds {raw.zcard(key)} entries, not {entries}")
    sample = raw.zrange(FEED_KEY % {"user_id": ids[0]}, 0, 0, withscores=True)
    sf.reset(ids)
    total = timelines * entries
    return {"timelines": timelines, "entries": entries, "encodings": encodings,
            "memory_usage_bytes_per_entry": usage / total,
            "used_memory_delta_bytes_per_entry": (after - before) / total,
            "member_example": str(sample[0][0]) if sample else None,
            "score_example": float(sample[0][1]) if sample else None}


def versions(sf: SF | None = None) -> dict[str, Any]:
    hiredis = "not installed"
    try:
        import hiredis as hiredis_module
        hiredis = str(getattr(hiredis_module, "__version__", "installed"))
    except ImportError:
        pass
    info: dict[str, Any] = {
        "stream-framework": stream_framework.__version__, "redis-py": redis.__version__,
        "hiredis": hiredis, "Python": platform.python_version(), "shims": SHIMS,
    }
    if sf is not None:
        info["Redis server"] = sf.redis.info("server")["redis_version"]
    try:
        import celery
        info["celery"] = celery.__version__
    except ImportError:
        pass
    return info


# --- modes ------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    sf = SF(args.redis_url)
    created = int(time.time() * 1000)
    result: dict[str, Any] = {"versions": versions(sf), "fanout": [], "memory": []}
    sf.fanout(list(range(1, 1001)), "warm-up", created)  # imports, connections, Celery
    sf.reset(list(range(1, 1001)))
    for n in args.followers:
        runs = max(args.runs, math.ceil(args.min_entries / n))
        result["fanout"].append(measure_fanout(sf, n, runs, created))
        created += runs
        print(f"[sf] fan-out {n:,}: {result['fanout'][-1]['entries_per_s']:,.0f} entries/s",
              file=sys.stderr, flush=True)
    result["read"] = measure_read(sf, args.read_timelines, args.reads, created)
    created += 100
    for entries in args.entries:
        result["memory"].append(measure_memory(sf, args.timelines, entries, created))
        created += entries
    return result


def serve(args: argparse.Namespace) -> None:
    sf = SF(args.redis_url)
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        answer: dict[str, Any]
        try:
            if op == "fanout":
                started = time.perf_counter()
                written = sf.fanout(request["readers"], request["koo"], request["created"])
                answer = {"written": written, "seconds": time.perf_counter() - started}
            elif op == "reset":
                sf.reset(request["readers"])
                answer = {"ok": True}
            elif op == "read":
                answer = measure_read(sf, request["readers"], request["samples"],
                                      request.get("created", int(time.time() * 1000)))
            elif op == "memory":
                answer = measure_memory(sf, request["timelines"], request["entries"],
                                        request.get("created", int(time.time() * 1000)))
            elif op == "versions":
                answer = versions(sf)
            elif op == "quit":
                break
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the caller, which raises
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _ints(raw: str) -> list[int]:
    return [int(x.replace("_", "")) for x in raw.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("measure", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--redis-url", required=True, help="a dedicated database (not 0)")
    m = sub.choices["measure"]
    m.add_argument("--followers", type=_ints, default=[1_000, 10_000, 100_000])
    m.add_argument("--runs", type=int, default=1, help="fan-outs per size, at least")
    m.add_argument("--min-entries", type=int, default=20_000,
                   help="small sizes run until each wrote this many entries")
    m.add_argument("--reads", type=int, default=2_000, help="25-item reads to time")
    m.add_argument("--read-timelines", type=int, default=200)
    m.add_argument("--timelines", type=int, default=1_000, help="timelines for memory")
    m.add_argument("--entries", type=_ints, default=[100, 200],
                   help="entries per timeline for memory (under and over 128)")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        serve(args)
        return 0
    json.dump(measure(args), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
