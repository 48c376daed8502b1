"""How a data-plane request reaches DynamoDB: the interface, and the direct transport.

A transport sends one request (an operation name and its JSON body, already in
DynamoDB's wire format) and returns the decoded answer, or raises the project's
own error for it. It never retries: :class:`~feed.store._dynamo.Dynamo` is the
one retry layer. Two transports implement it:

- :class:`DirectTransport` (the default): one pooled aiohttp session, orjson bodies
  signed with SigV4. It costs the client what the wire costs.
- ``BotoTransport`` (feed.store._boto): aioboto3's client, the second choice.

Hooks see every request on either transport in the same shape, before it is sent
and after it is answered, and may answer it themselves: the fault tests use them
to inject throttling and unprocessed items.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson

from feed.errors import StorageError, StorageUnavailable, from_error_response
from feed.store._credentials import CredentialSource
from feed.store._sigv4 import Signer

__all__ = ["DirectTransport", "Hook", "Reply", "Transport", "error_from_reply"]

log = logging.getLogger(__name__)

# Error codes DynamoDB gives a request whose signing time is too far from its clock.
SKEW_CODES = frozenset({"InvalidSignatureException", "RequestTimeTooSkewed",
                        "RequestExpired", "SignatureDoesNotMatch"})
SKEW_WORDS = ("expired", "not yet current", "skew")


@dataclass(slots=True)
class Reply:
    """An answer as it came off the wire (or from a hook): status, body, headers."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


class Hook(Protocol):
    """Sees each request before it is sent and its answer after; for tests."""

    def before(self, operation: str, request: dict[str, Any],
               context: dict[str, Any]) -> Reply | None:
        """Return a Reply to answer the request without sending it; may edit ``request``."""

    def after(self, operation: str, request: dict[str, Any], response: dict[str, Any],
              context: dict[str, Any]) -> None:
        """Called with a successful answer, which it may edit."""


class Transport(Protocol):
    """Sends one data-plane request; no retries."""

    hooks: list[Hook]
    credentials: CredentialSource

    async def send(self, operation: str, request: dict[str, Any]) -> dict[str, Any]: ...

    async def close(self) -> None: ...


def run_before(hooks: list[Hook], operation: str, request: dict[str, Any],
               context: dict[str, Any]) -> Reply | None:
    for hook in list(hooks):
        reply = hook.before(operation, request, context)
        if reply is not None:
            return reply
    return None


def run_after(hooks: list[Hook], operation: str, request: dict[str, Any],
              response: dict[str, Any], context: dict[str, Any]) -> None:
    for hook in list(hooks):
        hook.after(operation, request, response, context)


def error_from_reply(operation: str, reply: Reply, credentials: str = "") -> StorageError:
    """The project's error for a non-2xx answer."""
    raw_type = str(reply.body.get("__type") or reply.headers.get("x-amzn-ErrorType", ""))
    code = raw_type.rsplit("#", 1)[-1].split(":", 1)[0]
    message = str(reply.body.get("message") or reply.body.get("Message") or "")
    if not code:
        text = message or f"HTTP {reply.status}"
        if reply.status >= 500 or reply.status == 429:
            return StorageUnavailable(f"{operation}: {text}", f"HTTP{reply.status}")
        return StorageError(f"{operation}: {text}", f"HTTP{reply.status}")
    reasons = reply.body.get("CancellationReasons")
    error = from_error_response(
        code, message,
        [str(r.get("Code", "None")) for r in reasons] if isinstance(reasons, list) else None,
        credentials=credentials,
    )
    if reply.status >= 500 and not isinstance(error, StorageUnavailable):
        return StorageUnavailable(f"{operation}: {code}: {message}", code)
    return error


