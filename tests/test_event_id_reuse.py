"""A reused ``event_id`` against real DynamoDB (docs/api.md "Events"): a different event
under an id the ledger holds is dead-lettered with the reason ``event_id_reused`` and
writes nothing; the same event again stays an idempotent duplicate. Jobs are run through
the worker's ``apply_event``, as arq runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from config.tables import LEDGER
from feed import keys
from feed.events import event_digest, typed, validate_event
from feed.services import Services
from tests.conftest import uid
from tests.helpers import apply_all, event, event_job, follow, koo, now_ms, react, signup
from workers.events import apply_event

pytestmark = pytest.mark.timeout(120)

REUSED = "event_id_reused"


async def run_job(services: Services, raw: dict[str, Any]) -> str:
    """One apply_event job, as the worker runs it (first try)."""
    ctx = {"services": services, "job_try": 1, "job_id": event_job(raw)}
    return await apply_event(ctx, raw)


async def ledger_entry(services: Services, event_id: str) -> dict[str, Any] | None:
    return await services.stores.db.get(LEDGER, {"event_id": event_id}, consistent=True)


async def reason_of(services: Services, event_id: str) -> str | None:
    found = await services.stores.dead_letters.get(f"event:{event_id}")
    return None if found is None else str(found["reason"])


# (setup events, original, reuse under the original's id, "the reuse changed nothing")
Case = tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any],
             Callable[[Services], Awaitable[bool]]]


def _koo_created() -> Case:
    author, k1, k2 = uid(), uid("k"), uid("k")
    original = koo(k1, author)

    async def unchanged(svc: Services) -> bool:
        return await svc.stores.koos.get(k2, consistent=True) is None

    return [signup(author)], original, koo(k2, author, event_id=original["event_id"]), unchanged


def _followed() -> Case:
    a, b, c = uid(), uid(), uid()
    original = follow(a, b)

    async def unchanged(svc: Services) -> bool:
        return not await svc.stores.relations.is_active(a, keys.REL_FOLLOW, c)

    return ([signup(a), signup(b), signup(c)], original,
            follow(a, c, event_id=original["event_id"]), unchanged)


def _signed_up() -> Case:
    user = uid()
    original = signup(user)
    # A later signup of the same user would replace the profile, were it applied.
    reuse = {**signup(user, event_id=original["event_id"]), "handle": "@impostor"}

    async def unchanged(svc: Services) -> bool:
        profile = await svc.stores.users.get(user, consistent=True)
        return profile is not None and profile.handle == f"@{user}"

    return [], original, reuse, unchanged


def _koo_deleted() -> Case:
    author, k1, k2 = uid(), uid("k"), uid("k")
    original = event("koo_deleted", koo_id=k1, author_id=author)
    reuse = event("koo_deleted", koo_id=k2, author_id=author, event_id=original["event_id"])

    async def unchanged(svc: Services) -> bool:
        item = await svc.stores.koos.get(k2, consistent=True)
        return item is not None and not item.get("deleted")

    return [signup(author), koo(k1, author), koo(k2, author)], original, reuse, unchanged


def _reaction() -> Case:
    author, fan, k1, k2 = uid(), uid(), uid("k"), uid("k")
    original = react("like", k1, fan)

    async def unchanged(svc: Services) -> bool:
        item = await svc.stores.koos.get(k2, consistent=True)
        return item is not None and int(item.get("likes", 0)) == 0

    return ([signup(author), signup(fan), koo(k1, author), koo(k2, author)], original,
            react("like", k2, fan, event_id=original["event_id"]), unchanged)


CASES = {"koo_created": _koo_created, "user_followed": _followed,
         "user_signed_up": _signed_up, "koo_deleted": _koo_deleted,
         "reaction_added": _reaction}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_different_event_under_a_reused_id_is_dead_lettered_and_writes_nothing(
    services: Services, case: str
) -> None:
    """Before: the second event was taken for a replay of the first ("duplicate") and
    silently dropped (a signup or delete was even written first)."""
    setup, original, reuse, unchanged = CASES[case]()
    for e in setup:
        assert await run_job(services, e) == "applied"
    assert await run_job(services, original) == "applied"
    recorded = await ledger_entry(services, original["event_id"])
    assert recorded is not None
    assert recorded["digest"] == event_digest(validate_event(original))

    assert await run_job(services, reuse) == "dead-lettered"
    assert await reason_of(services, reuse["event_id"]) == REUSED
    found = await services.stores.dead_letters.get(f"event:{reuse['event_id']}")
    assert found is not None
    assert found["payload"] == validate_event(reuse)
    assert await unchanged(services), "the reused id's event was written"
    # The original's entry is intact: replaying the original is still a duplicate.
    assert await ledger_entry(services, original["event_id"]) == recorded
    assert await run_job(services, original) == "duplicate"


@pytest.mark.parametrize("case", list(CASES))
async def test_the_same_event_again_stays_an_idempotent_duplicate(
    services: Services, case: str
) -> None:
    setup, original, _, _ = CASES[case]()
    for e in [*setup, original]:
        assert await run_job(services, e) == "applied"
    # The same event, as another producer might serialize it: keys reordered, an
    # unknown field, upper-case language.
    again = {"unknown": {"x": 1}, **dict(reversed(list(original.items())))}
    if "lang" in again:
        again["lang"] = again["lang"].upper()
    for replay in (original, again):
        assert await run_job(services, replay) == "duplicate"
    assert await reason_of(services, original["event_id"]) is None


async def test_the_ledger_is_read_only_for_a_duplicate(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass: applying a new event reads nothing from the ledger (the conditional write
    finds duplicates); a duplicate costs one GetItem of its ledger entry."""
    a, b = uid(), uid()
    for e in (signup(a), signup(b)):
        await run_job(services, e)
    db = services.stores.db
    ledger_table = db.table(LEDGER)
    reads: list[str] = []
    real_call = db.call

    async def call(operation: str, request: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if operation == "GetItem" and request.get("TableName") == ledger_table:
            reads.append(request["Key"]["event_id"]["S"])
        return await real_call(operation, request, **kw)

    monkeypatch.setattr(db, "call", call)
    first = follow(a, b)
    assert await run_job(services, first) == "applied"
    assert reads == []
    assert await run_job(services, first) == "duplicate"
    assert reads == [first["event_id"]]


async def test_two_different_events_racing_under_one_id_apply_once(services: Services) -> None:
    a, b, c = uid(), uid(), uid()
    for e in (signup(a), signup(b), signup(c)):
        await run_job(services, e)
    one = follow(a, b)
    other = follow(a, c, event_id=one["event_id"])
    outcomes = await asyncio.gather(run_job(services, one), run_job(services, other))
    assert sorted(outcomes) == ["applied", "dead-lettered"]
    active = [await services.stores.relations.is_active(a, keys.REL_FOLLOW, x) for x in (b, c)]
    assert sorted(active) == [False, True]
    assert active[outcomes.index("applied")]
    assert await reason_of(services, one["event_id"]) == REUSED


async def test_a_reused_id_waiting_for_a_koo_is_dead_lettered_at_once(
    services: Services,
) -> None:
    """A reaction to a koo that is not stored would be retried until it gives up; under a
    reused id it is dead-lettered with the reason at the first try."""
    user = uid()
    original = signup(user)
    assert await run_job(services, original) == "applied"
    waiting = react("like", uid("k"), user, event_id=original["event_id"])
    assert await run_job(services, waiting) == "dead-lettered"
    assert await reason_of(services, waiting["event_id"]) == REUSED


async def test_an_entry_recorded_before_digests_takes_any_event_for_a_replay(
    services: Services,
) -> None:
    """Entries written before digests were kept cannot tell: such an id is a duplicate,
    as before, until the entry expires."""
    a, b = uid(), uid()
    for e in (signup(a), signup(b)):
        await run_job(services, e)
    old = follow(a, b)
    await services.stores.db.put(LEDGER, {"event_id": old["event_id"], "type": old["type"],
                                          "outcome": "applied", "applied_at": 1})
    assert await run_job(services, follow(b, a, event_id=old["event_id"])) == "duplicate"
    assert not await services.stores.relations.is_active(b, keys.REL_FOLLOW, a)


async def test_a_signup_claimed_but_not_written_is_written_by_its_replay(
    services: Services,
) -> None:
    """Signups and deletes record their ledger entry before their write: a worker that
    died between the two leaves a replay that does the write."""
    user = uid()
    ev = signup(user)
    assert await services.stores.ledger.record(typed(validate_event(ev)))  # the claim, then a crash
    assert await services.stores.users.get(user, consistent=True) is None
    assert await run_job(services, ev) == "duplicate"
    profile = await services.stores.users.get(user, consistent=True)
    assert profile is not None
    assert profile.handle == f"@{user}"


async def test_claimed_events_record_their_real_outcome(services: Services) -> None:
    author, k = uid(), uid("k")
    for e in (signup(author), koo(k, author)):
        await run_job(services, e)
    older = signup(author, occurred_at=now_ms() - 10 * 3600 * 1000)  # older profile: noop
    not_author = event("koo_deleted", koo_id=k, author_id=uid())
    assert await run_job(services, older) == "noop"
    assert await run_job(services, not_author) == "dead-lettered"
    outcomes = [(await ledger_entry(services, e["event_id"]) or {}).get("outcome")
                for e in (older, not_author)]
    assert outcomes == ["noop", "dead-lettered"]


async def test_a_reused_id_published_right_after_the_first_still_reaches_a_worker(
    services: Services,
) -> None:
    """The queue keeps a job's id for a while after it ran; were the id the event_id
    alone, a different event published under it meanwhile would be dropped at enqueue,
    never dead-lettered. The same event published twice is still one job."""
    author = uid("a")
    original = signup(author)
    impostor = signup(uid("b"), event_id=original["event_id"])
    await apply_all(services, original)
    await services.publisher.publish([original])  # a producer's retry: a no-op
    await apply_all(services, impostor)
    assert await reason_of(services, impostor["event_id"]) == REUSED
    assert await services.stores.users.get(impostor["user_id"]) is None
