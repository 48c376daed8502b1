"""``create_tables``: idempotent, waits for ACTIVE, enables TTL where the design asks."""

from __future__ import annotations

import asyncio

from config.settings import Settings
from config.tables import LEDGER, RECOMMENDATIONS, TABLES, TIMELINES
from feed.store import Dynamo, create_tables, drop_tables, open_dynamo
from tests.conftest import uid

TTL_DATASETS = {TIMELINES: "expires_at", LEDGER: "expires_at", RECOMMENDATIONS: "expires_at"}


async def prefix_tables(db: Dynamo) -> set[str]:
    names: set[str] = set()
    request: dict[str, str] = {}
    while True:
        response = await db.admin("list_tables", **request)
        names.update(n for n in response["TableNames"] if n.startswith(db.prefix))
        if not response.get("LastEvaluatedTableName"):
            return names
        request = {"ExclusiveStartTableName": response["LastEvaluatedTableName"]}


async def assert_tables_ready(db: Dynamo) -> None:
    for dataset, definition in TABLES.items():
        table = (await db.admin("describe_table", TableName=db.table(dataset)))["Table"]
        assert table["TableStatus"] == "ACTIVE", dataset
        key = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
        assert key == ({"HASH": definition.pk, "RANGE": definition.sk} if definition.sk
                       else {"HASH": definition.pk}), dataset
        gsis = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
        lsis = {i["IndexName"] for i in table.get("LocalSecondaryIndexes", [])}
        for index in definition.indexes:
            if index.local:
                assert index.name in lsis, (dataset, index.name)
            else:
                assert gsis[index.name].get("IndexStatus", "ACTIVE") == "ACTIVE"
        ttl = (await db.admin("describe_time_to_live", TableName=db.table(dataset)))
        description = ttl["TimeToLiveDescription"]
        if dataset in TTL_DATASETS:
            assert description["TimeToLiveStatus"] in {"ENABLED", "ENABLING"}, dataset
            assert description["AttributeName"] == TTL_DATASETS[dataset]
        else:
            assert description["TimeToLiveStatus"] in {"DISABLED", "DISABLING"}, dataset


def test_ttl_is_defined_on_the_expiring_datasets() -> None:
    assert {d: t.ttl_attribute for d, t in TABLES.items() if t.ttl_attribute} == TTL_DATASETS


async def test_create_tables_is_idempotent(session_settings: Settings) -> None:
    settings = session_settings.replace(table_prefix=f"{uid('ct')}_")
    async with open_dynamo(settings) as db:
        try:
            assert await prefix_tables(db) == set()
            created = await create_tables(db)
            expected = {db.table(d) for d in TABLES}
            assert sorted(created) == sorted(expected)
            await assert_tables_ready(db)

            assert await create_tables(db) == []
            assert await prefix_tables(db) == expected
            await assert_tables_ready(db)
        finally:
            await drop_tables(db)
        assert await prefix_tables(db) == set()


async def test_two_create_tables_at_once_both_succeed(settings: Settings) -> None:
    fresh = settings.replace(table_prefix=f"c{uid()[:8]}_")
    async with open_dynamo(fresh) as db:
        try:
            first, second = await asyncio.gather(create_tables(db), create_tables(db))
            assert not set(first) & set(second)
            assert set(first) | set(second) == {db.table(d) for d in TABLES}
            await assert_tables_ready(db)
        finally:
            await drop_tables(db)
