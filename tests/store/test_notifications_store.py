"""The notification store on a real DynamoDB (moto's server or DynamoDB Local).

Each test states its pass criterion. Sources are written as the syncs write them; the
reaction and relation rows they would read are not needed here.
"""

from __future__ import annotations

from config.settings import Settings
from config.tables import NOTIFICATIONS
from feed.services import Services
from feed.store.notifications import SETTLE_BATCH, NotificationStore, Source
from tests.conftest import uid

HOUR = 3_600_000
T0 = 1_764_000_000_000 // HOUR * HOUR


def _store(services: Services) -> NotificationStore:
    return NotificationStore(services.stores.db, window_ms=HOUR, ttl_seconds=86_400)


def _like(recipient: str, koo_id: str, actor: str, *, on: bool = True, at: int = T0 + 1,
          ver: int | None = None) -> Source:
    return Source(recipient, "like", koo_id, actor, "-", on, at, at if ver is None else ver)


async def _settle_all(store: NotificationStore, recipient: str, group: str) -> int:
    """Settle until done; returns how many transactions committed a batch."""
    batches = 0
    while True:
        done, body = await store.settle(recipient, group)
        batches += body is not None
        if done:
            return batches


async def _rows(services: Services, recipient: str) -> list[str]:
    found: list[str] = []
    async for item in services.stores.db.query(
            NOTIFICATIONS, "user_id = :u",
            values={":u": {"S": recipient}}, consistent=True):
        found.append(item["nk"])
    return found


async def test_switch_is_versioned_and_replays_change_nothing(services: Services) -> None:
    """Pass: a new source moves its group; the same version again, or an older one, moves
    nothing (and names the group to settle); a newer "off" moves it back."""
    store = _store(services)
    r, k, a = uid("r"), uid("k"), uid("a")
    group = store.group_of("like", k, T0 + 1)
    assert await store.switch(_like(r, k, a)) == [group]
    assert await store.switch(_like(r, k, a)) == [group]
    await _settle_all(store, r, group)
    assert (await store.group(r, group) or {})["actor_count"] == 1
    assert await store.switch(_like(r, k, a, on=False, ver=T0)) == [group]  # older: ignored
    await _settle_all(store, r, group)
    assert (await store.group(r, group) or {})["actor_count"] == 1
    assert await store.switch(_like(r, k, a, on=False, ver=T0 + 5)) == [group]
    await _settle_all(store, r, group)
    assert (await store.group(r, group) or {})["actor_count"] == 0


async def test_settle_moves_the_count_once_per_batch(services: Services) -> None:
    """Pass: 2.5 batches of new actors settle in 3 committed transactions to the exact
    count, with the newest actors first and updated_at the newest time."""
    store = _store(services)
    r, k = uid("r"), uid("k")
    n = SETTLE_BATCH * 2 + SETTLE_BATCH // 2
    actors = [f"a{i:03d}" for i in range(n)]
    for i, a in enumerate(actors):
        await store.switch(_like(r, k, a, at=T0 + i))
    group = store.group_of("like", k, T0)
    assert await _settle_all(store, r, group) == 3
    body = await store.group(r, group)
    assert body is not None
    assert body["actor_count"] == n
    assert body["actors"][:3] == actors[::-1][:3]
    assert body["updated_at"] == T0 + n - 1
    assert await _settle_all(store, r, group) == 0  # nothing pending: nothing moves


async def test_a_change_during_a_settle_cancels_it_and_counts_right(
        services: Services) -> None:
    """Pass: an actor leaving between a settle's reads and its transaction cancels that
    settle (nothing moves); settling again counts the actor out: 1, not 2 and not 0."""
    store = _store(services)
    r, k, a, b = uid("r"), uid("k"), uid("a"), uid("b")
    group = store.group_of("like", k, T0 + 1)
    await store.switch(_like(r, k, a))
    await store.switch(_like(r, k, b))
    newest = store.newest_actors

    async def meanwhile(recipient: str, group: str, limit: int = 8) -> list[tuple[str, int]]:
        found = await newest(recipient, group, limit)
        await store.switch(_like(r, k, b, on=False, ver=T0 + 9))
        return found

    store.newest_actors = meanwhile  # type: ignore[method-assign]
    assert await store.settle(r, group) == (False, None)
    store.newest_actors = newest  # type: ignore[method-assign]
    await _settle_all(store, r, group)
    body = await store.group(r, group)
    assert body is not None
    assert (body["actor_count"], body["actors"]) == (1, [a])


