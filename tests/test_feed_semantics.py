"""What a feed promises (docs/api.md), end to end: events through the real queue and
workers (``apply_all``), feeds through :class:`feed.reader.Reader`.

One test (or a few) per rule. Each test gives its users a language no other
test uses (a parametrized test shares one), so recommended koos only ever come
from the test's own users.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from config.settings import Settings
from feed import keys
from feed.cursor import InvalidCursor
from feed.reader import Reader
from feed.services import Services, open_services
from tests.conftest import uid
from tests.feedmodel import (
    backfill_depth,
    duplicates,
    publish_realtime_only,
    read_all,
)
from tests.helpers import apply_all, event, follow, koo, react, relation, signup, unfollow


def users(n: int) -> list[str]:
    return [uid() for _ in range(n)]


def delete(koo_id: str, author: str) -> dict[str, Any]:
    return event("koo_deleted", koo_id=koo_id, author_id=author)


async def signups(svc: Services, lang: str, *people: str) -> None:
    await apply_all(svc, *(signup(p, lang=lang) for p in people))


async def post(svc: Services, author: str, lang: str, n: int = 1) -> list[str]:
    """``n`` koos by ``author``, one event each (so their times are distinct), oldest first."""
    ids = [uid("k") for _ in range(n)]
    await apply_all(svc, *(koo(k, author, lang=lang) for k in ids))
    return ids


async def feed_set(svc: Services, user: str, *, limit: int = 20) -> set[str]:
    """The reader's whole feed (every page), recommended koos left out."""
    read = await read_all(Reader(svc.manager), user, limit=limit)
    assert not duplicates(read.ids(recommended=True))
    return set(read.ids())


async def timeline_rows(svc: Services, reader: str) -> set[str]:
    rows, _ = await svc.stores.timelines.page(reader, limit=1000)
    return {e.koo_id for e in rows}


@pytest.fixture
async def celeb_services(settings: Settings) -> AsyncIterator[Services]:
    """Services whose celebrity threshold is 3 followers (same tables as the session)."""
    async with open_services(settings.replace(celebrity_followers=3)) as svc:
        yield svc


# --- rule 1: who appears -------------------------------------------------------------


async def test_rule1_follows_and_own_koos_minus_deleted_blocked_muted(services: Services) -> None:
    lang = "zu"
    me, friend, other, stranger, blocker, muted, blocked = users(7)
    await signups(services, lang, me, friend, other, stranger, blocker, muted, blocked)
    await apply_all(services, *(follow(me, u) for u in (friend, other, blocker, muted, blocked)))
    mine = await post(services, me, lang)
    f1, f2 = await post(services, friend, lang, 2)
    o1 = await post(services, other, lang)
    await post(services, stranger, lang, 2)
    c1 = await post(services, blocker, lang)
    m1 = await post(services, muted, lang)
    b1 = await post(services, blocked, lang)
    everyone = {*mine, f1, f2, *o1, *c1, *m1, *b1}
    assert await feed_set(services, me) == everyone  # also populates the hot cache
    await services.manager.drain()

    # Deleted, muted, blocked, blocking: gone at once (the read path filters), before the
    # purge jobs on the backfill queue have run...
    await publish_realtime_only(
        services, delete(f2, friend), relation("user_blocked", blocker, me),
        relation("user_muted", me, muted), relation("user_blocked", me, blocked),
    )
    assert await backfill_depth(services) > 0, "expected purge jobs still queued"
    hidden = {f2, *c1, *m1, *b1}
    assert await feed_set(services, me) == everyone - hidden
    assert await feed_set(services, me, limit=2) == everyone - hidden
    # ...and after them, from the cache and from DynamoDB alike.
    await apply_all(services)
    assert await feed_set(services, me) == everyone - hidden
    assert not (await timeline_rows(services, me)) & hidden
    await services.cache.redis.flushdb()
    assert await feed_set(services, me) == everyone - hidden

    read = await read_all(Reader(services.manager), me)
    reasons = read.reasons()
    assert reasons[mine[0]] == "self"
    assert {reasons[k] for k in (f1, *o1)} == {"following"}
    for item in read.recommended():  # the stranger's koos may only come as recommended
        assert item.koo.author_id == stranger

    # Unblock / unmute bring the authors back; the deleted koo stays gone.
    await apply_all(
        services, relation("user_unblocked", blocker, me), relation("user_unmuted", me, muted),
        relation("user_unblocked", me, blocked),
    )
    assert await feed_set(services, me) == everyone - {f2}
    await services.cache.redis.flushdb()
    assert await feed_set(services, me) == everyone - {f2}
    # The author's own feed never shows their deleted koo either.
    assert f2 not in await feed_set(services, friend)


