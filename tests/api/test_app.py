from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from feed.api.app import create_app
from feed.services import Services
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, signup

TOKEN = "test-token-123456"


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services.settings, services)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as c:
            yield c


async def test_feed_over_http(services: Services, client: httpx.AsyncClient) -> None:
    author, reader = uid(), uid()
    k1, k2 = uid("k"), uid("k")
    await apply_all(services, signup(author), signup(reader), follow(reader, author),
                    koo(k1, author), koo(k2, author))
    r = await client.get(f"/v1/users/{reader}/feed", params={"explain": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    # Other tests' koos in the same language may be mixed in as recommendations.
    assert [i["koo_id"] for i in body["items"] if i["reason"] != "recommended"] == [k2, k1]
    assert body["items"][0]["reason"] == "following"
    assert body["next_cursor"] is None
    assert set(body["items"][0]["explain"]) == {"recency", "engagement", "affinity", "diversity"}
    r = await client.get(f"/v1/users/{reader}/feed", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = await client.get("/v1/users/a:b/feed")
    assert r.status_code == 422
    r = await client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
