"""Notifications end to end: events through the workers, then the domain's page.

Pass criteria are stated per test; every count is compared with what the events say.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from feed.events import typed, validate_event
from feed.notifications import Notifications
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, now_ms, react, relation, signup, unfollow


def _notes(svc: Services) -> Notifications:
    return Notifications.over(svc.manager)


async def _page(svc: Services, user: str, limit: int = 50) -> dict[str, Any]:
    return await _notes(svc).page(user, limit=limit)


async def _users(svc: Services, *names: str) -> list[str]:
    ids = [uid(n) for n in names]
    await apply_all(svc, *(signup(u) for u in ids))
    return ids


async def test_likes_on_one_koo_are_one_notification(services: Services) -> None:
    """Pass: three likers give one like notification, actor_count 3, the 3 newest actors
    newest first and updated_at the newest like's time; the author's own like adds none."""
    author, a, b, c = await _users(services, "au", "a", "b", "c")
    k = uid("k")
    likes = [react("like", k, u) for u in (a, b, c)]
    await apply_all(services, koo(k, author), *likes, react("like", k, author))
    page = await _page(services, author)
    assert len(page["items"]) == 1
    item = page["items"][0]
    assert item["kind"] == "like"
    assert item["koo_id"] == k
    assert item["actor_count"] == 3
    assert item["actors"] == [c, b, a]
    assert item["updated_at"] == likes[-1]["occurred_at"]
    assert item["seen"] is False
    assert page["unseen"] == 1
    assert page["next_cursor"] is None


async def test_unlikes_take_actors_out_and_an_empty_notification_goes(
        services: Services) -> None:
    """Pass: after one of two likers unlikes, actor_count is 1 with the other actor; once
    both unliked, the author has no notification and nothing unseen."""
    author, a, b = await _users(services, "au", "a", "b")
    k = uid("k")
    await apply_all(services, koo(k, author), react("like", k, a), react("like", k, b))
    await apply_all(services, react("like", k, b, added=False))
    (item,) = (await _page(services, author))["items"]
    assert (item["actor_count"], item["actors"]) == (1, [a])
    await apply_all(services, react("like", k, a, added=False))
    page = await _page(services, author)
    assert page["items"] == []
    assert page["unseen"] == 0


async def test_replayed_events_change_nothing(services: Services) -> None:
    """Pass: publishing the same events again (same event ids) and re-running the same
    reactions' syncs leaves the page identical."""
    author, a, b = await _users(services, "au", "a", "b")
    k = uid("k")
    events = [koo(k, author), react("like", k, a), react("like", k, b), follow(a, author)]
    await apply_all(services, *events)
    before = await _page(services, author)
    await apply_all(services, *events)
    notes = _notes(services)
    for user in (a, b):
        await notes.sync_reaction(k, user, "like")
    await notes.sync_follow(a, author)
    assert await _page(services, author) == before
    assert sorted(i["actor_count"] for i in before["items"]) == [1, 2]


async def test_kinds_are_apart_and_follows_have_no_koo(services: Services) -> None:
    """Pass: a like, a rekoo, a comment, a reply and two follows give five notifications,
    newest activity first; the follow one has koo_id null and actor_count 2."""
    author, a, b = await _users(services, "au", "a", "b")
    k, r = uid("k"), uid("r")
    await apply_all(services, koo(k, author), react("like", k, a), react("rekoo", k, a),
                    react("comment", k, b), koo(r, b, reply_to=k), follow(a, author),
                    follow(b, author))
    items = (await _page(services, author))["items"]
    assert [i["kind"] for i in items] == ["follow", "reply", "comment", "rekoo", "like"]
    assert items[0]["koo_id"] is None
    assert items[0]["actor_count"] == 2
    assert items[1]["koo_id"] == k
    assert items[1]["actors"] == [b]
    assert len({i["notification_id"] for i in items}) == 5


async def test_unfollow_and_deleted_reply_take_their_actor_out(services: Services) -> None:
    """Pass: an unfollow removes the follow notification; of two replies by one user,
    deleting one keeps them (one actor), deleting both removes the notification."""
    author, a = await _users(services, "au", "a")
    k, r1, r2 = uid("k"), uid("r"), uid("r")
    await apply_all(services, koo(k, author), koo(r1, a, reply_to=k), koo(r2, a, reply_to=k),
                    follow(a, author))
    kinds = {i["kind"]: i for i in (await _page(services, author))["items"]}
    assert kinds["reply"]["actor_count"] == 1
    assert "follow" in kinds
    await apply_all(services, unfollow(a, author),
                    {"type": "koo_deleted", "event_id": uid("e"), "occurred_at": now_ms(),
                     "koo_id": r1, "author_id": a})
    kinds = {i["kind"]: i for i in (await _page(services, author))["items"]}
    assert set(kinds) == {"reply"}
    assert kinds["reply"]["actor_count"] == 1
    await apply_all(services, {"type": "koo_deleted", "event_id": uid("e"),
                               "occurred_at": now_ms(), "koo_id": r2, "author_id": a})
    assert (await _page(services, author))["items"] == []


