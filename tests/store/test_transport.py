"""The data plane's transports against a strict stand-in endpoint: signatures, expiring
and wrong credentials, clock skew, and answers that are not what they should be."""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.credentials import AioRefreshableCredentials

from config.settings import Settings
from config.tables import USERS
from feed.errors import CredentialsRejected, RetriesExhausted, StorageUnavailable
from feed.store import Backoff, Dynamo, open_dynamo
from feed.store._credentials import CredentialSource
from feed.store._transport import DirectTransport
from tests.conftest import make_settings
from tests.store._strict_dynamo import REGION, Key, StrictDynamo, serve

CLIENTS = ["direct", "aioboto3"]


@pytest.fixture
async def strict() -> AsyncIterator[StrictDynamo]:
    async for state in serve(StrictDynamo()):
        yield state


def strict_settings(strict: StrictDynamo, client: str = "direct", **overrides: Any) -> Settings:
    return make_settings(strict.url, dynamodb_client=client, aws_region=REGION,
                         dynamodb_read_timeout=2.0, **overrides)


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch, strict: StrictDynamo) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASTRICTTEST01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "strict-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    strict.keys["AKIASTRICTTEST01"] = Key("strict-secret")
    return "AKIASTRICTTEST01"


@pytest.mark.parametrize("client", CLIENTS)
async def test_requests_are_signed_and_delivered_intact(
    strict: StrictDynamo, env_key: str, client: str,
) -> None:
    async with open_dynamo(strict_settings(strict, client)) as db:
        assert await db.get(USERS, {"user_id": "ü-ñ 🙂"}) is None
    assert strict.refused == []
    (seen,) = strict.seen
    assert seen["access_key"] == env_key
    assert seen["target"] == "DynamoDB_20120810.GetItem"
    assert seen["body"]["Key"] == {"user_id": {"S": "ü-ñ 🙂"}}


