"""Bad input is refused or dead-lettered with a reason, and good input keeps flowing
(issue 7, item 9).

Already covered elsewhere, not repeated here: every validation rule of every event type
(tests/test_events.py), bodies that are not ``{"events": [...]}``, batch size, the 4 MiB
body limit and idempotent re-posts (tests/api/test_events.py), hostile ids in URL paths
(tests/api/test_contract.py). This file adds oversized (1 MB) events, deeply nested JSON,
injection characters end to end, items near and over DynamoDB's 400 KB item limit, and
poison jobs that bypass validation (a rogue producer writing to the queue directly).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from arq.constants import job_key_prefix, result_key_prefix

from config.settings import Settings
from feed import keys
from feed.api.app import create_app
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import (
    apply_all,
    drain,
    event,
    event_job,
    follow,
    in_ledger,
    job_ids,
    koo,
    react,
    signup,
    user_counters,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(180)]

TOKEN = "test-token-123456"
MB = 1024 * 1024
DYNAMODB_ITEM_LIMIT = 400 * 1024


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services.settings, services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"].strip()
    err: dict[str, Any] = body["error"]
    return err


async def on_queue(services: Services, events: list[dict[str, Any]]) -> int:
    ids = job_ids(events)
    if not ids:
        return 0
    scores = await services.queue_redis.zmscore(keys.QUEUE_REALTIME, ids)
    return sum(s is not None for s in scores)


async def all_seen(services: Services, events: list[dict[str, Any]]) -> bool:
    seen = await asyncio.gather(*(in_ledger(services, e["event_id"]) for e in events))
    return all(seen)


# --- oversized events ----------------------------------------------------------------------


async def test_a_1_mb_event_is_refused_with_a_clear_error_and_good_ones_still_flow(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Pass: events carrying 1 MB in ``text``, ``hashtags`` or ``event_id`` are each 422
    with an error naming index 0 and the field (and nothing is queued); a batch with one of
    them among good events is refused whole; the good events posted on their own are
    applied."""
    author = uid()
    good = [signup(author), koo(uid("k"), author)]
    huge = "x" * MB
    oversized = {
        "text": koo(uid("k"), author, text=huge),
        "hashtags": koo(uid("k"), author, hashtags=[huge]),
        "event_id": signup(uid(), event_id=huge),
    }
    for field, bad in oversized.items():
        r = await client.post("/v1/events", json={"events": [bad]})
        err = error_of(r, 422)
        assert err["code"] == "validation_failed"
        assert [(d.get("index"), d.get("field")) for d in err["details"]] == [(0, field)], err
        assert len(r.content) < 10_000  # the error does not echo the megabyte back
    mixed = [good[0], oversized["text"], good[1]]
    r = await client.post("/v1/events", json={"events": mixed})
    assert [d["index"] for d in error_of(r, 422)["details"]] == [1]
    assert await on_queue(services, good) == 0
    r = await client.post("/v1/events", json={"events": good})
    assert r.status_code == 202, r.text
    await drain(services)
    assert await all_seen(services, good)


