"""Erasure (``user_deleted``): nothing about the user remains, anywhere, and nothing comes
back.

Two DynamoDB endpoints stand in for two regions (the suite's own, and a moto server
process for eu-west-1, where the erased user's profile lives). Pass criteria: after the
erasure a scan of every table in both regions and of every key and value of the hot
cache finds the user's id only where it may stay (the ledger's event ids, the one
tombstone, dead letters cut down to ids, type and reason); every counter the erasure
moved equals what the remaining rows count; every route answers 404 for the user and
their koos; a replay of the user's old events is dead-lettered ``user_deleted`` and
changes nothing; the erasure is recorded in the audit trail without the id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from config.tables import AUDIT, DEAD_LETTERS, LEDGER, TABLES, USERS
from feed import keys
from feed.api.app import create_app
from feed.audit import AuditTrail, subject_of
from feed.erasure import Erasure
from feed.events import typed, validate_event
from feed.inspection import Inspector
from feed.models import User
from feed.services import Services, open_services
from feed.store import Dynamo, Entry, create_regional_tables, open_regions
from feed.store.ledger import USER_DELETED
from feed.store.users import TOMBSTONE_FIELDS
from tests.conftest import uid
from tests.helpers import (
    apply_all,
    event,
    follow,
    koo,
    now_ms,
    react,
    relation,
    second_dynamodb,
    signup,
    unfollow,
)

TOKEN = "test-token-123456"
LEDGER_FIELDS = {"event_id", "type", "digest", "outcome", "applied_at", "expires_at"}
EU = "eu-west-1"


@pytest.fixture(scope="module")
def eu_endpoint() -> Iterator[str]:
    yield from second_dynamodb()


@pytest.fixture
async def svc(settings: Settings, eu_endpoint: str) -> AsyncIterator[Services]:
    regional = settings.replace(regions={EU: (eu_endpoint, "")})
    async with open_regions(regional) as regions:
        await create_regional_tables(regions)
    async with open_services(regional) as services:
        yield services


# --- what may remain ------------------------------------------------------------------

async def _rows(db: Dynamo, dataset: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for page, _ in db.scan_pages(dataset, limit=1000):
        rows.extend(page)
    return rows


async def leftovers(svc: Services, user_id: str) -> list[str]:
    """Every place the id is found in storage or the hot cache but may not be."""
    found: list[str] = []
    needle = user_id.encode()
    dbs = {"home": svc.stores.db, **svc.stores.users.regions}
    for name, db in dbs.items():
        datasets = TABLES if name == "home" else (USERS,)
        for dataset in datasets:
            for row in await _rows(db, dataset):
                text = orjson.dumps(row, default=str)
                if needle not in text:
                    continue
                if dataset == LEDGER and set(row) <= LEDGER_FIELDS and needle not in (
                        orjson.dumps({k: v for k, v in row.items() if k != "event_id"})):
                    continue
                if (dataset == USERS and name == "home" and row["user_id"] == user_id
                        and set(row) <= set(TOMBSTONE_FIELDS)):
                    continue
                if dataset == DEAD_LETTERS and _ids_only(orjson.loads(row["payload"])):
                    continue
                found.append(f"{name}:{dataset}: {row}")
    cache = Redis.from_url(svc.settings.cache_redis_url or svc.settings.redis_url,
                           decode_responses=True)
    try:
        async for key in cache.scan_iter(count=1000):
            value = await _value(cache, key)
            if user_id in key or user_id in value:
                found.append(f"cache: {key} = {value[:200]}")
    finally:
        await cache.aclose()
    return found


def _ids_only(payload: Any) -> bool:
    if isinstance(payload, dict):
        return all((k == "type" or k.endswith(("_id", "_ids"))) and _ids_only(v)
                   for k, v in payload.items())
    if isinstance(payload, list):
        return all(_ids_only(v) for v in payload)
    return payload is None or isinstance(payload, str | int)


async def _value(redis: Redis, key: str) -> str:
    kind = await redis.type(key)
    if kind == "string":
        return str(await redis.get(key))
    if kind == "hash":
        fields: Any = redis.hgetall(key)
        return repr(await fields)
    if kind == "set":
        members: Any = redis.smembers(key)
        return repr(await members)
    if kind == "zset":
        return repr(await redis.zrange(key, 0, -1))
    if kind == "list":
        items: Any = redis.lrange(key, 0, -1)
        return repr(await items)
    if kind == "stream":
        return repr(await redis.xrange(key))
    return ""


async def counters_match_rows(svc: Services, users: list[str], koos: list[str]) -> list[str]:
    """Every user's followers/following and every koo's counters against the rows."""
    wrong: list[str] = []
    relations = svc.stores.relations
    for user in users:
        row = await svc.stores.db.get(USERS, {"user_id": user}, consistent=True) or {}
        followers = len(await relations.incoming(user, keys.REL_FOLLOW))
        following = len((await relations.outgoing(user))[keys.REL_FOLLOW])
        if (int(row.get("followers", 0)), int(row.get("following", 0))) != (followers,
                                                                              following):
            wrong.append(f"{user}: stored {row.get('followers')}/{row.get('following')}, "
                         f"rows {followers}/{following}")
    for koo_id in koos:
        item = await svc.stores.koos.get(koo_id, consistent=True) or {}
        rows, _ = await svc.stores.reactions.for_koo(koo_id, limit=1000)
        for kind, counter in (("like", "likes"), ("rekoo", "rekoos"), ("comment", "comments")):
            count = sum(1 for r in rows if r.kind == kind)
            if int(item.get(counter, 0)) != count:
                wrong.append(f"{koo_id}.{counter}: stored {item.get(counter)}, rows {count}")
    return wrong


# --- the story ----------------------------------------------------------------------------

def world(victim: str, friends: list[str], followers: list[str], koos_of_victim: list[str],
          friend_koo: str) -> list[dict[str, Any]]:
    """Events touching the victim in every role, with both active and inactive rows."""
    a, b, c = friends[:3]
    events = [signup(victim, lang="pt", region=EU), *(signup(f) for f in friends),
              *(signup(f) for f in followers)]
    events += [follow(victim, a), follow(victim, b), follow(a, victim)]
    events += [follow(f, victim) for f in followers]
    events += [follow(victim, c), unfollow(victim, c), follow(c, victim), unfollow(c, victim)]
    events += [relation("user_blocked", victim, b), relation("user_blocked", c, victim),
               relation("user_muted", a, victim), relation("user_muted", victim, c)]
    events += [koo(friend_koo, a, text="friend's koo")]
    events += [koo(k, victim, text=f"secret text {k}", lang="pt", hashtags=["private"])
               for k in koos_of_victim]
    events += [react("like", friend_koo, victim), react("comment", friend_koo, victim),
               react("rekoo", friend_koo, victim), react("rekoo", friend_koo, victim,
                                                         added=False)]
    for i, f in enumerate(followers):
        events.append(react("like", koos_of_victim[i % len(koos_of_victim)], f))
    events.append(react("comment", koos_of_victim[0], a))
    events.append(react("rekoo", friend_koo, b))
    # An event that can never apply, naming the victim: a dead letter with their id.
    events.append(event("koo_deleted", koo_id=friend_koo, author_id=victim))
    return events


async def read_everything(client: httpx.AsyncClient, readers: list[str], victim: str,
                          koo_id: str) -> None:
    """Warm the cache with every kind of read that could hold the victim."""
    for reader in [*readers, victim]:
        assert (await client.get(f"/v1/users/{reader}/feed?limit=50")).status_code == 200
        await client.get(f"/v1/users/{reader}/recommendations/follows")
        await client.get(f"/v1/users/{reader}/recommendations/koos")
    assert (await client.get(f"/v1/users/{victim}")).status_code == 200
    assert (await client.get(f"/v1/koos/{koo_id}")).status_code == 200
    assert (await client.get(f"/v1/koos/{koo_id}/reactions")).status_code == 200
    assert (await client.get(f"/v1/users/{victim}/koos")).status_code == 200


async def forget_finished_jobs(svc: Services) -> None:
    """Drop arq's results, which refuse a job id again for a while after it ran."""
    queue = Redis.from_url(svc.settings.redis_url)
    try:
        async for key in queue.scan_iter(match="arq:result:*"):
            await queue.delete(key)
    finally:
        await queue.aclose()