async def test_rule1_blocking_hides_both_ways(services: Services) -> None:
    """A block hides the blocked user's koos from the blocker, and the blocker's koos from
    the blocked user, even where each follows the other."""
    lang = "za"
    a, b = users(2)
    await signups(services, lang, a, b)
    await apply_all(services, follow(a, b), follow(b, a))
    ka, kb = (await post(services, a, lang))[0], (await post(services, b, lang))[0]
    assert await feed_set(services, a) == {ka, kb} == await feed_set(services, b)
    await apply_all(services, relation("user_blocked", a, b))
    assert await feed_set(services, a) == {ka}
    assert await feed_set(services, b) == {kb}
    kb2 = (await post(services, b, lang))[0]  # koos posted during the block stay hidden
    assert await feed_set(services, a) == {ka}
    await apply_all(services, relation("user_unblocked", a, b))
    assert await feed_set(services, a) == {ka, kb, kb2}
    assert await feed_set(services, b) == {ka, kb, kb2}


# --- rule 2: celebrities ---------------------------------------------------------------


async def test_rule2_celebrity_koos_are_pulled_not_fanned_out(celeb_services: Services) -> None:
    svc, lang = celeb_services, "yo"
    star, f1, f2, f3, nobody = users(5)
    await signups(svc, lang, star, f1, f2, f3, nobody)
    (a0,) = await post(svc, star, lang)  # no followers yet
    await apply_all(svc, follow(f1, star), follow(f2, star))
    (a1,) = await post(svc, star, lang)  # two followers: fanned out
    assert a1 in await timeline_rows(svc, f1)
    assert await svc.stores.users.reach(star) == (2, False)

    await apply_all(svc, follow(f3, star))  # the third follower makes a celebrity
    assert await svc.stores.users.reach(star) == (3, True)
    a2, a3 = await post(svc, star, lang, 2)
    for f in (f1, f2, f3):
        assert not {a2, a3} & await timeline_rows(svc, f), f"celebrity koo fanned out to {f}"
    assert {a2, a3} <= await timeline_rows(svc, star)  # the author's own timeline has them

    for f in (f1, f2, f3):
        read = await read_all(Reader(svc.manager), f)
        assert set(read.ids()) == {a0, a1, a2, a3}, f
        reasons = read.reasons()
        assert reasons[a2] == reasons[a3] == "celebrity"
    read = await read_all(Reader(svc.manager), star)
    assert set(read.ids()) == {a0, a1, a2, a3}
    assert {read.reasons()[k] for k in (a0, a1, a2, a3)} == {"self"}
    # Paging merges pulled and timeline koos: one koo per page, none twice.
    assert sorted((await read_all(Reader(svc.manager), f1, limit=1)).ids()) == \
        sorted([a0, a1, a2, a3])
    assert not {a0, a1, a2, a3} & await feed_set(svc, nobody)

    # Rule 1 holds for pulled koos too.
    await apply_all(svc, relation("user_muted", f2, star), relation("user_blocked", star, f3))
    assert await feed_set(svc, f2) == set()
    assert await feed_set(svc, f3) == set()
    await apply_all(svc, relation("user_unmuted", f2, star),
                    relation("user_unblocked", star, f3))
    assert await feed_set(svc, f2) == {a0, a1, a2, a3}
    await svc.cache.redis.flushdb()
    assert await feed_set(svc, f2) == {a0, a1, a2, a3}
    assert await feed_set(svc, f3) == {a0, a1, a2, a3}


