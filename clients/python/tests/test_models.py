"""Parsing the documented answers into the dataclasses, and refusing answers of another
shape."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from client_fakes import koo_json

from koo_feed_client import (
    ErrorDetail,
    Explain,
    FeedItem,
    FollowRecommendation,
    Health,
    Koo,
    KooRecommendation,
    Page,
    Problem,
    Reaction,
    User,
)


def test_koo_parses_every_field() -> None:
    koo = Koo.from_json(koo_json(reply_to="k-0", rekoo_of=None))
    assert koo == Koo(koo_id="tour-koo", author_id="user0042", text="namaste", lang="hi",
                      created_at=1764150000000, hashtags=("koo",), reply_to="k-0",
                      rekoo_of=None, likes=1, rekoos=0, comments=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        koo.likes = 2  # type: ignore[misc]


def test_unknown_fields_are_ignored_and_null_hashtags_are_none() -> None:
    koo = Koo.from_json(koo_json(hashtags=None, added_later={"x": 1}))
    assert koo.hashtags == ()


@pytest.mark.parametrize(("key", "value"), [
    ("likes", "1"), ("likes", True), ("created_at", 1.5), ("text", None),
    ("hashtags", ["a", 1]), ("reply_to", 7),
])
def test_a_field_of_the_wrong_type_is_refused(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        Koo.from_json(koo_json(**{key: value}))


def test_a_missing_field_is_refused() -> None:
    data = koo_json()
    del data["author_id"]
    with pytest.raises(ValueError, match="author_id"):
        Koo.from_json(data)


def test_feed_page_with_explain() -> None:
    page = Page.from_json({
        "items": [koo_json(score=1.479182, reason="following",
                           explain={"recency": 0.890007, "engagement": 0.242602,
                                    "affinity": 0.346574, "diversity": -0.0}),
                  koo_json("k-2", score=1, reason="self")],
        "next_cursor": "abc",
    }, FeedItem.from_json)
    first, second = page.items
    assert page.next_cursor == "abc"
    assert isinstance(first, Koo)  # a feed item is a koo, plus why it is there
    assert (first.koo_id, first.score, first.reason) == ("tour-koo", 1.479182, "following")
    assert first.explain == Explain(recency=0.890007, engagement=0.242602,
                                    affinity=0.346574, diversity=-0.0)
    assert second.explain is None
    assert isinstance(second.score, float)


def test_the_last_page_has_no_cursor() -> None:
    page = Page.from_json({"items": [], "next_cursor": None}, Reaction.from_json)
    assert page == Page(items=(), next_cursor=None)


def test_a_page_without_items_is_refused() -> None:
    with pytest.raises(ValueError, match="items"):
        Page.from_json({"next_cursor": None}, Reaction.from_json)


def test_user_reaction_and_recommendations() -> None:
    assert User.from_json({"user_id": "user0042", "handle": "ravi", "lang": "hi",
                           "region": "ap-south-1", "followers": 1, "following": 1,
                           "created_at": 1764149000000}) == User(
        user_id="user0042", handle="ravi", lang="hi", region="ap-south-1", followers=1,
        following=1, created_at=1764149000000)
    assert Reaction.from_json({"user_id": "user0010", "kind": "like",
                               "created_at": 1764150060000}) == Reaction(
        user_id="user0010", kind="like", created_at=1764150060000)
    assert FollowRecommendation.from_json(
        {"user_id": "user0077", "score": 1.0, "reason": "followed by 1 person you follow"}
    ) == FollowRecommendation("user0077", 1.0, "followed by 1 person you follow")
    pick = KooRecommendation.from_json(koo_json("k-chai", score=0.383226,
                                                reason="trending in hi"))
    assert (pick.koo_id, pick.score, pick.reason) == ("k-chai", 0.383226, "trending in hi")


def test_health() -> None:
    assert Health.from_json({"status": "ok"}).ok
    not_ready = Health.from_json({"status": "unavailable", "checks": {
        "cache_redis": True, "queue_redis": True, "dynamodb": False}})
    assert not not_ready.ok
    assert not_ready.checks["dynamodb"] is False
    with pytest.raises(ValueError, match="checks"):
        Health.from_json({"status": "ok", "checks": {"dynamodb": "yes"}})


def test_error_details_of_a_bad_event() -> None:
    detail = ErrorDetail.from_json({
        "index": 0, "event_id": "e-1", "type": "user_followed", "field": "followee_id",
        "message": "events[0] (event_id 'e-1'): followee_id must differ from follower_id",
        "problems": [{"field": "followee_id", "message": "must differ from follower_id"}],
    })
    assert (detail.index, detail.event_id, detail.type, detail.field) == (
        0, "e-1", "user_followed", "followee_id")
    assert detail.problems == (Problem("followee_id", "must differ from follower_id"),)
    param = ErrorDetail.from_json({"field": "limit", "message": "limit must be ..."})
    assert (param.field, param.index, param.problems) == ("limit", None, ())
