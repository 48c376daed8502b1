"""Failed authentication is limited per client address (FEED_AUTH_FAILURES_PER_MINUTE):
past the bucket, 429 ``rate_limited`` with Retry-After, shared by API processes through
the cache Redis, counted in ``feed_api_auth_failures_total``, and failing open (401)
when that Redis does not answer in time."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from feed import keys
from feed.api.app import create_app
from feed.api.auth import FAILURE_LIMIT_TIMEOUT_SECONDS, client_address
from feed.api.ratelimit import TokenBuckets
from feed.errors import StorageUnavailable
from feed.services import Services
from tests.api.conftest import AUTH, assert_error
from tests.conftest import uid

pytestmark = pytest.mark.timeout(60)

WRONG = {"Authorization": "Bearer not-the-token-000"}
HERE = ("10.0.0.1", 40000)
ELSEWHERE = ("10.0.0.2", 40000)


def app_with(services: Services, per_minute: int) -> Starlette:
    return create_app(services.settings.replace(auth_failures_per_minute=per_minute), services)


@contextlib.asynccontextmanager
async def client_of(app: Starlette, address: tuple[str, int] = HERE
                    ) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=address)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    async with app.router.lifespan_context(app):
        yield app


def counted(answer: str) -> float:
    return REGISTRY.get_sample_value("feed_api_auth_failures_total", {"answer": answer}) or 0.0


async def statuses(client: httpx.AsyncClient, n: int, headers: dict[str, str]) -> list[int]:
    path = f"/v1/users/{uid()}"
    return [(await client.get(path, headers=headers)).status_code for _ in range(n)]


async def test_wrong_tokens_past_the_limit_are_429_with_retry_after(
    services: Services,
) -> None:
    """Before: 1,000 wrong tokens at 321/s were all answered 401."""
    before = {a: counted(a) for a in ("unauthorized", "rate_limited")}
    async with running(app_with(services, 10)) as app, client_of(app) as client:
        answers = [await client.get(f"/v1/users/{uid()}", headers=WRONG) for _ in range(40)]
    assert [r.status_code for r in answers] == [401] * 10 + [429] * 30
    for r in answers[10:]:
        err = assert_error(r, 429, "rate_limited")
        assert "address" in err["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 6  # one failure per 6 s refills
    assert counted("unauthorized") - before["unauthorized"] == 10
    assert counted("rate_limited") - before["rate_limited"] == 30


async def test_a_missing_token_counts_as_a_failure(services: Services) -> None:
    async with running(app_with(services, 3)) as app, client_of(app) as client:
        assert await statuses(client, 5, {}) == [401, 401, 401, 429, 429]


async def test_an_address_over_the_limit_is_refused_even_with_the_valid_token(
    services: Services,
) -> None:
    """Were only wrong tokens refused, a guess that hits (200) would still stand out from
    the misses (429) and guessing would go on at full speed: the address is refused until
    its bucket refills. Other addresses are not affected."""
    async with (running(app_with(services, 5)) as app, client_of(app, HERE) as here,
                client_of(app, ELSEWHERE) as elsewhere):
        assert await statuses(here, 6, WRONG) == [401] * 5 + [429]
        assert await statuses(here, 2, AUTH) == [429, 429]
        assert await statuses(elsewhere, 2, AUTH) == [404, 404]  # past auth
        assert await statuses(elsewhere, 1, WRONG) == [401]


async def test_the_limit_is_shared_by_api_processes(services: Services) -> None:
    """Two apps stand in for two `feed api` processes: failures counted by one are
    refused by the other, at its first failure there."""
    async with (running(app_with(services, 5)) as one, running(app_with(services, 5)) as two,
                client_of(one) as first, client_of(two) as second):
        assert await statuses(first, 5, WRONG) == [401] * 5
        assert await statuses(second, 1, AUTH) == [404]  # not yet known there
        assert await statuses(second, 2, WRONG) == [429, 429]
        assert await statuses(second, 1, AUTH) == [429]


async def test_an_address_is_served_again_after_retry_after(services: Services) -> None:
    async with running(app_with(services, 120)) as app, client_of(app) as client:
        answers: list[httpx.Response] = []
        while len(answers) < 200 and (not answers or answers[-1].status_code == 401):
            answers.append(await client.get(f"/v1/users/{uid()}", headers=WRONG))
        # 120 at once, and one more per 0.5 s while they ran
        assert answers[-1].status_code == 429
        assert len(answers) > 120
        wait = int(answers[-1].headers["retry-after"])
        assert wait == 1  # a failure refills every 0.5 s
        await asyncio.sleep(wait)
        assert await statuses(client, 1, AUTH) == [404]
        assert await statuses(client, 1, WRONG) == [401]


async def test_ipv6_addresses_of_one_64_share_a_bucket(services: Services) -> None:
    async with running(app_with(services, 2)) as app:
        for n, host in enumerate(("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ff::9")):
            async with client_of(app, (host, 1)) as client:
                assert await statuses(client, 1, WRONG) == ([401] if n < 2 else [429])
        async with client_of(app, ("2001:db8:1:3::1", 1)) as client:
            assert await statuses(client, 1, WRONG) == [401]


async def test_zero_turns_the_limit_off(services: Services) -> None:
    async with running(app_with(services, 0)) as app, client_of(app) as client:
        assert await statuses(client, 50, WRONG) == [401] * 50
    assert await services.cache.redis.exists(keys.auth_failures(HERE[0])) == 0


async def test_the_limit_is_on_by_default(services: Services) -> None:
    assert services.settings.auth_failures_per_minute == 30
    async with running(create_app(services.settings, services)) as app, client_of(app) as c:
        assert await statuses(c, 31, WRONG) == [401] * 30 + [429]
    assert await services.cache.redis.exists(keys.auth_failures(HERE[0])) == 1


@pytest.mark.parametrize("failure", ["hangs", "refuses"])
async def test_an_unreachable_redis_fails_open_within_a_short_bound(
    services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    """Pass: with the cache Redis hanging or refusing, failures are still answered 401,
    each within the limiter's bound (plus slack), and the app logs why."""
    async def hang(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        # What the cache makes of a refused connection.
        raise StorageUnavailable("redis: Connection refused", "ConnectionError")

    monkeypatch.setattr(TokenBuckets, "take", hang if failure == "hangs" else refuse)
    caplog.set_level(logging.WARNING, logger="feed.api.auth")
    async with running(app_with(services, 1)) as app, client_of(app) as client:
        for _ in range(3):
            started = time.monotonic()
            r = await client.get(f"/v1/users/{uid()}", headers=WRONG)
            assert_error(r, 401, "unauthorized")
            assert time.monotonic() - started < FAILURE_LIMIT_TIMEOUT_SECONDS + 0.5
        assert await statuses(client, 1, AUTH) == [404]
    assert any("limiter unavailable" in r.getMessage() for r in caplog.records)


# --- the client's address (pure) ------------------------------------------------------------


@pytest.mark.parametrize(("client", "address"), [
    (("192.0.2.7", 5000), "192.0.2.7"),
    (("::ffff:192.0.2.7", 5000), "192.0.2.7"),
    (("2001:db8:1:2:3:4:5:6", 1), "2001:db8:1:2::/64"),
    (("2001:DB8:1:2::9", 1), "2001:db8:1:2::/64"),
    (("testclient", 50000), "testclient"),
    (None, "unknown"),
])
def test_client_address(client: tuple[str, int] | None, address: str) -> None:
    assert client_address({"type": "http", "client": client}) == address


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=6), st.integers(0, 2**64 - 1))
def test_every_address_of_one_ipv6_64_is_one_client(ip: ipaddress.IPv6Address, low: int
                                                    ) -> None:
    other = ipaddress.IPv6Address((int(ip) >> 64 << 64) | low)
    scope = {"type": "http", "client": (str(ip), 1)}
    if ip.ipv4_mapped is None and other.ipv4_mapped is None:
        assert client_address(scope) == client_address({"type": "http",
                                                        "client": (str(other), 1)})
