"""The client against a live ``feed api``, on real Redis and DynamoDB.

The data is published with the client itself and applied by ``feed worker --burst``. With
``FEED_TEST_API_URL`` and ``FEED_TEST_API_TOKEN`` set, the tests use that API (its
``FEED_*`` variables must be in the environment too, for the worker); otherwise they
start one on tables of their own:

- ``FEED_TEST_FEED_BIN``: the ``feed`` command (default: the repository's
  ``.venv/bin/feed``, else ``feed`` on PATH);
- ``FEED_TEST_DYNAMODB_ENDPOINT``: DynamoDB (default http://127.0.0.1:8765);
- ``FEED_TEST_REDIS_URL``: Redis (default redis://127.0.0.1:6379), databases
  ``FEED_TEST_REDIS_DBS`` (queue, cache; default 10,11), flushed first: the cache is not
  namespaced by table prefix, so an earlier run's trending lists would show through.

An API that cannot be started fails these tests: they never skip.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from koo_feed_client import (
    FeedClient,
    InvalidCursor,
    InvalidRequest,
    NotFound,
    Unauthorized,
)

pytestmark = pytest.mark.live

REPOSITORY = Path(__file__).resolve().parents[3]
TOKEN = "client-live-token-0123456789"
START_TIMEOUT = 90.0
WORKER_TIMEOUT = 300.0


@dataclass(frozen=True)
class LiveApi:
    url: str
    token: str
    feed: str  # the `feed` command
    env: dict[str, str]  # the FEED_* variables of the API, for `feed worker`
    log: Path | None


def _feed_command() -> str:
    named = os.environ.get("FEED_TEST_FEED_BIN")
    if named:
        if shutil.which(named) is None:
            pytest.fail(f"FEED_TEST_FEED_BIN={named} is not an executable")
        return named
    local = REPOSITORY / ".venv" / "bin" / "feed"
    if local.exists():
        return str(local)
    found = shutil.which("feed")
    if found is None:
        pytest.fail("no `feed` command: set FEED_TEST_FEED_BIN to the service's `feed`")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-3000:]


def _wait_ready(url: str, process: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    """Until /readyz answers 200; fails if the process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"feed api exited with {process.returncode}:\n{_tail(log)}")
        try:
            answer = httpx.get(f"{url}/readyz", timeout=2)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.25)
    pytest.fail(f"feed api at {url} not ready within {START_TIMEOUT:g} s ({last}):\n"
                f"{_tail(log)}")


def _flush(redis_url: str, dbs: list[str]) -> None:
    """FLUSHDB each of ``dbs``, in Redis's own protocol (the tests need no Redis client)."""
    where = urlsplit(redis_url)
    commands = b"".join(
        b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n*1\r\n$7\r\nFLUSHDB\r\n" % (len(db), db.encode())
        for db in dbs)
    try:
        with socket.create_connection((where.hostname or "127.0.0.1", where.port or 6379),
                                      timeout=10) as sock:
            sock.sendall(commands)
            replies = b""
            while replies.count(b"\r\n") < 2 * len(dbs):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                replies += chunk
    except OSError as exc:
        pytest.fail(f"Redis at {redis_url} does not answer: {exc}")
    if replies != b"+OK\r\n" * (2 * len(dbs)):
        pytest.fail(f"Redis at {redis_url} refused to flush databases {dbs}: {replies!r}")