async def test_rule2_demotion_fans_out_and_keeps_feeds_complete(
    celeb_services: Services,
) -> None:
    svc, lang = celeb_services, "yi"
    star, f1, f2, f3 = users(4)
    await signups(svc, lang, star, f1, f2, f3)
    (a0,) = await post(svc, star, lang)
    await apply_all(svc, follow(f1, star), follow(f2, star))  # a0 merged into their rows
    await apply_all(svc, follow(f3, star))
    assert await svc.stores.users.reach(star) == (3, True)
    a1, a2 = await post(svc, star, lang, 2)  # pulled
    for f in (f1, f2):
        assert await feed_set(svc, f) == {a0, a1, a2}

    # Below the threshold: a demote_celebrity job goes on the backfill queue; until it has
    # run, readers still pull the koos.
    await publish_realtime_only(svc, unfollow(f3, star))
    assert await backfill_depth(svc) > 0
    for f in (f1, f2):
        assert await feed_set(svc, f) == {a0, a1, a2}
    assert await feed_set(svc, f3) == set()
    await apply_all(svc)  # run the demotion
    assert await svc.stores.users.reach(star) == (2, False)
    for f in (f1, f2):
        assert {a0, a1, a2} <= await timeline_rows(svc, f), "pulled koos were not fanned out"
        read = await read_all(Reader(svc.manager), f)
        assert set(read.ids()) == {a0, a1, a2}
        assert {read.reasons()[k] for k in (a0, a1, a2)} == {"following"}
    (a3,) = await post(svc, star, lang)  # fanned out again
    for f in (f1, f2):
        assert a3 in await timeline_rows(svc, f)
        assert await feed_set(svc, f) == {a0, a1, a2, a3}
    await svc.cache.redis.flushdb()
    for f in (f1, f2):
        assert await feed_set(svc, f) == {a0, a1, a2, a3}
    assert await feed_set(svc, f3) == set()


async def test_rule2_demotion_keeps_older_koos_for_celebrity_era_followers(
    celeb_services: Services,
) -> None:
    svc, lang = celeb_services, "ty"
    star, f1, f2, late = users(4)
    await signups(svc, lang, star, f1, f2, late)
    (a0,) = await post(svc, star, lang)  # fanned out (to the author only): state "done"
    await apply_all(svc, follow(f1, star), follow(f2, star))
    await apply_all(svc, follow(late, star))  # promotes; this follower gets no rows
    assert await svc.stores.users.reach(star) == (3, True)
    (a1,) = await post(svc, star, lang)  # pulled
    assert await feed_set(svc, late) == {a0, a1}
    await apply_all(svc, unfollow(f1, star))  # demotes
    assert await svc.stores.users.reach(star) == (2, False)
    assert await feed_set(svc, f2) == {a0, a1}
    assert await feed_set(svc, late) == {a0, a1}


async def test_rule2_second_demotion_at_same_follower_count(celeb_services: Services) -> None:
    svc, lang = celeb_services, "tw"
    star, f1, f2, f3 = users(4)
    await signups(svc, lang, star, f1, f2, f3)
    await apply_all(svc, follow(f1, star), follow(f2, star), follow(f3, star))
    await apply_all(svc, unfollow(f3, star))
    assert await svc.stores.users.reach(star) == (2, False)
    await apply_all(svc, follow(f3, star))
    assert await svc.stores.users.reach(star) == (3, True)
    await apply_all(svc, unfollow(f3, star))
    assert await svc.stores.users.reach(star) == (2, False)


# --- rule 3: backfill on follow, removal on unfollow / block / mute ---------------------


