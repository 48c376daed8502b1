"""aioboto3 behind the transport interface: the control plane, and a second data plane.

Tables, indexes, TTL and backups are rare calls whose shapes botocore knows best,
so they always go through aioboto3. With ``FEED_DYNAMODB_CLIENT=aioboto3`` the data
plane does too. botocore's own retries are switched off either way: the one retry
layer is :class:`~feed.store._dynamo.Dynamo`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from config.settings import Settings
from feed.errors import StorageError, StorageUnavailable, from_client_error
from feed.store._credentials import CredentialSource
from feed.store._transport import Hook, error_from_reply, run_after, run_before

__all__ = ["BotoTransport", "ControlPlane", "open_boto_client"]

# The data plane's operations by their wire names, as botocore's methods.
METHODS = {
    "GetItem": "get_item", "PutItem": "put_item", "UpdateItem": "update_item",
    "DeleteItem": "delete_item", "Query": "query", "Scan": "scan",
    "BatchGetItem": "batch_get_item", "BatchWriteItem": "batch_write_item",
    "TransactWriteItems": "transact_write_items", "TransactGetItems": "transact_get_items",
}


@contextlib.asynccontextmanager
async def open_boto_client(
    settings: Settings, endpoint: str | None, region: str, credentials: CredentialSource,
) -> Any:
    """An aioboto3 DynamoDB client with botocore's retries off and the settings' timeouts."""
    session = aioboto3.Session(region_name=region, **credentials.botocore_kwargs())
    config = AioConfig(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=settings.dynamodb_connect_timeout,
        read_timeout=settings.dynamodb_read_timeout,
        max_pool_connections=max(64, settings.dynamodb_concurrency * 4),
        tcp_keepalive=True,
    )
    async with session.client("dynamodb", endpoint_url=endpoint, config=config) as client:
        yield client


async def call_boto(client: Any, method: str, request: dict[str, Any],
                    credentials: str = "") -> dict[str, Any]:
    """One botocore call with its errors mapped to the project's types."""
    try:
        response: dict[str, Any] = await getattr(client, method)(**request)
    except ClientError as exc:
        raise from_client_error(exc, credentials=credentials) from exc
    except ParamValidationError as exc:
        raise StorageError(f"{method}: {exc}", "ValidationException") from exc
    except (TimeoutError, BotoCoreError, OSError) as exc:
        raise StorageUnavailable(f"{method}: {exc}", type(exc).__name__) from exc
    return response


class BotoTransport:
    """The data plane through an aioboto3 client (opened and closed by the caller)."""

    def __init__(self, client: Any, credentials: CredentialSource) -> None:
        self.client = client
        self.credentials = credentials
        self.hooks: list[Hook] = []

    async def close(self) -> None:
        """The client belongs to whoever opened it."""

    async def send(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {}
        reply = None
        if self.hooks:
            request = copy.deepcopy(request)  # hooks may edit it; a retry sends the original
            reply = run_before(self.hooks, operation, request, context)
        if reply is not None:
            if reply.status >= 400:
                raise error_from_reply(operation, reply, self.credentials.describe())
            return reply.body
        response = await call_boto(self.client, METHODS[operation], request,
                                   self.credentials.describe())
        response.pop("ResponseMetadata", None)
        if self.hooks:
            run_after(self.hooks, operation, request, response, context)
        return response


class ControlPlane:
    """The aioboto3 client for control-plane calls (tables, TTL), opened on first use:
    a process that never creates a table never loads botocore's service model."""

    def __init__(self, settings: Settings, endpoint: str | None, region: str,
                 credentials: CredentialSource, stack: contextlib.AsyncExitStack) -> None:
        self.settings, self.endpoint, self.region = settings, endpoint, region
        self.credentials = credentials
        self._stack = stack
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(open_boto_client(
                    self.settings, self.endpoint, self.region, self.credentials))
        return self._client
