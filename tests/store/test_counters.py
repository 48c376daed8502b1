"""Counters (followers, following, likes, rekoos, comments) stay exact under replays,
concurrent duplicates and events that arrive out of order."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from config.tables import KOOS, USERS
from feed import keys
from feed.events import Event, typed, validate_event
from feed.services import Services
from feed.store._transport import Reply
from tests.conftest import uid
from tests.helpers import event, follow, koo, now_ms, signup, unfollow
from tests.store._faults import HookBase, cancelled

COUNTERS = ("likes", "rekoos", "comments")


def react(kind: str, koo_id: str, user_id: str, *, added: bool = True, **kw: Any
          ) -> dict[str, Any]:
    """A reaction event (tests.helpers.react passes ``kind`` twice to ``event``)."""
    built = event("reaction_added" if added else "reaction_removed", koo_id=koo_id,
                  user_id=user_id, **kw)
    built["kind"] = kind
    return built


def ev(raw: dict[str, Any]) -> Event:
    return typed(validate_event(raw))


async def apply(services: Services, *raw: dict[str, Any]) -> list[str]:
    """Apply events one after the other."""
    return [await services.applier.apply(ev(r)) for r in raw]


async def apply_at_once(services: Services, *raw: dict[str, Any]) -> list[str]:
    """Apply events concurrently."""
    return list(await asyncio.gather(*(services.applier.apply(ev(r)) for r in raw)))


async def user_counters(services: Services, user: str) -> tuple[int, int]:
    """The stored (followers, following), unclamped: a negative count must show."""
    item = await services.stores.db.get(USERS, {"user_id": user}, consistent=True) or {}
    return int(item.get("followers", 0)), int(item.get("following", 0))


async def koo_counters(services: Services, koo_id: str) -> dict[str, int]:
    item = await services.stores.db.get(KOOS, {"koo_id": koo_id}, consistent=True) or {}
    return {c: int(item.get(c, 0)) for c in COUNTERS}


async def follows(services: Services, follower: str, followee: str) -> bool:
    return await services.stores.relations.is_active(follower, keys.REL_FOLLOW, followee)


async def a_koo(services: Services) -> tuple[str, str]:
    author, koo_id = uid("a"), uid("k")
    await apply(services, signup(author), koo(koo_id, author))
    return author, koo_id


# --- follows ----------------------------------------------------------------------------


async def test_same_follow_event_20_times_at_once_counts_once(services: Services) -> None:
    a, b = uid(), uid()
    await apply(services, signup(a), signup(b))
    once = follow(a, b)
    outcomes = await apply_at_once(services, *[dict(once) for _ in range(20)])
    assert outcomes.count("applied") == 1
    assert set(outcomes) <= {"applied", "duplicate", "noop"}
    assert await user_counters(services, b) == (1, 0)
    assert await user_counters(services, a) == (0, 1)
    assert await follows(services, a, b)
    # ... and once more, later, one at a time.
    assert await apply(services, once, once) == ["duplicate", "duplicate"]
    assert await user_counters(services, b) == (1, 0)


async def test_one_follow_sent_under_20_event_ids_counts_once(services: Services) -> None:
    a, b = uid(), uid()
    at = now_ms()
    # A producer that re-sends the same follow with fresh event ids (and clocks).
    copies = [follow(a, b, occurred_at=at + (i % 4)) for i in range(20)]
    outcomes = await apply_at_once(services, *copies)
    assert 1 <= outcomes.count("applied") <= 4  # one per version at most, never 20
    assert await user_counters(services, b) == (1, 0)
    assert await user_counters(services, a) == (0, 1)


async def test_many_followers_at_once_are_each_counted(services: Services) -> None:
    star = uid("s")
    fans = [uid("f") for _ in range(30)]
    outcomes = await apply_at_once(services, *(follow(f, star) for f in fans))
    assert outcomes == ["applied"] * 30
    assert await user_counters(services, star) == (30, 0)
    assert await services.stores.relations.incoming(star, keys.REL_FOLLOW) == set(fans)
    for fan in fans:
        assert await user_counters(services, fan) == (0, 1)


async def test_unfollow_before_an_older_follow_leaves_no_follow(services: Services) -> None:
    a, b = uid(), uid()
    t1, t2, t3 = now_ms(), now_ms(), now_ms()
    assert await apply(services, unfollow(a, b, occurred_at=t2)) == ["noop"]
    assert await apply(services, follow(a, b, occurred_at=t1)) == ["noop"]
    assert not await follows(services, a, b)
    assert await user_counters(services, b) == (0, 0)
    assert await user_counters(services, a) == (0, 0)
    # A newer follow still counts.
    assert await apply(services, follow(a, b, occurred_at=t3)) == ["applied"]
    assert await user_counters(services, b) == (1, 0)


async def test_follow_unfollow_storm_settles_on_the_newest(services: Services) -> None:
    """Each pair gets a shuffled run of follows and unfollows; the newest decides. Pairs
    run concurrently; one pair's events one at a time (see the race test below)."""
    rng = random.Random(42)
    star = uid("s")
    base = now_ms()
    expected: dict[str, bool] = {}
    runs: list[list[dict[str, Any]]] = []
    for _ in range(12):
        fan = uid("f")
        times = rng.sample(range(base, base + 10_000), 9)
        run = [(follow if rng.random() < 0.5 else unfollow)(fan, star, occurred_at=t)
               for t in times]
        newest = max(run, key=lambda e: e["occurred_at"])
        expected[fan] = newest["type"] == "user_followed"
        run += rng.sample(run, 3)  # some replays too
        rng.shuffle(run)
        runs.append(run)
    if not any(expected.values()):
        pytest.fail("seed gave no follower; pick another")

    async def one_pair(run: list[dict[str, Any]]) -> None:
        await apply(services, *run)

    await asyncio.gather(*(one_pair(run) for run in runs))
    for fan, following in expected.items():
        assert await follows(services, fan, star) == following, fan
        assert await user_counters(services, fan) == (0, int(following)), fan
    assert await user_counters(services, star) == (sum(expected.values()), 0)
    assert await services.stores.relations.incoming(star, keys.REL_FOLLOW) == {
        f for f, on in expected.items() if on
    }