class DirectTransport:
    """DynamoDB's JSON protocol over one pooled aiohttp session."""

    def __init__(
        self, endpoint: str, region: str, credentials: CredentialSource, *,
        connect_timeout: float, read_timeout: float, pool_size: int,
    ) -> None:
        parts = urlsplit(endpoint)
        default_port = 443 if parts.scheme == "https" else 80
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port and parts.port != default_port:
            host = f"{host}:{parts.port}"
        self.url = f"{parts.scheme}://{host}/"
        self.signer = Signer(host, region)
        self.credentials = credentials
        self.hooks: list[Hook] = []
        # Seconds to add to the local clock when signing: DynamoDB's clock minus ours,
        # learnt from a refused request's Date header.
        self.clock_offset = 0.0
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size, keepalive_timeout=30,
                                           enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                          sock_connect=connect_timeout,
                                          sock_read=read_timeout),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,
        )
        self._deadline = connect_timeout + read_timeout

    @classmethod
    def for_endpoint(
        cls, endpoint: str | None, region: str, credentials: CredentialSource, *,
        connect_timeout: float, read_timeout: float, pool_size: int,
    ) -> DirectTransport:
        """A transport for ``endpoint``, or AWS's endpoint for ``region`` when None."""
        url = endpoint or f"https://dynamodb.{region}.amazonaws.com"
        return cls(url, region, credentials, connect_timeout=connect_timeout,
                   read_timeout=read_timeout, pool_size=pool_size)

    async def close(self) -> None:
        await self.session.close()

    async def send(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {}
        reply = None
        if self.hooks:
            request = copy.deepcopy(request)  # hooks may edit it; a retry sends the original
            reply = run_before(self.hooks, operation, request, context)
        if reply is None:
            reply = await self._exchange(operation, request)
            if reply.status >= 400 and self._corrected_skew(reply):
                reply = await self._exchange(operation, request)
        if reply.status >= 400:
            raise error_from_reply(operation, reply, self.credentials.describe())
        if self.hooks:
            run_after(self.hooks, operation, request, reply.body, context)
        return reply.body

    async def _exchange(self, operation: str, request: dict[str, Any]) -> Reply:
        body = orjson.dumps(request)
        try:
            credentials = await self.credentials.current()
        except Exception as exc:
            raise StorageUnavailable(
                f"{operation}: could not refresh AWS credentials from "
                f"{self.credentials.describe()}: {exc}", "CredentialsRefresh") from exc
        headers = self.signer.headers(operation, body, credentials,
                                      time.time() + self.clock_offset)
        try:
            async with asyncio.timeout(self._deadline):
                async with self.session.post(self.url, data=body, headers=headers) as response:
                    raw = await response.read()
                    status = response.status
                    response_headers = response.headers
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"{operation}: {type(exc).__name__}: {exc}",
                                     type(exc).__name__) from exc
        return Reply(status, _decode(operation, status, raw, response_headers),
                     response_headers)

    def _corrected_skew(self, reply: Reply) -> bool:
        """Whether a refusal was for the signing time, with DynamoDB's clock learnt from
        its Date header; the request is then worth one more try."""
        code = str(reply.body.get("__type", "")).rsplit("#", 1)[-1]
        message = str(reply.body.get("message") or reply.body.get("Message") or "").lower()
        if code not in SKEW_CODES or not any(w in message for w in SKEW_WORDS):
            return False
        date = reply.headers.get("Date")
        if not date:
            return False
        try:
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return False
        offset = server - time.time()
        if abs(offset - self.clock_offset) < 1.0:
            return False
        log.warning("DynamoDB's clock differs from ours by %.1f s: signing with its time",
                    offset)
        self.clock_offset = offset
        return True


def _decode(operation: str, status: int, raw: bytes,
            headers: Mapping[str, str]) -> dict[str, Any]:
    """The JSON body; a truncated, corrupted or non-JSON answer is a storage error."""
    expected = headers.get("x-amz-crc32")
    if expected is not None and expected.isdigit() and int(expected) != zlib.crc32(raw):
        raise StorageUnavailable(
            f"{operation}: the answer's CRC32 does not match its body ({len(raw)} bytes)",
            "CRC32Mismatch")
    if not raw:
        if status >= 400:
            return {}
        raise StorageUnavailable(f"{operation}: empty answer with HTTP {status}", "BadAnswer")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if status >= 400:
            return {"message": raw[:200].decode(errors="replace")}
        raise StorageUnavailable(
            f"{operation}: the answer is not JSON ({len(raw)} bytes, HTTP {status}): {exc}",
            "BadAnswer") from exc
    if not isinstance(body, dict):
        raise StorageUnavailable(f"{operation}: the answer is not a JSON object", "BadAnswer")
    return body