async def test_a_deleted_koo_takes_its_notifications(services: Services) -> None:
    """Pass: likes and a comment on a koo, then its deletion: no notification is left,
    while those on another koo stay."""
    author, a = await _users(services, "au", "a")
    k, other = uid("k"), uid("k")
    await apply_all(services, koo(k, author), koo(other, author), react("like", k, a),
                    react("comment", k, a), react("like", other, a))
    await apply_all(services, {"type": "koo_deleted", "event_id": uid("e"),
                               "occurred_at": now_ms(), "koo_id": k, "author_id": author})
    items = (await _page(services, author))["items"]
    assert [(i["kind"], i["koo_id"]) for i in items] == [("like", other)]


async def test_blocks_and_mutes_remove_and_prevent(services: Services) -> None:
    """Pass: a muted liker leaves the notification (count 2 -> 1); a user who blocks the
    author notifies nothing afterwards; a like from someone the author blocked first
    notifies nothing."""
    author, a, b, c = await _users(services, "au", "a", "b", "c")
    k = uid("k")
    await apply_all(services, koo(k, author), react("like", k, a), react("like", k, b))
    await apply_all(services, relation("user_muted", author, a))
    (item,) = (await _page(services, author))["items"]
    assert (item["actor_count"], item["actors"]) == (1, [b])
    await apply_all(services, relation("user_blocked", c, author), react("rekoo", k, c),
                    relation("user_blocked", author, b), react("comment", k, b))
    assert (await _page(services, author))["items"] == []


async def test_read_time_filter_hides_a_just_blocked_actor(services: Services) -> None:
    """Pass: with the block committed but its purge not run yet (the relation row and
    cache set directly), the page already hides the blocked actor and counts one less."""
    author, a, b = await _users(services, "au", "a", "b")
    k = uid("k")
    await apply_all(services, koo(k, author), react("like", k, a), react("like", k, b))
    at = now_ms()
    await services.stores.db.transact(
        [services.stores.relations.switch_on_item(author, "block", b, at)])
    await services.cache.redis.delete(f"feed:{{{author}}}:blocking")
    page = await _page(services, author)
    assert [(i["actors"], i["actor_count"]) for i in page["items"]] == [([a], 1)]
    assert page["unseen"] == 1