async def test_signup_after_follows_keeps_the_counters(services: Services) -> None:
    a, b, c = uid(), uid(), uid()
    await apply(services, follow(a, b), follow(c, b), follow(b, a))
    await apply(services, signup(b))
    user = await services.stores.users.get(b, consistent=True)
    assert user is not None
    assert (user.followers, user.following) == (2, 1)
    # An older signup replayed under another id changes nothing either.
    await apply(services, signup(b, occurred_at=now_ms() - 60_000, lang="en"))
    user = await services.stores.users.get(b, consistent=True)
    assert user is not None
    assert (user.followers, user.following, user.lang) == (2, 1, "hi")


# --- reactions --------------------------------------------------------------------------


async def test_reaction_added_twice_under_different_ids_counts_once(
    services: Services,
) -> None:
    _, k = await a_koo(services)
    fan = uid()
    assert await apply(services, react("like", k, fan), react("like", k, fan)) == [
        "applied", "noop"]
    await apply_at_once(services, *(react("like", k, fan) for _ in range(20)))
    assert await koo_counters(services, k) == {"likes": 1, "rekoos": 0, "comments": 0}


async def test_same_reaction_event_20_times_at_once_counts_once(services: Services) -> None:
    _, k = await a_koo(services)
    once = react("rekoo", k, uid())
    outcomes = await apply_at_once(services, *[dict(once) for _ in range(20)])
    assert outcomes.count("applied") == 1
    assert set(outcomes) <= {"applied", "duplicate", "noop"}
    assert await koo_counters(services, k) == {"likes": 0, "rekoos": 1, "comments": 0}


async def test_each_kind_and_user_counts_separately(services: Services) -> None:
    _, k = await a_koo(services)
    x, y = uid(), uid()
    await apply_at_once(services, react("like", k, x), react("rekoo", k, x),
                        react("comment", k, x), react("like", k, y), react("like", k, y))
    assert await koo_counters(services, k) == {"likes": 2, "rekoos": 1, "comments": 1}


async def test_removals_never_drive_a_counter_below_zero(services: Services) -> None:
    _, k = await a_koo(services)
    x, y = uid(), uid()
    await apply(services, react("like", k, x), react("like", k, x, added=False),
                react("like", k, x, added=False), react("comment", k, y, added=False))
    await apply_at_once(services, *(react("like", k, x, added=False) for _ in range(10)))
    assert await koo_counters(services, k) == {"likes": 0, "rekoos": 0, "comments": 0}
    koo_now = (await services.stores.koos.get_many([k]))[k]
    assert not koo_now.deleted
    assert koo_now.likes == 0


