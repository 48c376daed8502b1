"""The capacity bench's arithmetic: item sizes and write units by DynamoDB's pricing rules,
and how its meter sums what each answer reports."""

from __future__ import annotations

from typing import Any

import pytest

from bench.capacity import (
    CapacityMeter,
    Units,
    attribute_size,
    item_size,
    transaction_write_units,
)


@pytest.mark.parametrize(("value", "size"), [
    ({"S": "abc"}, 3),
    ({"S": "नमस्ते"}, 18),  # UTF-8 bytes, not characters
    ({"N": "12345"}, 4),  # one byte per two significant digits, plus one
    ({"N": "-1.50"}, 2),
    ({"N": "0"}, 2),
    ({"BOOL": True}, 1),
    ({"NULL": True}, 1),
    ({"SS": ["ab", "cde"]}, 5),
    ({"L": [{"S": "ab"}, {"N": "7"}]}, 3 + (1 + 2) + (1 + 2)),
    ({"M": {"k": {"S": "vv"}}}, 3 + 1 + 1 + 2),
])
def test_attribute_sizes_follow_dynamodbs_rules(value: dict[str, Any], size: int) -> None:
    assert attribute_size(value) == size


def test_an_items_size_counts_its_attribute_names() -> None:
    assert item_size({"user_id": {"S": "abc"}, "n": {"N": "12"}}) == 7 + 3 + 1 + 2


def put(table: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"Put": {"TableName": table, "Item": item}}


def test_a_transaction_costs_two_units_per_item_and_kb() -> None:
    big = {"id": {"S": "x" * 1500}}  # 2 KB rounded up
    request = {"TransactItems": [
        put("t_users", {"id": {"S": "a"}}),
        put("t_users", big),
        {"Update": {"TableName": "t_users", "Key": {"id": {"S": "b"}},
                    "UpdateExpression": "ADD n :one"}},
        {"ConditionCheck": {"TableName": "t_ledger", "Key": {"id": {"S": "c"}},
                            "ConditionExpression": "attribute_exists(id)"}},
    ]}
    assert transaction_write_units(request) == {"t_users": 2 + 4 + 2, "t_ledger": 2}


def test_the_meter_asks_for_capacity_and_sums_reads_writes_and_indexes() -> None:
    meter = CapacityMeter()
    request: dict[str, Any] = {"TableName": "t_koos"}
    assert meter.before("PutItem", request, {}) is None
    assert request["ReturnConsumedCapacity"] == "INDEXES"
    meter.after("PutItem", request, {"ConsumedCapacity": {
        "TableName": "t_koos", "CapacityUnits": 3.0, "Table": {"CapacityUnits": 1.0},
        "GlobalSecondaryIndexes": {"by_author": {"CapacityUnits": 2.0}}}}, {})
    meter.before("Query", {}, {})
    meter.after("Query", {}, {"ConsumedCapacity": {
        "TableName": "t_koos", "CapacityUnits": 0.5, "Table": {"CapacityUnits": 0.0},
        "GlobalSecondaryIndexes": {"by_author": {"CapacityUnits": 0.5}}}}, {})
    total = meter.snapshot()
    assert (total.read, total.write, total.index_write, total.reported_write) == (
        0.5, 3.0, 2.0, 3.0)
    assert total.calls == {"PutItem": 1, "Query": 1}
    assert sum(total.failed.values()) == 0


def test_a_transactions_table_units_are_corrected_and_its_index_units_kept() -> None:
    meter = CapacityMeter()
    request = {"TransactItems": [put("t_users", {"id": {"S": "a"}}),
                                 put("t_users", {"id": {"S": "b"}})]}
    meter.before("TransactWriteItems", request, {})
    # What the emulator answers: 2 units for the table, however many items.
    meter.after("TransactWriteItems", request, {"ConsumedCapacity": [{
        "TableName": "t_users", "CapacityUnits": 3.0, "Table": {"CapacityUnits": 2.0},
        "GlobalSecondaryIndexes": {"celebrities": {"CapacityUnits": 1.0}}}]}, {})
    total = meter.snapshot()
    assert total.reported_write == 3.0
    assert total.write == 4.0 + 1.0


def test_a_request_without_an_answer_counts_as_failed() -> None:
    meter = CapacityMeter()
    before = meter.snapshot()
    meter.before("PutItem", {}, {})  # its condition failed: after() never runs
    spent = meter.snapshot().minus(before)
    assert spent.failed == {"PutItem": 1}
    assert spent.write == 0.0


def test_units_subtract_field_by_field() -> None:
    later = Units(reported_write=5.0, read=2.0, write=6.0, index_write=1.0)
    later.calls["GetItem"] = 3
    earlier = Units(reported_write=1.0, read=0.5, write=2.0)
    earlier.calls["GetItem"] = 1
    spent = later.minus(earlier)
    assert (spent.reported_write, spent.read, spent.write, spent.index_write) == (
        4.0, 1.5, 4.0, 1.0)
    assert spent.calls == {"GetItem": 2}