@pytest.mark.parametrize("backfill", [0, 2])
async def test_rule3_a_pulled_author_s_history_is_bounded_like_a_backfill(
    settings: Settings, backfill: int,
) -> None:
    """Following a celebrity shows every koo since the follow and at most
    FEED_BACKFILL_ON_FOLLOW of those before it, as following anyone else does."""
    small = settings.replace(celebrity_followers=3, backfill_on_follow=backfill)
    async with open_services(small) as svc:
        lang = "xt" if backfill else "xu"
        me, star, f1, f2, f3, late = users(6)
        await signups(svc, lang, me, star, f1, f2, f3, late)
        await apply_all(svc, *(follow(f, star) for f in (f1, f2, f3)))
        assert await svc.stores.users.reach(star) == (3, True)
        old = await post(svc, star, lang, 6)
        await apply_all(svc, follow(me, star))
        new = await post(svc, star, lang, 2)
        want = {*old[len(old) - backfill:], *new} if backfill else set(new)
        assert await feed_set(svc, me) == want
        assert await feed_set(svc, me, limit=1) == want  # paging, with the floors cached
        await svc.cache.redis.flushdb()
        assert await feed_set(svc, me, limit=3) == want  # and rebuilt after a cache loss
        # A follower from before keeps the koos since their own follow.
        assert set(old) <= await feed_set(svc, f1)
        # Following again starts from the new follow: nothing new since, and the last
        # `backfill` koos before it.
        await apply_all(svc, unfollow(me, star))
        await apply_all(svc, follow(me, star))
        everything = [*old, *new]
        assert await feed_set(svc, me) == set(everything[len(everything) - backfill:]
                                             if backfill else ())
        await apply_all(svc, follow(late, star))
        assert await feed_set(svc, late) == await feed_set(svc, me)


@pytest.mark.parametrize("take_out", ["unfollow", "block", "mute", "blocked_by"])
async def test_rule3_follow_backfills_recent_koos_and_removal_is_immediate(
    settings: Settings, take_out: str
) -> None:
    async with open_services(settings.replace(backfill_on_follow=3)) as svc:
        lang = "xh"
        me, author = users(2)
        await signups(svc, lang, me, author)
        old = await post(svc, author, lang, 6)
        assert await feed_set(svc, me) == set()
        await apply_all(svc, follow(me, author))
        assert await feed_set(svc, me) == set(old[-3:]), "expected the 3 most recent koos"
        assert await timeline_rows(svc, me) == set(old[-3:])
        (new,) = await post(svc, author, lang)  # fanned out from now on
        assert await feed_set(svc, me) == {*old[-3:], new}
        await svc.manager.drain()  # the background cache rebuild the reads started

        undo = {
            "unfollow": unfollow(me, author),
            "block": relation("user_blocked", me, author),
            "mute": relation("user_muted", me, author),
            "blocked_by": relation("user_blocked", author, me),
        }[take_out]
        await publish_realtime_only(svc, undo)
        assert await backfill_depth(svc) > 0, "expected the purge job still queued"
        assert await feed_set(svc, me) == set(), "taken out at once, before the purge"
        await apply_all(svc)
        assert await feed_set(svc, me) == set()
        assert await timeline_rows(svc, me) == set(), "purge left timeline rows"
        await svc.cache.redis.flushdb()
        assert await feed_set(svc, me) == set()

        redo = {
            "unfollow": follow(me, author),
            "block": relation("user_unblocked", me, author),
            "mute": relation("user_unmuted", me, author),
            "blocked_by": relation("user_unblocked", author, me),
        }[take_out]
        await apply_all(svc, redo)
        assert await feed_set(svc, me) == {*old[-2:], new}, "expected the 3 most recent again"


# --- rule 4: paging ---------------------------------------------------------------------


