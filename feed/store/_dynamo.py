"""The DynamoDB connection: the transport, error mapping, the one retry layer, paging.

Everything that touches DynamoDB goes through :class:`Dynamo`, which is the one
place that decides what is retried. Data-plane calls go over a transport
(feed.store._transport: direct HTTP by default, aioboto3 by choice), which never
retries; control-plane calls (tables, TTL) always go through aioboto3, opened on
first use, with botocore's retries off. A single call is retried on
:class:`~feed.errors.StorageUnavailable` up to ``FEED_DYNAMODB_MAX_ATTEMPTS`` times
with capped exponential backoff and full jitter; a batch chunk or a transaction
runs its own loop over the same budget of :class:`Backoff` attempts, retrying what
came back unprocessed, throttled or conflicted, and raises
:class:`~feed.errors.RetriesExhausted` when it is spent. Nothing multiplies: one
chunk is at most ``Backoff.attempts + 1`` sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from config.settings import Settings
from config.tables import TABLES, USERS
from feed import metrics
from feed.errors import (
    CredentialsRejected,
    StorageError,
    StorageUnavailable,
)
from feed.keys import READY_PROBE_USER
from feed.store._batch import Backoff, BatchOperations
from feed.store._boto import BotoTransport, ControlPlane, call_boto
from feed.store._codec import Item, Wire, from_wire, to_wire
from feed.store._credentials import CredentialSource, resolve_credentials
from feed.store._transport import DirectTransport, Hook, Transport

__all__ = ["Backoff", "Dynamo", "open_dynamo"]

log = logging.getLogger(__name__)

THROTTLING = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                        "RequestLimitExceeded"})


@contextlib.asynccontextmanager
async def open_dynamo(
    settings: Settings,
    *,
    endpoint: str | None = None,
    prefix: str | None = None,
    region: str | None = None,
    regional: bool = False,
) -> AsyncIterator[Dynamo]:
    """Open a client for ``settings`` (or another endpoint / region) and close it after.

    ``regional``: ``endpoint`` is a home region's own (None: AWS's endpoint for ``region``),
    never the settings' endpoint.
    """
    if not regional and endpoint is None:
        endpoint = settings.dynamodb_endpoint
    region = region or settings.aws_region
    credentials = await resolve_credentials(endpoint, region)
    async with contextlib.AsyncExitStack() as stack:
        control = ControlPlane(settings, endpoint, region, credentials, stack)
        transport: Transport
        if settings.dynamodb_client == "aioboto3":
            transport = BotoTransport(await control.client(), credentials)
        else:
            transport = DirectTransport.for_endpoint(
                endpoint, region, credentials,
                connect_timeout=settings.dynamodb_connect_timeout,
                read_timeout=settings.dynamodb_read_timeout,
                pool_size=max(64, settings.dynamodb_concurrency * 4),
            )
            stack.push_async_callback(transport.close)
        yield Dynamo(transport, settings,
                     prefix=settings.table_prefix if prefix is None else prefix,
                     control=control)


class Dynamo(BatchOperations):
    """A DynamoDB client bound to the service's tables (batches and transactions:
    :class:`~feed.store._batch.BatchOperations`)."""

    def __init__(self, transport: Transport, settings: Settings, *, prefix: str,
                 control: ControlPlane | None = None) -> None:
        self.transport = transport
        self.settings = settings
        self.prefix = prefix
        self.backoff = Backoff()
        self.concurrency = settings.dynamodb_concurrency
        self.adaptive = settings.dynamodb_retry_mode == "adaptive"
        self._control = control
        self._throttled_until = 0.0  # adaptive mode: no sends before this (monotonic)

    @property
    def hooks(self) -> list[Hook]:
        """Hooks that see every data-plane request (fault injection in tests)."""
        return self.transport.hooks

    @property
    def credentials(self) -> CredentialSource:
        return self.transport.credentials

    def table(self, dataset: str) -> str:
        """The full table name of one dataset."""
        if dataset not in TABLES:
            raise KeyError(f"unknown dataset {dataset!r}")
        return self.prefix + dataset

    async def call(self, operation: str, request: dict[str, Any], *,
                   retry: bool = True) -> dict[str, Any]:
        """One data-plane request (``operation`` as DynamoDB names it, the body in wire
        format), timed; retried on StorageUnavailable unless ``retry`` is False (the
        batch and transaction loops retry themselves)."""
        attempts = self.settings.dynamodb_max_attempts if retry else 1
        attempt = 0
        while True:
            if self.adaptive and self._throttled_until > time.monotonic():
                await asyncio.sleep(self._throttled_until - time.monotonic())
            started = time.perf_counter()
            try:
                return await self.transport.send(operation, request)
            except StorageUnavailable as exc:
                self._note_throttling(exc, attempt)
                attempt += 1
                if attempt >= attempts:
                    raise
                metrics.DYNAMODB_RETRIES.labels(operation, exc.code or "unavailable").inc()
                await asyncio.sleep(self.backoff.delay(attempt - 1))
            finally:
                metrics.DYNAMODB_CALLS.labels(operation).observe(time.perf_counter() - started)

    async def probe(self) -> None:
        """One read of an item no user can have, not retried: the table exists, the
        credentials work and DynamoDB answers (for /readyz and the start-up check)."""
        await self.call("GetItem", {
            "TableName": self.table(USERS), "Key": to_wire({"user_id": READY_PROBE_USER}),
        }, retry=False)

    async def check_credentials(self) -> None:
        """Fail at start-up, with a message naming their source, if DynamoDB refuses the
        credentials; any other answer (even an error: a missing table, an outage) will do."""
        try:
            await self.probe()
        except CredentialsRejected:
            raise
        except StorageError as exc:
            log.info("DynamoDB start-up check: %s (not a credentials problem)", exc)

    def _note_throttling(self, exc: StorageError, attempt: int) -> None:
        # Adaptive mode: a throttled request slows every request of this client for a
        # while, rather than each retrying on its own and throttling again.
        if self.adaptive and exc.code in THROTTLING:
            pause = self.backoff.delay(attempt)
            self._throttled_until = max(self._throttled_until, time.monotonic() + pause)

    async def admin(self, method: str, **request: Any) -> dict[str, Any]:
        """One control-plane call (``create_table``, ``describe_table``, ...) through
        aioboto3, with errors mapped; not retried."""
        if self._control is None:
            raise StorageError("this client has no control plane")
        client = await self._control.client()
        started = time.perf_counter()
        try:
            return await call_boto(client, method, request, self.credentials.describe())
        finally:
            metrics.DYNAMODB_CALLS.labels(method).observe(time.perf_counter() - started)

    # --- single items ----------------------------------------------------------------

    async def get(
        self, dataset: str, key: Mapping[str, Any], *, consistent: bool = False,
        attributes: Sequence[str] | None = None,
    ) -> Item | None:
        request: dict[str, Any] = {
            "TableName": self.table(dataset), "Key": to_wire(key), "ConsistentRead": consistent,
        }
        if attributes:
            request["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(attributes)))
            request["ExpressionAttributeNames"] = {f"#a{i}": a for i, a in enumerate(attributes)}
        response = await self.call("GetItem", request)
        item = response.get("Item")
        return from_wire(item) if item else None

    async def put(
        self, dataset: str, item: Mapping[str, Any], *, condition: str | None = None,
        names: Mapping[str, str] | None = None, values: Wire | None = None,
    ) -> None:
        request: dict[str, Any] = {"TableName": self.table(dataset), "Item": to_wire(item)}
        _add_expression(request, condition, names, values)
        await self.call("PutItem", request)

    async def update(
        self, dataset: str, key: Mapping[str, Any], expression: str, *,
        condition: str | None = None, names: Mapping[str, str] | None = None,
        values: Wire | None = None, returns: str = "NONE",
    ) -> Item:
        request: dict[str, Any] = {
            "TableName": self.table(dataset), "Key": to_wire(key),
            "UpdateExpression": expression, "ReturnValues": returns,
        }
        _add_expression(request, condition, names, values)
        response = await self.call("UpdateItem", request)
        return from_wire(response.get("Attributes", {}))

    async def delete(
        self, dataset: str, key: Mapping[str, Any], *, condition: str | None = None,
        names: Mapping[str, str] | None = None, values: Wire | None = None,
    ) -> None:
        request: dict[str, Any] = {"TableName": self.table(dataset), "Key": to_wire(key)}
        _add_expression(request, condition, names, values)
        await self.call("DeleteItem", request)

    # --- queries ----------------------------------------------------------------------

    async def query_page(
        self, dataset: str, key_condition: str, *, values: Wire,
        names: Mapping[str, str] | None = None, index: str | None = None,
        limit: int | None = None, forward: bool = True, start: Mapping[str, Any] | None = None,
        filter: str | None = None, consistent: bool = False,
        attributes: Sequence[str] | None = None,
    ) -> tuple[list[Item], Item | None]:
        """One page of a Query: the items and the key to continue from (None at the end)."""
        request: dict[str, Any] = {
            "TableName": self.table(dataset),
            "KeyConditionExpression": key_condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": forward,
        }
        all_names = dict(names or {})
        if attributes:
            request["ProjectionExpression"] = ", ".join(f"#p{i}" for i in range(len(attributes)))
            all_names.update({f"#p{i}": a for i, a in enumerate(attributes)})
        if all_names:
            request["ExpressionAttributeNames"] = all_names
        if index:
            request["IndexName"] = index
        if limit:
            request["Limit"] = limit
        if start:
            request["ExclusiveStartKey"] = to_wire(start)
        if filter:
            request["FilterExpression"] = filter
        if consistent:
            request["ConsistentRead"] = True
        response = await self.call("Query", request)
        items = [from_wire(i) for i in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return items, (from_wire(last) if last else None)

    async def query(
        self, dataset: str, key_condition: str, *, values: Wire,
        page_size: int | None = None, max_items: int | None = None, **options: Any,
    ) -> AsyncIterator[Item]:
        """Every item a Query matches, fetched page by page (never a whole partition at once)."""
        start: Item | None = options.pop("start", None)
        produced = 0
        while True:
            items, start = await self.query_page(
                dataset, key_condition, values=values, limit=page_size, start=start, **options
            )
            for item in items:
                yield item
                produced += 1
                if max_items is not None and produced >= max_items:
                    return
            if start is None:
                return

    async def scan_pages(
        self, dataset: str, *, segment: int = 0, segments: int = 1,
        start: Mapping[str, Any] | None = None, limit: int = 500,
        attributes: Sequence[str] | None = None,
    ) -> AsyncIterator[tuple[list[Item], Item | None]]:
        """A (parallel-segment) Scan, page by page with the key to resume from."""
        cursor = dict(start) if start else None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table(dataset), "Limit": limit,
            }
            if segments > 1:
                request.update(Segment=segment, TotalSegments=segments)
            if cursor:
                request["ExclusiveStartKey"] = to_wire(cursor)
            if attributes:
                request["ProjectionExpression"] = ", ".join(
                    f"#p{i}" for i in range(len(attributes))
                )
                request["ExpressionAttributeNames"] = {
                    f"#p{i}": a for i, a in enumerate(attributes)
                }
            response = await self.call("Scan", request)
            last = response.get("LastEvaluatedKey")
            cursor = from_wire(last) if last else None
            yield [from_wire(i) for i in response.get("Items", [])], cursor
            if cursor is None:
                return

def _add_expression(
    request: dict[str, Any], condition: str | None, names: Mapping[str, str] | None,
    values: Wire | None,
) -> None:
    if condition:
        request["ConditionExpression"] = condition
    if names:
        request["ExpressionAttributeNames"] = dict(names)
    if values:
        request["ExpressionAttributeValues"] = values
