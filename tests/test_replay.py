"""The acceptance test of idempotent event application: a replay changes nothing.

Valid events (signups, follows, unfollows, koos, reactions, deletes, blocks
and mutes among 200 users; deterministic) are applied once, concurrently, the
follow-up jobs are run, and every table of a fresh prefix is snapshotted. Then
the same events are applied again, concurrently and in another order, the
jobs are run again, and the snapshot must be identical. The first snapshot
is also checked on its own: every counter equals the rows it counts, and
every relation and reaction row holds the state of its newest event.

``FEED_REPLAY_EVENTS`` sets the number of events: 10,000 by default on
DynamoDB Local (about 4 minutes on 2 cores), 1,000 on moto, whose server
handles about 100 requests a second (10,000 events there take over 40
minutes). ``FEED_REPLAY_USERS`` sets the number of users (200).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.settings import Settings
from config.tables import (
    DEAD_LETTERS,
    KOOS,
    LEDGER,
    REACTIONS,
    RECOMMENDATIONS,
    RELATIONS,
    TABLES,
    TIMELINES,
    USERS,
)
from feed import keys
from feed.errors import NotReady
from feed.events import typed, validate_event
from feed.services import Services, open_services
from feed.store import create_tables, drop_tables
from tests.conftest import BACKEND, uid
from tests.helpers import drain
from tests.store._moto import serialize_moto_dynamodb

EVENTS = int(os.environ.get("FEED_REPLAY_EVENTS", "10000" if BACKEND == "local" else "1000"))
USERS_COUNT = int(os.environ.get("FEED_REPLAY_USERS", "200"))
CONCURRENCY = 64
SEED = 20_240_611
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
LANGS = ("hi", "en", "pt", "ta", "bn")
WORDS = ("namaste", "cricket", "monsoon", "chai", "election", "budget", "film", "music",
         "startup", "train", "festival", "rain", "market", "village", "science")

pytestmark = [pytest.mark.slow, pytest.mark.slow_on_moto,
              pytest.mark.timeout(120 + EVENTS // 2)]

# Attributes that hold the wall clock of the write, not the outcome of the events.
VOLATILE = {
    LEDGER: {"applied_at", "expires_at"},
    TIMELINES: {"expires_at"},
    KOOS: {"fanout_deadline"},
    RECOMMENDATIONS: {"computed_at", "expires_at"},
    DEAD_LETTERS: {"failed_at"},
}

# type -> weight of the events after the signups
MIX = {
    "user_followed": 27, "user_unfollowed": 7, "koo_created": 25, "reaction_added": 20,
    "reaction_removed": 6, "koo_deleted": 3, "user_blocked": 3, "user_unblocked": 1,
    "user_muted": 3, "user_unmuted": 1, "user_signed_up": 1,
}
# relation event -> (relation kind, on)
RELATION_EVENTS = {
    "user_followed": (keys.REL_FOLLOW, True), "user_unfollowed": (keys.REL_FOLLOW, False),
    "user_blocked": (keys.REL_BLOCK, True), "user_unblocked": (keys.REL_BLOCK, False),
    "user_muted": (keys.REL_MUTE, True), "user_unmuted": (keys.REL_MUTE, False),
}

# Reactions and deletes only name koos created this many events earlier, and no relation
# or reaction row is touched twice within this many events: applied with CONCURRENCY
# events in flight, a reaction rarely reaches its koo first, and an event has committed
# its row long before the next event of that row starts, so the check that the newest
# event decides each row does not depend on the race of EventApplier's settle (see
# tests/store/test_counters.py).
SETTLED = 2 * CONCURRENCY


def generate(count: int, users: int, seed: int) -> list[dict[str, Any]]:
    """``count`` valid events, the same for the same arguments, in time order."""
    rng = random.Random(seed)
    ids = [f"rp{i:04d}" for i in range(users)]
    events: list[dict[str, Any]] = []
    koos: list[tuple[str, str, int]] = []  # (koo_id, author, index of its event)
    live: set[str] = set()
    touched: dict[tuple[str, ...], int] = {}  # row -> index of its latest event

    def fresh(row: tuple[str, ...]) -> bool:
        """Claim a relation or reaction row unless it was touched too recently."""
        if len(events) - touched.get(row, -SETTLED) < SETTLED:
            return False
        touched[row] = len(events)
        return True

    def add(event_type: str, **fields: Any) -> None:
        n = len(events)
        events.append({"type": event_type, "event_id": f"rp-{seed}-{n:06d}",
                       "occurred_at": BASE_MS + 10 * n, **fields})

    def signup(user: str) -> None:
        add("user_signed_up", user_id=user, handle=f"@{user}{rng.randint(0, 9)}",
            lang=rng.choice(LANGS), region=rng.choice(("ap-south-1", "ap-south-2")))

    def pair() -> tuple[str, str]:
        a, b = rng.sample(ids, 2)
        return a, b

    for user in ids:
        signup(user)
    kinds, weights = zip(*MIX.items(), strict=True)
    while len(events) < count:
        kind = rng.choices(kinds, weights)[0]
        old = [k for k in koos if k[2] <= len(events) - SETTLED]
        if kind in ("reaction_added", "reaction_removed", "koo_deleted") and not old:
            kind = "koo_created"
        if kind == "user_signed_up":
            signup(rng.choice(ids))
        elif kind in RELATION_EVENTS:
            a, b = pair()
            if not fresh((RELATION_EVENTS[kind][0], a, b)):
                continue
            if kind in ("user_followed", "user_unfollowed"):
                add(kind, follower_id=a, followee_id=b)
            else:
                add(kind, user_id=a, target_id=b)
        elif kind == "koo_created":
            koo_id, author = f"rpk{len(koos):05d}", rng.choice(ids)
            text = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
            parent = rng.choice(koos)[0] if koos and rng.random() < 0.2 else None
            add(kind, koo_id=koo_id, author_id=author, text=text, lang=rng.choice(LANGS),
                hashtags=rng.sample(WORDS, rng.randint(0, 3)),
                reply_to=parent if rng.random() < 0.5 else None,
                rekoo_of=parent if parent and rng.random() < 0.5 else None)
            koos.append((koo_id, author, len(events) - 1))
            live.add(koo_id)
        elif kind == "koo_deleted":
            candidates = [k for k in old if k[0] in live]
            if not candidates:
                continue
            koo_id, author, _ = rng.choice(candidates)
            live.discard(koo_id)
            add(kind, koo_id=koo_id, author_id=author)
        else:
            koo_id, user = rng.choice(old)[0], rng.choice(ids)
            reaction = rng.choice(("like", "like", "like", "rekoo", "comment"))
            if fresh((koo_id, user, reaction)):
                add(kind, koo_id=koo_id, user_id=user, kind=reaction)
    return [validate_event(e) for e in events]


async def apply_many(services: Services, events: list[dict[str, Any]]) -> Counter[str]:
    """Apply events with CONCURRENCY in flight; retry the few that come before their koo."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(event: dict[str, Any]) -> str:
        async with semaphore:
            for _ in range(200):
                try:
                    return await services.applier.apply(typed(event))
                except NotReady:
                    await asyncio.sleep(0.05)
            raise AssertionError(f"{event['event_id']} never became applicable")

    return Counter(await asyncio.gather(*(one(e) for e in events)))