def _run(feed: str, args: list[str], env: dict[str, str], timeout: float) -> None:
    done = subprocess.run([feed, *args], env=env, capture_output=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"feed {' '.join(args)} exited with {done.returncode}:\n"
                    f"{done.stdout.decode(errors='replace')[-2000:]}\n"
                    f"{done.stderr.decode(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    feed = _feed_command()
    given = os.environ.get("FEED_TEST_API_URL")
    if given:
        token = os.environ.get("FEED_TEST_API_TOKEN")
        if not token:
            pytest.fail("FEED_TEST_API_URL is set without FEED_TEST_API_TOKEN")
        _wait_ready(given.rstrip("/"), None, None)
        yield LiveApi(given.rstrip("/"), token, feed, dict(os.environ), None)
        return
    redis = os.environ.get("FEED_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    queue_db, cache_db = os.environ.get("FEED_TEST_REDIS_DBS", "10,11").split(",")
    _flush(redis, [queue_db, cache_db])
    env = {
        **os.environ,
        "FEED_REDIS_URL": f"{redis}/{queue_db}",
        "FEED_CACHE_REDIS_URL": f"{redis}/{cache_db}",
        "FEED_DYNAMODB_ENDPOINT": os.environ.get("FEED_TEST_DYNAMODB_ENDPOINT",
                                                 "http://127.0.0.1:8765"),
        "FEED_TABLE_PREFIX": f"kfc{uuid.uuid4().hex[:6]}_",
        "FEED_API_TOKENS": TOKEN,
        # A loaded test machine must not turn slow reads into 503s.
        "FEED_API_TIMEOUT": "30",
        "FEED_WORKER_METRICS_PORT": "0",
        "FEED_LOG_LEVEL": "WARNING",
    }
    _run(feed, ["tables", "create"], env, timeout=300)
    port = _free_port()
    log = tmp_path_factory.mktemp("feed-api") / "api.log"
    with log.open("ab") as sink:
        api = subprocess.Popen([feed, "api", "--port", str(port)], env=env,
                               stdout=sink, stderr=sink)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, api, log)
        yield LiveApi(url, TOKEN, feed, env, log)
    finally:
        api.terminate()
        try:
            api.wait(30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait(10)


@dataclass(frozen=True)
class World:
    """Who and what the tests published: a follows b, b follows c; b wrote five koos, a
    and c one each; three reactions to b's first koo, one to c's."""

    a: str
    b: str
    c: str
    b_koos: list[str]  # oldest first
    a_koo: str
    c_koo: str


def _event(event_type: str, at: int, /, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "event_id": f"kfc-{uuid.uuid4().hex}", "occurred_at": at, **fields}


async def _publish(api: LiveApi, events: list[dict[str, Any]]) -> int:
    async with FeedClient(api.url, api.token, deadline=30) as client:
        return await client.publish(events)


@pytest.fixture(scope="module")
def world(live: LiveApi) -> World:
    run = uuid.uuid4().hex[:8]
    a, b, c = (f"kfc{run}{who}" for who in "abc")
    world = World(a, b, c, [f"{b}-k{i}" for i in range(5)], f"{a}-k", f"{c}-k")
    now = int(time.time() * 1000) - 60_000
    first = [_event("user_signed_up", now, user_id=u, handle=u, lang="kn",
                    region="ap-south-1") for u in (a, b, c)]
    first += [_event("user_followed", now + 1, follower_id=a, followee_id=b),
              _event("user_followed", now + 1, follower_id=b, followee_id=c)]
    first += [_event("koo_created", now + 10 + i, koo_id=k, author_id=b, text=f"koo {i}",
                     lang="kn", hashtags=["live"]) for i, k in enumerate(world.b_koos)]
    first += [_event("koo_created", now + 20, koo_id=world.a_koo, author_id=a, text="mine",
                     lang="kn"),
              _event("koo_created", now + 30, koo_id=world.c_koo, author_id=c, text="chai",
                     lang="kn")]
    assert asyncio.run(_publish(live, first)) == len(first)
    _run(live.feed, ["worker", "--burst"], live.env, WORKER_TIMEOUT)
    # Reactions once their koos are stored, so none waits on a retry.
    liked = world.b_koos[0]
    second = [_event("reaction_added", now + 40, koo_id=liked, user_id=a, kind="like"),
              _event("reaction_added", now + 41, koo_id=liked, user_id=c, kind="like"),
              _event("reaction_added", now + 42, koo_id=liked, user_id=a, kind="comment"),
              _event("reaction_added", now + 43, koo_id=world.c_koo, user_id=b, kind="like")]
    assert asyncio.run(_publish(live, second)) == len(second)
    _run(live.feed, ["worker", "--burst"], live.env, WORKER_TIMEOUT)
    return world


@pytest.fixture
async def client(live: LiveApi, world: World) -> AsyncIterator[FeedClient]:
    async with FeedClient(live.url, live.token, deadline=30) as feed_client:
        yield feed_client


async def test_health_and_readiness(client: FeedClient) -> None:
    assert (await client.healthz()).ok
    ready = await client.readyz()
    assert ready.ok
    assert ready.checks == {"cache_redis": True, "queue_redis": True, "dynamodb": True}


async def test_profiles_count_follows(client: FeedClient, world: World) -> None:
    a, b, c = [await client.user(u) for u in (world.a, world.b, world.c)]
    assert (a.following, c.followers) == (1, 1)
    assert (b.user_id, b.handle, b.lang, b.region, b.followers, b.following) == (
        world.b, world.b, "kn", "ap-south-1", 1, 1)
    assert b.created_at > 0


async def test_the_feed_walk_returns_every_koo_once(client: FeedClient, world: World) -> None:
    first = await client.feed(world.a, limit=2)
    assert len(first.items) == 2
    assert first.next_cursor is not None
    items = [item async for item in client.iter_feed(world.a, limit=2)]
    ids = [item.koo_id for item in items]
    assert len(ids) == len(set(ids))
    assert {*world.b_koos, world.a_koo} <= set(ids)
    reasons = {item.koo_id: item.reason for item in items}
    assert reasons[world.a_koo] == "self"
    assert {reasons[k] for k in world.b_koos} == {"following"}
    # Anything else is a recommendation, never a koo of someone the reader does not see.
    assert all(reasons[k] == "recommended" for k in set(ids) - {*world.b_koos, world.a_koo})


async def test_explain_adds_up_to_the_score(client: FeedClient, world: World) -> None:
    page = await client.feed(world.a, limit=5, explain=True)
    assert page.items
    for item in page.items:
        assert item.explain is not None
        parts = (item.explain.recency + item.explain.engagement + item.explain.affinity
                 + item.explain.diversity)
        assert abs(parts - item.score) < 1e-4


async def test_author_koos_newest_first(client: FeedClient, world: World) -> None:
    koos = [k async for k in client.iter_user_koos(world.b, limit=2)]
    assert [k.koo_id for k in koos] == world.b_koos[::-1]
    assert all(k.author_id == world.b and k.hashtags == ("live",) for k in koos)


async def test_a_koo_and_its_reactions(client: FeedClient, world: World) -> None:
    koo = await client.koo(world.b_koos[0])
    assert (koo.likes, koo.rekoos, koo.comments) == (2, 0, 1)
    reactions = [r async for r in client.iter_reactions(world.b_koos[0], limit=1)]
    assert sorted((r.user_id, r.kind) for r in reactions) == sorted(
        [(world.a, "like"), (world.c, "like"), (world.a, "comment")])
    times = [r.created_at for r in reactions]
    assert times == sorted(times, reverse=True)


async def test_recommendations(client: FeedClient, world: World) -> None:
    follows = await client.recommended_follows(world.a, limit=10)
    assert world.c in [f.user_id for f in follows]  # followed by b, whom a follows
    assert not {world.a, world.b} & {f.user_id for f in follows}
    koos = await client.recommended_koos(world.a, limit=10)
    assert world.c_koo in [k.koo_id for k in koos]  # liked, in a's language, not followed
    assert not {world.a, world.b} & {k.author_id for k in koos}
    assert all(k.reason for k in koos)


async def test_errors(client: FeedClient, live: LiveApi, world: World) -> None:
    with pytest.raises(NotFound):
        await client.user(f"{world.a}-nobody")
    with pytest.raises(NotFound):
        await client.koo(f"{world.a}-no-koo")
    with pytest.raises(InvalidRequest) as bad_limit:
        await client.feed(world.a, limit=0)
    assert [d.field for d in bad_limit.value.details] == ["limit"]
    cursor = (await client.feed(world.a, limit=1)).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidCursor):  # a feed's cursor is no good for another list
        await client.user_koos(world.b, cursor=cursor)
    async with FeedClient(live.url, "not-the-token-123") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.user(world.a)


async def test_a_bad_batch_is_refused_with_its_problems(client: FeedClient,
                                                        world: World) -> None:
    good = _event("user_followed", int(time.time() * 1000), follower_id=world.c,
                  followee_id=world.a)
    bad = _event("user_followed", int(time.time() * 1000), follower_id=world.a,
                 followee_id=world.a)
    with pytest.raises(InvalidRequest) as refused:
        await client.publish([good, bad])
    assert refused.value.status == 422
    [detail] = refused.value.details
    assert (detail.index, detail.event_id, detail.type) == (1, bad["event_id"],
                                                            "user_followed")
    assert [p.field for p in detail.problems] == ["followee_id"]


def _readme_example() -> str:
    """The README's runnable example: its one block marked plain ``python``."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the README should have one runnable python block"
    return str(blocks[0])


def test_the_readme_example_runs(live: LiveApi, world: World, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_readme_example(), encoding="utf-8")
    env = {**os.environ, "FEED_URL": live.url, "FEED_TOKEN": live.token, "FEED_USER": world.a}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{world.a}: 0 followers, 1 following"
    assert sum(f" following   {world.b}: koo " in line for line in lines) == 5
    assert f"follow {world.c}? followed by 1 person you follow" in lines


async def test_the_stream_brings_a_new_koo(client: FeedClient, live: LiveApi,
                                           world: World) -> None:
    """A koo published while the reader streams arrives as a ``koo`` event."""
    fresh = f"{world.b}-live{uuid.uuid4().hex[:6]}"
    events = client.stream(world.a)

    async def first_koo() -> Any:
        async for event in events:
            if event.event == "koo":
                return event
        return None

    waiting = asyncio.create_task(first_koo())
    await asyncio.sleep(1.0)  # the stream is open before the koo is published
    now = int(time.time() * 1000)
    assert await _publish(live, [_event("koo_created", now, koo_id=fresh, author_id=world.b,
                                        text="live", lang="kn")]) == 1
    await asyncio.to_thread(_run, live.feed, ["worker", "--burst"], live.env, WORKER_TIMEOUT)
    event = await asyncio.wait_for(waiting, 30)
    assert event.koo_id == fresh
    assert event.item is not None
    assert event.item.reason == "following"
    assert event.id


async def test_notifications_aggregate_and_mark_seen(client: FeedClient, world: World) -> None:
    """b's notifications: a's follow, the likes of a and c on b's first koo as one
    notification, a's comment; iterated one per page; marking the newest seen leaves
    none unseen."""
    items = [n async for n in client.notifications(world.b, limit=1)]
    found = {(n.kind, n.koo_id): n for n in items}
    assert set(found) == {("follow", None), ("like", world.b_koos[0]),
                          ("comment", world.b_koos[0])}
    like = found[("like", world.b_koos[0])]
    assert like.actor_count == 2
    assert set(like.actors) == {world.a, world.c}
    assert found[("follow", None)].actors == (world.a,)
    assert [n.updated_at for n in items] == sorted((n.updated_at for n in items), reverse=True)
    assert (await client.notifications_page(world.b)).unseen == 3
    await client.mark_seen(world.b, max(n.updated_at for n in items))
    page = await client.notifications_page(world.b)
    assert page.unseen == 0
    assert all(n.seen for n in page.items)