@pytest.mark.slow_on_moto
async def test_rule4_paging_returns_everything_once_beyond_the_cache_window(
    settings: Settings,
) -> None:
    small = settings.replace(timeline_cache_items=5, celebrity_followers=3)
    async with open_services(small) as svc:
        lang = "ig"
        me, a, b, star, f2, f3, muted = users(7)
        await signups(svc, lang, me, a, b, star, f2, f3, muted)
        await apply_all(svc, *(follow(me, u) for u in (a, b, star, muted)),
                        follow(f2, star), follow(f3, star))
        assert await svc.stores.users.reach(star) == (3, True)
        cycle = (a, b, star, me, muted, a)
        # Interleaved in time: timeline, pulled and own koos (one event each, so their times
        # are distinct and in this order).
        posted = [uid("k") for _ in range(36)]
        await apply_all(svc, *(koo(k, cycle[i % 6], lang=lang) for i, k in enumerate(posted)))
        gone = {posted[0], posted[7], posted[14], posted[21]}  # by a, b, star, me
        await apply_all(svc, *(delete(k, cycle[posted.index(k) % 6]) for k in gone))
        await apply_all(svc, relation("user_muted", me, muted))
        want = set(posted) - gone - set(posted[4::6])
        assert len(want) == 36 - 4 - 6
        reader = Reader(svc.manager)
        for state in ("cold", "hot", "flushed", "hot again"):
            if state == "flushed":
                await svc.cache.redis.flushdb()
            for limit in (1, 4, 7, 10, 20, 100):
                read = await read_all(reader, me, limit=limit)
                served = read.ids(recommended=True)
                assert not duplicates(served), (state, limit, duplicates(served))
                got = read.ids()
                assert set(got) == want, (state, limit, sorted(want - set(got)))
                if limit < len(want):
                    assert len(read.pages) > 1
                reasons = read.reasons()
                assert {reasons[k] for k in want if k in posted[2::6]} == {"celebrity"}
            await svc.manager.drain()  # the background cache rebuild, if any


async def test_rule4_and_5_cache_window_gap_after_delete_then_follow(
    settings: Settings,
) -> None:
    async with open_services(settings.replace(timeline_cache_items=5)) as svc:
        lang = "ii"
        me, a, b = users(3)
        await signups(svc, lang, me, a, b)
        await apply_all(svc, follow(me, a))
        a_koos = await post(svc, a, lang, 3)
        (b_koo,) = await post(svc, b, lang)  # older than the cache window will reach
        a_koos += await post(svc, a, lang, 7)
        assert await feed_set(svc, me) == set(a_koos)
        await svc.manager.drain()  # the cache now holds the newest 5 of 10
        await apply_all(svc, delete(a_koos[-1], a))  # 4 cached, DynamoDB has 9
        await apply_all(svc, follow(me, b))  # merges b_koo into cache and DynamoDB
        want = {*a_koos[:-1], b_koo}
        hot = await feed_set(svc, me, limit=100)
        await svc.cache.redis.flushdb()
        assert await feed_set(svc, me, limit=100) == want  # rebuilt from DynamoDB: fine
        assert hot == want


# --- rule 5: hot cache vs rebuilt -------------------------------------------------------