async def test_two_settles_of_the_same_rows_count_them_once(services: Services) -> None:
    """Pass: a settle that read the pending rows, then lost the race to another settle of
    the same rows (which committed before it read the group's revision), is cancelled:
    the count is the number of actors, not twice a batch."""
    store = _store(services)
    r, k = uid("r"), uid("k")
    actors = [f"a{i:02d}" for i in range(5)]
    for i, a in enumerate(actors):
        await store.switch(_like(r, k, a, at=T0 + 1 + i))
    group = store.group_of("like", k, T0 + 1)
    other = _store(services)
    db = services.stores.db
    plain_get = db.get
    raced = False

    async def get(dataset: str, key: dict[str, str], **options: object) -> object:
        nonlocal raced
        if not raced and key.get("nk", "").startswith("g#"):
            raced = True  # the other settle commits between our two reads
            assert await _settle_all(other, r, group) == 1
        return await plain_get(dataset, key, **options)  # type: ignore[arg-type]

    db.get = get  # type: ignore[method-assign,assignment]
    try:
        assert await store.settle(r, group) == (False, None)
    finally:
        db.get = plain_get  # type: ignore[method-assign]
    await _settle_all(store, r, group)
    assert (await store.group(r, group) or {})["actor_count"] == len(actors)


async def test_reply_actor_counts_once_for_many_replies(services: Services) -> None:
    """Pass: two replies by one actor count one actor; removing one keeps them, removing
    both counts them out."""
    store = _store(services)
    r, k, a = uid("r"), uid("k"), uid("a")

    def reply(source: str, on: bool) -> Source:
        return Source(r, "reply", k, a, source, on, T0 + 1, 1 if on else 2)

    group = store.group_of("reply", k, T0 + 1)
    for source in ("r1", "r2"):
        await store.switch(reply(source, True))
    await _settle_all(store, r, group)
    assert (await store.group(r, group) or {})["actor_count"] == 1
    await store.switch(reply("r1", False))
    await _settle_all(store, r, group)
    assert (await store.group(r, group) or {})["actor_count"] == 1
    await store.switch(reply("r2", False))
    await _settle_all(store, r, group)
    assert (await store.group(r, group) or {})["actor_count"] == 0


async def test_pages_counts_and_seen_mark(services: Services) -> None:
    """Pass: three live groups page newest first strictly below a position, count_since
    counts those at or after a time, and the seen mark only ever rises."""
    store = _store(services)
    r, a = uid("r"), uid("a")
    koos = [uid("k") for _ in range(3)]
    for i, k in enumerate(koos):
        await store.switch(_like(r, k, a, at=T0 + i * HOUR))
        await _settle_all(store, r, store.group_of("like", k, T0 + i * HOUR))
    page = await store.page(r, floor=0, before=None, limit=2)
    assert [b["koo_id"] for b in page] == [koos[2], koos[1]]
    last = f"{page[-1]['updated_at']:013d}#{page[-1]['group']}"
    assert [b["koo_id"] for b in await store.page(r, floor=0, before=last, limit=5)] == \
        [koos[0]]
    assert await store.count_since(r, T0 + HOUR) == 2
    assert await store.page(r, floor=T0 + 3 * HOUR, before=None, limit=5) == []
    assert await store.mark_seen(r, T0 + 5) == T0 + 5
    assert await store.mark_seen(r, T0 + 1) == T0 + 5
    assert await store.seen(r) == T0 + 5


async def test_erasure_finds_recipients_and_actors(services: Services, settings: Settings
                                                   ) -> None:
    """Pass: remove_actor takes the actor out of two recipients' notifications (counts 2
    -> 1) and leaves no row naming them; erase_recipient leaves the recipient's partition
    empty."""
    from feed.notifications import Notifications

    notes = Notifications.over(services.manager)
    notes.store.window_ms = HOUR
    gone, stays = uid("g"), uid("s")
    recipients = [uid("r"), uid("r")]
    for r in recipients:
        k = uid("k")
        for actor in (gone, stays):
            await notes._switch(_like(r, k, actor))
    await notes.remove_actor(gone)
    for r in recipients:
        rows = await _rows(services, r)
        assert not [nk for nk in rows if gone in nk]
        groups = [nk for nk in rows if nk.startswith("g#")]
        assert len(groups) == 1
        body = await notes.store.group(r, groups[0][2:])
        assert body is not None
        assert (body["actor_count"], body["actors"]) == (1, [stays])
    assert await notes.erase_recipient(recipients[0]) > 0
    assert await _rows(services, recipients[0]) == []
    assert await _rows(services, recipients[1]) != []
