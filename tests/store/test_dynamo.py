"""``Dynamo``: batches of any size land whole, queries page lazily, errors become ours."""

from __future__ import annotations

import math
from typing import Any

import pytest
from botocore.exceptions import ClientError

from config.tables import LEDGER, TIMELINES, USERS
from feed.errors import (
    ConditionFailed,
    FeedError,
    StorageError,
    StorageUnavailable,
    TransactionCancelled,
    from_client_error,
)
from feed.store import Backoff, Dynamo, open_dynamo
from feed.store._codec import values
from feed.store._transport import Reply, error_from_reply
from tests.conftest import free_port, uid
from tests.store._faults import CallCounter, HookBase, cancelled, error_reply, throttled


def rows(reader: str, count: int) -> list[dict[str, Any]]:
    return [{"reader_id": reader, "sk": f"{i:05d}", "koo_id": f"k{i}", "author_id": f"a{i % 7}"}
            for i in range(count)]


class Answer(HookBase):
    """A hook answering the next ``len(answers)`` requests itself, then letting requests
    through; counts every request."""

    def __init__(self, db: Dynamo, operation: str, *answers: Reply) -> None:
        super().__init__(db, operation)
        self.answers = list(answers)
        self.calls = 0

    def on_request(self, request: dict[str, Any], context: dict[str, Any]) -> Reply | None:
        self.calls += 1
        return self.answers.pop(0) if self.answers else None


# --- batch_write / batch_get ------------------------------------------------------------


async def test_batch_write_of_1000_items_lands_every_item(db: Dynamo) -> None:
    reader = uid("r")
    with CallCounter(db, "BatchWriteItem") as counter:
        assert await db.batch_write(TIMELINES, puts=rows(reader, 1_000)) == 1_000
    assert counter.calls == 40
    assert all(len(b["RequestItems"][db.table(TIMELINES)]) <= 25 for b in counter.bodies)

    keys = [{"reader_id": reader, "sk": f"{i:05d}"} for i in range(1_000)]
    got = await db.batch_get(TIMELINES, keys, consistent=True)
    assert sorted((i["sk"], i["koo_id"], i["author_id"]) for i in got) == [
        (f"{i:05d}", f"k{i}", f"a{i % 7}") for i in range(1_000)
    ]
    queried = [i["sk"] async for i in db.query(
        TIMELINES, "reader_id = :r", values=values(r=reader), consistent=True)]
    assert queried == [f"{i:05d}" for i in range(1_000)]


async def test_batch_write_deletes_and_overwrites(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 60))
    replaced = [{**r, "koo_id": "new"} for r in rows(reader, 60)[:30]]
    doomed = [{"reader_id": reader, "sk": f"{i:05d}"} for i in range(30, 60)]
    assert await db.batch_write(TIMELINES, puts=replaced, deletes=doomed) == 60
    left = [i async for i in db.query(TIMELINES, "reader_id = :r", values=values(r=reader),
                                      consistent=True)]
    assert [(i["sk"], i["koo_id"]) for i in left] == [(f"{i:05d}", "new") for i in range(30)]


async def test_empty_batches_make_no_call(db: Dynamo) -> None:
    with CallCounter(db, "BatchWriteItem") as writes, \
            CallCounter(db, "BatchGetItem") as reads:
        assert await db.batch_write(TIMELINES) == 0
        assert await db.batch_get(TIMELINES, []) == []
    assert writes.calls == reads.calls == 0


async def test_batch_get_over_100_keys_with_duplicates(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 230))
    unique = [{"reader_id": reader, "sk": f"{i:05d}"} for i in range(250)]  # 20 missing
    # Every key asked for twice or three times, in another order, some as equal dicts
    # built with their keys in the other order.
    keys = [*unique, *reversed(unique), *({"sk": k["sk"], "reader_id": reader}
                                          for k in unique[::3])]
    assert len(keys) > 500
    with CallCounter(db, "BatchGetItem") as counter:
        got = await db.batch_get(TIMELINES, keys, consistent=True)
    assert sorted(i["sk"] for i in got) == [f"{i:05d}" for i in range(230)]
    table = db.table(TIMELINES)
    sizes = [len(b["RequestItems"][table]["Keys"]) for b in counter.bodies]
    assert counter.calls == math.ceil(250 / 100)
    assert max(sizes) <= 100
    assert sum(sizes) == 250


async def test_batch_get_projection(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 3))
    got = await db.batch_get(TIMELINES, [{"reader_id": reader, "sk": "00001"}],
                             attributes=["koo_id"], consistent=True)
    assert got == [{"koo_id": "k1"}]