async def test_rule5_same_feed_from_hot_cache_and_after_cache_loss(settings: Settings) -> None:
    async with open_services(settings.replace(timeline_cache_items=6,
                                              celebrity_followers=3)) as svc:
        lang = "ka"
        me, a, b, c, star, f2, f3, stranger, fan = users(9)
        await signups(svc, lang, me, a, b, c, star, f2, f3, stranger, fan)
        await apply_all(svc, *(follow(me, u) for u in (a, b, star)), follow(f2, star),
                        follow(f3, star))
        cycle = (a, b, star, me, stranger, c)
        posted = [uid("k") for _ in range(24)]
        await apply_all(svc, *(koo(k, cycle[i % 6], lang=lang) for i, k in enumerate(posted)))
        # Engagement and affinity: reactions by the reader and by a fan.
        await apply_all(svc, react("like", posted[0], me), react("comment", posted[1], me),
                        react("rekoo", posted[7], fan), react("like", posted[4], fan),
                        react("comment", posted[10], fan), react("like", posted[2], me))
        reader = Reader(svc.manager)
        await read_all(reader, me, limit=5)  # populate the hot cache (and trending)
        await svc.manager.drain()
        # Changes applied to the hot cache incrementally: a follow's merge (while the cached
        # window is full), new koos, others' reactions and an unreaction, then a delete,
        # an unfollow and a mute. (Two known bugs are pinned by their own tests: older koos
        # merged in after the window shrank, and the reader's own reactions once their
        # affinity is cached.)
        await apply_all(svc, follow(me, c))
        posted += await post(svc, a, lang, 3)
        await apply_all(svc, react("like", posted[4], fan, added=False),
                        react("rekoo", posted[13], fan), react("like", posted[25], fan))
        await apply_all(svc, delete(posted[24], a))
        await apply_all(svc, unfollow(me, b), relation("user_muted", me, c))

        now = int(time.time() * 1000)
        for limit in (3, 10, 20):
            hot = await read_all(reader, me, limit=limit, now_ms=now)
            again = await read_all(reader, me, limit=limit, now_ms=now)
            assert hot.signature() == again.signature()
            await svc.cache.redis.flushdb()
            cold = await read_all(reader, me, limit=limit, now_ms=now)
            await svc.manager.drain()
            rebuilt = await read_all(reader, me, limit=limit, now_ms=now)
            assert hot.signature() == cold.signature(), limit
            assert hot.signature() == rebuilt.signature(), limit
            # a: 4 + 3 - 1 deleted; the star's and the reader's own 4 each; b unfollowed,
            # c muted, the stranger not followed.
            assert len(hot.ids()) == 6 + 4 + 4
            if limit >= 10:
                assert hot.recommended(), "expected the stranger's koos as recommendations"


async def test_rule5_reader_reactions_after_affinity_is_cached(services: Services) -> None:
    lang = "kg"
    me, a, b = users(3)
    await signups(services, lang, me, a, b)
    await apply_all(services, follow(me, a), follow(me, b))
    ka = await post(services, a, lang, 2)
    kb = await post(services, b, lang, 2)
    await apply_all(services, react("like", ka[0], me))
    reader = Reader(services.manager)
    now = int(time.time() * 1000)
    await read_all(reader, me, now_ms=now)  # loads the affinity into the cache: {a: 1.0}
    await apply_all(services, react("like", ka[0], me, added=False),
                    react("comment", kb[0], me))
    hot = await read_all(reader, me, now_ms=now)
    await services.cache.redis.flushdb()
    cold = await read_all(reader, me, now_ms=now)
    assert set(cold.ids()) == {*ka, *kb}
    assert hot.signature() == cold.signature()
    # cached affinity


# --- rule 7: recommended koos -----------------------------------------------------------