def routes_of(victim: str, koo_id: str) -> list[str]:
    return [f"/v1/users/{victim}", f"/v1/users/{victim}/feed", f"/v1/users/{victim}/koos",
            f"/v1/users/{victim}/recommendations/follows",
            f"/v1/users/{victim}/recommendations/koos", f"/v1/koos/{koo_id}",
            f"/v1/koos/{koo_id}/reactions"]


async def load_in_bulk(svc: Services, history: list[dict[str, Any]], victim: str,
                       fans: list[str], koo_ids: list[str]) -> list[dict[str, Any]]:
    """The fans' signups and follows, and the victim's koos with the timeline rows their
    fan-outs leave, written in batches in the form those events produce; returns the
    rest of ``history`` (to apply as events)."""
    at = now_ms()
    await svc.stores.users.load_many(
        [(User(f, f"@{f}", "hi", "ap-south-1", at, 0, 1), False) for f in fans], at=at)
    await svc.stores.relations.load_many([(f, keys.REL_FOLLOW, victim) for f in fans], at=at)
    bulk = {id(e) for e in history
            if (e["type"] == "user_signed_up" and e["user_id"] in set(fans))
            or (e["type"] == "user_followed" and e["followee_id"] == victim
                and e["follower_id"] in set(fans))
            or (e["type"] == "koo_created" and e["koo_id"] in set(koo_ids))}
    rest = [e for e in history if id(e) not in bulk]
    for e in history:
        if id(e) not in bulk or e["type"] != "koo_created":
            continue
        event = typed(validate_event(e))
        item = svc.stores.koos.create_item(event, pull=False)["Put"]["Item"]  # type: ignore[arg-type]
        item["fanout_state"] = "done"
        for name in ("fanout_shard", "fanout_deadline"):
            item.pop(name)
        await svc.stores.db.put("koos", item)
        await svc.stores.timelines.add([victim, *fans], Entry(e["koo_id"], victim,
                                                             e["occurred_at"]))
    # The victim's signup first, then everything else in order: its counters follow.
    await apply_all(svc, *[e for e in rest if e["type"] == "user_signed_up"])
    await svc.stores.db.update(USERS, {"user_id": victim}, "ADD followers :n",
                               values={":n": {"N": str(len(fans))}})
    return [e for e in rest if e["type"] != "user_signed_up"]