async def test_a_1_mb_unknown_field_never_reaches_the_queue_or_dynamodb(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Pass: an otherwise valid koo with a 1 MB unknown field is accepted (202: unknown
    fields are ignored), its queued job is under 4 KB (the field was dropped), and the koo
    is applied and readable."""
    author, koo_id = uid(), uid("k")
    ev = {**koo(koo_id, author), "attachment": "y" * MB}
    r = await client.post("/v1/events", json={"events": [signup(author), ev]})
    assert r.status_code == 202, r.text
    job = await services.queue_redis.get(job_key_prefix + event_job(ev))
    assert job is not None
    assert len(job) < 4096
    assert b"yyyy" not in job
    await drain(services)
    r = await client.get(f"/v1/koos/{koo_id}")
    assert r.status_code == 200, r.text
    assert "attachment" not in r.json()


async def test_deeply_nested_json_is_422_not_500(client: httpx.AsyncClient) -> None:
    """Pass: 100,000 nested arrays (past any parser's recursion limit) as the body, and as
    an event field, answer 422 with the error body, never 500."""
    deep = b"[" * 100_000 + b"]" * 100_000
    r = await client.post("/v1/events", content=b'{"events": ' + deep + b"}",
                          headers={"content-type": "application/json"})
    assert error_of(r, 422)["code"] == "validation_failed"
    body = b'{"events": [{"type": "user_signed_up", "event_id": "e1", "handle": ' + deep + b"}]}"
    r = await client.post("/v1/events", content=body,
                          headers={"content-type": "application/json"})
    assert error_of(r, 422)["code"] == "validation_failed"


# --- injection characters -------------------------------------------------------------------

INJECTIONS = [
    "a' OR '1'='1", "a\"; DROP TABLE koos; --", "{user}", "u{x}y", "a b", "../../etc/passwd",
    "a\r\nSET x 1", "a\x00b", "$(touch x)", "`id`", "a*", "a:b", "#a", "<script>", "%00",
    "ü", "a\u202eb", "x" * 65,
]


async def test_ids_with_injection_characters_are_422_and_nothing_is_queued(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Pass: one batch holding each injection string as a user or koo id, between good
    events, is 422 with exactly one error per bad index naming the id field, nothing of
    the batch is queued, and the good events posted alone are applied."""
    author = uid()
    good = [signup(author), koo(uid("k"), author)]
    bad: list[dict[str, Any]] = []
    for i, value in enumerate(INJECTIONS):
        bad.append([signup(value), koo(value, author), follow(author, value),
                    react("like", uid("k"), value)][i % 4])
    batch = [good[0], *bad, good[1]]
    r = await client.post("/v1/events", json={"events": batch})
    err = error_of(r, 422)
    details = err["details"]
    assert sorted({d["index"] for d in details}) == list(range(1, len(bad) + 1)), details
    assert {d["field"] for d in details} <= {"user_id", "koo_id", "followee_id"}, details
    assert await on_queue(services, batch) == 0
    r = await client.post("/v1/events", json={"events": good})
    assert r.status_code == 202
    await drain(services)
    assert await all_seen(services, good)


async def test_event_ids_with_special_characters_apply_once(services: Services) -> None:
    """``event_id`` is free text (1-128 characters without control characters). Pass:
    event ids full of quoting, key-separator and hash-tag characters are applied, the
    ledger knows each one, and publishing them all again changes no counter."""
    author, readers = uid(), [uid() for _ in range(4)]
    odd_ids = ["ev:{x}#y", "ev' OR 1=1; --", 'ev"\\*?[]', "ev/../../" + "z" * 100]
    follows = [follow(r, author, event_id=e) for r, e in zip(readers, odd_ids, strict=True)]
    await apply_all(services, signup(author), *(signup(r) for r in readers), *follows)
    assert await all_seen(services, follows)
    assert await user_counters(services, author) == (4, 0)
    await apply_all(services, *follows)
    assert await user_counters(services, author) == (4, 0)


# --- DynamoDB's 400 KB item limit -------------------------------------------------------------


async def test_the_largest_valid_koo_stays_far_below_dynamodbs_item_limit(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Validation bounds every stored item: 500 characters of text and 30 hashtags of 100
    characters. Pass: a koo at every bound, in 4-byte characters, is applied, reads back
    intact, and its stored item is under a tenth of DynamoDB's 400 KB limit."""
    author, koo_id = uid(), uid("k")
    emoji = "\U0001f600"
    ev = koo(koo_id, author, text=emoji * 500,
             hashtags=[f"{i:02d}" + emoji * 98 for i in range(30)])
    await apply_all(services, signup(author), ev)
    r = await client.get(f"/v1/koos/{koo_id}")
    assert r.status_code == 200, r.text
    assert r.json()["text"] == emoji * 500
    assert len(r.json()["hashtags"]) == 30
    item = await services.stores.koos.get(koo_id, consistent=True)
    assert item is not None
    assert len(orjson.dumps(item, default=str)) < DYNAMODB_ITEM_LIMIT / 10


# --- poison jobs: written to the queue without validation -------------------------------------


async def plant(services: Services, function: str, *args: Any) -> str:
    """Enqueue a job directly (as a rogue or outdated producer would), skipping the
    publisher's validation. Returns its job id."""
    job_id = f"planted-{uid()}"
    job = await services.queue_redis.enqueue_job(function, *args, _job_id=job_id,
                                                 _queue_name=keys.QUEUE_REALTIME)
    assert job is not None
    return job_id


async def dead_letter(services: Services, dl_id: str) -> dict[str, Any]:
    found = await services.stores.dead_letters.get(dl_id)
    assert found is not None, f"{dl_id} was not dead-lettered"
    assert found["reason"].strip()
    return found


async def test_poison_jobs_are_dead_lettered_with_a_reason_while_good_events_flow(
    settings: Settings,
) -> None:
    """Pass: jobs planted on the queue around good events (a non-object payload, an
    unknown type, injection ids, a missing field, a 1 MB invalid event whose dead letter
    would exceed DynamoDB's 400 KB, a delete by someone who is not the author, a reaction
    to a koo that never comes) each end up dead-lettered with a reason that says what was
    wrong; a job naming an unknown function or with wrong arguments fails without
    retrying; every good event before, between and after them is applied."""
    async with open_services(settings.replace(job_max_tries=2)) as services:
        author, koo_id = uid(), uid("k")
        before = [signup(author), koo(koo_id, author)]
        await apply_all(services, *before)
        never = uid("k")
        poison: dict[str, tuple[Any, str]] = {
            # dead-letter id (or job id for payloads without an event id) -> (payload, reason)
            "list": (["not", "an", "event"], "invalid event"),
            "unknown type": (event("koo_exploded", koo_id=uid("k")), "type"),
            "injection": (signup("a' OR '1'='1"), "user_id"),
            "missing": ({k: v for k, v in koo(uid("k"), author).items() if k != "text"},
                        "text"),
            "1 MB": (koo(uid("k"), author, text="z" * MB), "text"),
            "not the author": (event("koo_deleted", koo_id=koo_id, author_id=uid()),
                               "not by"),
            "reaction to nothing": (react("like", never, author), "gave up"),
        }
        planted = {name: await plant(services, "apply_event", payload)
                   for name, (payload, _) in poison.items()}
        between = [koo(uid("k"), author)]
        await services.publisher.publish(between)
        unknown_function = await plant(services, "run_shell", "rm -rf /")
        wrong_args = await plant(services, "deliver_koo_chunk", 1, 2, 3, 4, 5)
        after = [koo(uid("k"), author), follow(uid(), author)]
        await services.publisher.publish(after)

        await asyncio.wait_for(drain(services), 120)

        assert await all_seen(services, before + between + after), "good events were lost"
        for name, (payload, reason) in poison.items():
            event_id = payload.get("event_id") if isinstance(payload, dict) else None
            dl_id = f"event:{event_id}" if event_id else f"job:{planted[name]}"
            found = await dead_letter(services, dl_id)
            assert reason in found["reason"], (name, found["reason"])
        huge = await dead_letter(services, f"event:{poison['1 MB'][0]['event_id']}")
        assert len(orjson.dumps(huge, default=str)) < DYNAMODB_ITEM_LIMIT
        assert huge["payload_truncated"] is True
        assert huge["payload_chars"] > MB
        for job_id in (unknown_function, wrong_args):
            raw = await services.queue_redis.get(result_key_prefix + job_id)
            assert raw is not None, job_id
            result = orjson.loads(raw)
            assert result["s"] is False, result
            assert result["t"] == 1, result  # failed once, not retried
        assert await services.stores.koos.get(never) is None
