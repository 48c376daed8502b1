"""Client-side fault injection for DynamoDB batch calls, through botocore's event hooks.

A ``before-call.dynamodb.<Operation>`` handler that returns ``(http_response,
parsed_response)`` short-circuits the real call (aiobotocore's
``AioBaseClient._make_api_call``); one that returns None lets it through. The
injector uses both: it answers some requests itself (a throttling error, or
every item unprocessed) and, to answer with *part* of the items unprocessed,
rewrites the request body to the items it lets through and adds the withheld
ones to the real response in ``after-call``. What DynamoDB reports as
unprocessed was therefore never written, exactly as in production.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchFaults", "CallCounter", "FakeHttp", "cancelled", "throttled"]

_WITHHELD = "tests.faults.withheld"


@dataclass
class FakeHttp:
    """The little of an HTTP response that ``_make_api_call`` looks at."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""


def throttled() -> tuple[FakeHttp, dict[str, Any]]:
    """A ProvisionedThroughputExceededException answer."""
    return FakeHttp(400), {
        "Error": {
            "Code": "ProvisionedThroughputExceededException",
            "Message": "The level of configured provisioned throughput for the table was "
            "exceeded. Consider increasing your provisioning level with the UpdateTable API.",
        },
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


def cancelled(*codes: str) -> tuple[FakeHttp, dict[str, Any]]:
    """A TransactionCanceledException answer with one cancellation reason per item, as
    DynamoDB sends it (``codes`` e.g. ``"None", "TransactionConflict"``)."""
    reasons = [{"Code": c} if c == "None" else {"Code": c, "Message": f"{c} (injected)"}
               for c in codes]
    return FakeHttp(400), {
        "Error": {
            "Code": "TransactionCanceledException",
            "Message": "Transaction cancelled, please refer cancellation reasons for specific "
            f"reasons [{', '.join(codes)}]",
        },
        "CancellationReasons": reasons,
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


class CallCounter:
    """Counts the requests of one operation (and keeps their bodies); changes nothing."""

    def __init__(self, client: Any, operation: str) -> None:
        self.client = client
        self.event = f"before-call.dynamodb.{operation}"
        self.bodies: list[dict[str, Any]] = []

    @property
    def calls(self) -> int:
        return len(self.bodies)

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        self.bodies.append(json.loads(params["body"]))

    def __enter__(self) -> CallCounter:
        self.client.meta.events.register(self.event, self._before, unique_id=id(self))
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister(self.event, unique_id=id(self))


class BatchFaults:
    """Answers a share of BatchWriteItem or BatchGetItem requests with faults.

    ``unprocessed``: share of requests answered with all (half of those) or a random part
    of their items unprocessed; ``throttle``: share answered with
    ProvisionedThroughputExceededException. ``max_faults_per_item`` (None: no limit) makes
    an item go through after that many faults, so a test's outcome does not hang on luck.
    """

    def __init__(
        self, client: Any, operation: str = "BatchWriteItem", *, unprocessed: float = 0.0,
        throttle: float = 0.0, seed: int = 0, max_faults_per_item: int | None = None,
    ) -> None:
        assert operation in {"BatchWriteItem", "BatchGetItem"}
        self.client = client
        self.operation = operation
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

    def _before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
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
                return FakeHttp(200), {"UnprocessedItems": self._with_entries(
                    table, original, withheld)}
            return FakeHttp(200), {"Responses": {table: []},
                                   "UnprocessedKeys": self._with_entries(
                                       table, original, withheld)}
        body["RequestItems"] = self._with_entries(table, original, kept)
        params["body"] = json.dumps(body).encode()
        context[_WITHHELD] = (table, original, withheld)
        return None

    def _after(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
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

    def __enter__(self) -> BatchFaults:
        events = self.client.meta.events
        events.register(f"before-call.dynamodb.{self.operation}", self._before,
                        unique_id=f"faults-before-{id(self)}")
        events.register(f"after-call.dynamodb.{self.operation}", self._after,
                        unique_id=f"faults-after-{id(self)}")
        return self

    def __exit__(self, *exc: object) -> None:
        events = self.client.meta.events
        events.unregister(f"before-call.dynamodb.{self.operation}",
                          unique_id=f"faults-before-{id(self)}")
        events.unregister(f"after-call.dynamodb.{self.operation}",
                          unique_id=f"faults-after-{id(self)}")
