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
from dataclasses import dataclass, field
from typing import Any, Literal

from config.tables import KOOS, REACTIONS, RELATIONS, TABLES, USERS, Index, TableDef
from feed.errors import StorageError, StorageUnavailable
from feed.store._dynamo import Dynamo

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

# The system of record gets point-in-time recovery; timelines, recommendations and
# the ledger are rebuilt or expire, and backing them up would cost the most.
PITR_DATASETS = frozenset({USERS, KOOS, REACTIONS, RELATIONS})

# What an emulator answers for an API it does not have (DynamoDB Local: backups).
UNSUPPORTED_CODES = frozenset({"UnknownOperationException"})

ChangeKind = Literal["table", "index", "ttl", "pitr"]
_DONE = {"table": "table created", "index": "index added", "ttl": "TTL enabled",
         "pitr": "PITR enabled"}
_PLANNED = {"table": "would create table", "index": "would add index",
            "ttl": "would enable TTL", "pitr": "would enable PITR"}


@dataclass(frozen=True, slots=True)
class Change:
    """One thing the reconcile adds: ``detail`` is the index name or the TTL attribute."""

    kind: ChangeKind
    table: str
    detail: str = ""

    def line(self, *, dry_run: bool = False) -> str:
        """The line ``feed tables create`` prints for it (done, or planned)."""
        label = (_PLANNED if dry_run else _DONE)[self.kind]
        if self.kind == "index":
            return f"{label}: {self.detail} on {self.table}"
        if self.kind == "ttl":
            return f"{label}: {self.table} ({self.detail})"
        return f"{label}: {self.table}"


@dataclass(slots=True)
class Reconciliation:
    """What a reconcile changed (or would), what it cannot fix, and what it could not
    check because the endpoint lacks the API."""

    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __iadd__(self, other: Reconciliation) -> Reconciliation:
        self.changes += other.changes
        self.problems += other.problems
        self.notes += other.notes
        return self

    @property
    def created(self) -> list[str]:
        return [c.table for c in self.changes if c.kind == "table"]


def plan_table(
    name: str, definition: TableDef, table: Mapping[str, Any] | None, *,
    ttl: Mapping[str, Any] | None = None, backups: Mapping[str, Any] | None = None,
    pitr: bool = False,
) -> Reconciliation:
    """The changes that bring table ``name`` to ``definition``, from what DynamoDB
    describes: ``table`` is DescribeTable's ``Table`` (None: no such table), ``ttl``
    DescribeTimeToLive's ``TimeToLiveDescription`` and ``backups``
    DescribeContinuousBackups' ``ContinuousBackupsDescription`` (None: not known, so
    not planned). ``pitr``: whether this table should have point-in-time recovery."""
    plan = Reconciliation()
    if table is None:
        plan.changes.append(Change("table", name))
        if definition.ttl_attribute:
            plan.changes.append(Change("ttl", name, definition.ttl_attribute))
        if pitr:
            plan.changes.append(Change("pitr", name))
        return plan
    if _keys(table.get("KeySchema", [])) != _keys(_table_keys(definition)):
        plan.problems.append(
            f"{name}: its key is {_show(table.get('KeySchema', []))}, the definition's is "
            f"{_show(_table_keys(definition))}; a table's key cannot change"
        )
    plan += _plan_indexes(name, definition, table)
    if definition.ttl_attribute and ttl is not None:
        plan += _plan_ttl(name, definition.ttl_attribute, ttl)
    if pitr and backups is not None:
        status = backups.get("PointInTimeRecoveryDescription", {}).get(
            "PointInTimeRecoveryStatus")
        if status not in {"ENABLED", "ENABLING"}:
            plan.changes.append(Change("pitr", name))
    return plan


def _plan_indexes(name: str, definition: TableDef, table: Mapping[str, Any]) -> Reconciliation:
    plan = Reconciliation()
    found = {
        "global": {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])},
        "local": {i["IndexName"]: i for i in table.get("LocalSecondaryIndexes", [])},
    }
    defined_types = _attribute_types(definition)
    table_types = {a["AttributeName"]: a["AttributeType"]
                   for a in table.get("AttributeDefinitions", [])}
    for index in definition.indexes:
        kind = "local" if index.local else "global"
        wanted = index.as_aws()["KeySchema"]
        existing = found[kind].get(index.name)
        if existing is not None:
            if _keys(existing.get("KeySchema", [])) != _keys(wanted):
                plan.problems.append(
                    f"{name}: index {index.name} has the key {_show(existing['KeySchema'])}, "
                    f"the definition's is {_show(wanted)}; an index's key cannot change "
                    "(define a new index under another name)"
                )
            continue
        if index.local:
            plan.problems.append(
                f"{name}: local index {index.name} is missing; a local index can only be "
                "created with its table"
            )
            continue
        clashes = []
        for key in wanted:
            attribute = key["AttributeName"]
            have, want = table_types.get(attribute), defined_types[attribute]
            if have is not None and have != want:
                clashes.append(f"{attribute} is {have} on the table, {want} in the definition")
        if clashes:
            plan.problems.append(
                f"{name}: index {index.name} cannot be added: " + "; ".join(clashes)
            )
            continue
        plan.changes.append(Change("index", name, index.name))
    return plan


def _plan_ttl(name: str, attribute: str, ttl: Mapping[str, Any]) -> Reconciliation:
    plan = Reconciliation()
    status = ttl.get("TimeToLiveStatus")
    current = ttl.get("AttributeName")
    if status in {"ENABLED", "ENABLING"}:
        if current != attribute:
            plan.problems.append(
                f"{name}: TTL is on {current}, the definition's attribute is {attribute}; "
                "disable it by hand first (DynamoDB allows one TTL change an hour)"
            )
    elif status == "DISABLING":
        plan.problems.append(f"{name}: TTL is being disabled; run again once it is off")
    else:
        plan.changes.append(Change("ttl", name, attribute))
    return plan


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
    """:func:`reconcile_tables` for the ``users`` table of every home region's store
    (see feed.store.regions); ``pitr`` by region."""
    result = Reconciliation()
    for region, db in regions.items():
        result += await reconcile_tables(
            db, pitr=bool(pitr and pitr.get(region)), dry_run=dry_run, datasets=(USERS,),
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
    defined = _attribute_types(definition)
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


def _table_keys(definition: TableDef) -> list[dict[str, str]]:
    keys = [{"AttributeName": definition.pk, "KeyType": "HASH"}]
    if definition.sk:
        keys.append({"AttributeName": definition.sk, "KeyType": "RANGE"})
    return keys


def _attribute_types(definition: TableDef) -> dict[str, str]:
    request = definition.create_request("")
    return {a["AttributeName"]: a["AttributeType"] for a in request["AttributeDefinitions"]}


def _keys(schema: Iterable[Mapping[str, str]]) -> list[tuple[str, str]]:
    return sorted((k["KeyType"], k["AttributeName"]) for k in schema)


def _show(schema: Iterable[Mapping[str, str]]) -> str:
    return ", ".join(f"{name} ({kind})" for kind, name in _keys(schema))