async def test_windows_split_notifications(services: Services) -> None:
    """Pass: with one-hour windows, likes two hours apart are two notifications; a like
    removed, then added again two hours later, leaves the first and joins the second
    as its newest actor."""
    async with open_services(services.settings.replace(notify_group_hours=1)) as svc:
        author, a, b = await _users(svc, "au", "a", "b")
        k = uid("k")
        hour = 3_600_000
        base = (now_ms() // hour - 30) * hour
        await apply_all(svc, koo(k, author, occurred_at=base), react("like", k, a,
                        occurred_at=base + 1), react("like", k, b, occurred_at=base + 2))
        await apply_all(svc, react("like", k, b, occurred_at=base + 2 * hour))
        # b's second like is a replay of an active reaction (no change); a new one by a:
        page = await _page(svc, author)
        assert [(i["actor_count"], i["actors"]) for i in page["items"]] == [(2, [b, a])]
        # Applied one after the other: in one batch the like may come first, and a like of
        # a liked koo is no new like.
        await apply_all(svc, react("like", k, a, added=False, occurred_at=base + 2 * hour + 5))
        await apply_all(svc, react("like", k, a, occurred_at=base + 2 * hour + 6))
        page = await _page(svc, author)
        assert [(i["actor_count"], i["actors"], i["updated_at"]) for i in page["items"]] == [
            (1, [a], base + 2 * hour + 6), (1, [b], base + 2)]


async def test_seen_marks_and_unseen_counts(services: Services) -> None:
    """Pass: unseen counts the notifications updated after the highest up_to posted; a
    lower up_to later changes nothing; items say seen accordingly."""
    author, a, b = await _users(services, "au", "a", "b")
    k1, k2 = uid("k"), uid("k")
    l1, l2 = react("like", k1, a), react("like", k2, b)
    await apply_all(services, koo(k1, author), koo(k2, author), l1, l2)
    notes = _notes(services)
    assert (await notes.page(author, limit=10))["unseen"] == 2
    await notes.mark_seen(author, l1["occurred_at"])
    page = await notes.page(author, limit=10)
    assert page["unseen"] == 1
    assert [i["seen"] for i in page["items"]] == [False, True]
    await notes.mark_seen(author, l1["occurred_at"] - 10)
    assert (await notes.page(author, limit=10))["unseen"] == 1
    await notes.mark_seen(author, l2["occurred_at"])
    assert (await notes.page(author, limit=10))["unseen"] == 0


async def test_paging_returns_each_notification_once(services: Services) -> None:
    """Pass: 7 notifications paged 3 at a time: 3, 3, 1, each once, newest first, and the
    same answer with the cache dropped (read from DynamoDB)."""
    author, a = await _users(services, "au", "a")
    ks = [uid("k") for _ in range(7)]
    await apply_all(services, *(koo(k, author) for k in ks), *(react("like", k, a) for k in ks))
    notes = _notes(services)

    async def walk() -> list[list[str]]:
        pages, cursor = [], None
        while True:
            page = await notes.page(author, limit=3, cursor=cursor)
            pages.append([i["koo_id"] for i in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                return pages

    cached = await walk()
    assert cached == [ks[6:3:-1], ks[3:0:-1], ks[:1]]
    await services.cache.redis.flushdb()
    assert await walk() == cached


@pytest.mark.parametrize("limit", [1, 2])
async def test_concurrent_syncs_count_exactly(services: Services, limit: int) -> None:
    """Pass: 30 likes synced concurrently, each sync run twice at once, give actor_count
    30 (the settle lock and revisions: nothing counted twice, nothing lost)."""
    author = (await _users(services, "au"))[0]
    k = uid("k")
    likers = [uid("l") for _ in range(30)]
    await apply_all(services, koo(k, author))
    for u in likers:
        await services.applier.apply(typed(validate_event(react("like", k, u))))
    notes = _notes(services)
    await asyncio.gather(*(notes.sync_reaction(k, u, "like") for u in likers * 2))
    (item,) = (await notes.page(author, limit=limit))["items"]
    assert item["actor_count"] == 30


# (actor index, added?) in time order; actor 0 is the koo's author.
Program = list[tuple[int, bool]]
programs = st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=10)


@hsettings(max_examples=12, deadline=None, database=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(program=programs, order=st.randoms(use_true_random=False))
async def test_actor_count_is_the_distinct_live_actors(
        services: Services, program: Program, order: random.Random) -> None:
    """Pass: whatever order the events arrive in, with duplicates, and whatever order
    and repetition the syncs run in (some concurrently), actor_count equals the number of
    distinct actors (not the author) whose newest event is a like, and no notification
    exists when there is none."""
    users = [uid("p") for _ in range(5)]
    k = uid("k")
    t0 = now_ms()
    await services.applier.apply(typed(validate_event(koo(k, users[0], occurred_at=t0))))
    events = [react("like", k, users[i], added=added, occurred_at=t0 + 1 + n)
              for n, (i, added) in enumerate(program)]
    arrivals = events + order.sample(events, k=len(events) // 2)
    order.shuffle(arrivals)
    for raw in arrivals:
        await services.applier.apply(typed(validate_event(raw)))
    notes = _notes(services)
    syncs = [users[i] for i, _ in program] * 2
    order.shuffle(syncs)
    half = len(syncs) // 2
    for user in syncs[:half]:
        await notes.sync_reaction(k, user, "like")
    await asyncio.gather(*(notes.sync_reaction(k, u, "like") for u in syncs[half:]))
    newest: dict[int, bool] = {}
    for i, added in program:
        newest[i] = added
    live = {users[i] for i, on in newest.items() if on and i != 0}
    group = notes.store.group_of("like", k, t0 + 1)
    stored = await notes.store.group(users[0], group)
    assert (stored["actor_count"] if stored else 0) == len(live)
    if live:
        assert stored is not None
        assert set(stored["actors"]) == live


async def test_a_partly_evicted_cache_is_read_again(services: Services) -> None:
    """Pass: with the cached bodies (or one body) evicted while the sorted set stays, the
    page is the same as before: the cache is loaded again rather than read half-empty."""
    author, a, b = await _users(services, "au", "a", "b")
    k1, k2 = uid("k"), uid("k")
    await apply_all(services, koo(k1, author), koo(k2, author), react("like", k1, a),
                    react("like", k2, b))
    before = await _page(services, author)
    assert len(before["items"]) == 2
    redis = services.cache.redis
    bodies = f"feed:{{{author}}}:notif:b"
    await redis.delete(bodies)
    assert await _page(services, author) == before
    names: Any = redis.hkeys(bodies)
    groups = [g for g in await names if not g.startswith("!")]
    dropped: Any = redis.hdel(bodies, groups[0])
    await dropped
    assert await _page(services, author) == before