async def test_out_of_order_add_and_remove_settle_on_the_newest(services: Services) -> None:
    _, k = await a_koo(services)
    x = uid()
    t1, t2, t3, t4 = now_ms(), now_ms(), now_ms(), now_ms()
    await apply(services, react("like", k, x, occurred_at=t2))
    # A remove older than the add arrives after it: ignored.
    assert await apply(services, react("like", k, x, added=False, occurred_at=t1)) == ["noop"]
    assert (await koo_counters(services, k))["likes"] == 1
    reactions, _ = await services.stores.reactions.for_koo(k, limit=10)
    assert [(r.user_id, r.kind) for r in reactions] == [(x, "like")]
    # A newer remove wins; an add older than it, arriving late, changes nothing.
    assert await apply(services, react("like", k, x, added=False, occurred_at=t4)) == [
        "applied"]
    assert await apply(services, react("like", k, x, occurred_at=t3)) == ["noop"]
    assert (await koo_counters(services, k))["likes"] == 0
    reactions, _ = await services.stores.reactions.for_koo(k, limit=10)
    assert reactions == []


async def test_remove_before_add_with_older_timestamp_leaves_no_reaction(
    services: Services,
) -> None:
    _, k = await a_koo(services)
    x = uid()
    t1, t2 = now_ms(), now_ms()
    await apply(services, react("comment", k, x, added=False, occurred_at=t2),
                react("comment", k, x, occurred_at=t1))
    assert await koo_counters(services, k) == {"likes": 0, "rekoos": 0, "comments": 0}


# --- races and transient cancellations -----------------------------------------------------


async def test_newer_unfollow_wins_a_race_with_an_older_follow(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newer unfollow's write fails (the row is off); before it settles, an older follow
    turns the row on. The unfollow must be applied again, not recorded as a no-op."""
    a, b = uid(), uid()
    t_follow, t_unfollow, t_old_follow, t_new_unfollow = (now_ms() for _ in range(4))
    await apply(services, follow(a, b, occurred_at=t_follow),
                unfollow(a, b, occurred_at=t_unfollow))
    relations = services.stores.relations
    original = relations.settle
    raced = False

    async def racing_settle(*args: Any, **kwargs: Any) -> bool:
        nonlocal raced
        if not raced:
            raced = True
            await services.applier.apply(ev(follow(a, b, occurred_at=t_old_follow)))
        return await original(*args, **kwargs)

    monkeypatch.setattr(relations, "settle", racing_settle)
    await services.applier.apply(ev(unfollow(a, b, occurred_at=t_new_unfollow)))
    assert raced
    assert not await follows(services, a, b)
    assert await user_counters(services, b) == (0, 0)


async def test_newer_unlike_wins_a_race_with_an_older_like(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, k = await a_koo(services)
    x = uid()
    t_like, t_unlike, t_old_like, t_new_unlike = (now_ms() for _ in range(4))
    await apply(services, react("like", k, x, occurred_at=t_like),
                react("like", k, x, added=False, occurred_at=t_unlike))
    reactions = services.stores.reactions
    original = reactions.settle
    raced = False

    async def racing_settle(*args: Any, **kwargs: Any) -> bool:
        nonlocal raced
        if not raced:
            raced = True
            await services.applier.apply(ev(react("like", k, x, occurred_at=t_old_like)))
        return await original(*args, **kwargs)

    monkeypatch.setattr(reactions, "settle", racing_settle)
    await services.applier.apply(ev(react("like", k, x, added=False, occurred_at=t_new_unlike)))
    assert raced
    assert (await koo_counters(services, k))["likes"] == 0


async def test_a_conflict_cancelled_transaction_does_not_lose_the_follow(
    services: Services,
) -> None:
    a, b = uid(), uid()
    fired = False

    class ConflictOnce(HookBase):
        def on_request(self, request: dict[str, Any], context: dict[str, Any]) -> Reply | None:
            nonlocal fired
            if fired:
                return None
            fired = True
            return cancelled("TransactionConflict", "None", "None")

    with ConflictOnce(services.stores.db, "TransactWriteItems"):
        try:
            outcome = await services.applier.apply(ev(follow(a, b)))
        except Exception as exc:  # a retryable error is fine too: the worker retries the job
            outcome = type(exc).__name__
    assert fired
    assert outcome != "noop"
    if outcome != "applied":
        await services.applier.apply(ev(follow(a, b)))  # what the retry would do
    assert await follows(services, a, b)
    assert await user_counters(services, b) == (1, 0)
