"""What a table lacks against its definition: a pure comparison of config/tables.py
with DynamoDB's description of the table, as changes to make and problems to report
(:mod:`feed.store.tables` makes the changes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from config.tables import KOOS, REACTIONS, RELATIONS, USERS, TableDef

__all__ = [
    "PITR_DATASETS",
    "UNSUPPORTED_CODES",
    "Change",
    "Reconciliation",
    "attribute_types",
    "plan_table",
    "table_keys",
]

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
    if _keys(table.get("KeySchema", [])) != _keys(table_keys(definition)):
        plan.problems.append(
            f"{name}: its key is {_show(table.get('KeySchema', []))}, the definition's is "
            f"{_show(table_keys(definition))}; a table's key cannot change"
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
    defined_types = attribute_types(definition)
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


def table_keys(definition: TableDef) -> list[dict[str, str]]:
    keys = [{"AttributeName": definition.pk, "KeyType": "HASH"}]
    if definition.sk:
        keys.append({"AttributeName": definition.sk, "KeyType": "RANGE"})
    return keys


def attribute_types(definition: TableDef) -> dict[str, str]:
    request = definition.create_request("")
    return {a["AttributeName"]: a["AttributeType"] for a in request["AttributeDefinitions"]}


def _keys(schema: Iterable[Mapping[str, str]]) -> list[tuple[str, str]]:
    return sorted((k["KeyType"], k["AttributeName"]) for k in schema)


def _show(schema: Iterable[Mapping[str, str]]) -> str:
    return ", ".join(f"{name} ({kind})" for kind, name in _keys(schema))
