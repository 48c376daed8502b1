"""The demo's tour: a synthetic social graph, the events it publishes through the real
queue, and the figures it prints (``feed demo`` runs it in :mod:`feed.demo`)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from feed import keys, metrics
from feed.models import User
from feed.notifications import Notifications
from feed.reader import Reader
from feed.services import Services

__all__ = ["Graph", "make_graph", "print_next_steps", "print_summary", "tour", "wait_idle"]

LANGS = ("hi", "en", "pt", "ta", "bn")
WORDS = {
    "hi": "namaste dost cricket chai baarish khel sangeet dilli mumbai yatra",
    "en": "hello friends match tea rain game music city travel launch",
    "pt": "ola amigos jogo cafe chuva musica cidade viagem praia festa",
    "ta": "vanakkam nanba cinema kaapi mazhai isai chennai payanam kadal vizha",
    "bn": "nomoshkar bondhu khela cha brishti gaan kolkata bhromon nodi utsab",
}

@dataclass
class Graph:
    users: list[tuple[str, str]]  # (user_id, lang)
    follows: list[tuple[str, str]]
    celebrities: list[str]
    followers: dict[str, list[str]] = field(default_factory=dict)


def make_graph(n_users: int, seed: int) -> Graph:
    """A few celebrities followed by most, and a long tail with power-law popularity."""
    rng = random.Random(seed)
    users = [(f"user{i:04d}", rng.choice(LANGS)) for i in range(n_users)]
    ids = [u for u, _ in users]
    celebrities = ids[:3]
    follows: set[tuple[str, str]] = set()
    for reader in ids:
        for celeb in celebrities:
            if reader != celeb and rng.random() < 0.6:
                follows.add((reader, celeb))
        for _ in range(rng.randint(3, 25)):
            # Zipf-like: low ranks are far more popular.
            target = ids[min(len(ids) - 1, int(rng.paretovariate(1.2)) + 2)]
            if target != reader:
                follows.add((reader, target))
    graph = Graph(users, sorted(follows), celebrities)
    for follower, followee in graph.follows:
        graph.followers.setdefault(followee, []).append(follower)
    return graph


async def wait_idle(services: Services, limit_s: float = 120.0) -> None:
    """Until both queues are empty and no job is in progress."""
    deadline = time.monotonic() + limit_s
    redis = services.queue_redis
    quiet_rounds = 0
    while time.monotonic() < deadline:
        depth = await services.jobs.depth("realtime") + await services.jobs.depth("backfill")
        running = 0
        async for key in redis.scan_iter(match="arq:in-progress:*", count=1000):
            # A finished cron run leaves its in-progress mark behind, but not its job.
            job_id = key.removeprefix(b"arq:in-progress:")
            running += bool(await redis.exists(b"arq:job:" + job_id))

        quiet_rounds = quiet_rounds + 1 if depth == 0 and running == 0 else 0
        if quiet_rounds >= 3:
            return
        await asyncio.sleep(0.05)
    waiting = await redis.zrange(keys.QUEUE_REALTIME, 0, 4) + await redis.zrange(
        keys.QUEUE_BACKFILL, 0, 4
    )
    waiting += [k async for k in redis.scan_iter(match="arq:in-progress:*", count=1000)][:5]
    raise TimeoutError(f"the queues did not drain in time; waiting: {waiting}")


async def _load_graph(services: Services, graph: Graph, at: int) -> None:
    followers: dict[str, int] = {}
    following: dict[str, int] = {}
    for a, b in graph.follows:
        following[a] = following.get(a, 0) + 1
        followers[b] = followers.get(b, 0) + 1
    threshold = services.settings.celebrity_followers
    users = [
        (User(u, f"@{u}", lang, "sa-east-1" if lang == "pt" else "ap-south-1", at,
              followers.get(u, 0), following.get(u, 0)), followers.get(u, 0) >= threshold)
        for u, lang in graph.users
    ]
    await services.stores.users.load_many(users, at=at)
    await services.stores.relations.load_many(
        [(a, keys.REL_FOLLOW, b) for a, b in graph.follows], at=at
    )
    for user, _ in users:
        if user.followers:
            await services.cache.set_popularity(user.lang, user.user_id, user.followers)


def _ev(event_type: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "event_id": f"demo-{uuid.uuid4().hex}", "occurred_at": at, **fields}


async def tour(services: Services, *, users: int, seed: int, out: Any) -> dict[str, Any]:
    rng = random.Random(seed)
    graph = make_graph(users, seed)
    lang_of = dict(graph.users)
    publisher = services.publisher
    reader = Reader(services.manager)
    now = int(time.time() * 1000)
    t0 = now - 6 * 3_600_000

    # The graph is bulk-loaded in the form signups and follows produce (thousands of
    # follow events through the embedded DynamoDB would take minutes); koos, reactions,
    # deletes, blocks and mutes then go through the real queue and workers.
    with _phase(f"loaded {len(graph.users)} users and {len(graph.follows)} follows", out):
        await _load_graph(services, graph, t0)
    # History: koos over the last few hours, then reactions, some deletes, blocks and mutes.
    koos: list[tuple[str, str, int]] = []
    history = []
    authors = [u for u, _ in graph.users]
    weights = [5.0 if u in graph.celebrities else 1.0 / (1 + i / 20)
               for i, u in enumerate(authors)]
    for i in range(4 * users // 3):
        author = rng.choices(authors, weights)[0]
        lang = lang_of[author]
        at = t0 + 3_600_000 + i * 12_000
        koo_id = f"koo{i:05d}"
        text = " ".join(rng.choices(WORDS[lang].split(), k=rng.randint(4, 12)))
        tags = [f"#{rng.choice(WORDS[lang].split())}"] if rng.random() < 0.4 else []
        history.append(_ev("koo_created", at, koo_id=koo_id, author_id=author, text=text,
                           lang=lang, hashtags=tags))
        koos.append((koo_id, author, at))
    kinds = ("like", "like", "like", "rekoo", "comment")
    seen_reactions: set[tuple[str, str, str]] = set()
    for i in range(3 * users):
        koo_id, author, at = rng.choices(koos, [1 + (k[1] in graph.celebrities) * 4
                                                 for k in koos])[0]
        user = rng.choice(authors)
        kind = rng.choice(kinds)
        if (koo_id, user, kind) in seen_reactions:
            continue
        seen_reactions.add((koo_id, user, kind))
        history.append(_ev("reaction_added", at + 1_000 + i, koo_id=koo_id, user_id=user,
                           kind=kind))
    for koo_id, author, at in rng.sample(koos, max(1, len(koos) // 40)):
        history.append(_ev("koo_deleted", at + 600_000, koo_id=koo_id, author_id=author))
    for _ in range(users // 20):
        a, b = rng.sample(authors, 2)
        history.append(_ev(rng.choice(["user_blocked", "user_muted"]), now - 60_000,
                           user_id=a, target_id=b))
    label = (f"published {len(koos)} koos and {len(history) - len(koos)} reactions, deletes, "
             "blocks and mutes through the queue; workers applied them")
    with _phase(label, out):
        for start in range(0, len(history), 500):
            await publisher.publish(history[start:start + 500])
        await wait_idle(services)

    # Active readers: reading their feed builds their hot cache.
    active = [u for u, _ in graph.users if u not in graph.celebrities][:40]
    with _phase(f"first feed reads of {len(active)} readers (builds their hot cache)", out):
        for user in active:
            await reader.feed(user, limit=20)
        await services.manager.drain()

    # Delivery latency: fresh koos by tail authors, until visible in every active follower's
    # cached timeline.
    latencies: list[float] = []
    celebrities = set(await services.stores.users.celebrities())
    tail_authors = [a for a in authors if a not in celebrities
                    and set(graph.followers.get(a, ())) & set(active)]
    measure = _phase("delivery of fresh koos to active followers, one at a time", out)
    measure.__enter__()
    for i in range(min(30, len(tail_authors))):
        author = tail_authors[i]
        watchers = [f for f in graph.followers.get(author, []) if f in active]
        koo_id = f"fresh{i:03d}"
        sent = time.monotonic()
        await publisher.publish([_ev("koo_created", int(time.time() * 1000), koo_id=koo_id,
                                     author_id=author, text="just now", lang=lang_of[author])])
        if await _visible(services, watchers, koo_id, limit_s=10.0):
            latencies.append(time.monotonic() - sent)
    await wait_idle(services)
    measure.__exit__(None, None, None)

    # Read feeds again: these are served from the hot cache.
    before = _timeline_lookups()
    with _phase(f"second feed reads of {len(active)} readers", out):
        for user in active:
            await reader.feed(user, limit=20)
    after = _timeline_lookups()
    hits, misses = after[0] - before[0], after[1] - before[1]
    showcase = max(active, key=lambda u: sum(1 for f, _ in graph.follows if f == u))
    page = await reader.feed(showcase, limit=12)
    _print_feed(showcase, page.as_json(explain=True)["items"], out)
    # Notifications, built by the workers from the reactions and follows above.
    author_of = {koo_id: author for koo_id, author, _ in koos}
    received: dict[str, int] = {}
    for raw in history:
        if raw["type"] == "reaction_added":
            author = author_of[raw["koo_id"]]
            received[author] = received.get(author, 0) + 1
    await _print_notifications(services, max(received, key=lambda u: received[u]), out)
    return {
        "users": len(graph.users), "follows": len(graph.follows), "koos": len(koos),
        "events": len(history) + len(latencies),
        "latencies": latencies, "hit_rate": hits / max(1, hits + misses),
        "celebrities": sorted(celebrities),
        "celebrity_threshold": services.settings.celebrity_followers,
    }


async def _visible(services: Services, readers: list[str], koo_id: str, *, limit_s: float
                   ) -> bool:
    redis = services.cache.redis
    deadline = time.monotonic() + limit_s
    pending = set(readers)
    while pending and time.monotonic() < deadline:
        pipe = redis.pipeline(transaction=False)
        ordered = sorted(pending)
        for reader in ordered:
            pipe.zscore(keys.timeline(reader), koo_id)
        found = await pipe.execute()
        pending = {r for r, score in zip(ordered, found, strict=True) if score is None}
        if pending:
            await asyncio.sleep(0.002)
    return not pending


@contextlib.contextmanager
def _phase(label: str, out: Any) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"- {label} ({time.monotonic() - started:.1f} s)", file=out)
    out.flush()


def _timeline_lookups() -> tuple[float, float]:
    """(hits, misses) of cached-timeline lookups so far in this process."""
    hits = misses = 0.0
    for family in metrics.CACHE_LOOKUPS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("kind") == "timeline":
                if sample.labels.get("result") == "hit":
                    hits += sample.value
                else:
                    misses += sample.value
    return hits, misses


def _print_feed(user: str, items: list[dict[str, Any]], out: Any) -> None:
    print(f"\nRanked feed of {user} (first {len(items)} items):", file=out)
    print(f"  {'#':>2}  {'reason':<11} {'score':>6}  {'author':<9} {'koo':<9} "
          f"{'likes':>5} {'rekoos':>6} {'cmnts':>5}  text", file=out)
    for i, item in enumerate(items, start=1):
        text = item["text"] if len(item["text"]) <= 40 else item["text"][:37] + "..."
        print(f"  {i:>2}  {item['reason']:<11} {item['score']:>6.3f}  {item['author_id']:<9} "
              f"{item['koo_id']:<9} {item['likes']:>5} {item['rekoos']:>6} "
              f"{item['comments']:>5}  {text}", file=out)


async def _print_notifications(services: Services, user: str, out: Any) -> None:
    page = await Notifications.over(services.manager).page(user, limit=6)
    print(f"\nNotifications of {user} ({page['unseen']} unseen; newest first):", file=out)
    for item in page["items"]:
        on = f" on {item['koo_id']}" if item["koo_id"] else ""
        others = item["actor_count"] - len(item["actors"])
        who = ", ".join(item["actors"]) + (f" and {others} more" if others > 0 else "")
        print(f"  {item['kind']:<8}{on:<13} {who}", file=out)


def print_summary(summary: dict[str, Any], out: Any) -> None:
    latencies = sorted(summary["latencies"])
    print("\nSummary", file=out)
    threshold = summary["celebrity_threshold"]
    if summary["celebrities"]:
        celebrities = (f"celebrities (at least {threshold} followers, pulled at read time) "
                       f"{', '.join(summary['celebrities'])}")
    else:
        celebrities = (f"no celebrity: no author reached the threshold of {threshold} "
                       "followers at this size (try more --users)")
    print(f"  graph        {summary['users']} users, {summary['follows']} follows; "
          f"{celebrities}", file=out)
    print(f"  published    {summary['koos']} koos, {summary['events']} events in all", file=out)
    if latencies:
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        print(f"  delivery     p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"(event accepted -> in every active follower's cached timeline; "
              f"{len(latencies)} koos)", file=out)
    print(f"  cache        timeline hit rate {summary['hit_rate']:.0%} on the second reads "
          "(the first read of an inactive reader rebuilds their cache)", file=out)
    print(f"  elapsed      {summary['elapsed_s']:.1f} s", file=out)


def print_next_steps(out: Any) -> None:
    print("\nNext: `feed demo --serve` (or `make demo DEMO_ARGS=--serve`) keeps the API up "
          "afterwards and prints a token and curl commands to try; every route is in "
          "docs/api.md.", file=out)
