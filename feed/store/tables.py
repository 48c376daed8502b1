"""Create the service's tables (idempotent) and wait until they are active."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from config.tables import TABLES
from feed.errors import StorageError
from feed.store._dynamo import Dynamo

__all__ = ["create_tables", "drop_tables"]

log = logging.getLogger(__name__)


async def create_tables(
    db: Dynamo, *, wait_seconds: float = 120.0, datasets: Iterable[str] | None = None,
) -> list[str]:
    """Create every missing table and index (or only ``datasets``'); wait until all are
    ACTIVE. Returns those created."""
    existing = await _existing(db)
    created: list[str] = []
    wanted = {d: TABLES[d] for d in datasets} if datasets is not None else TABLES
    for dataset, definition in wanted.items():
        name = db.table(dataset)
        if name in existing:
            continue
        try:
            await db.admin("create_table", **definition.create_request(name))
        except StorageError as exc:
            if exc.code != "ResourceInUseException":
                raise
        else:
            created.append(name)
            log.info("created table %s", name)
    deadline = time.monotonic() + wait_seconds
    for dataset, definition in wanted.items():
        name = db.table(dataset)
        await _wait_active(db, name, deadline)
        if definition.ttl_attribute:
            await _enable_ttl(db, name, definition.ttl_attribute)
    return created


async def drop_tables(db: Dynamo) -> None:
    """Delete every table of this prefix (tests and the demo only)."""
    existing = await _existing(db)
    for dataset in TABLES:
        name = db.table(dataset)
        if name in existing:
            await db.admin("delete_table", TableName=name)


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


async def _wait_active(db: Dynamo, name: str, deadline: float) -> None:
    while True:
        table = (await db.admin("describe_table", TableName=name))["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table.get("TableStatus") == "ACTIVE" and all(
            i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes
        ):
            return
        if time.monotonic() > deadline:
            raise StorageError(f"table {name} did not become ACTIVE in time")
        await asyncio.sleep(0.5)


async def _enable_ttl(db: Dynamo, name: str, attribute: str) -> None:
    described = await db.admin("describe_time_to_live", TableName=name)
    status = described.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
    if status in {"ENABLED", "ENABLING"}:
        return
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
