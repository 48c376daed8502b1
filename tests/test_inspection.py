"""`feed inspect`: whether a koo is in a reader's feed, and why not, from the read path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from config.settings import Settings
from feed.events import KooCreated
from feed.inspection import Inspector
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import apply_all, event, follow, koo, now_ms, relation, signup


def why(svc: Services) -> Inspector:
    return Inspector(svc.manager)


async def test_in_the_feed_or_hidden_by_a_relation(services: Services) -> None:
    me, friend, stranger, blocked, muted, blocker = (uid() for _ in range(6))
    people = (me, friend, stranger, blocked, muted, blocker)
    await apply_all(services, *(signup(u) for u in people),
                    *(follow(me, u) for u in (friend, blocked, muted, blocker)),
                    relation("user_blocked", me, blocked), relation("user_muted", me, muted),
                    relation("user_blocked", blocker, me))
    koos = {u: uid("k") for u in people}
    gone = uid("k")
    await apply_all(services, *(koo(k, u) for u, k in koos.items()), koo(gone, friend))
    await apply_all(services, event("koo_deleted", koo_id=gone, author_id=friend))
    expected = {
        me: {"in_feed": True, "reason": "self"},
        friend: {"in_feed": True, "reason": "following"},
        stranger: {"in_feed": False, "reason": "not followed"},
        blocked: {"in_feed": False, "reason": "the reader blocks the author"},
        muted: {"in_feed": False, "reason": "the reader mutes the author"},
        blocker: {"in_feed": False, "reason": "the author blocks the reader"},
    }
    for author, answer in expected.items():
        assert await why(services).feed(me, koos[author]) == answer, author
    assert await why(services).feed(me, gone) == {"in_feed": False, "reason": "deleted"}
    assert (await why(services).feed(me, uid("nosuch")))["reason"] == "no such koo"


@pytest.fixture
async def strict(settings: Settings) -> AsyncIterator[Services]:
    """A follow brings 1 older koo, timelines keep 3 rows, 3 followers make a celebrity."""
    async with open_services(settings.replace(backfill_on_follow=1, timeline_max_items=3,
                                              celebrity_followers=3)) as svc:
        yield svc


async def test_older_than_the_follow_trimmed_or_outside_the_pull_window(
    strict: Services,
) -> None:
    me, author, star, *fans = (uid() for _ in range(6))
    await apply_all(strict, *(signup(u) for u in (me, author, star, *fans)),
                    *(follow(f, star) for f in fans))
    start = now_ms()
    old = [uid("k") for _ in range(3)]
    starred = [uid("k") for _ in range(3)]
    await apply_all(strict, *(koo(k, author, occurred_at=start + i) for i, k in enumerate(old)),
                    *(koo(k, star, occurred_at=start + i) for i, k in enumerate(starred)))
    await apply_all(strict, follow(me, author), follow(me, star))
    assert (await why(strict).feed(me, old[-1]))["in_feed"]
    assert (await why(strict).feed(me, old[0]))["reason"].startswith("older than the follow")
    assert await why(strict).feed(me, starred[-1]) == {"in_feed": True, "reason": "celebrity"}
    assert (await why(strict).feed(me, starred[0]))["reason"].startswith(
        "outside the celebrity pull window")
    # Four newer koos push the oldest row past the cap of three.
    newer = [uid("k") for _ in range(4)]
    await apply_all(strict, *(koo(k, author, occurred_at=now_ms() + i)
                              for i, k in enumerate(newer)))
    # (A cached timeline keeps its window whatever storage trims: read it from DynamoDB.)
    await strict.manager.drain()
    await strict.cache.drop_timeline(me)
    assert (await why(strict).feed(me, newer[0]))["reason"].startswith("trimmed")


async def test_a_koo_whose_fan_out_has_not_run_is_not_delivered_yet(services: Services) -> None:
    me, author, k = uid(), uid(), uid("k")
    await apply_all(services, signup(me), signup(author), follow(me, author))
    created = KooCreated(event_id=uid("e"), occurred_at=now_ms(), koo_id=k, author_id=author,
                         text="t", lang="hi")
    await services.stores.db.transact([services.stores.koos.create_item(created, pull=False)])
    answer = await why(services).feed(me, k)
    assert answer == {"in_feed": False, "reason": "not delivered yet: fan-out pending"}


async def test_a_user_s_state(services: Services) -> None:
    me, friend = uid(), uid()
    await apply_all(services, signup(me), signup(friend), follow(me, friend),
                    koo(uid("k"), friend))
    found = await why(services).user(me)
    assert found is not None
    assert found["profile"]["user_id"] == me
    assert found["relations"]["following"] == 1
    assert found["timeline"]["stored_rows"] == 1
    assert set(found["timeline"]["cache"]) == {"cached", "rebuilding", "holds_everything",
                                               "entries"}
    assert await why(services).user(uid("nobody")) is None
