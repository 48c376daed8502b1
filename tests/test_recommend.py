"""``feed.recommend`` (pure functions): who to follow, recommended koos and trending;
each is fair to authors and never offers what the reader already sees or shuts out."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.models import Koo
from feed.recommend import (
    RECOMMENDED_PER_AUTHOR,
    TRENDING_PER_AUTHOR,
    recommend_follows,
    recommend_koos,
    trending,
)

NOW = 1_780_000_000_000


def koo(i: int, author: str, likes: int = 0, age_minutes: int = 10) -> Koo:
    return Koo(koo_id=f"k{i:05d}", author_id=author, text="t", lang="hi",
               created_at=NOW - age_minutes * 60_000, likes=likes)


def test_one_prolific_author_cannot_fill_the_trending_list() -> None:
    """Before: a 500-koo batch by one author was the whole trending list."""
    flood = [koo(i, "flooder", likes=50) for i in range(500)]
    others = [koo(1000 + i, f"author{i}", likes=1) for i in range(5)]
    ranked = trending(flood + others, now_ms=NOW)
    by_id = {k.koo_id: k.author_id for k in flood + others}
    per_author = Counter(by_id[k] for k, _ in ranked)
    assert per_author["flooder"] == TRENDING_PER_AUTHOR
    assert all(per_author[f"author{i}"] == 1 for i in range(5))
    assert len(ranked) == TRENDING_PER_AUTHOR + 5
    # The flooder's best three, still first: the cap keeps order and scores.
    assert [by_id[k] for k, _ in ranked[:3]] == ["flooder"] * 3


def test_a_readers_recommended_koos_take_at_most_two_per_author() -> None:
    flood = [koo(i, "flooder", likes=50) for i in range(40)]
    others = [koo(1000 + i, f"author{i % 4}", likes=1) for i in range(40)]
    ranked = [(k, float(100 - i)) for i, k in enumerate(flood + others)]
    picks = recommend_koos("reader", trending_koos=ranked, following=(), excluded=(),
                           limit=10)
    by_id = {k.koo_id: k.author_id for k in flood + others}
    per_author = Counter(by_id[p.koo_id] for p in picks)
    assert max(per_author.values()) == RECOMMENDED_PER_AUTHOR
    assert len(picks) == 10  # five authors, two each
    score = {k.koo_id: s for k, s in ranked}
    assert [p.score for p in picks] == sorted((score[p.koo_id] for p in picks), reverse=True)


def test_with_few_authors_the_list_still_fills_best_authors_spread_first() -> None:
    """The cap spreads authors out; it does not leave slots empty when only one or two
    authors trend (the rest then come in score order)."""
    only = [koo(i, "solo", likes=10 - i) for i in range(6)]
    ranked = [(k, float(10 - i)) for i, k in enumerate(only)]
    picks = recommend_koos("reader", trending_koos=ranked, following=(), excluded=(),
                           limit=5)
    assert [p.koo_id for p in picks] == [k.koo_id for k in only[:5]]
    pair = [koo(i, "a" if i < 6 else "b", likes=1) for i in range(8)]
    ranked = [(k, float(10 - i)) for i, k in enumerate(pair)]
    picks = recommend_koos("reader", trending_koos=ranked, following=(), excluded=(),
                           limit=5)
    assert [p.koo_id for p in picks] == ["k00000", "k00001", "k00006", "k00007", "k00002"]


@settings(max_examples=200, deadline=None)
@given(
    authors=st.lists(st.sampled_from("abcdefgh"), min_size=0, max_size=80),
    likes=st.lists(st.integers(min_value=0, max_value=1_000), min_size=80, max_size=80),
    ages=st.lists(st.integers(min_value=0, max_value=2_000), min_size=80, max_size=80),
    cap=st.integers(min_value=1, max_value=5),
)
def test_trending_caps_every_author_and_keeps_the_best_in_order(
    authors: list[str], likes: list[int], ages: list[int], cap: int,
) -> None:
    koos = [koo(i, a, likes[i], ages[i]) for i, a in enumerate(authors)]
    ranked = trending(koos, now_ms=NOW, per_author=cap)
    uncapped = trending(koos, now_ms=NOW, per_author=len(koos) + 1)
    author_of = {k.koo_id: k.author_id for k in koos}
    counts = Counter(author_of[k] for k, _ in ranked)
    assert all(n <= cap for n in counts.values())
    # Every author keeps min(cap, their koos): nobody is dropped for another's flood.
    assert counts == Counter({a: min(cap, n) for a, n in Counter(authors).items()})
    # The capped list is the uncapped one with entries removed, order untouched.
    kept = {k for k, _ in ranked}
    assert ranked == [e for e in uncapped if e[0] in kept]
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


# --- who to follow ----------------------------------------------------------------------

users = st.sampled_from([f"u{i}" for i in range(12)])


@settings(max_examples=200, deadline=None)
@given(
    reader=users,
    excluded=st.sets(users, max_size=6),
    mutual=st.dictionaries(users, st.integers(min_value=-1, max_value=20), max_size=10),
    popular=st.lists(st.tuples(users, st.integers(min_value=0, max_value=10**6)),
                     max_size=8, unique_by=lambda p: p[0]),
    limit=st.integers(min_value=0, max_value=15),
)
def test_follow_picks_are_never_the_reader_or_excluded_and_come_best_first(
    reader: str, excluded: set[str], mutual: dict[str, int],
    popular: list[tuple[str, int]], limit: int,
) -> None:
    picks = recommend_follows(reader, excluded=excluded, mutual_counts=mutual,
                              popular=popular, lang="hi", limit=limit)
    chosen = [p.user_id for p in picks]
    assert len(chosen) == len(set(chosen)) <= limit
    assert reader not in chosen
    assert not excluded & set(chosen)
    # Only candidates with a reason: a followee of a followee, or popular with followers.
    followers = dict(popular)
    for p in picks:
        assert mutual.get(p.user_id, 0) > 0 or followers.get(p.user_id, 0) > 0
    # Best first, ties by id; and a cut list is the start of the whole one.
    assert [(-p.score, p.user_id) for p in picks] == sorted((-p.score, p.user_id)
                                                            for p in picks)
    whole = recommend_follows(reader, excluded=excluded, mutual_counts=mutual,
                              popular=popular, lang="hi", limit=100)
    assert picks == whole[:limit]


def test_friends_of_friends_outrank_by_how_many_followees_follow_them() -> None:
    picks = recommend_follows("me", excluded={"friend"}, mutual_counts={"two": 2, "one": 1},
                              popular=[], lang="hi", limit=10)
    assert [p.user_id for p in picks] == ["two", "one"]
    assert [p.reason for p in picks] == ["followed by 2 people you follow",
                                         "followed by 1 person you follow"]


def test_popularity_adds_to_a_mutual_and_alone_gives_its_own_reason() -> None:
    picks = recommend_follows("me", excluded=(), mutual_counts={"both": 1},
                              popular=[("both", 1000), ("star", 1000)], lang="kn", limit=10)
    by_id = {p.user_id: p for p in picks}
    assert by_id["both"].score > 1.0  # the mutual's weight plus the popularity boost
    assert by_id["both"].reason == "followed by 1 person you follow"
    assert by_id["star"].reason == "popular in kn"
    assert by_id["both"].score == by_id["star"].score + 1.0
    more = recommend_follows("me", excluded=(), mutual_counts={},
                             popular=[("big", 100_000), ("small", 10)], lang="kn", limit=10)
    assert [p.user_id for p in more] == ["big", "small"]


# --- recommended koos ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    authors=st.lists(st.sampled_from("abcdefr"), min_size=0, max_size=30),
    deleted=st.sets(st.integers(0, 29), max_size=5),
    following=st.sets(st.sampled_from("abcdefr"), max_size=3),
    excluded=st.sets(st.sampled_from("abcdefr"), max_size=2),
    limit=st.integers(min_value=0, max_value=20),
)
def test_recommended_koos_come_only_from_authors_the_reader_does_not_see(
    authors: list[str], deleted: set[int], following: set[str], excluded: set[str],
    limit: int,
) -> None:
    koos = [Koo(koo_id=f"k{i:05d}", author_id=a, text="t", lang="hi",
                created_at=NOW, deleted=i in deleted) for i, a in enumerate(authors)]
    ranked = [(k, float(100 - i)) for i, k in enumerate(koos)]
    picks = recommend_koos("r", trending_koos=ranked, following=following,
                           excluded=excluded, limit=limit)
    by_id = {k.koo_id: k for k in koos}
    assert len(picks) <= limit
    for p in picks:
        k = by_id[p.koo_id]
        assert not k.deleted
        assert k.author_id not in following | excluded | {"r"}
        assert p.reason == "trending in hi"
    eligible = [k for k in koos
                if not k.deleted and k.author_id not in following | excluded | {"r"}]
    assert len(picks) == min(limit, len(eligible))


# --- trending -----------------------------------------------------------------------------


def test_trending_score_is_engagement_over_age() -> None:
    fresh = Koo(koo_id="fresh", author_id="a", text="t", lang="hi", created_at=NOW,
                likes=1, rekoos=1, comments=1)
    old = Koo(koo_id="old", author_id="b", text="t", lang="hi",
              created_at=NOW - 10 * 3_600_000, likes=100)
    gone = Koo(koo_id="gone", author_id="c", text="t", lang="hi", created_at=NOW,
               likes=500, deleted=True)
    ranked = dict(trending([fresh, old, gone], now_ms=NOW))
    assert set(ranked) == {"fresh", "old"}
    assert ranked["fresh"] == pytest.approx((1 + 6) / 2 ** 1.5)
    assert ranked["old"] == pytest.approx((1 + 100) / 12 ** 1.5)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 500), st.integers(0, 47), st.integers(1, 48))
def test_a_trending_koo_rises_with_engagement_and_sinks_with_age(
    likes: int, hours: int, more_hours: int,
) -> None:
    def score(likes: int, hours: int) -> float:
        k = Koo(koo_id="k", author_id="a", text="t", lang="hi",
                created_at=NOW - hours * 3_600_000, likes=likes)
        return trending([k], now_ms=NOW)[0][1]

    assert score(likes + 1, hours) > score(likes, hours)
    assert score(likes, hours + more_hours) < score(likes, hours)
