"""Data residency: profiles live in their home region's table, read from there.

Two DynamoDB endpoints stand in for two regions: the suite's own (home,
ap-south-1) and a separate moto server process (eu-west-1). Pass criteria:
an eu-west-1 user's handle, language and signup time are stored only in the
eu-west-1 endpoint; the home table keeps the id, the region pointer and the
counters; the API reads the profile from its region; timelines and job
results carry ids only; a user who moves region leaves nothing behind; and
``feed tables create`` creates the regional table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from config.tables import DEAD_LETTERS, TIMELINES, USERS
from feed import keys
from feed.api.app import create_app
from feed.cli import main
from feed.services import Services, open_services
from feed.store import Dynamo, create_regional_tables, open_dynamo, open_regions
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, second_dynamodb, signup
from tests.workers._support import job_ctx
from workers.events import apply_event

TOKEN = "test-token-123456"
EU = "eu-west-1"


@pytest.fixture(scope="module")
def eu_endpoint() -> Iterator[str]:
    """A second DynamoDB endpoint: moto's server in its own process."""
    yield from second_dynamodb()


@pytest.fixture
def regional_settings(settings: Settings, eu_endpoint: str) -> Settings:
    return settings.replace(regions={EU: (eu_endpoint, "")})


@pytest.fixture
async def svc(regional_settings: Settings) -> AsyncIterator[Services]:
    async with open_regions(regional_settings) as regions:
        await create_regional_tables(regions)
    async with open_services(regional_settings) as services:
        yield services


async def _raw(db: Dynamo, dataset: str, key: dict[str, Any]) -> dict[str, Any] | None:
    return await db.get(dataset, key, consistent=True)


def _eu(svc: Services) -> Dynamo:
    db = svc.stores.users.home_of(EU)
    assert db is not None, "eu-west-1 should have its own store"
    return db


async def test_a_profile_lives_only_in_its_home_region(svc: Services) -> None:
    home_user, eu_user = uid("in"), uid("eu")
    k = uid("k")
    await apply_all(svc, signup(home_user, lang="hi"), signup(eu_user, lang="pt", region=EU),
                    follow(home_user, eu_user), koo(k, eu_user, lang="pt"))
    eu_db, home_db = _eu(svc), svc.stores.db

    home_row = await _raw(home_db, USERS, {"user_id": eu_user})
    assert home_row is not None
    assert home_row["region"] == EU
    assert home_row["followers"] == 1
    assert not {"handle", "lang", "created_at"} & set(home_row), home_row
    regional = await _raw(eu_db, USERS, {"user_id": eu_user})
    assert regional is not None
    assert regional["handle"] == f"@{eu_user}"
    assert regional["lang"] == "pt"
    # The home-region user stays in the service's own table, nothing of them in eu-west-1.
    assert (await _raw(home_db, USERS, {"user_id": home_user}) or {}).get("handle")
    assert await _raw(eu_db, USERS, {"user_id": home_user}) is None

    # The timeline row that delivered the eu-west-1 author's koo holds ids and numbers only.
    rows = [r async for r in home_db.query(TIMELINES, "reader_id = :u",
                                           values={":u": {"S": home_user}})]
    assert [r["koo_id"] for r in rows] == [k]
    assert "@" not in repr(rows), rows  # handles start with @, ids cannot hold one


async def test_the_api_reads_each_profile_from_its_region(svc: Services) -> None:
    home_user, eu_user = uid("in"), uid("eu")
    await apply_all(svc, signup(home_user), signup(eu_user, lang="pt", region=EU),
                    follow(home_user, eu_user))
    app = create_app(svc.settings, svc)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://feed",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        eu = (await client.get(f"/v1/users/{eu_user}")).json()
        home = (await client.get(f"/v1/users/{home_user}")).json()
    assert eu == {"user_id": eu_user, "handle": f"@{eu_user}", "lang": "pt", "region": EU,
                  "followers": 1, "following": 0, "created_at": eu["created_at"]}
    assert eu["created_at"] > 0
    assert home["region"] == "ap-south-1"
    assert home["following"] == 1

    # Without its region's store the profile cannot be read: it is not in our table.
    await svc.cache.drop_profiles(eu_user)
    async with open_services(svc.settings.replace(regions={})) as plain:
        user = await plain.stores.users.get(eu_user)
    assert user is not None
    assert user.handle == "", "the home table must not hold the handle"


async def test_job_results_keep_ids_only(svc: Services) -> None:
    eu_user = uid("eu")
    handle = f"@{eu_user}-secret"
    event = signup(eu_user, region=EU)
    event["handle"] = handle
    await apply_all(svc, event)
    redis = Redis.from_url(svc.settings.redis_url)
    try:
        stored = [await redis.get(key) async for key in redis.scan_iter("arq:result:*")]
    finally:
        await redis.aclose()
    assert stored, "arq kept no results: the check below would prove nothing"
    assert not [raw for raw in stored if raw and handle.encode() in raw]
    assert any(raw and eu_user.encode() in raw for raw in stored)