async def erase_and_check(svc: Services, *, followers: int, koos: int,
                          bulk: bool = False) -> None:
    victim = uid("er")
    friends = [uid("fr") for _ in range(3)]
    fans = [uid("fa") for _ in range(followers)]
    victim_koos = [uid("vk") for _ in range(koos)]
    friend_koo = uid("fk")
    history = world(victim, friends, fans, victim_koos, friend_koo)
    if bulk:
        history = await load_in_bulk(svc, history, victim, fans, victim_koos)
    await apply_all(svc, *history)
    assert await svc.stores.users.get(victim) is not None
    app = create_app(svc.settings, svc)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://feed",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        await read_everything(client, [*friends, *fans[:5]], victim, victim_koos[0])
        assert await leftovers(svc, victim), "the check must see the victim before erasure"

        erase = event("user_deleted", user_id=victim)
        started = time.monotonic()
        await apply_all(svc, erase)
        took = time.monotonic() - started

        progress = await Erasure(svc.manager, svc.jobs).progress(victim)
        assert progress is not None
        assert progress.step == "done", progress
        assert progress.counts["koos"] == koos
        assert progress.counts["relations"] >= followers + 7
        assert took < 300, f"erasure took {took:.0f} s"
        inspected = await Inspector(svc.manager).user(victim)
        assert inspected is not None
        assert inspected["erasure"]["step"] == "done"
        assert inspected["erasure"]["removed"]["koos"] == koos
        left = await leftovers(svc, victim)
        assert [x for x in left if "notifications" not in x] == []
        assert left == []
        others = [*friends, *fans]
        assert await counters_match_rows(svc, others, [friend_koo]) == []

        for route in routes_of(victim, victim_koos[0]):
            answer = await client.get(route)
            assert answer.status_code == 404, (route, answer.text)
        for reader in [*friends, *fans[:5]]:
            page = (await client.get(f"/v1/users/{reader}/feed?limit=100")).json()
            assert not [i for i in page["items"] if i["author_id"] == victim]

    # Every old event again, under its own event id (once the queue has forgotten the
    # job: a replay long after) and under new ones: each is refused as user_deleted.
    replays = [e for e in history if victim in orjson.dumps(e).decode()]
    renamed = [{**e, "event_id": uid("re")} for e in replays]
    await forget_finished_jobs(svc)
    await apply_all(svc, *replays, *renamed)
    reasons = {}
    for e in [*replays, *renamed]:
        letter = await svc.stores.dead_letters.get(keys.dead_letter_of_event(e["event_id"]))
        reasons[e["event_id"]] = None if letter is None else letter["reason"]
    assert set(reasons.values()) == {USER_DELETED}, reasons
    assert await leftovers(svc, victim) == []
    assert await counters_match_rows(svc, [*friends, *fans], [friend_koo]) == []

    # A second user_deleted is refused too, and the audit trail holds counts, not the id.
    rows = await AuditTrail(svc.stores.db).about(victim)
    assert [r["action"] for r in rows] == ["erasure"]
    assert rows[0]["requested_by"] == erase["event_id"]
    assert rows[0]["counts"]["koos"] == koos
    assert victim not in orjson.dumps(await _rows(svc.stores.db, AUDIT)).decode()
    assert rows[0]["subject"] == subject_of(victim)


