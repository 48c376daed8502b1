"""The ``apply_event`` job (workers/events.py): applied, duplicate, retried, and the
payloads that can never apply go to the dead letters under their event's id (or the
job's, when the payload has none) while the job itself succeeds."""

from __future__ import annotations

from typing import Any

import pytest
from arq import Retry

from feed import keys
from feed.services import Services
from tests.conftest import uid
from tests.helpers import event, follow, koo, react, signup
from tests.workers._support import apply, job_ctx, stored
from workers.events import apply_event

pytestmark = pytest.mark.timeout(120)


async def test_an_event_is_applied_and_its_koo_reaches_the_followers(
    services: Services,
) -> None:
    author, reader = uid(), uid()
    assert await apply(services, signup(author), signup(reader), follow(reader, author)) == [
        "applied"] * 3
    k = uid("k")
    assert await apply_event(job_ctx(services), koo(k, author)) == "applied"
    assert (await services.stores.koos.get(k, consistent=True) or {}).get("author_id") == author
    assert k in await stored(services, reader)
    assert k in await stored(services, author)


async def test_the_same_event_again_is_a_duplicate_and_changes_nothing(
    services: Services,
) -> None:
    author, fan = uid(), uid()
    k = uid("k")
    await apply(services, signup(author), signup(fan), koo(k, author))
    like = react("like", k, fan)
    assert await apply_event(job_ctx(services), like) == "applied"
    for _ in range(3):
        assert await apply_event(job_ctx(services), dict(like)) == "duplicate"
    item = await services.stores.koos.get(k, consistent=True)
    assert item is not None
    assert int(item.get("likes", 0)) == 1


@pytest.mark.parametrize("broken", [
    {"type": "koo_created", "koo_id": "k1"},                       # fields missing
    {"type": "no_such_type", "occurred_at": 1_780_000_000_000},    # unknown type
    {"type": "user_followed", "occurred_at": 1_780_000_000_000,    # follows themselves
     "follower_id": "same", "followee_id": "same"},
])
async def test_an_invalid_event_is_dead_lettered_under_its_event_id(
    services: Services, broken: dict[str, Any],
) -> None:
    raw = {**broken, "event_id": uid("ev")}
    assert await apply_event(job_ctx(services), raw) == "dead-lettered"
    letter = await services.stores.dead_letters.get(keys.dead_letter_of_event(raw["event_id"]))
    assert letter is not None
    assert str(letter["reason"]).startswith("invalid event")
    assert letter["payload"] == raw


@pytest.mark.parametrize("raw", [
    ["not", "an", "object"],
    "a string",
    {"type": "koo_created", "event_id": 42},
    {"type": "koo_created"},
])
async def test_a_payload_without_a_usable_event_id_is_dead_lettered_under_the_job_id(
    services: Services, raw: Any,
) -> None:
    job_id = uid("job")
    assert await apply_event(job_ctx(services, job_id=job_id), raw) == "dead-lettered"
    letter = await services.stores.dead_letters.get(keys.dead_letter_of_job(job_id))
    assert letter is not None
    assert str(letter["reason"]).startswith("invalid event")
    assert letter["payload"] == raw


async def test_an_event_that_can_never_apply_is_dead_lettered_and_writes_nothing(
    services: Services,
) -> None:
    author, other = uid(), uid()
    k = uid("k")
    await apply(services, signup(author), signup(other), koo(k, author))
    theft = event("koo_deleted", koo_id=k, author_id=other)
    assert await apply_event(job_ctx(services), theft) == "dead-lettered"
    letter = await services.stores.dead_letters.get(keys.dead_letter_of_event(theft["event_id"]))
    assert letter is not None
    assert k in str(letter["reason"])
    assert letter["payload"]["event_id"] == theft["event_id"]
    item = await services.stores.koos.get(k, consistent=True)
    assert item is not None
    assert not item.get("deleted")
    # Its replay is not applied either, and leaves one letter.
    assert await apply_event(job_ctx(services), dict(theft)) in {"dead-lettered", "duplicate"}
    item = await services.stores.koos.get(k, consistent=True)
    assert item is not None
    assert not item.get("deleted")


async def test_an_event_waiting_for_its_koo_is_retried_then_dead_lettered_on_the_last_try(
    services: Services,
) -> None:
    fan = uid()
    await apply(services, signup(fan))
    early = react("like", uid("k"), fan)
    with pytest.raises(Retry) as retry:
        await apply_event(job_ctx(services, job_try=1), early)
    assert retry.value.defer_score is not None
    assert retry.value.defer_score > 0
    dl_id = keys.dead_letter_of_event(early["event_id"])
    assert await services.stores.dead_letters.get(dl_id) is None
    last = services.settings.job_max_tries
    assert await apply_event(job_ctx(services, job_try=last), early) == "dead-lettered"
    letter = await services.stores.dead_letters.get(dl_id)
    assert letter is not None
    assert int(letter["attempts"]) == last
    assert "gave up" in str(letter["reason"])
