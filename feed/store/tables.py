"""Reconcile the service's tables with their definitions in config/tables.py.

``feed tables create`` is also the schema roll-out step: besides creating missing
tables it adds the global secondary indexes a new version defines, enables TTL and
(on AWS) point-in-time recovery, and only ever adds. What it cannot change (an
index whose keys differ, a missing local index) it reports and leaves alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from config.tables import REGIONAL_DATASETS, TABLES, Index, TableDef
from feed.errors import StorageError, StorageUnavailable
from feed.store._dynamo import Dynamo
from feed.store._plan import (
    PITR_DATASETS,
    UNSUPPORTED_CODES,
    Change,
    Reconciliation,
    attribute_types,
    plan_table,
)

__all__ = [
    "PITR_DATASETS",
    "Change",
    "Reconciliation",
    "create_tables",
    "drop_tables",
    "plan_table",
    "reconcile_regional_tables",
    "reconcile_tables",
]

log = logging.getLogger(__name__)

async def reconcile_tables(
    db: Dynamo, *, pitr: bool = False, dry_run: bool = False,
    datasets: Iterable[str] | None = None, wait_seconds: float = 120.0,
    on_change: Callable[[Change], None] | None = None,
) -> Reconciliation:
    """Bring every table (or only ``datasets``') to its definition: create the missing
    ones, add missing global indexes one at a time, enable TTL and, if ``pitr``, point-
    in-time recovery on :data:`PITR_DATASETS`; wait until everything is ACTIVE (each
    step at most ``wait_seconds``). ``dry_run``: describe only, and return what would
    change. ``on_change`` hears each change as soon as it is made."""
    wanted = {d: TABLES[d] for d in datasets} if datasets is not None else TABLES
    result = Reconciliation()

    def done(change: Change) -> None:
        result.changes.append(change)
        if on_change is not None:
            on_change(change)

    described = {d: await _describe_table(db, db.table(d)) for d in wanted}
    if dry_run:
        for dataset, definition in wanted.items():
            result += await _plan(db, db.table(dataset), definition, described[dataset],
                                  pitr=pitr and dataset in PITR_DATASETS)
        return result
    # Every missing table first, so that DynamoDB creates them side by side.
    for dataset, definition in wanted.items():
        name = db.table(dataset)
        if described[dataset] is None and await _create_table(db, name, definition):
            done(Change("table", name))
    for dataset, definition in wanted.items():
        name = db.table(dataset)
        table = await _wait_active(db, name, wait_seconds)
        plan = await _plan(db, name, definition, table, pitr=pitr and dataset in PITR_DATASETS)
        result.problems += plan.problems
        result.notes += plan.notes
        for change in plan.changes:
            if await _apply(db, definition, change, wait_seconds):
                done(change)
    return result


async def reconcile_regional_tables(
    regions: Mapping[str, Dynamo], *, pitr: Mapping[str, bool] | None = None,
    dry_run: bool = False, wait_seconds: float = 120.0,
    on_change: Callable[[Change], None] | None = None,
) -> Reconciliation:
    """:func:`reconcile_tables` for the tables of every home region's store (profiles and
    dead letters' held events, see feed.store.regions); ``pitr`` by region."""
    result = Reconciliation()
    for region, db in regions.items():
        result += await reconcile_tables(
            db, pitr=bool(pitr and pitr.get(region)), dry_run=dry_run, datasets=REGIONAL_DATASETS,
            wait_seconds=wait_seconds, on_change=on_change,
        )
    return result


async def create_tables(
    db: Dynamo, *, wait_seconds: float = 120.0, datasets: Iterable[str] | None = None,
) -> list[str]:
    """Reconcile every table (or only ``datasets``') without touching backups, for the
    demo and the tests; returns the tables created. Problems are logged."""
    result = await reconcile_tables(db, datasets=datasets, wait_seconds=wait_seconds)
    for problem in result.problems:
        log.warning("table problem: %s", problem)
    return result.created


async def drop_tables(db: Dynamo) -> None:
    """Delete every table of this prefix (tests and the demo only)."""
    existing = await _existing(db)
    for dataset in TABLES:
        name = db.table(dataset)
        if name in existing:
            await db.admin("delete_table", TableName=name)


async def _plan(
    db: Dynamo, name: str, definition: TableDef, table: Mapping[str, Any] | None, *,
    pitr: bool,
) -> Reconciliation:
    """:func:`plan_table` over what DynamoDB describes now."""
    if table is None:
        return plan_table(name, definition, None, pitr=pitr)
    ttl = None
    if definition.ttl_attribute:
        described = await db.admin("describe_time_to_live", TableName=name)
        ttl = described.get("TimeToLiveDescription", {})
    backups = None
    notes: list[str] = []
    if pitr:
        try:
            described = await db.admin("describe_continuous_backups", TableName=name)
        except StorageError as exc:
            if exc.code not in UNSUPPORTED_CODES:
                raise
            notes.append(f"PITR not supported by this endpoint ({exc.code}): {name} left "
                         "as it is")
        else:
            backups = described.get("ContinuousBackupsDescription", {})
    plan = plan_table(name, definition, table, ttl=ttl, backups=backups, pitr=pitr)
    plan.notes += notes
    return plan


async def _apply(db: Dynamo, definition: TableDef, change: Change, wait_seconds: float
                 ) -> bool:
    """Make one planned change to an existing table; False if another process made it
    first."""
    if change.kind == "index":
        index = next(i for i in definition.indexes if i.name == change.detail)
        return await _add_index(db, change.table, definition, index, wait_seconds)
    if change.kind == "ttl":
        return await _enable_ttl(db, change.table, change.detail)
    if change.kind == "pitr":
        await _enable_pitr(db, change.table, wait_seconds)
        return True
    raise AssertionError(change)


async def _create_table(db: Dynamo, name: str, definition: TableDef) -> bool:
    """Create one table with all its indexes; False if another process just did."""
    try:
        await db.admin("create_table", **definition.create_request(name))
    except StorageError as exc:
        if exc.code != "ResourceInUseException":
            raise
        return False
    log.info("created table %s", name)
    return True


async def _add_index(db: Dynamo, name: str, definition: TableDef, index: Index,
                     wait_seconds: float) -> bool:
    """Add one global index (DynamoDB builds one at a time per table) and wait until it
    is ACTIVE; False if another process added it meanwhile."""
    deadline = time.monotonic() + wait_seconds
    while True:
        table = await _wait_active(db, name, max(0.0, deadline - time.monotonic()))
        if any(i["IndexName"] == index.name for i in table.get("GlobalSecondaryIndexes", [])):
            return False
        try:
            await db.admin("update_table", **_index_request(name, definition, index, table))
        except StorageError as exc:
            # Another process may have added this very index a moment before us, or
            # another index is being built: DynamoDB builds one at a time.
            if await _has_index(db, name, index.name):
                await _wait_active(db, name, max(0.0, deadline - time.monotonic()))
                return False
            busy = isinstance(exc, StorageUnavailable) or exc.code == "ResourceInUseException"
            if not busy or time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
            continue
        log.info("adding index %s on %s; waiting until it is ACTIVE", index.name, name)
        await _wait_active(db, name, wait_seconds)
        return True


async def _has_index(db: Dynamo, name: str, index: str) -> bool:
    table = (await db.admin("describe_table", TableName=name))["Table"]
    return any(i["IndexName"] == index for i in table.get("GlobalSecondaryIndexes", []))


def _index_request(name: str, definition: TableDef, index: Index,
                   table: Mapping[str, Any]) -> dict[str, Any]:
    """The UpdateTable request that adds ``index``: the table's attribute definitions
    plus the index's keys, and the table's own capacity if it is provisioned."""
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    defined = attribute_types(definition)
    for key in index.as_aws()["KeySchema"]:
        types.setdefault(key["AttributeName"], defined[key["AttributeName"]])
    create = index.as_aws()
    billing = table.get("BillingModeSummary", {}).get("BillingMode")
    throughput = table.get("ProvisionedThroughput", {})
    if billing == "PROVISIONED" or (billing is None and throughput.get("ReadCapacityUnits")):
        create["ProvisionedThroughput"] = {
            "ReadCapacityUnits": throughput["ReadCapacityUnits"],
            "WriteCapacityUnits": throughput["WriteCapacityUnits"],
        }
    return {
        "TableName": name,
        "AttributeDefinitions": [
            {"AttributeName": n, "AttributeType": t} for n, t in types.items()
        ],
        "GlobalSecondaryIndexUpdates": [{"Create": create}],
    }


async def _enable_ttl(db: Dynamo, name: str, attribute: str) -> bool:
    try:
        await db.admin(
            "update_time_to_live",
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
        )
    except StorageError as exc:
        # Another process enabling it at the same moment is fine.
        if "already enabled" not in str(exc).lower():
            raise
        return False
    return True


async def _enable_pitr(db: Dynamo, name: str, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            await db.admin(
                "update_continuous_backups",
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
            return
        except StorageError as exc:
            # A table created moments ago refuses this until its backups are set up.
            if exc.code != "ContinuousBackupsUnavailableException" or (
                time.monotonic() > deadline
            ):
                raise
            await asyncio.sleep(2.0)


async def _describe_table(db: Dynamo, name: str) -> dict[str, Any] | None:
    try:
        table: dict[str, Any] = (await db.admin("describe_table", TableName=name))["Table"]
    except StorageError as exc:
        if exc.code != "ResourceNotFoundException":
            raise
        return None
    return table


async def _existing(db: Dynamo) -> set[str]:
    names: set[str] = set()
    start: str | None = None
    while True:
        request = {"ExclusiveStartTableName": start} if start else {}
        response = await db.admin("list_tables", **request)
        names.update(response.get("TableNames", []))
        start = response.get("LastEvaluatedTableName")
        if not start:
            return names


async def _wait_active(db: Dynamo, name: str, wait_seconds: float) -> dict[str, Any]:
    """Wait until the table and all its global indexes are ACTIVE; returns it described."""
    deadline = time.monotonic() + wait_seconds
    while True:
        table: dict[str, Any] = (await db.admin("describe_table", TableName=name))["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table.get("TableStatus") == "ACTIVE" and all(
            i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes
        ):
            return table
        if time.monotonic() > deadline:
            building = [i["IndexName"] for i in indexes if i.get("IndexStatus") != "ACTIVE"]
            still = f" (index {', '.join(building)} still building)" if building else ""
            raise StorageError(f"table {name} did not become ACTIVE in {wait_seconds:.0f} s"
                               f"{still}; run the command again to keep waiting")
        await asyncio.sleep(0.5)