async def test_erasure_leaves_nothing_and_nothing_comes_back(svc: Services) -> None:
    await erase_and_check(svc, followers=12, koos=6)


@pytest.mark.slow
@pytest.mark.slow_on_moto
@pytest.mark.default_client_only
@pytest.mark.timeout(1200)
async def test_erasure_of_a_user_with_two_thousand_followers(svc: Services) -> None:
    await erase_and_check(svc, followers=2000, koos=300, bulk=True)


async def test_a_second_user_deleted_is_dead_lettered(svc: Services) -> None:
    victim = uid("er")
    await apply_all(svc, signup(victim), event("user_deleted", user_id=victim))
    again = event("user_deleted", user_id=victim)
    await apply_all(svc, again)
    letter = await svc.stores.dead_letters.get(keys.dead_letter_of_event(again["event_id"]))
    assert letter is not None
    assert letter["reason"] == USER_DELETED


async def test_erasure_during_a_fan_out_of_their_koo(svc: Services) -> None:
    """The koo's fan-out is mid-way (chunks queued) when the erasure starts: the erasure
    waits for it, so no chunk delivered afterwards leaves a row behind."""
    victim, fans = uid("er"), [uid("fa") for _ in range(30)]
    await apply_all(svc, signup(victim), *(signup(f) for f in fans),
                    *(follow(f, victim) for f in fans))
    async with open_services(svc.settings.replace(fanout_chunk_size=5)) as small:
        k = uid("k")
        # The koo's event applied here: the first chunk inline, the rest queued as jobs.
        await small.applier.apply(typed(validate_event(koo(k, victim))))
        item = await small.stores.koos.get(k, consistent=True)
        assert item is not None
        assert item["fanout_state"] == "running", item
        await small.applier.apply(typed(validate_event(event("user_deleted", user_id=victim))))
        await apply_all(small)
        progress = await Erasure(small.manager, small.jobs).progress(victim)
        assert progress is not None
        assert progress.step == "done", progress
        assert await leftovers(small, victim) == []
        assert await counters_match_rows(small, fans, []) == []
