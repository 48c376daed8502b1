"""The notification routes over HTTP (the app in process, real Redis and DynamoDB).

Each test states its pass criterion.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from feed.events import typed, validate_event
from feed.services import Services
from tests.api.conftest import assert_error
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, now_ms, react, relation, signup


async def _setup(services: Services, likers: int = 2) -> tuple[str, list[str], list[str]]:
    """An author with two koos, liked by ``likers`` users, and followed by the first."""
    author = uid("au")
    users = [uid("u") for _ in range(likers)]
    ks = [uid("k"), uid("k")]
    await apply_all(services, signup(author), *(signup(u) for u in users),
                    *(koo(k, author) for k in ks),
                    *(react("like", k, u) for k in ks for u in users), follow(users[0], author))
    return author, users, ks


async def _get(client: httpx.AsyncClient, user: str, **params: Any) -> httpx.Response:
    return await client.get(f"/v1/users/{user}/notifications", params=params)


async def test_notifications_answer_the_documented_shape(client: httpx.AsyncClient,
                                                       services: Services) -> None:
    """Pass: 200 with items of exactly the Notification fields, newest first, the unseen
    count and a null next_cursor."""
    author, users, ks = await _setup(services)
    response = await _get(client, author)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "unseen", "next_cursor"}
    assert body["next_cursor"] is None
    assert body["unseen"] == 3
    fields = {"notification_id", "kind", "koo_id", "actors", "actor_count", "updated_at",
              "seen"}
    assert all(set(i) == fields for i in body["items"])
    assert [(i["kind"], i["koo_id"], i["actor_count"]) for i in body["items"]] == [
        ("follow", None, 1), ("like", ks[1], 2), ("like", ks[0], 2)]
    assert body["items"][1]["actors"] == users[::-1]


async def test_validation_and_unknown_users(client: httpx.AsyncClient, anon: httpx.AsyncClient,
                                            services: Services) -> None:
    """Pass: a bad limit or id is 422, an unknown user 404, no token 401, a tampered or
    foreign cursor 400 invalid_cursor: all with the error body."""
    author, users, _ = await _setup(services, likers=1)
    for limit in ("0", "101", "x", "-1", "1.5"):
        assert_error(await _get(client, author, limit=limit), 422, "validation_failed",
                     extra=frozenset({"details"}))
    assert_error(await _get(client, "bad%20id"), 422, extra=frozenset({"details"}))
    assert_error(await _get(client, uid("nobody")), 404, "not_found")
    assert_error(await anon.get(f"/v1/users/{author}/notifications"), 401)
    page = (await _get(client, author, limit=1)).json()
    cursor = page["next_cursor"]
    assert cursor
    assert_error(await _get(client, author, cursor=cursor[:-2] + "AA"), 400, "invalid_cursor")
    assert_error(await _get(client, users[0], cursor=cursor), 400, "invalid_cursor")
    feed_cursor = (await client.get(f"/v1/users/{author}/koos", params={"limit": 1})
                   ).json()["next_cursor"]
    assert_error(await _get(client, author, cursor=feed_cursor), 400, "invalid_cursor")


async def test_cursors_page_through_everything_once(client: httpx.AsyncClient,
                                                    services: Services) -> None:
    """Pass: limit=1 pages give the three notifications of limit=20, in order, once."""
    author, _, _ = await _setup(services)
    whole = (await _get(client, author)).json()["items"]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await _get(client, author, **params)).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == whole


async def test_seen_route(client: httpx.AsyncClient, services: Services) -> None:
    """Pass: POST seen is 204 and unseen drops to the notifications updated later; a lower
    up_to later changes nothing; bad bodies (not an integer, a day ahead, no JSON) are
    422; an unknown user 404."""
    author, _, _ = await _setup(services)
    items = (await _get(client, author)).json()["items"]
    url = f"/v1/users/{author}/notifications/seen"
    middle = items[1]["updated_at"]
    response = await client.post(url, json={"up_to": middle})
    assert response.status_code == 204
    body = (await _get(client, author)).json()
    assert body["unseen"] == 1
    assert [i["seen"] for i in body["items"]] == [False, True, True]
    assert (await client.post(url, json={"up_to": 1})).status_code == 204
    assert (await _get(client, author)).json()["unseen"] == 1
    ahead = int(time.time() * 1000) + 86_400_000 + 60_000
    bad: object
    for bad in ({"up_to": "1"}, {"up_to": 1.5}, {"up_to": True}, {"up_to": ahead}, {}, []):
        assert_error(await client.post(url, json=bad), 422, extra=frozenset({"details"}))
    assert_error(await client.post(url, content=b"{nope"), 422, extra=frozenset({"details"}))
    assert_error(await client.post(f"/v1/users/{uid('x')}/notifications/seen",
                                   json={"up_to": 1}), 404)


async def test_blocks_are_filtered_at_read_time(client: httpx.AsyncClient,
                                                services: Services) -> None:
    """Pass: right after a block is committed (its purge job not run), the blocked liker
    is gone from the answer and the counts drop; unseen counts only what is shown."""
    author, users, _ = await _setup(services)
    block = relation("user_blocked", users[0], author)
    # Apply the event alone: its notification purge is queued and never run here.
    await services.applier.apply(typed(validate_event(block)))
    await services.cache.redis.delete(f"feed:{{{author}}}:blocked_by")
    body = (await _get(client, author)).json()
    assert [(i["kind"], i["actors"], i["actor_count"]) for i in body["items"]] == [
        ("like", [users[1]], 1), ("like", [users[1]], 1)]
    assert body["unseen"] == 2


async def test_cached_and_uncached_answers_are_the_same(client: httpx.AsyncClient,
                                                        services: Services) -> None:
    """Pass: the answer from the cache, after the cache is flushed (from DynamoDB), and
    once cached again are identical, pages and unseen count included."""
    author, users, ks = await _setup(services, likers=3)
    await apply_all(services, react("comment", ks[0], users[2]),
                    react("like", ks[0], users[1], added=False))

    async def answer() -> list[Any]:
        first = (await _get(client, author, limit=2)).json()
        second = (await _get(client, author, limit=2, cursor=first["next_cursor"])).json()
        return [first["items"], first["unseen"], second]

    warm = await answer()
    await services.cache.redis.flushdb()
    cold = await answer()
    assert cold == warm
    assert await answer() == warm
    await services.cache.redis.flushdb()
    await client.post(f"/v1/users/{author}/notifications/seen", json={"up_to": now_ms()})
    assert (await _get(client, author)).json()["unseen"] == 0