# --- query paging -----------------------------------------------------------------------


async def test_query_pages_lazily_through_more_than_one_page(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 250))
    with CallCounter(db, "Query") as counter:
        pages = db.query(TIMELINES, "reader_id = :r", values=values(r=reader),
                         page_size=40, consistent=True)
        first = [await anext(pages) for _ in range(40)]
        assert counter.calls == 1  # one page fetched for the first 40 items, no more
        nxt = await anext(pages)
        assert counter.calls == 2
        rest = [i async for i in pages]
    seen = [i["sk"] for i in [*first, nxt, *rest]]
    assert seen == [f"{i:05d}" for i in range(250)]
    assert counter.calls == math.ceil(250 / 40)
    assert all(b["Limit"] == 40 for b in counter.bodies)
    assert "ExclusiveStartKey" not in counter.bodies[0]
    assert all("ExclusiveStartKey" in b for b in counter.bodies[1:])


async def test_query_max_items_stops_fetching(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 250))
    with CallCounter(db, "Query") as counter:
        newest = [i["sk"] async for i in db.query(
            TIMELINES, "reader_id = :r", values=values(r=reader), page_size=40,
            max_items=50, forward=False, consistent=True)]
    assert newest == [f"{i:05d}" for i in range(249, 199, -1)]
    assert counter.calls == 2


async def test_query_page_resumes_from_its_last_key(db: Dynamo) -> None:
    reader = uid("r")
    await db.batch_write(TIMELINES, puts=rows(reader, 25))
    seen: list[str] = []
    start = None
    pages = 0
    while True:
        items, start = await db.query_page(TIMELINES, "reader_id = :r",
                                           values=values(r=reader), limit=10, start=start,
                                           consistent=True)
        seen += [i["sk"] for i in items]
        pages += 1
        if start is None:
            break
    assert seen == [f"{i:05d}" for i in range(25)]
    assert pages == 3


# --- errors -----------------------------------------------------------------------------


async def test_failed_conditions_raise_condition_failed(db: Dynamo) -> None:
    event_id = uid("e")
    await db.put(LEDGER, {"event_id": event_id, "outcome": "applied"},
                 condition="attribute_not_exists(event_id)")
    with pytest.raises(ConditionFailed) as put:
        await db.put(LEDGER, {"event_id": event_id, "outcome": "again"},
                     condition="attribute_not_exists(event_id)")
    assert put.value.code == "ConditionalCheckFailedException"
    assert not isinstance(put.value, StorageUnavailable)  # not worth retrying
    with pytest.raises(ConditionFailed):
        await db.update(LEDGER, {"event_id": event_id}, "SET outcome = :o",
                        condition="outcome = :x", values=values(o="changed", x="other"))
    with pytest.raises(ConditionFailed):
        await db.delete(LEDGER, {"event_id": event_id}, condition="outcome = :x",
                        values=values(x="other"))
    item = await db.get(LEDGER, {"event_id": event_id}, consistent=True)
    assert item == {"event_id": event_id, "outcome": "applied"}


async def test_cancelled_transaction_names_the_failed_item_and_writes_nothing(
    db: Dynamo,
) -> None:
    taken, fresh = uid("e"), uid("e")
    await db.put(LEDGER, {"event_id": taken})
    with pytest.raises(TransactionCancelled) as caught:
        await db.transact([
            {"Put": {"TableName": LEDGER, "Item": {"event_id": fresh},
                     "ConditionExpression": "attribute_not_exists(event_id)"}},
            {"Put": {"TableName": LEDGER, "Item": {"event_id": taken},
                     "ConditionExpression": "attribute_not_exists(event_id)"}},
        ])
    assert caught.value.reasons[0] in ("None", "")
    assert caught.value.reasons[1] == "ConditionalCheckFailed"
    assert await db.get(LEDGER, {"event_id": fresh}, consistent=True) is None


async def test_missing_table_and_bad_requests_are_storage_errors_not_retried(
    db: Dynamo, session_settings: Any,
) -> None:
    async with open_dynamo(session_settings, prefix=f"{uid('missing')}_") as other:
        with pytest.raises(StorageError) as missing:
            await other.get(USERS, {"user_id": "x"})
    assert missing.value.code == "ResourceNotFoundException"
    assert not isinstance(missing.value, StorageUnavailable)

    reader = uid("r")
    twice = [{"reader_id": reader, "sk": "1"}, {"reader_id": reader, "sk": "1"}]
    with CallCounter(db, "BatchWriteItem") as counter, \
            pytest.raises(StorageError) as invalid:
        await db.batch_write(TIMELINES, puts=twice)  # duplicate keys in one request
    assert invalid.value.code == "ValidationException"
    assert not isinstance(invalid.value, StorageUnavailable)
    assert counter.calls == 1

    with pytest.raises(KeyError):
        db.table("no_such_dataset")