async def snapshot(services: Services) -> dict[str, dict[str, dict[str, Any]]]:
    """Every item of every table, by primary key, without the volatile attributes."""
    db = services.stores.db
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset, definition in TABLES.items():
        drop = VOLATILE.get(dataset, set())
        items: dict[str, dict[str, Any]] = {}
        async for page, _ in db.scan_pages(dataset, limit=1_000):
            for item in page:
                key = json.dumps([item[definition.pk], item.get(definition.sk or "", "")])
                assert key not in items, f"{dataset}: {key} scanned twice"
                items[key] = {k: sorted(v) if isinstance(v, set) else v
                              for k, v in item.items() if k not in drop}
        tables[dataset] = items
    return tables


def differences(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
                limit: int = 10) -> list[str]:
    found = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            found.append(f"{key}: {before.get(key)} -> {after.get(key)}")
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


def check_counters(tables: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Every stored counter equals the number of active rows it counts."""
    followers: Counter[str] = Counter()
    following: Counter[str] = Counter()
    for row in tables[RELATIONS].values():
        kind, other = keys.split_relation_sk(row["rel"])
        if kind == keys.REL_FOLLOW and row.get("active"):
            followers[other] += 1
            following[row["user_id"]] += 1
    for user in tables[USERS].values():
        assert int(user.get("followers", 0)) == followers[user["user_id"]], user
        assert int(user.get("following", 0)) == following[user["user_id"]], user
    reactions: Counter[tuple[str, str]] = Counter()
    for row in tables[REACTIONS].values():
        if row.get("active"):
            reactions[row["koo_id"], row["kind"]] += 1
    counter_of = {"like": "likes", "rekoo": "rekoos", "comment": "comments"}
    for koo in tables[KOOS].values():
        if "created_at" not in koo:
            continue  # a tombstone
        for kind, attribute in counter_of.items():
            assert int(koo.get(attribute, 0)) == reactions[koo["koo_id"], kind], koo


def check_newest_wins(events: list[dict[str, Any]],
                      tables: dict[str, dict[str, dict[str, Any]]]) -> int:
    """Every relation and reaction row holds the state (and version) of its newest event.
    Returns how many rows were checked."""
    newest: dict[tuple[str, ...], tuple[int, bool]] = {}
    for e in events:
        if e["type"] in RELATION_EVENTS:
            kind, on = RELATION_EVENTS[e["type"]]
            user, other = ((e["follower_id"], e["followee_id"]) if kind == keys.REL_FOLLOW
                           else (e["user_id"], e["target_id"]))
            row: tuple[str, ...] = (RELATIONS, user, keys.relation_sk(kind, other))
        elif e["type"] in ("reaction_added", "reaction_removed"):
            on = e["type"] == "reaction_added"
            row = (REACTIONS, e["koo_id"], keys.reaction_sk(e["user_id"], e["kind"]))
        else:
            continue
        if row not in newest or newest[row][0] < e["occurred_at"]:
            newest[row] = (e["occurred_at"], on)
    stored: dict[tuple[str, ...], tuple[int, bool]] = {}
    for item in tables[RELATIONS].values():
        stored[RELATIONS, item["user_id"], item["rel"]] = (item["ver"], bool(item["active"]))
    for item in tables[REACTIONS].values():
        stored[REACTIONS, item["koo_id"], item["rk"]] = (item["ver"], bool(item["active"]))
    wrong = [(row, want, stored.get(row)) for row, want in newest.items()
             if stored.get(row) != want]
    assert not wrong, f"{len(wrong)} rows do not hold their newest event: {wrong[:10]}"
    return len(newest)


@pytest.fixture
async def replay_services(settings: Settings) -> AsyncIterator[Services]:
    """Services over tables of a fresh prefix, dropped afterwards."""
    if BACKEND == "moto":
        serialize_moto_dynamodb()
    fresh = settings.replace(table_prefix=f"{uid('rp')}_")
    async with open_services(fresh) as svc:
        await create_tables(svc.stores.db)
        try:
            yield svc
        finally:
            await drop_tables(svc.stores.db)


async def test_replaying_every_event_concurrently_changes_nothing(
    replay_services: Services, capsys: pytest.CaptureFixture[str],
) -> None:
    services = replay_services
    events = generate(EVENTS, USERS_COUNT, SEED)
    assert len(events) == EVENTS
    assert len({e["event_id"] for e in events}) == EVENTS
    timings: dict[str, float] = {}

    started = time.perf_counter()
    first = await apply_many(services, events)
    timings["apply"] = time.perf_counter() - started
    started = time.perf_counter()
    await drain(services)
    timings["jobs"] = time.perf_counter() - started
    started = time.perf_counter()
    before = await snapshot(services)
    timings["snapshot"] = time.perf_counter() - started

    sizes = {dataset: len(items) for dataset, items in before.items()}
    assert sizes[LEDGER] == EVENTS
    assert sizes[USERS] == USERS_COUNT
    assert sizes[DEAD_LETTERS] == 0
    assert min(sizes[d] for d in (KOOS, RELATIONS, REACTIONS, TIMELINES)) > 0
    check_counters(before)
    rows_checked = check_newest_wins(events, before)

    shuffled = list(events)
    random.Random(SEED + 1).shuffle(shuffled)
    started = time.perf_counter()
    second = await apply_many(services, shuffled)
    timings["replay"] = time.perf_counter() - started
    started = time.perf_counter()
    await drain(services)
    timings["replay jobs"] = time.perf_counter() - started
    after = await snapshot(services)

    with capsys.disabled():
        print(f"\n[replay] backend={BACKEND} events={EVENTS} users={USERS_COUNT} "
              + " ".join(f"{k}={v:.1f}s" for k, v in timings.items())
              + f" first={dict(first)} rows={sizes} versioned rows checked={rows_checked}")
    assert second == Counter({"duplicate": EVENTS})
    for dataset in TABLES:
        assert after[dataset] == before[dataset], (
            f"{dataset} changed by the replay:\n"
            + "\n".join(differences(before[dataset], after[dataset]))
        )
