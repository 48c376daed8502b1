"""Make the in-process moto server behave like DynamoDB under concurrency, and fast enough.

Two things about moto's DynamoDB backend (moto 5.x) matter to these tests:

1. It is not thread-safe, and its server handles requests on threads.
   ``transact_write_items`` deep-copies whole tables as a backup and, when a
   transaction is cancelled, puts the copies back, undoing writes other threads
   made in between (deep-copying a table another thread is writing also raises
   "dictionary changed size during iteration", answered as a 500 and retried by
   botocore). Concurrent transactions therefore lose or double counter updates
   on moto, which DynamoDB and DynamoDB Local never do. One lock around every
   moto DynamoDB request makes each request atomic. (``tests/conftest.py`` now
   serves moto through ``feed._embedded``, which also serializes requests; the
   lock here keeps the rollback below safe whoever started the server.)
2. That backup copies every table a transaction touches, so a transaction costs
   time in proportion to the table's size: thousands of events make a run
   quadratic. Under the lock, backing up only the items the transaction names
   is an equivalent rollback.

:func:`serialize_moto_dynamodb` patches both, once, in this process.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

__all__ = ["serialize_moto_dynamodb"]

_LOCK = threading.RLock()


def serialize_moto_dynamodb() -> None:
    """Patch moto's DynamoDB server for the tests (idempotent)."""
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    handle = DynamoHandler.call_action
    if getattr(handle, "serialized", False):
        return

    def call_action(self: Any) -> Any:
        with _LOCK:
            return handle(self)

    call_action.serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]

    transact = DynamoDBBackend.transact_write_items

    class _TablesByReference:
        """Stands in for the ``copy`` module inside moto.dynamodb.models during a
        transaction: tables are not copied (the items are, below)."""

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items:
            if len(entry) != 1:
                continue
            (op_type, op), = entry.items()
            table = self.tables.get(op.get("TableName"))
            key = op.get("Item") if op_type == "Put" else op.get("Key")
            if table is None or not key or table.hash_key_attr not in key:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = None
            if table.range_key_attr:
                if table.range_key_attr not in key:
                    continue
                range_value = DynamoType(key[table.range_key_attr])
            before = table.get_item(hash_value, range_value)
            saved.append((table, hash_value, range_value, copy.deepcopy(before)))
        # moto's private import of copy
        models.copy = _TablesByReference  # type: ignore[attr-defined,assignment]
        try:
            transact(self, transact_items)
        except BaseException:
            for table, hash_value, range_value, before in reversed(saved):
                if before is None:
                    table.delete_item(hash_value, range_value)
                elif range_value is None:
                    table.items[hash_value] = before
                else:
                    table.items[hash_value][range_value] = before
            raise
        finally:
            models.copy = copy  # type: ignore[attr-defined]  # moto's private import of copy

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
