"""Versioned on/off rows (reactions, relations) written as transaction items.

A row carries ``active`` and ``ver`` (the ``occurred_at`` of the event that
last changed it), so events applied out of order settle on the state of the
newest one, and index attributes exist only while the row is active (sparse
indexes then list active rows only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from feed.errors import ConditionFailed
from feed.store._codec import to_attr, values


def switch_on(
    dataset: str, key: Mapping[str, Any], at: int, attrs: Mapping[str, Any]
) -> dict[str, Any]:
    """Transaction item: turn the row on, if it is new or off with an older version."""
    names = {f"#s{i}": name for i, name in enumerate(attrs)}
    sets = ", ".join(f"#s{i} = :s{i}" for i in range(len(attrs)))
    vals = values(on=True, off=False, t=at)
    vals.update({f":s{i}": to_attr(v) for i, v in enumerate(attrs.values())})
    first = next(iter(key))
    names["#k"] = first
    return {
        "Update": {
            "TableName": dataset,
            "Key": dict(key),
            "UpdateExpression": "SET active = :on, ver = :t" + (f", {sets}" if sets else ""),
            "ConditionExpression": "attribute_not_exists(#k) OR (active = :off AND ver < :t)",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": vals,
        }
    }


def switch_off(
    dataset: str, key: Mapping[str, Any], at: int, removes: Sequence[str]
) -> dict[str, Any]:
    """Transaction item: turn the row off, if it is on with an older version."""
    names = {f"#r{i}": name for i, name in enumerate(removes)}
    remove = ", ".join(names)
    item: dict[str, Any] = {
        "TableName": dataset,
        "Key": dict(key),
        "UpdateExpression": "SET active = :off, ver = :t" + (f" REMOVE {remove}" if remove else ""),
        "ConditionExpression": "active = :on AND ver < :t",
        "ExpressionAttributeValues": values(on=True, off=False, t=at),
    }
    if names:
        item["ExpressionAttributeNames"] = names
    return {"Update": item}


def settle(key: Mapping[str, Any], at: int, on: bool) -> dict[str, Any]:
    """UpdateItem arguments for an event that changed nothing: keep its version.

    An ``on`` that found the row already on, or an ``off`` that found it off or
    missing, still records ``ver`` so an older, late event cannot undo it.
    """
    first = next(iter(key))
    condition = "(active = :state AND ver < :t)"
    if not on:
        condition = "attribute_not_exists(#k) OR " + condition
    return {
        "key": dict(key),
        "expression": "SET active = :state, ver = :t",
        "condition": condition,
        "names": {"#k": first} if not on else None,
        "values": values(state=on, t=at),
    }


async def settle_row(db: Any, dataset: str, key: Mapping[str, Any], at: int, on: bool) -> bool:
    """Apply :func:`settle`; True if the event is now recorded or a newer one decided the
    row, False if the row is older and in the other state (apply the event again)."""

    args = settle(key, at, on)
    try:
        await db.update(dataset, args["key"], args["expression"], condition=args["condition"],
                        names=args["names"], values=args["values"])
    except ConditionFailed:
        item = await db.get(dataset, dict(key), consistent=True, attributes=["ver"])
        return item is not None and int(item.get("ver", 0)) >= at
    return True