@pytest.mark.parametrize("client", CLIENTS)
async def test_wrong_credentials_fail_at_start_up_naming_their_source(
    strict: StrictDynamo, monkeypatch: pytest.MonkeyPatch, client: str,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONG99")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    async with open_dynamo(strict_settings(strict, client)) as db:
        with pytest.raises(CredentialsRejected) as caught:
            await db.check_credentials()
    message = str(caught.value)
    assert "credentials from env" in message
    assert "…NG99" in message
    assert "UnrecognizedClientException" in message
    assert "nope" not in message  # never the secret


async def test_a_refusal_that_is_not_about_credentials_passes_the_start_up_check(
    strict: StrictDynamo, env_key: str,
) -> None:
    strict.mode = "html_500"
    async with open_dynamo(strict_settings(strict)) as db:
        await db.check_credentials()


async def test_clock_skew_is_learnt_from_the_refusal_and_corrected(
    strict: StrictDynamo, env_key: str,
) -> None:
    strict.clock_offset = 3_600.0  # DynamoDB an hour ahead of us
    async with open_dynamo(strict_settings(strict, dynamodb_max_attempts=1)) as db:
        assert await db.get(USERS, {"user_id": "a"}) is None
        for _ in range(5):
            await db.get(USERS, {"user_id": "b"})
        transport = db.transport
        assert isinstance(transport, DirectTransport)
        assert abs(transport.clock_offset - 3_600.0) < 5
    assert strict.refused == ["InvalidSignatureException"]  # once, then never again
    assert len(strict.seen) == 6


async def test_credentials_that_expire_mid_run_are_refreshed_with_no_failed_request(
    strict: StrictDynamo,
) -> None:
    issued: list[str] = []

    async def issue() -> dict[str, str]:
        key = f"AKIAROTATING{len(issued):04d}"
        issued.append(key)
        expires = strict.now() + 2.0
        strict.keys[key] = Key(f"secret-{key}", token=f"token-{key}", expires=expires)
        return {
            "access_key": key, "secret_key": f"secret-{key}", "token": f"token-{key}",
            "expiry_time": datetime.datetime.fromtimestamp(expires, datetime.UTC).isoformat(),
        }

    refreshable = AioRefreshableCredentials.create_from_metadata(
        await issue(), refresh_using=issue, method="test-rotation")
    # botocore refreshes 15 (advisory) and 10 (mandatory) minutes ahead; these credentials
    # live 2 s, so the same windows scaled down.
    refreshable._advisory_refresh_timeout = 1.0  # type: ignore[attr-defined]  # botocore private
    refreshable._mandatory_refresh_timeout = 0.5  # type: ignore[attr-defined]  # botocore private
    source = CredentialSource(refreshable, "test-rotation")
    settings = strict_settings(strict, dynamodb_max_attempts=1)
    transport = DirectTransport(strict.url, REGION, source, connect_timeout=2,
                                read_timeout=2, pool_size=8)
    db = Dynamo(transport, settings, prefix=settings.table_prefix)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 6.0
        calls = 0
        while loop.time() < deadline:
            await asyncio.gather(*(db.get(USERS, {"user_id": f"u{i}"}) for i in range(4)))
            calls += 4
            await asyncio.sleep(0.02)
    finally:
        await transport.close()
    assert strict.refused == []
    assert len(strict.seen) == calls
    used = {seen["access_key"] for seen in strict.seen}
    assert len(used) >= 4, used  # each key lived 2 s of the 6


@pytest.mark.parametrize("client", CLIENTS)
async def test_retries_never_multiply_on_the_wire(
    strict: StrictDynamo, env_key: str, client: str,
) -> None:
    """Throttled for good: a single call is sent FEED_DYNAMODB_MAX_ATTEMPTS times, a batch
    chunk Backoff.attempts + 1 times, counted where they arrive (no client-side retries
    hidden underneath, on either client)."""
    strict.mode = "throttle"
    settings = strict_settings(strict, client, dynamodb_max_attempts=3)
    async with open_dynamo(settings) as db:
        db.backoff = Backoff(base=0.001, cap=0.002, attempts=4)
        with pytest.raises(StorageUnavailable):
            await db.get(USERS, {"user_id": "a"})
        assert len(strict.refused) == 3
        strict.refused.clear()
        with pytest.raises(RetriesExhausted):
            await db.batch_write(USERS, puts=[{"user_id": f"u{i}"} for i in range(25)])
        assert len(strict.refused) == 5


@pytest.mark.parametrize(("client", "mode"), [
    ("direct", "not_json"), ("direct", "truncated"), ("direct", "bad_crc"),
    ("direct", "html_500"), ("aioboto3", "truncated"), ("aioboto3", "html_500"),
    # Not on aioboto3: botocore reads a 200 that is not JSON as an empty answer (a GetItem
    # then finds nothing), and retries a CRC32 mismatch itself.
])
async def test_a_bad_answer_is_a_storage_error_never_a_crash(
    strict: StrictDynamo, env_key: str, mode: str, client: str,
) -> None:
    strict.mode = mode
    async with open_dynamo(strict_settings(strict, client, dynamodb_max_attempts=2)) as db:
        with pytest.raises(StorageUnavailable) as caught:
            await db.get(USERS, {"user_id": "a"})
        assert caught.value.code
        strict.mode = "ok"
        assert await db.get(USERS, {"user_id": "a"}) is None  # and the client still works


@pytest.mark.parametrize("command", [["worker", "--burst"], ["api", "--port", "0"]])
async def test_a_process_with_refused_credentials_stops_at_start_up_naming_them(
    strict: StrictDynamo, monkeypatch: pytest.MonkeyPatch, command: list[str],
) -> None:
    settings = strict_settings(strict)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAREFUSEDKEY42", "AWS_SECRET_ACCESS_KEY": "x",
           "FEED_DYNAMODB_ENDPOINT": strict.url, "FEED_AWS_REGION": REGION,
           "FEED_REDIS_URL": settings.redis_url, "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
           "FEED_TABLE_PREFIX": settings.table_prefix, "FEED_API_TOKENS": "test-token-123456",
           "FEED_WORKER_METRICS_PORT": "0", "FEED_LOG_JSON": "false"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "feed.cli", *command, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(child.communicate(), 60)
    text = (out + err).decode(errors="replace")
    assert child.returncode not in (0, None), text[-2000:]
    assert "credentials from env, key …EY42" in text, text[-2000:]
    assert "UnrecognizedClientException" in text
