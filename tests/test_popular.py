"""Popular creators per language: computed from DynamoDB by a job, rebuilt after a loss."""

from __future__ import annotations

from feed import keys
from feed.popular import refresh_popular_authors
from feed.reader import Reader
from feed.services import Services
from tests.conftest import uid
from tests.helpers import apply_all, drain, follow, signup

LANG = "qp"  # a language no other test uses: the tables are shared by the session


async def creators(services: Services) -> tuple[str, str, str, str]:
    """Three creators in LANG with 3, 2 and 0 followers, and one in another language with
    5; returns (top, second, unfollowed, other language)."""
    top, second, nobody, foreign = uid("top"), uid("second"), uid("nobody"), uid("foreign")
    fans = [uid("fan") for _ in range(5)]
    await apply_all(
        services,
        signup(top, lang=LANG), signup(second, lang=LANG), signup(nobody, lang=LANG),
        signup(foreign, lang="en"), *(signup(f, lang="en") for f in fans),
        *(follow(f, top) for f in fans[:3]), *(follow(f, second) for f in fans[:2]),
        *(follow(f, foreign) for f in fans),
    )
    return top, second, nobody, foreign


async def test_the_job_ranks_each_language_s_creators_by_followers(services: Services) -> None:
    top, second, nobody, foreign = await creators(services)
    sizes = await refresh_popular_authors(services.stores, services.cache)
    assert sizes[LANG] >= 2
    popular = await services.cache.popular_authors(LANG, 1000)
    assert popular is not None
    ranked = [user for user, _ in popular]
    assert ranked.index(top) < ranked.index(second)
    assert dict(popular)[top] == 3
    assert nobody not in ranked  # no followers: nobody to recommend
    assert foreign not in ranked  # another language's list


async def test_who_to_follow_draws_on_them_outside_the_demo(services: Services) -> None:
    top, second, _, _ = await creators(services)
    newcomer = uid("new")
    await apply_all(services, signup(newcomer, lang=LANG))
    await refresh_popular_authors(services.stores, services.cache)
    picks = await Reader(services.manager).recommended_follows(newcomer, limit=1000)
    reasons = {p.user_id: p.reason for p in picks}
    assert reasons[top] == f"popular in {LANG}"
    assert second in reasons


async def test_a_lost_list_is_rebuilt_by_the_job_a_read_enqueues(services: Services) -> None:
    top, _, _, _ = await creators(services)
    newcomer = uid("new")
    await apply_all(services, signup(newcomer, lang=LANG))
    await refresh_popular_authors(services.stores, services.cache)
    await services.cache.redis.delete(keys.popular_authors(LANG))  # the cache lost it
    assert await services.cache.popular_authors(LANG, 10) is None
    await Reader(services.manager).recommended_follows(newcomer, limit=10)
    await drain(services)  # the refresh the read enqueued
    popular = await services.cache.popular_authors(LANG, 1000)
    assert popular is not None
    assert top in dict(popular)
