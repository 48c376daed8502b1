"""``feed.recommend``: trending and recommended koos are fair to authors (pure functions)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from feed.models import Koo
from feed.recommend import (
    RECOMMENDED_PER_AUTHOR,
    TRENDING_PER_AUTHOR,
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
