from __future__ import annotations

from feed.services import Services
from tests.conftest import uid
from tests.helpers import apply_all, follow, koo, signup


async def test_koo_reaches_followers_and_author(services: Services) -> None:
    author, reader = uid(), uid()
    k = uid("k")
    await apply_all(services, signup(author), signup(reader), follow(reader, author),
                    koo(k, author))
    rows, _ = await services.stores.timelines.page(reader, limit=10)
    assert [e.koo_id for e in rows] == [k]
    own, _ = await services.stores.timelines.page(author, limit=10)
    assert [e.koo_id for e in own] == [k]
    user = await services.stores.users.get(author)
    assert user is not None
    assert user.followers == 1