async def test_moving_region_leaves_nothing_behind(svc: Services) -> None:
    user = uid("mv")
    first = signup(user, lang="pt", region=EU)
    await apply_all(svc, first)
    assert await _raw(_eu(svc), USERS, {"user_id": user}) is not None

    await apply_all(svc, signup(user, lang="hi", region="ap-south-1"))
    assert await _raw(_eu(svc), USERS, {"user_id": user}) is None
    profile = await svc.stores.users.get(user, consistent=True)
    assert profile is not None
    assert (profile.region, profile.lang) == ("ap-south-1", "hi")

    # The old signup replayed under a new event id is older: nothing is copied back.
    await apply_all(svc, {**first, "event_id": uid("ev")})
    assert await _raw(_eu(svc), USERS, {"user_id": user}) is None
    profile = await svc.stores.users.get(user, consistent=True)
    assert profile is not None
    assert profile.region == "ap-south-1"

    # Moving back stores it in eu-west-1 again and strips it from the home table.
    await apply_all(svc, signup(user, lang="en", region=EU))
    row = await _raw(svc.stores.db, USERS, {"user_id": user})
    assert row is not None
    assert "handle" not in row
    assert row["region"] == EU
    profile = await svc.stores.users.get(user, consistent=True)
    assert profile is not None
    assert (profile.region, profile.lang) == (EU, "en")


async def test_a_replayed_signup_is_a_no_op(svc: Services) -> None:
    user = uid("eu")
    event = signup(user, region=EU)
    await apply_all(svc, event)
    await apply_all(svc, {**event, "event_id": uid("ev")})
    profile = await svc.stores.users.get(user, consistent=True)
    assert profile is not None
    assert profile.handle == f"@{user}"


def test_tables_create_makes_the_regional_table(
    settings: Settings, eu_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"r{uid()[1:7]}_"
    monkeypatch.setenv("FEED_DYNAMODB_ENDPOINT", settings.dynamodb_endpoint or "")
    monkeypatch.setenv("FEED_TABLE_PREFIX", prefix)
    monkeypatch.setenv("FEED_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("FEED_REGIONS", f"{EU}={eu_endpoint}|{prefix}eu_")
    assert main(["tables", "create"]) == 0

    async def regional_tables() -> list[str]:
        async with open_dynamo(settings, endpoint=eu_endpoint, region=EU, regional=True,
                               prefix="") as db:
            return list((await db.admin("list_tables")).get("TableNames", []))

    assert f"{prefix}eu_{USERS}" in asyncio.run(regional_tables())


async def test_a_dead_letter_holds_ids_and_its_whole_event_stays_in_the_home_region(
    svc: Services,
) -> None:
    """Pass: a koo by an eu-west-1 user that cannot apply (its event_id reused) leaves a
    dead letter, in the serving region, without the koo's text or hashtags; the whole
    event is in eu-west-1's dead-letter table, and nowhere else; `show` and a replay put
    it back together; purging the letter removes the held event too."""
    eu_user, first, second = uid("eu"), uid("k"), uid("k")
    await apply_all(svc, signup(eu_user, lang="pt", region=EU), koo(first, eu_user))
    reused = {**koo(second, eu_user, lang="pt"), "text": "a secret of " + eu_user,
              "hashtags": ["private"], "event_id": uid("e")}
    await apply_all(svc, {**koo(uid("k"), eu_user), "event_id": reused["event_id"]})
    assert await apply_event(job_ctx(svc), reused) == "dead-lettered"
    dl_id = keys.dead_letter_of_event(reused["event_id"])

    here = await _raw(svc.stores.db, DEAD_LETTERS, {"dl_id": dl_id})
    assert here is not None
    assert "secret" not in str(here), here
    assert "private" not in str(here), here
    assert here["held_in"] == EU
    assert await _raw(svc.stores.db, DEAD_LETTERS, {"dl_id": "held#" + dl_id}) is None
    held = await _raw(_eu(svc), DEAD_LETTERS, {"dl_id": "held#" + dl_id})
    assert held is not None
    assert "a secret of" in str(held["payload"])

    listed = [d for d in await svc.stores.dead_letters.all() if d["dl_id"] == dl_id]
    assert [d["payload"].get("text") for d in listed] == [None]
    letter = await svc.stores.dead_letters.get(dl_id)
    assert letter is not None
    assert {k: letter["payload"].get(k) for k in reused} == reused  # the whole event

    assert await svc.stores.dead_letters.remove(dl_id, int(here["failed_at"]))
    assert await _raw(_eu(svc), DEAD_LETTERS, {"dl_id": "held#" + dl_id}) is None


async def test_an_erasure_scrubs_the_events_held_in_the_home_region(svc: Services) -> None:
    """Pass: after DeadLetters.scrub(user) the held event naming the user is gone from
    the home region and the letter keeps ids only."""
    eu_user = uid("eu")
    dl_id = "event:" + uid("e")
    event = {**koo(uid("k"), eu_user), "text": "words of " + eu_user}
    await svc.stores.dead_letters.add(dl_id, event, "test", home=EU)
    assert await _raw(_eu(svc), DEAD_LETTERS, {"dl_id": "held#" + dl_id}) is not None
    assert await svc.stores.dead_letters.scrub(eu_user) == 1
    assert await _raw(_eu(svc), DEAD_LETTERS, {"dl_id": "held#" + dl_id}) is None
    kept = await _raw(svc.stores.db, DEAD_LETTERS, {"dl_id": dl_id})
    assert kept is not None
    assert "words of" not in str(kept)
    assert "held_in" not in kept