async def test_throttling_is_storage_unavailable(db: Dynamo) -> None:
    """Throttling is retried, FEED_DYNAMODB_MAX_ATTEMPTS sends in all, then raised."""
    attempts = db.settings.dynamodb_max_attempts
    db.backoff = Backoff(base=0.001, cap=0.005)
    with Answer(db, "GetItem", *[throttled()] * attempts) as answer, \
            pytest.raises(StorageUnavailable) as c:
        await db.get(USERS, {"user_id": uid()})
    assert c.value.code == "ProvisionedThroughputExceededException"
    assert isinstance(c.value, FeedError)
    assert answer.calls == attempts


async def test_one_throttled_answer_is_retried_and_succeeds(db: Dynamo) -> None:
    db.backoff = Backoff(base=0.001, cap=0.005)
    user = uid()
    with Answer(db, "PutItem", throttled()) as answer:
        await db.put(USERS, {"user_id": user, "handle": "h"})
    assert answer.calls == 2
    assert await db.get(USERS, {"user_id": user}, consistent=True) is not None


async def test_unreachable_endpoint_is_storage_unavailable(session_settings: Any) -> None:
    settings = session_settings.replace(dynamodb_max_attempts=1,
                                        dynamodb_connect_timeout=1.0)
    async with open_dynamo(settings, endpoint=f"http://127.0.0.1:{free_port()}") as nowhere:
        with pytest.raises(StorageUnavailable):
            await nowhere.get(USERS, {"user_id": "x"})


async def test_transact_retries_a_conflict_reported_as_an_error_code(db: Dynamo) -> None:
    db.backoff = Backoff(base=0.001, cap=0.005, attempts=3)
    event_id = uid("e")
    conflict = error_reply("TransactionConflictException", "conflict (injected)")
    with Answer(db, "TransactWriteItems", conflict) as answer:
        await db.transact([{"Put": {"TableName": LEDGER, "Item": {"event_id": event_id}}}])
    assert answer.calls == 2
    assert await db.get(LEDGER, {"event_id": event_id}, consistent=True) is not None


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError",
                                    "ProvisionedThroughputExceeded"])
async def test_transact_retries_a_transaction_cancelled_by_a_transient_reason(
    db: Dynamo, reason: str,
) -> None:
    """Per-item reasons of a cancellation that mean "try again" are retried."""
    db.backoff = Backoff(base=0.001, cap=0.005, attempts=3)
    event_id = uid("e")
    with Answer(db, "TransactWriteItems", cancelled("None", reason)) as answer:
        await db.transact([
            {"Put": {"TableName": LEDGER, "Item": {"event_id": event_id}}},
            {"Put": {"TableName": LEDGER, "Item": {"event_id": f"{event_id}-2"}}},
        ])
    assert answer.calls == 2
    assert await db.get(LEDGER, {"event_id": event_id}, consistent=True) is not None


def _as_client_error(reply: Reply) -> ClientError:
    """The same answer as botocore raises it (the aioboto3 transport's path)."""
    body = reply.body
    response: Any = {"Error": {"Code": body["__type"].rsplit("#", 1)[-1],
                               "Message": body["message"]},
                     "ResponseMetadata": {"HTTPStatusCode": reply.status}}
    if "CancellationReasons" in body:
        response["CancellationReasons"] = body["CancellationReasons"]
    return ClientError(response, "TransactWriteItems")


@pytest.mark.parametrize("path", ["wire", "botocore"])
def test_cancellation_reasons_map_to_the_right_type(path: str) -> None:
    def mapped(*codes: str) -> StorageError:
        reply = cancelled(*codes)
        if path == "wire":
            return error_from_reply("TransactWriteItems", reply)
        return from_client_error(_as_client_error(reply))

    failed = mapped("None", "ConditionalCheckFailed")
    assert isinstance(failed, TransactionCancelled)
    assert failed.reasons == ["None", "ConditionalCheckFailed"]
    for transient in ("TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"):
        error = mapped("None", transient)
        assert isinstance(error, StorageUnavailable), transient
        assert not isinstance(error, TransactionCancelled), transient
