"""Dead letters: listed, shown, replayed once their cause is fixed, and purged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
import pytest

from config.settings import Settings
from config.tables import DEAD_LETTERS, KOOS
from feed import keys
from feed.deadletters import DeadLetterDesk
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import apply_all, drain, event, koo, react, signup


@pytest.fixture
async def impatient(settings: Settings) -> AsyncIterator[Services]:
    """Services that dead-letter an event after its first failed try."""
    async with open_services(settings.replace(job_max_tries=1)) as svc:
        yield svc


def desk(svc: Services) -> DeadLetterDesk:
    return DeadLetterDesk(svc.stores, svc.jobs)


async def likes(svc: Services, koo_id: str) -> int:
    item = await svc.stores.db.get(KOOS, {"koo_id": koo_id}, consistent=True) or {}
    return int(item.get("likes", 0))


async def test_a_reaction_whose_koo_came_later_applies_when_replayed(
    impatient: Services,
) -> None:
    author, fan, koo_id = uid(), uid(), uid("k")
    like = react("like", koo_id, fan)
    await apply_all(impatient, signup(author), signup(fan), like)  # no koo yet
    dl_id = keys.dead_letter_of_event(like["event_id"])
    letter = await desk(impatient).show(dl_id)
    assert letter is not None
    assert (letter.event_id, letter.type) == (like["event_id"], "reaction_added")
    assert "not stored" in letter.reason
    assert letter.dl_id in [d.dl_id for d in await desk(impatient).list()]

    await apply_all(impatient, koo(koo_id, author))  # the cause is fixed
    assert await likes(impatient, koo_id) == 0
    assert await desk(impatient).replay(dl_id) == "replayed"
    assert await desk(impatient).show(dl_id) is None
    await drain(impatient)
    assert await likes(impatient, koo_id) == 1
    assert await desk(impatient).replay(dl_id) == "not found"
    await impatient.publisher.publish([like])  # the producer's own retry: still one like
    await drain(impatient)
    assert await likes(impatient, koo_id) == 1


async def test_a_replay_that_fails_again_comes_back_as_a_dead_letter(
    impatient: Services,
) -> None:
    like = react("like", uid("never"), uid())
    await apply_all(impatient, like)
    dl_id = keys.dead_letter_of_event(like["event_id"])
    assert await desk(impatient).replay(dl_id) == "replayed"
    await drain(impatient)
    again = await desk(impatient).show(dl_id)
    assert again is not None
    assert "not stored" in again.reason


async def test_what_cannot_be_replayed_says_why(impatient: Services) -> None:
    await impatient.stores.dead_letters.add("job:garbage", {"type": "nonsense"}, "invalid")
    assert (await desk(impatient).replay("job:garbage")).startswith("cannot replay: not a valid")
    # A different event under a used event_id: the id is the other event's.
    first = signup(uid())
    reused = {**signup(uid()), "event_id": first["event_id"]}
    await apply_all(impatient, first)
    await apply_all(impatient, reused)
    dl_id = keys.dead_letter_of_event(first["event_id"])
    letter = await desk(impatient).show(dl_id)
    assert letter is not None
    assert letter.reason == "event_id_reused"
    assert "belongs to another event" in await desk(impatient).replay(dl_id)


async def test_purge_removes_only_the_old_ones(impatient: Services) -> None:
    old, new = uid("old"), uid("new")
    await impatient.stores.dead_letters.add(new, event("koo_deleted"), "new")
    three_days_ago = int(time.time() * 1000) - 3 * 86_400_000
    await impatient.stores.db.put(DEAD_LETTERS, {
        "dl_id": old, "payload": orjson.dumps(event("koo_deleted")).decode(),
        "reason": "old", "attempts": 1, "failed_at": three_days_ago,
    })
    assert await desk(impatient).purge(older_than_days=2) >= 1
    assert await desk(impatient).show(old) is None
    assert await desk(impatient).show(new) is not None


async def test_a_held_event_too_big_for_an_item_is_marked_truncated(impatient: Services
                                                                    ) -> None:
    """Pass: an event whose personal fields are held apart, and whose whole text is past
    the 32 K kept, leaves a letter that says so, with the event's full size; the letter
    itself stays small and holds no text."""
    event_id = uid("e")
    huge = {**koo(uid("k"), uid("u"), text="z" * 1_000_000), "event_id": event_id}
    dl_id = keys.dead_letter_of_event(event_id)
    await impatient.stores.dead_letters.add(dl_id, huge, "text too long")
    letter = await impatient.stores.dead_letters.get(dl_id)
    assert letter is not None
    assert letter["payload_truncated"] is True
    assert letter["payload_chars"] > 1_000_000
    assert "zzz" not in orjson.dumps(letter["payload"]).decode()
    assert len(orjson.dumps(letter, default=str)) < 64 * 1024
