"""An overloaded API process refuses extra reads at once instead of letting all run late.

Pass criterion: with FEED_API_MAX_IN_FLIGHT=2 and reads that take 0.5 s, of six
concurrent reads two are answered 200 and four get 503 `unavailable` with
Retry-After in well under the reads' own time; once they finish, reads are taken
again; the refusals are counted in feed_api_reads_shed_total.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from feed import metrics
from feed.api.app import create_app
from feed.reader import Reader
from feed.services import Services
from tests.api.conftest import AUTH


async def test_reads_past_the_in_flight_limit_are_refused_at_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow_profile(self: Reader, user_id: str) -> dict[str, Any]:
        await asyncio.sleep(0.5)
        return {"user_id": user_id, "handle": "@x", "lang": "en", "region": "ap-south-1",
                "followers": 0, "following": 0, "created_at": 1}

    monkeypatch.setattr(Reader, "profile", slow_profile)
    settings = services.settings.replace(api_max_in_flight=2, api_timeout=5.0)
    app = create_app(settings, services)
    shed_before = metrics.READS_SHED._value.get()
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=AUTH,
    ) as client:

        async def timed(i: int) -> tuple[int, float, httpx.Response]:
            await asyncio.sleep(0.02 * (i >= 2))  # the first two are in flight first
            started = time.perf_counter()
            response = await client.get(f"/v1/users/u{i}")
            return i, time.perf_counter() - started, response

        results = await asyncio.gather(*(timed(i) for i in range(6)))
        ok = [r for _, _, r in results if r.status_code == 200]
        refused = [(t, r) for _, t, r in results if r.status_code == 503]
        assert len(ok) == 2
        assert len(refused) == 4
        for took, response in refused:
            assert took < 0.25, f"a refusal took {took:.3f} s"
            assert response.json()["error"]["code"] == "unavailable"
            assert response.headers["Retry-After"] == "1"
        again = await client.get("/v1/users/u9")
        assert again.status_code == 200, "reads are taken again once the others finished"
    assert metrics.READS_SHED._value.get() - shed_before == 4