@pytest.mark.parametrize("every", [10, 5])
async def test_rule7_recommended_koos_rate_and_authors(settings: Settings, every: int) -> None:
    async with open_services(settings.replace(recommended_every=every)) as svc:
        lang = "sw" if every == 10 else "sn"
        me, friend, muted, blocked, blocker, s1, s2, fan = users(8)
        await signups(svc, lang, me, friend, muted, blocked, blocker, s1, s2, fan)
        await apply_all(svc, follow(me, friend), relation("user_muted", me, muted),
                        relation("user_blocked", me, blocked),
                        relation("user_blocked", blocker, me))
        await post(svc, friend, lang, 25)
        await post(svc, me, lang, 2)
        # The most engaging koos are by people the reader must not be recommended.
        banned = [*await post(svc, muted, lang, 2), *await post(svc, blocked, lang, 2),
                  *await post(svc, blocker, lang, 2)]
        strangers = [*await post(svc, s1, lang, 3), *await post(svc, s2, lang, 3)]
        await apply_all(svc, *(react(k, koo_id, fan) for koo_id in banned
                               for k in ("like", "rekoo", "comment")))
        await apply_all(svc, *(react("like", k, fan) for k in strangers[:2]))
        deleted = strangers[-1]
        await apply_all(svc, delete(deleted, s2))

        reader = Reader(svc.manager)
        page = await reader.feed(me, limit=20)
        slots = [i for i, item in enumerate(page.items) if item.reason == "recommended"]
        assert slots == [k - 1 for k in range(every, 21, every)], slots
        read = await read_all(reader, me, limit=20)
        assert len(read.ids()) == 27
        recommended = [i.koo.koo_id for i in read.recommended()]
        assert not duplicates(recommended)
        assert set(recommended) <= set(strangers) - {deleted}
        # The rate: one in every `every` items of the walk, while live stranger koos last.
        assert len(recommended) == min(len(read.items) // every, len(strangers) - 1)


async def _strangers_trending(svc: Services, lang: str, me: str, n_friend: int,
                              n_strangers: int) -> tuple[list[str], list[str]]:
    """``me`` follows a friend with ``n_friend`` koos; strangers post ``n_strangers``
    liked koos (trending in ``lang``). Returns (friend's koos, strangers' koos)."""
    friend, fan, *strangers = users(2 + n_strangers)
    await signups(svc, lang, me, friend, fan, *strangers)
    await apply_all(svc, follow(me, friend))
    timeline = await post(svc, friend, lang, n_friend)
    theirs = [k for s in strangers for k in await post(svc, s, lang, 1)]
    await apply_all(svc, *(react("like", k, fan) for k in theirs))
    return timeline, theirs


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_rule7_small_pages_get_their_share_at_the_walk_s_rate(
    settings: Settings, limit: int,
) -> None:
    every = 5
    async with open_services(settings.replace(recommended_every=every)) as svc:
        me = users(1)[0]
        lang = {1: "ta", 3: "tb", 7: "tc"}[limit]
        timeline, strangers = await _strangers_trending(svc, lang, me, 30, 8)
        read = await read_all(Reader(svc.manager), me, limit=limit)
        served = read.items
        slots = [i + 1 for i, item in enumerate(served) if item.reason == "recommended"]
        assert slots == list(range(every, len(served) + 1, every)), slots
        assert len(slots) == min(len(served) // every, len(strangers))
        assert set(read.ids()) == set(timeline)
        assert not duplicates(read.ids(recommended=True))


async def test_rule7_no_recommended_koo_repeats_when_trending_changes_mid_walk(
    settings: Settings,
) -> None:
    async with open_services(settings.replace(recommended_every=5)) as svc:
        lang, me = "tz", users(1)[0]
        _, strangers = await _strangers_trending(svc, lang, me, 40, 6)
        reader = Reader(svc.manager)
        first = await reader.feed(me, limit=10)
        shown = [i.koo.koo_id for i in first.items if i.reason == "recommended"]
        assert len(shown) == 2
        # Newer, more engaging koos take the top of the trending list, and it is
        # recomputed: what was shown moves down the list.
        late_fan, *late = users(3)
        await signups(svc, lang, late_fan, *late)
        newer = [k for s in late for k in await post(svc, s, lang, 1)]
        await apply_all(svc, *(react(kind, k, late_fan) for k in newer
                               for kind in ("like", "rekoo", "comment")))
        await svc.cache.redis.delete(keys.trending(lang))
        cursor = first.next_cursor
        while cursor is not None:
            page = await reader.feed(me, limit=10, cursor=cursor)
            shown += [i.koo.koo_id for i in page.items if i.reason == "recommended"]
            cursor = page.next_cursor
        assert not duplicates(shown), shown
        assert set(shown) == set(strangers) | set(newer)


# --- rule 8: follow recommendations -----------------------------------------------------


async def test_rule8_follow_recommendations_exclusions(services: Services) -> None:
    lang = "mi"
    me, f1, f2, x, y, z, w, blocked, muted, blocker, later = users(11)
    await signups(services, lang, me, f1, f2, x, y, z, w, blocked, muted, blocker, later)
    await apply_all(
        services, follow(me, f1), follow(me, f2),
        *(follow(f1, u) for u in (me, f2, x, blocked, muted, blocker, later)),
        *(follow(f2, u) for u in (x, y, w, blocked, f1)),
        relation("user_blocked", me, blocked), relation("user_muted", me, muted),
        relation("user_blocked", blocker, me),
    )
    for user, followers in ((me, 50), (f1, 40), (blocked, 30), (muted, 20), (blocker, 10),
                            (z, 5)):
        await services.cache.set_popularity(lang, user, followers)
    reader = Reader(services.manager)
    never = {me, f1, f2, blocked, muted, blocker}

    computed = {p.user_id for p in await reader.recommended_follows(me, limit=100)}
    assert {x, y, z, w, later} <= computed
    assert not computed & never, computed & never

    # Stored by the recommendations job, then the graph changes: still excluded at read.
    await reader.refresh_recommendations(me)
    await apply_all(services, follow(me, x), relation("user_muted", me, y),
                    relation("user_blocked", z, me), relation("user_blocked", me, later))
    stored = {p.user_id for p in await reader.recommended_follows(me, limit=100)}
    assert w in stored, "expected the stored recommendations to be used"
    assert not stored & (never | {x, y, z, later}), stored & (never | {x, y, z, later})
    await services.cache.redis.flushdb()
    stored = {p.user_id for p in await reader.recommended_follows(me, limit=100)}
    assert not stored & (never | {x, y, z, later})
    assert len(await reader.recommended_follows(me, limit=1)) <= 1


# --- cursors ----------------------------------------------------------------------------


def _tamper(cursor: str) -> list[str]:
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    forged = []
    for index in (0, 1, len(raw) // 2, len(raw) - 1):  # version, salt, sealed body, tag
        changed = bytearray(raw)
        changed[index] ^= 1
        forged.append(base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode())
    return [*forged, cursor[:-1], f"{cursor}.", "", "a.b.c", f"{cursor}x", "é.é",
            cursor + "=" * 3000]


async def test_cursor_tampered_foreign_or_expired_is_invalid(services: Services) -> None:
    lang = "ln"
    me, other, author = users(3)
    await signups(services, lang, me, other, author)
    await apply_all(services, follow(me, author), follow(other, author))
    await post(services, author, lang, 5)
    reader = Reader(services.manager)
    now = int(time.time() * 1000)
    first = await reader.feed(me, limit=2, now_ms=now)
    cursor = first.next_cursor
    assert cursor is not None
    second = await reader.feed(me, limit=2, cursor=cursor, now_ms=now + 1000)
    assert not {i.koo.koo_id for i in first.items} & {i.koo.koo_id for i in second.items}

    for bad in _tamper(cursor):
        with pytest.raises(InvalidCursor):
            await reader.feed(me, limit=2, cursor=bad, now_ms=now)
    with pytest.raises(InvalidCursor):  # issued for another user
        await reader.feed(other, limit=2, cursor=cursor, now_ms=now)
    ttl_ms = services.settings.cursor_ttl_seconds * 1000
    await reader.feed(me, limit=2, cursor=cursor, now_ms=now + ttl_ms - 1000)  # still valid
    with pytest.raises(InvalidCursor):  # expired
        await reader.feed(me, limit=2, cursor=cursor, now_ms=now + ttl_ms + 2000)
    # A cursor of another kind (an author's koos) for the same user id.
    _, koos_cursor = await reader.author_koos(author, limit=1)
    assert koos_cursor is not None
    with pytest.raises(InvalidCursor):
        await reader.feed(author, limit=2, cursor=koos_cursor, now_ms=now)
    # Another deployment's secret.
    stranger_reader = Reader(services.manager)
    stranger_reader.cursors = type(reader.cursors)("another-secret-0123456789", 3600)
    with pytest.raises(InvalidCursor):
        await stranger_reader.feed(me, limit=2, cursor=cursor, now_ms=now)
