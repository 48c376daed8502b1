"""Client-side fault injection for DynamoDB calls, through the transport's hooks.

Every data-plane request, on the direct transport and on aioboto3's alike, passes
:class:`~feed.store._transport.Hook` objects in ``Dynamo.hooks`` in its wire shape:
``before`` may answer it itself (a throttling error, or every item unprocessed) or
edit it, and ``after`` may edit a real answer. To answer with *part* of the items
unprocessed, the injector sends only the items it lets through and adds the
withheld ones to the real answer. What DynamoDB reports as unprocessed was
therefore never written, exactly as in production.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from feed.store import Dynamo
from feed.store._transport import Reply

__all__ = ["BatchFaults", "CallCounter", "HookBase", "cancelled", "throttled"]

_WITHHELD = "tests.faults.withheld"
_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"


def error_reply(code: str, message: str, **extra: Any) -> Reply:
    """An error answer as DynamoDB sends it."""
    return Reply(400, {"__type": _ERROR_PREFIX + code, "message": message, **extra})


def throttled() -> Reply:
    """A ProvisionedThroughputExceededException answer."""
    return error_reply(
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API.",
    )


def cancelled(*codes: str) -> Reply:
    """A TransactionCanceledException answer with one cancellation reason per item, as
    DynamoDB sends it (``codes`` e.g. ``"None", "TransactionConflict"``)."""
    reasons = [{"Code": c} if c == "None" else {"Code": c, "Message": f"{c} (injected)"}
               for c in codes]
    return error_reply(
        "TransactionCanceledException",
        "Transaction cancelled, please refer cancellation reasons for specific reasons "
        f"[{', '.join(codes)}]",
        CancellationReasons=reasons,
    )


class HookBase:
    """A hook on one operation's requests, installed for a ``with`` block."""

    def __init__(self, db: Dynamo, operation: str) -> None:
        self.db = db
        self.operation = operation

    def before(self, operation: str, request: dict[str, Any],
               context: dict[str, Any]) -> Reply | None:
        return self.on_request(request, context) if operation == self.operation else None

    def after(self, operation: str, request: dict[str, Any], response: dict[str, Any],
              context: dict[str, Any]) -> None:
        if operation == self.operation:
            self.on_answer(response, context)

    def on_request(self, request: dict[str, Any], context: dict[str, Any]) -> Reply | None:
        return None

    def on_answer(self, response: dict[str, Any], context: dict[str, Any]) -> None:
        return None

    def __enter__(self) -> Any:
        self.db.hooks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.hooks.remove(self)


class CallCounter(HookBase):
    """Counts the requests of one operation (and keeps copies of them); changes nothing."""

    def __init__(self, db: Dynamo, operation: str) -> None:
        super().__init__(db, operation)
        self.bodies: list[dict[str, Any]] = []

    @property
    def calls(self) -> int:
        return len(self.bodies)

    def on_request(self, request: dict[str, Any], context: dict[str, Any]) -> None:
        self.bodies.append(json.loads(json.dumps(request)))


class BatchFaults(HookBase):
    """Answers a share of BatchWriteItem or BatchGetItem requests with faults.

    ``unprocessed``: share of requests answered with all (half of those) or a random part
    of their items unprocessed; ``throttle``: share answered with
    ProvisionedThroughputExceededException. ``max_faults_per_item`` (None: no limit) makes
    an item go through after that many faults, so a test's outcome does not hang on luck.
    """

    def __init__(
        self, db: Dynamo, operation: str = "BatchWriteItem", *, unprocessed: float = 0.0,
        throttle: float = 0.0, seed: int = 0, max_faults_per_item: int | None = None,
    ) -> None:
        assert operation in {"BatchWriteItem", "BatchGetItem"}
        super().__init__(db, operation)
        self.unprocessed = unprocessed
        self.throttle = throttle
        self.rng = random.Random(seed)
        self.max_faults = max_faults_per_item
        self.faults: Counter[str] = Counter()
        self.calls = 0
        self.items_sent = 0
        self.throttled = 0
        self.unprocessed_answers = 0
        self.withheld_items = 0

    # --- request shapes ------------------------------------------------------------------

    def _entries(self, body: dict[str, Any]) -> tuple[str, list[Any]]:
        (table, request), = body["RequestItems"].items()
        return table, (request if self.operation == "BatchWriteItem" else request["Keys"])

    def _with_entries(self, table: str, original: Any, entries: list[Any]) -> dict[str, Any]:
        if self.operation == "BatchWriteItem":
            return {table: entries}
        return {table: {**original, "Keys": entries}}

    @staticmethod
    def _name(entry: Any) -> str:
        return json.dumps(entry, sort_keys=True)

    # --- hooks ---------------------------------------------------------------------------

    def on_request(self, body: dict[str, Any], context: dict[str, Any]) -> Reply | None:
        table, entries = self._entries(body)
        self.calls += 1
        self.items_sent += len(entries)
        eligible = [e for e in entries
                    if self.max_faults is None or self.faults[self._name(e)] < self.max_faults]
        if not eligible:
            return None
        roll = self.rng.random()
        if roll < self.throttle:
            self.throttled += 1
            for e in entries:
                self.faults[self._name(e)] += 1
            return throttled()
        if roll >= self.throttle + self.unprocessed:
            return None
        if self.rng.random() < 0.5:
            withheld = eligible
        else:
            withheld = self.rng.sample(eligible, self.rng.randint(1, len(eligible)))
        names = {self._name(e) for e in withheld}
        for name in names:
            self.faults[name] += 1
        self.unprocessed_answers += 1
        self.withheld_items += len(withheld)
        kept = [e for e in entries if self._name(e) not in names]
        original = body["RequestItems"][table]
        if not kept:  # nothing processed: answer without calling DynamoDB
            if self.operation == "BatchWriteItem":
                return Reply(200, {"UnprocessedItems": self._with_entries(
                    table, original, withheld)})
            return Reply(200, {"Responses": {table: []},
                               "UnprocessedKeys": self._with_entries(table, original, withheld)})
        body["RequestItems"] = self._with_entries(table, original, kept)
        context[_WITHHELD] = (table, original, withheld)
        return None

    def on_answer(self, parsed: dict[str, Any], context: dict[str, Any]) -> None:
        if _WITHHELD not in context:
            return
        table, original, withheld = context.pop(_WITHHELD)
        if self.operation == "BatchWriteItem":
            unprocessed = parsed.setdefault("UnprocessedItems", {})
            unprocessed[table] = [*unprocessed.get(table, []), *withheld]
        else:
            unprocessed = parsed.setdefault("UnprocessedKeys", {})
            already = unprocessed.get(table, {}).get("Keys", [])
            unprocessed.update(self._with_entries(table, original, [*already, *withheld]))
