"""``feed users export``: one JSON document of everything stored about a user.

Pass criteria: for a user whose profile lives in another region (a second DynamoDB
endpoint), the document written by the command holds the profile read from that
region, and exactly the koos, reactions, relations both ways, timeline and
notifications their events created; the export is recorded in the audit trail with
counts and the command line, and without the id; an unknown or erased user exits 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from config.settings import Settings
from feed.api.app import create_app
from feed.audit import AuditTrail
from feed.cli import main
from feed.services import Services, open_services
from feed.store import create_regional_tables, open_regions
from tests.conftest import uid
from tests.helpers import apply_all, event, follow, koo, react, relation, second_dynamodb, signup
from tests.test_erasure import EU


@pytest.fixture(scope="module")
def eu_endpoint() -> Iterator[str]:
    yield from second_dynamodb()


@pytest.fixture
async def svc(settings: Settings, eu_endpoint: str, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Services]:
    regional = settings.replace(regions={EU: (eu_endpoint, "")})
    async with open_regions(regional) as regions:
        await create_regional_tables(regions)
    for name, value in {
        "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "FEED_TABLE_PREFIX": settings.table_prefix, "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url or settings.redis_url,
        "FEED_DYNAMODB_CLIENT": settings.dynamodb_client, "FEED_REGIONS": f"{EU}={eu_endpoint}",
    }.items():
        monkeypatch.setenv(name, value)
    async with open_services(regional) as services:
        yield services


async def export(args: list[str]) -> int:
    return await asyncio.to_thread(main, ["users", "export", *args])


async def test_export_holds_what_the_users_events_created(svc: Services, tmp_path: Path
                                                          ) -> None:
    me, friend, fan, pest = uid("me"), uid("fr"), uid("fa"), uid("pe")
    mine, theirs = [uid("k"), uid("k")], uid("k")
    await apply_all(
        svc, signup(me, lang="pt", region=EU), signup(friend), signup(fan), signup(pest),
        follow(me, friend), follow(fan, me), relation("user_blocked", me, pest),
        relation("user_muted", me, fan),
        koo(mine[0], me, text="first", lang="pt"), koo(mine[1], me, text="second", lang="pt"),
        koo(theirs, friend, text="hello"), react("like", theirs, me),
        react("comment", mine[0], fan),
    )
    out = tmp_path / "export.json"
    assert await export([me, "--out", str(out)]) == 0
    document = orjson.loads(out.read_bytes())

    assert document["profile"]["handle"] == f"@{me}"
    assert document["profile"]["region"] == EU
    assert (document["profile"]["followers"], document["profile"]["following"]) == (1, 1)
    assert sorted(k["koo_id"] for k in document["koos"]) == sorted(mine)
    assert {k["text"] for k in document["koos"]} == {"first", "second"}
    assert [(r["koo_id"], r["kind"]) for r in document["reactions"]] == [(theirs, "like")]
    assert document["following"] == [friend]
    assert document["followers"] == [fan]
    assert document["blocking"] == [pest]
    assert document["muting"] == [fan]
    assert {e["koo_id"] for e in document["timeline"]} == {*mine, theirs}
    assert [(n["kind"], n["actors"]) for n in document["notifications"]] == [
        ("comment", [fan])] or document["notifications"] == []

    rows = await AuditTrail(svc.stores.db).about(me)
    assert [r["action"] for r in rows] == ["export"]
    assert rows[0]["requested_by"].startswith("cli: feed users export --out ")
    assert rows[0]["counts"]["koos"] == 2
    assert me not in orjson.dumps(rows).decode()


async def test_export_of_an_unknown_or_erased_user_exits_1(svc: Services) -> None:
    gone = uid("gn")
    await apply_all(svc, signup(gone), event("user_deleted", user_id=gone))
    assert await export([uid("no")]) == 1
    assert await export([gone]) == 1


async def test_a_regional_profile_is_never_cached_here(svc: Services) -> None:
    """The profile of a user whose home is another region answers from there; the hot
    cache (in this region) holds at most its id, region pointer and counters, while a
    local user's profile is cached whole."""
    here, away = uid("in"), uid("eu")
    await apply_all(svc, signup(here), signup(away, lang="pt", region=EU), follow(here, away),
                    koo(uid("k"), away, text="hola", lang="pt"))
    app = create_app(svc.settings, svc)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://feed",
        headers={"Authorization": "Bearer test-token-123456"},
    ) as client:
        for _ in range(2):  # the second round is what a warm cache answers
            profile = (await client.get(f"/v1/users/{away}")).json()
            assert (profile["handle"], profile["lang"]) == (f"@{away}", "pt")
            for user in (here, away):
                page = await client.get(f"/v1/users/{user}/feed?limit=5")
                assert page.status_code == 200, page.text
                assert (await client.get(f"/v1/users/{user}")).status_code == 200
    cache = Redis.from_url(svc.settings.cache_redis_url or svc.settings.redis_url,
                           decode_responses=True)
    try:
        values = [f"{key}={await cache.get(key)}" async for key in cache.scan_iter()
                  if await cache.type(key) == "string"]
    finally:
        await cache.aclose()
    assert any(f"@{here}" in v for v in values), "the local profile is cached: a control"
    assert not [v for v in values if f"@{away}" in v], values
