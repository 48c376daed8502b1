"""Load helpers of the read and spike benchmarks: a synthetic graph loaded in bulk, the
service's processes (``feed api``, ``feed worker``) started as real processes, wrk for the
closed loop, and an open-loop HTTP generator that runs in a process of its own.

The open-loop generator (``python -m bench._load --spec FILE``) sends every request at its
intended time (``start + i / rate`` of its stream) whatever the earlier requests are doing,
and times each one from that intended time, so a stall shows up in every request it delays
(no coordinated omission). It prints one JSON object with the samples on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench._common import ROOT

__all__ = [
    "Graph",
    "OpenLoopResult",
    "Segment",
    "Stream",
    "api_process",
    "closed_loop_python",
    "free_port",
    "load_graph",
    "make_graph",
    "run_open_loop",
    "sampling",
    "service_env",
    "source_revision",
    "wait_quiet",
    "warm_feeds",
    "worker_process",
    "worst_seconds",
    "wrk_available",
    "wrk_closed_loop",
    "wrk_version",
]

LANGS = ("hi", "en", "pt", "ta", "bn")
WORDS = ("namaste", "dost", "cricket", "chai", "baarish", "khel", "sangeet", "yatra", "hello",
         "friends", "match", "tea", "rain", "game", "music", "city", "travel", "launch", "ola",
         "amigos", "jogo", "cafe", "chuva", "festa")
HOUR_MS = 3_600_000
DRAIN_LIMIT_S = 20.0  # open loop: how long to wait for answers after the last send


def free_port() -> int:
    from feed._embedded import free_port as _free

    return _free()


def source_revision() -> str:
    """The commit the service's code was measured at, and whether feed/, workers/ or
    config/ had uncommitted changes."""
    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             check=False)
        return run.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "feed", "workers", "config")
    return f"{commit}" + (" with uncommitted changes in feed/, workers/ or config/"
                          if dirty else "")


# --- the synthetic graph ----------------------------------------------------------------


@dataclass
class Graph:
    """Users who all read and write: a few celebrities followed by about half of everyone,
    and a long tail followed with Zipf-like preference."""

    users: list[tuple[str, str]]  # (user_id, lang)
    follows: list[tuple[str, str]]  # (follower, followee)
    koos: list[dict[str, Any]]  # koo_created events
    reactions: list[tuple[str, str, str, str, int]]  # (user, koo, kind, author, at)
    celebrities: set[str]
    threshold: int
    followers: dict[str, int] = field(default_factory=dict)
    following: dict[str, int] = field(default_factory=dict)

    @property
    def user_ids(self) -> list[str]:
        return [u for u, _ in self.users]


def make_graph(n_users: int, *, follows_per_user: int = 25, koos_per_user: int = 4,
               reactions_per_user: int = 10, celebrities: int = 3, seed: int = 11,
               prefix: str = "br", now_ms: int | None = None) -> Graph:
    """A graph of ``n_users`` users, their koos over the last 12 hours and some reactions."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    users = [(f"{prefix}{i:05d}", LANGS[i % len(LANGS)]) for i in range(n_users)]
    ids = [u for u, _ in users]
    lang_of = dict(users)
    edges: set[tuple[str, str]] = set()
    tail = n_users - celebrities
    for reader in ids:
        for celeb in ids[:celebrities]:
            if celeb != reader and rng.random() < 0.5:
                edges.add((reader, celeb))
        for _ in range(follows_per_user):
            # Zipf-like preference: low indexes of the tail are far more popular.
            target = ids[celebrities + int(tail * rng.random() ** 1.5)]
            if target != reader:
                edges.add((reader, target))
    follows = sorted(edges)
    graph = Graph(users, follows, [], [], set(), threshold=max(10, n_users // 3))
    for a, b in follows:
        graph.following[a] = graph.following.get(a, 0) + 1
        graph.followers[b] = graph.followers.get(b, 0) + 1
    graph.celebrities = {u for u in ids if graph.followers.get(u, 0) >= graph.threshold}
    for i, author in enumerate(ids):
        for j in range(koos_per_user):
            at = now_ms - rng.randrange(12 * HOUR_MS) - 60_000
            text = " ".join(rng.choices(WORDS, k=rng.randint(5, 14)))
            graph.koos.append({
                "type": "koo_created", "event_id": f"bench-k{i}-{j}", "occurred_at": at,
                "koo_id": f"{prefix}k{i:05d}x{j}", "author_id": author, "text": text,
                "lang": lang_of[author], "hashtags": [f"#{rng.choice(WORDS)}"],
                "reply_to": None, "rekoo_of": None,
            })
    by_author: dict[str, list[dict[str, Any]]] = {}
    for koo in graph.koos:
        by_author.setdefault(koo["author_id"], []).append(koo)
    followees: dict[str, list[str]] = {}
    for a, b in follows:
        followees.setdefault(a, []).append(b)
    kinds = ("like", "like", "like", "rekoo", "comment")
    for reader in ids:
        pool = [k for f in followees.get(reader, ()) for k in by_author.get(f, ())]
        seen: set[tuple[str, str]] = set()
        for koo in rng.sample(pool, min(reactions_per_user, len(pool))):
            kind = rng.choice(kinds)
            if (koo["koo_id"], kind) in seen:
                continue
            seen.add((koo["koo_id"], kind))
            graph.reactions.append((reader, koo["koo_id"], kind, koo["author_id"],
                                    koo["occurred_at"] + 1_000))
    return graph


async def load_graph(services: Any, graph: Graph, *, seed: int = 11) -> dict[str, int]:
    """Bulk-load the graph with the stores' own loaders, in the form the events produce:
    profiles, follows, koos (fan-out done, or pulled for celebrities), each reader's stored
    timeline (their followees' koos, celebrities excepted, and their own) and reactions."""
    from config.tables import KOOS, REACTIONS
    from feed import keys
    from feed.events import typed
    from feed.models import User
    from feed.store import Entry
    from feed.store.koos import COUNTER_OF, FanoutState

    rng = random.Random(seed)
    stores = services.stores
    db = stores.db
    at = min(k["occurred_at"] for k in graph.koos) - HOUR_MS
    users = [
        (User(u, f"@{u}", lang, "sa-east-1" if lang == "pt" else "ap-south-1", at,
              graph.followers.get(u, 0), graph.following.get(u, 0)), u in graph.celebrities)
        for u, lang in graph.users
    ]
    counts = {"users": await stores.users.load_many(users, at=at)}
    counts["follows"] = await stores.relations.load_many(
        [(a, keys.REL_FOLLOW, b) for a, b in graph.follows], at=at)
    counters: dict[str, dict[str, int]] = {}
    for _, koo_id, kind, _, _ in graph.reactions:
        per = counters.setdefault(koo_id, {})
        per[COUNTER_OF[kind]] = per.get(COUNTER_OF[kind], 0) + 1
    items = []
    for event in graph.koos:
        pull = event["author_id"] in graph.celebrities
        item = dict(stores.koos.create_item(typed(event), pull=pull)["Put"]["Item"])
        if not pull:
            item["fanout_state"] = FanoutState.DONE
            item.pop("fanout_shard", None)
            item.pop("fanout_deadline", None)
        extra = counters.get(event["koo_id"], {})
        item["likes"] = extra.get("likes", 0) + rng.randrange(40)
        item["rekoos"] = extra.get("rekoos", 0) + rng.randrange(8)
        item["comments"] = extra.get("comments", 0) + rng.randrange(8)
        items.append(item)
    counts["koos"] = await db.batch_write(KOOS, puts=items)
    counts["reactions"] = await db.batch_write(REACTIONS, puts=[
        {**stores.reactions.key(koo_id, user, kind), "active": True, "ver": when,
         "user_id": user, "kind": kind, "author_id": author, "created_at": when,
         "user_key": user, "react_sk": keys.sort_key(when, f"{user}-{kind}")}
        for user, koo_id, kind, author, when in graph.reactions
    ])
    by_author: dict[str, list[Entry]] = {}
    for event in graph.koos:
        by_author.setdefault(event["author_id"], []).append(
            Entry(event["koo_id"], event["author_id"], event["occurred_at"]))
    followees: dict[str, list[str]] = {}
    for a, b in graph.follows:
        followees.setdefault(a, []).append(b)
    gate = asyncio.Semaphore(4)

    async def one(reader: str) -> int:
        authors = [a for a in followees.get(reader, ()) if a not in graph.celebrities]
        entries = [e for a in (*authors, reader) for e in by_author.get(a, ())]
        async with gate:
            return int(await stores.timelines.add_entries(reader, entries))

    written = await asyncio.gather(*(one(u) for u in graph.user_ids))
    counts["timeline_rows"] = sum(written)
    return counts


async def warm_feeds(reader: Any, users: Sequence[str], *, rounds: int = 2,
                     concurrency: int = 8) -> None:
    """Read every user's feed ``rounds`` times: the first read of a cold reader rebuilds
    their cached timeline (in the background), the next ones find everything cached."""
    gate = asyncio.Semaphore(concurrency)

    async def one(user: str) -> None:
        async with gate:
            await reader.feed(user, limit=20)

    for _ in range(rounds):
        await asyncio.gather(*(one(u) for u in users))
        await reader.manager.drain()


# --- the service's processes ------------------------------------------------------------


def service_env(settings: Any, **extra: str) -> dict[str, str]:
    """FEED_* variables that give a child process the same configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEED_")}
    env.update({
        "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url or settings.redis_url,
        "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "FEED_TABLE_PREFIX": settings.table_prefix,
        "FEED_API_TOKENS": ",".join(settings.api_tokens),
        "FEED_CELEBRITY_FOLLOWERS": str(settings.celebrity_followers),
        "FEED_LOG_LEVEL": "WARNING",
        "FEED_LOG_JSON": "true",  # the log files keep the extra fields (errors)
        "FEED_WORKER_METRICS_PORT": "0",
    })
    env.update(extra)
    return env


def _feed_command() -> list[str]:
    script = Path(sys.executable).parent / "feed"
    if script.exists():
        return [str(script)]
    found = shutil.which("feed")
    return [found] if found else [sys.executable, "-m", "feed.cli"]


def _wait_http(url: str, limit_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {limit_s:.0f} s")


def _stop(proc: subprocess.Popen[bytes], limit_s: float = 30.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


async def wait_quiet(base: str, *, limit_s: float = 60.0, fast_ms: float = 20.0) -> float:
    """Until ``/healthz`` answers within ``fast_ms`` three times in a row (the server has
    worked off what an overloaded run left queued); returns the seconds waited."""
    started = time.monotonic()
    fast = 0
    while fast < 3 and time.monotonic() - started < limit_s:
        sent = time.monotonic()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(_get, base + "/healthz")
        fast = fast + 1 if (time.monotonic() - sent) * 1000 <= fast_ms else 0
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()


@contextlib.contextmanager
def api_process(env: Mapping[str, str], *, port: int, workers: int = 1,
                log_path: Path | None = None, ready_path: str = "/healthz") -> Iterator[str]:
    """``feed api`` (uvicorn, uvloop, httptools) as a real process; yields its base URL once
    ``ready_path`` answers 200 (``/healthz``: the server listens; ``/readyz``: it also
    reaches Redis and DynamoDB)."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [*_feed_command(), "api", "--port", str(port), "--workers", str(workers)],
        env=dict(env), stdout=log, stderr=log, cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(base + ready_path, 60, proc)
        yield base
    finally:
        _stop(proc)
        if log_path:
            log.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def worker_process(env: Mapping[str, str], *, queue: str = "all",
                   log_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``feed worker`` as a real process."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([*_feed_command(), "worker", "--queue", queue], env=dict(env),
                            stdout=log, stderr=log, cwd=ROOT)
    try:
        yield proc
    finally:
        _stop(proc)
        if log_path:
            log.close()  # type: ignore[union-attr]


# --- closed loop: wrk, or a Python fallback ---------------------------------------------

_WRK_SCRIPT = """
local users = {%(users)s}
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end
function init(args)
  counter = id * 7919
  wrk.headers["Authorization"] = "Bearer %(token)s"
end
function request()
  counter = counter + 1
  local user = users[(counter %% #users) + 1]
  return wrk.format("GET", "/v1/users/" .. user .. "/feed?limit=%(limit)d")
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d, "mean_us": %%f, "status_errors": %%d, ' ..
    '"connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, "timeouts": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, summary.errors.status,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
"""


def wrk_available() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    wrk = wrk_available()
    if wrk is None:
        return "not installed"
    run = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (run.stdout or run.stderr).strip().splitlines()[0]


def wrk_closed_loop(base: str, token: str, users: Sequence[str], *, connections: int,
                    threads: int, seconds: float, limit: int = 20) -> dict[str, Any]:
    """wrk with ``connections`` connections for ``seconds``, rotating over ``users``;
    returns requests/s and latency percentiles (ms) as wrk measured them."""
    wrk = wrk_available()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    script = _WRK_SCRIPT % {"users": ",".join(f'"{u}"' for u in users), "token": token,
                            "limit": limit}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = handle.name
    try:
        run = subprocess.run(
            [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:.0f}s",
             "--timeout", "10s", "-s", path, base],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        )
    finally:
        os.unlink(path)
    line = next((x for x in run.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {run.stdout} {run.stderr}")
    raw = orjson.loads(line.removeprefix("WRKJSON "))
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("status_errors", "connect_errors", "read_errors",
                                  "write_errors", "timeouts"))
    return {
        "tool": "wrk", "requests": raw["requests"], "seconds": seconds_run,
        "rps": raw["requests"] / seconds_run if seconds_run else 0.0,
        "ok_rps": (raw["requests"] - errors) / seconds_run if seconds_run else 0.0,
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000, "errors": errors, "raw": raw,
    }


async def closed_loop_python(base: str, token: str, users: Sequence[str], *,
                             connections: int, seconds: float, limit: int = 20
                             ) -> dict[str, Any]:
    """The fallback when wrk is missing: ``connections`` aiohttp clients in one process."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    counter = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), headers=headers
    ) as session:

        async def client() -> None:
            nonlocal counter, errors
            while time.perf_counter() < deadline:
                counter += 1
                user = users[counter % len(users)]
                started = time.perf_counter()
                async with session.get(f"{base}/v1/users/{user}/feed?limit={limit}") as resp:
                    await resp.read()
                    errors += resp.status != 200
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        spent = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[max(0, int(q / 100 * len(ordered) + 0.999999) - 1)] * 1000

    return {"tool": "python (aiohttp, closed loop)", "requests": len(latencies),
            "seconds": spent, "rps": len(latencies) / spent,
            "ok_rps": (len(latencies) - errors) / spent, "p50_ms": pct(50),
            "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": ordered[-1] * 1000,
            "mean_ms": sum(ordered) / len(ordered) * 1000, "errors": errors}


# --- open loop: a generator process -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the schedule: ``seconds`` long, each stream at its rate (per second)."""

    label: str
    seconds: float
    rates: dict[str, float]


@dataclass(frozen=True, slots=True)
class Stream:
    """``feed``: GET a feed page, rotating over ``users`` (each once if ``distinct``);
    ``signup``: POST one user_signed_up event with a fresh user id ``prefix`` + number."""

    name: str
    kind: str  # "feed" or "signup"
    users: tuple[str, ...] = ()
    distinct: bool = False
    prefix: str = ""


@dataclass
class OpenLoopResult:
    """Samples per (segment, stream): latency from the intended send time, in ms."""

    latency_ms: dict[str, dict[str, list[float]]]
    statuses: dict[str, dict[str, int]]
    sent: dict[str, int]
    accepted_ids: list[str]  # signup user ids answered 202
    lateness_ms_max: float  # how far behind schedule the sender itself ever was
    segment_start_s: dict[str, float]  # since the generator's start
    started_at: float  # time.time() at the generator's start
    # Intended send time of each sample (seconds since the start), in the same order.
    offsets_s: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def all_latencies(self, stream: str) -> list[float]:
        return [x for per in self.latency_ms.values() for x in per.get(stream, [])]


async def run_open_loop(base: str, token: str, streams: Sequence[Stream],
                        segments: Sequence[Segment], *, limit: int = 20,
                        log_path: Path | None = None) -> OpenLoopResult:
    """Run the open-loop generator in its own process and collect its samples."""
    spec = {
        "base": base, "token": token, "limit": limit,
        "streams": [{"name": s.name, "kind": s.kind, "users": list(s.users),
                     "distinct": s.distinct, "prefix": s.prefix} for s in streams],
        "segments": [{"label": g.label, "seconds": g.seconds, "rates": g.rates}
                     for g in segments],
    }
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as handle:
        handle.write(orjson.dumps(spec))
        path = handle.name
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._load", "--spec", path, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    finally:
        os.unlink(path)
    if log_path is not None:
        await asyncio.to_thread(log_path.write_bytes, err)
    if proc.returncode != 0:
        raise RuntimeError(f"the open-loop generator failed ({proc.returncode}): "
                           f"{err.decode(errors='replace')[-2000:]}")
    raw = orjson.loads(out)
    return OpenLoopResult(
        latency_ms=raw["latency_ms"], statuses=raw["statuses"], sent=raw["sent"],
        accepted_ids=raw["accepted_ids"], lateness_ms_max=raw["lateness_ms_max"],
        segment_start_s=raw["segment_start_s"], started_at=raw["started_at"],
        offsets_s=raw["offsets_s"],
    )


def worst_seconds(offsets_s: Sequence[float], latency_ms: Sequence[float], bound_ms: float
                  ) -> dict[str, Any]:
    """Per one-second window of intended send time: how many windows had a p99 above
    ``bound_ms``, and the worst window (its start and p99): a stall shows up as a few bad
    seconds, general slowness as many."""
    windows: dict[int, list[float]] = {}
    for at, value in zip(offsets_s, latency_ms, strict=True):
        windows.setdefault(int(at), []).append(value)
    p99s = {}
    for second, values in windows.items():
        ordered = sorted(values)
        p99s[second] = ordered[max(0, -(-99 * len(ordered) // 100) - 1)]
    worst = max(p99s, key=lambda k: p99s[k], default=None)
    return {"windows": len(p99s), "over": sum(v > bound_ms for v in p99s.values()),
            "worst_at_s": worst, "worst_p99_ms": p99s[worst] if worst is not None else None}


async def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    base, token, limit = spec["base"], spec["token"], spec["limit"]
    streams = spec["streams"]
    latency: dict[str, dict[str, list[float]]] = {}
    offsets: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    statuses: dict[str, dict[str, int]] = {}
    sent: dict[str, int] = {s["name"]: 0 for s in streams}
    accepted: list[str] = []
    lateness_max = 0.0
    segment_start: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {token}"}
    tasks: set[asyncio.Task[None]] = set()
    counters = {s["name"]: 0 for s in streams}
    started_wall = time.time()

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, limit_per_host=512), headers=headers,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:

        async def one(segment: str, stream: dict[str, Any], n: int, intended: float) -> None:
            name = stream["name"]
            status = "error"
            try:
                if stream["kind"] == "feed":
                    users = stream["users"]
                    user = users[n % len(users)]
                    async with session.get(f"{base}/v1/users/{user}/feed?limit={limit}") as r:
                        await r.read()
                        status = str(r.status)
                else:
                    user = f"{stream['prefix']}{n:07d}"
                    body = {"events": [{
                        "type": "user_signed_up", "event_id": f"signup-{user}",
                        "occurred_at": int(time.time() * 1000), "user_id": user,
                        "handle": f"@{user}", "lang": LANGS[n % len(LANGS)],
                        "region": "ap-south-1",
                    }]}
                    async with session.post(f"{base}/v1/events", data=orjson.dumps(body),
                                            headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        status = str(r.status)
                        if r.status == 202:
                            accepted.append(user)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            except asyncio.CancelledError:
                status = "unfinished"  # still waiting when the drain limit passed
            done = time.perf_counter()
            offsets.setdefault(segment, {}).setdefault(name, []).append(intended - t0)
            latency.setdefault(segment, {}).setdefault(name, []).append(
                (done - intended) * 1000)
            per = statuses.setdefault(name, {})
            per[status] = per.get(status, 0) + 1

        t0 = time.perf_counter()  # the schedule starts once the session is open
        offset = 0.0
        for segment in spec["segments"]:
            label, seconds, rates = segment["label"], segment["seconds"], segment["rates"]
            segment_start[label] = offset
            # Every stream's sends within the segment, in time order.
            plan: list[tuple[float, int]] = []
            for index, stream in enumerate(streams):
                rate = float(rates.get(stream["name"], 0.0))
                if rate <= 0:
                    continue
                count = round(seconds * rate)
                plan += [(offset + i / rate, index) for i in range(count)]
            plan.sort()
            for at, index in plan:
                stream = streams[index]
                n = counters[stream["name"]]
                if stream["distinct"] and n >= len(stream["users"]):
                    continue
                counters[stream["name"]] = n + 1
                intended = t0 + at
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    lateness_max = max(lateness_max, -delay * 1000)
                sent[stream["name"]] += 1
                task = asyncio.create_task(one(label, stream, n, intended))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            offset += seconds
        # Requests still in flight DRAIN_LIMIT_S after the last send are cancelled and
        # recorded as "unfinished" (an overloaded server must not stall the bench forever).
        if tasks:
            _, pending = await asyncio.wait(list(tasks), timeout=DRAIN_LIMIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
    return {"latency_ms": latency, "offsets_s": offsets, "statuses": statuses, "sent": sent,
            "accepted_ids": accepted, "lateness_ms_max": lateness_max,
            "segment_start_s": segment_start, "started_at": started_wall}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._load",
                                     description="open-loop HTTP load generator")
    parser.add_argument("--spec", required=True, help="JSON file: base, token, streams, "
                        "segments (written by bench._load.run_open_loop)")
    args = parser.parse_args(argv)
    spec = orjson.loads(Path(args.spec).read_bytes())
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(_generate(spec))
    sys.stdout.buffer.write(orjson.dumps(result))
    return 0


@contextlib.asynccontextmanager
async def sampling(interval_s: float, probe: Any) -> AsyncIterator[list[tuple[float, Any]]]:
    """Call ``probe()`` every ``interval_s`` in the background; yields the (time, value)
    list it fills."""
    samples: list[tuple[float, Any]] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            samples.append((time.time(), await probe()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    task = asyncio.create_task(loop())
    try:
        yield samples
    finally:
        stop.set()
        await task


if __name__ == "__main__":
    sys.exit(main())
