"""Plain Python values <-> DynamoDB attribute values, for the low-level client.

boto3's TypeSerializer goes through Decimal for every number; this is the
small subset the service stores (str, int, float, bool, None, list, dict,
set of str), done directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Item = dict[str, Any]
Wire = dict[str, dict[str, Any]]


def to_attr(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value."""
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot store the non-finite number {value!r} in DynamoDB")
        return {"N": repr(value)}
    if value is None:
        return {"NULL": True}
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    if isinstance(value, set | frozenset):
        if not value:
            raise ValueError("DynamoDB cannot store an empty set")
        if all(isinstance(v, str) for v in value):
            return {"SS": sorted(value)}
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return {"NS": sorted(str(v) for v in value)}
        raise TypeError("a set must hold only strings or only numbers")
    if isinstance(value, Mapping):
        return {"M": {k: to_attr(v) for k, v in value.items()}}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB")


def from_attr(attr: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value as a Python value."""
    (kind, value), = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {int(v) if v.lstrip("-").isdigit() else float(v) for v in value}
    raise TypeError(f"unsupported DynamoDB attribute type {kind}")


def to_wire(item: Mapping[str, Any]) -> Wire:
    """A Python dict as a DynamoDB item (None values are left out)."""
    return {k: to_attr(v) for k, v in item.items() if v is not None}


def from_wire(item: Mapping[str, Mapping[str, Any]]) -> Item:
    """A DynamoDB item as a Python dict."""
    return {k: from_attr(v) for k, v in item.items()}


def values(**kwargs: Any) -> Wire:
    """``ExpressionAttributeValues`` from keyword arguments: ``values(t=1)`` -> ``{":t": ...}``."""
    return {f":{k}": to_attr(v) for k, v in kwargs.items()}
