"""Unit and property tests of feed/ranking.py: how each weight moves the order, what the
explanation holds, and when a newer koo is promised to rank higher. Pure, no I/O."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from config.settings import RankWeights
from feed.models import Koo
from feed.ranking import COMPONENTS, Ranked, engagement_of, interleave, rank, score_koo

NOW = 1_780_000_000_000
MINUTE = 60_000
HOUR = 60 * MINUTE
W = RankWeights()


def koo(koo_id: str, author: str, *, age_ms: int = 0, likes: int = 0, rekoos: int = 0,
        comments: int = 0) -> Koo:
    return Koo(koo_id=koo_id, author_id=author, text="t", lang="hi", created_at=NOW - age_ms,
               likes=likes, rekoos=rekoos, comments=comments)


def order(ranked: Sequence[Ranked]) -> list[str]:
    return [r.koo.koo_id for r in ranked]


def ranked_page(koos: Sequence[Koo], affinity: Mapping[str, float] | None = None,
                weights: RankWeights = W) -> list[Ranked]:
    return rank([(k, "following") for k in koos], now_ms=NOW, affinity=affinity or {},
                weights=weights)


def newer_in_page(page: Sequence[Koo], k: Koo) -> int:
    """What the diversity component counts, computed apart from the module."""
    return sum(1 for o in page if o.author_id == k.author_id
               and (o.created_at, o.koo_id) > (k.created_at, k.koo_id))


# --- strategies ---------------------------------------------------------------------------

AUTHORS = ("a", "b", "c", "d")
weight = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)
weights_st = st.builds(
    RankWeights, recency=weight, engagement=weight, affinity=weight, diversity=weight,
    half_life_hours=st.floats(min_value=0.25, max_value=72.0),
)
# Few distinct values, so pages are full of equal engagement, affinity, times and authors.
affinity_st = st.dictionaries(st.sampled_from(AUTHORS),
                              st.sampled_from([0.0, 1.0, 2.0, 7.5]), max_size=len(AUTHORS))


@st.composite
def pages(draw: st.DrawFn, *, grid_ms: int = 1, max_size: int = 12) -> list[Koo]:
    """Koos with distinct ids; ages on a grid of ``grid_ms`` (negative: from the future)."""
    n = draw(st.integers(min_value=0, max_value=max_size))
    out = []
    for i in range(n):
        out.append(koo(
            f"k{draw(st.integers(0, 99)):02d}x{i}", draw(st.sampled_from(AUTHORS)),
            age_ms=grid_ms * draw(st.integers(min_value=-2, max_value=300)),
            likes=draw(st.integers(0, 3)), rekoos=draw(st.integers(0, 1)),
            comments=draw(st.integers(0, 1)),
        ))
    return out


# --- the explanation ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(pages(grid_ms=MINUTE), affinity_st, weights_st)
def test_the_components_are_the_documented_ones_and_add_up_to_the_score(
    page: list[Koo], affinity: dict[str, float], weights: RankWeights,
) -> None:
    ranked = ranked_page(page, affinity, weights)
    assert sorted(order(ranked)) == sorted(k.koo_id for k in page)
    for r in ranked:
        assert tuple(r.explain) == COMPONENTS
        assert math.fsum(r.explain.values()) == pytest.approx(r.score, rel=1e-12, abs=1e-12)
        k = r.koo
        age_hours = max(0.0, (NOW - k.created_at) / HOUR)
        assert r.explain["recency"] == pytest.approx(
            weights.recency * 0.5 ** (age_hours / weights.half_life_hours))
        assert r.explain["engagement"] == pytest.approx(
            weights.engagement * math.log1p(k.likes + 2 * k.rekoos + 3 * k.comments))
        assert r.explain["affinity"] == pytest.approx(
            weights.affinity * math.log1p(affinity.get(k.author_id, 0.0)))
        assert r.explain["diversity"] == pytest.approx(
            -weights.diversity * newer_in_page(page, k))
        assert r.reason == "following"


def test_engagement_counts_a_comment_over_a_rekoo_over_a_like() -> None:
    assert engagement_of(koo("k", "a", likes=1)) == 1
    assert engagement_of(koo("k", "a", rekoos=1)) == 2
    assert engagement_of(koo("k", "a", comments=1)) == 3
    assert engagement_of(koo("k", "a", likes=4, rekoos=2, comments=1)) == 11


def test_a_negative_affinity_counts_as_none() -> None:
    parts = score_koo(koo("k", "a"), now_ms=NOW, affinity=-3.0, repeats=0, weights=W)
    assert parts["affinity"] == 0.0


# --- recency ------------------------------------------------------------------------------


@pytest.mark.parametrize("half_life", [1.0, 6.0, 24.0])
@pytest.mark.parametrize("periods", [0, 1, 2, 5])
def test_recency_halves_every_half_life(half_life: float, periods: int) -> None:
    weights = RankWeights(recency=2.0, half_life_hours=half_life)
    age = round(periods * half_life * HOUR)
    parts = score_koo(koo("k", "a", age_ms=age), now_ms=NOW, affinity=0.0, repeats=0,
                      weights=weights)
    assert parts["recency"] == pytest.approx(2.0 * 0.5 ** periods)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=30 * 24 * HOUR),
       st.floats(min_value=0.25, max_value=72.0), st.floats(min_value=0.01, max_value=5.0))
def test_one_more_half_life_halves_the_recency(age: int, half_life: float, w: float) -> None:
    weights = RankWeights(recency=w, half_life_hours=half_life)

    def recency(age_ms: float) -> float:
        k = koo("k", "a", age_ms=round(age_ms))
        return score_koo(k, now_ms=NOW, affinity=0.0, repeats=0, weights=weights)["recency"]

    assume(age / HOUR / half_life < 1000)  # beyond, 0.5 ** n underflows towards zero
    now = recency(age)
    assert 0 < now <= w
    assert recency(age + half_life * HOUR) == pytest.approx(now / 2, rel=1e-6)


def test_a_koo_from_the_future_gets_the_full_recency_not_more() -> None:
    parts = score_koo(koo("k", "a", age_ms=-HOUR), now_ms=NOW, affinity=0.0, repeats=0,
                      weights=W)
    assert parts["recency"] == W.recency


# --- each weight moves the order its way ------------------------------------------------------

# Weights on a coarse grid and ages on a minute grid: every raise moves a margin by far
# more than floating-point rounding, so "stays ahead" is exact.
grid_weight = st.integers(min_value=0, max_value=60).map(lambda n: n * 0.05)


def positions(ranked: Sequence[Ranked]) -> dict[str, int]:
    return {r.koo.koo_id: i for i, r in enumerate(ranked)}


def check_raising_lifts(page: list[Koo], affinity: dict[str, float], low: RankWeights,
                        high: RankWeights, favoured: dict[str, float]) -> None:
    """Between any two koos of ``page``, the one with the larger ``favoured`` value that
    ranks above the other under ``low`` still does under ``high``."""
    before = positions(ranked_page(page, affinity, low))
    after = positions(ranked_page(page, affinity, high))
    for a in page:
        for b in page:
            if favoured[a.koo_id] > favoured[b.koo_id] and before[a.koo_id] < before[b.koo_id]:
                assert after[a.koo_id] < after[b.koo_id], (a, b)


@settings(max_examples=150, deadline=None)
@given(pages(grid_ms=MINUTE), affinity_st, weights_st, grid_weight, grid_weight)
def test_raising_the_engagement_weight_lifts_the_more_engaged_koo(
    page: list[Koo], affinity: dict[str, float], base: RankWeights, w1: float, w2: float,
) -> None:
    low, high = sorted((w1, w2))
    if low == high:
        return
    check_raising_lifts(page, affinity, _with(base, engagement=low),
                        _with(base, engagement=high),
                        {k.koo_id: float(engagement_of(k)) for k in page})


@settings(max_examples=150, deadline=None)
@given(pages(grid_ms=MINUTE), affinity_st, weights_st, grid_weight, grid_weight)
def test_raising_the_affinity_weight_lifts_the_koo_of_the_author_reacted_to_more(
    page: list[Koo], affinity: dict[str, float], base: RankWeights, w1: float, w2: float,
) -> None:
    low, high = sorted((w1, w2))
    if low == high:
        return
    check_raising_lifts(page, affinity, _with(base, affinity=low), _with(base, affinity=high),
                        {k.koo_id: affinity.get(k.author_id, 0.0) for k in page})


@settings(max_examples=150, deadline=None)
@given(pages(grid_ms=10 * MINUTE), affinity_st, weights_st, grid_weight, grid_weight)
def test_raising_the_recency_weight_lifts_the_newer_koo(
    page: list[Koo], affinity: dict[str, float], base: RankWeights, w1: float, w2: float,
) -> None:
    low, high = sorted((w1, w2))
    if low == high:
        return
    base = _with(base, half_life_hours=6.0)
    # Koos from the future all get the full recency: they are equally recent.
    check_raising_lifts(page, affinity, _with(base, recency=low), _with(base, recency=high),
                        {k.koo_id: float(min(k.created_at, NOW)) for k in page})


@settings(max_examples=150, deadline=None)
@given(pages(grid_ms=MINUTE), affinity_st, weights_st, grid_weight, grid_weight)
def test_raising_the_diversity_weight_lifts_the_koo_of_the_less_repeated_author(
    page: list[Koo], affinity: dict[str, float], base: RankWeights, w1: float, w2: float,
) -> None:
    low, high = sorted((w1, w2))
    if low == high:
        return
    check_raising_lifts(page, affinity, _with(base, diversity=low), _with(base, diversity=high),
                        {k.koo_id: -float(newer_in_page(page, k)) for k in page})


def _with(weights: RankWeights, **changes: float) -> RankWeights:
    return dataclasses.replace(weights, **changes)


def test_examples_of_each_weight() -> None:
    newer = koo("newer", "a", age_ms=10 * MINUTE)
    liked = koo("liked", "b", age_ms=3 * HOUR, likes=20, comments=5)
    assert order(ranked_page([newer, liked], weights=_with(W, engagement=0.0))) == [
        "newer", "liked"]
    assert order(ranked_page([newer, liked], weights=_with(W, engagement=1.0))) == [
        "liked", "newer"]

    friend = koo("friend", "b", age_ms=3 * HOUR)
    affinity = {"b": 12.0}
    assert order(ranked_page([newer, friend], affinity, _with(W, affinity=0.0))) == [
        "newer", "friend"]
    assert order(ranked_page([newer, friend], affinity, _with(W, affinity=1.0))) == [
        "friend", "newer"]

    # A flood by one author: diversity lets another author in before its second koo.
    flood = [koo(f"a{i}", "a", age_ms=i * MINUTE) for i in range(1, 5)]
    other = koo("b1", "b", age_ms=30 * MINUTE)
    assert order(ranked_page([*flood, other], weights=_with(W, diversity=0.0))) == [
        "a1", "a2", "a3", "a4", "b1"]
    assert order(ranked_page([*flood, other], weights=W)) == ["a1", "b1", "a2", "a3", "a4"]


# --- ties -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(pages(grid_ms=HOUR), affinity_st, weights_st, st.randoms(use_true_random=False))
def test_the_order_is_the_same_whatever_order_the_candidates_come_in(
    page: list[Koo], affinity: dict[str, float], weights: RankWeights, rnd: random.Random,
) -> None:
    shuffled = list(page)
    rnd.shuffle(shuffled)
    first = ranked_page(page, affinity, weights)
    second = ranked_page(shuffled, affinity, weights)
    assert order(first) == order(second)
    assert [r.explain for r in first] == [r.explain for r in second]


@settings(max_examples=150, deadline=None)
@given(pages(grid_ms=HOUR), affinity_st, weights_st)
def test_equal_scores_are_ordered_by_time_then_id_newest_first(
    page: list[Koo], affinity: dict[str, float], weights: RankWeights,
) -> None:
    ranked = ranked_page(page, affinity, weights)
    for above, below in itertools.pairwise(ranked):
        assert above.score >= below.score
        if above.score == below.score:
            assert (above.koo.created_at, above.koo.koo_id) > (
                below.koo.created_at, below.koo.koo_id)


def test_with_every_weight_zero_the_page_is_newest_first_then_greatest_id() -> None:
    zero = RankWeights(recency=0.0, engagement=0.0, affinity=0.0, diversity=0.0)
    page = [koo("k1", "a", age_ms=HOUR), koo("k3", "b", age_ms=HOUR), koo("k2", "a"),
            koo("k0", "c", age_ms=2 * HOUR, likes=9)]
    assert order(ranked_page(page, {"a": 5.0}, zero)) == ["k2", "k3", "k1", "k0"]


# --- the promise on time -------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(pages(grid_ms=1, max_size=16) | pages(grid_ms=MINUTE, max_size=16), affinity_st,
       weights_st)
def test_at_equal_engagement_and_affinity_the_newer_koo_ranks_higher_unless_its_diversity_is_lower(
    page: list[Koo], affinity: dict[str, float], weights: RankWeights,
) -> None:
    ranked = ranked_page(page, affinity, weights)
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            if not ((b.koo.created_at, b.koo.koo_id) > (a.koo.created_at, a.koo.koo_id)
                    and b.explain["engagement"] == a.explain["engagement"]
                    and b.explain["affinity"] == a.explain["affinity"]):
                continue
            # b is newer, equally engaged and liked, yet below a: only diversity may do that.
            assert b.explain["diversity"] < a.explain["diversity"], (a, b)
            assert b.koo.author_id != a.koo.author_id, (a, b)


@settings(max_examples=200, deadline=None)
@given(pages(grid_ms=1), affinity_st, weights_st)
def test_one_authors_koos_are_always_newest_first_at_equal_engagement(
    page: list[Koo], affinity: dict[str, float], weights: RankWeights,
) -> None:
    ranked = ranked_page(page, affinity, weights)
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            if a.koo.author_id == b.koo.author_id and engagement_of(a.koo) == engagement_of(
                    b.koo):
                assert (a.koo.created_at, a.koo.koo_id) > (b.koo.created_at, b.koo.koo_id)


def test_diversity_may_put_an_older_koo_of_another_author_first_and_only_that() -> None:
    """The documented limit of the promise: x2 is newer than y and equally engaged and
    liked, but it is x's second koo in the page."""
    x1 = koo("x1", "x", age_ms=1 * MINUTE)
    x2 = koo("x2", "x", age_ms=2 * MINUTE)
    y = koo("y", "y", age_ms=3 * MINUTE)
    z = koo("z", "z", age_ms=4 * MINUTE)
    ranked = ranked_page([z, y, x2, x1])
    assert order(ranked) == ["x1", "y", "z", "x2"]
    by_id = {r.koo.koo_id: r for r in ranked}
    assert by_id["x2"].explain["diversity"] == -W.diversity
    assert by_id["y"].explain["diversity"] == by_id["z"].explain["diversity"] == 0.0
    # Between koos of equal diversity, time decides: x1 over y over z.
    assert ranked_page([z, y, x1], weights=W)[0].koo.koo_id == "x1"
    assert order(ranked_page([z, y, x2, x1], weights=_with(W, diversity=0.0))) == [
        "x1", "x2", "y", "z"]


# --- interleave -------------------------------------------------------------------------------


def _ranked(koo_id: str, reason: str) -> Ranked:
    return Ranked(koo(koo_id, "a"), reason, 0.0, {})


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 12), st.integers(0, 6), st.integers(-1, 6))
def test_interleave_puts_one_extra_at_every_nth_place_and_keeps_both_orders(
    n_main: int, n_extra: int, every: int,
) -> None:
    main = [_ranked(f"m{i}", "following") for i in range(n_main)]
    extra = [_ranked(f"e{i}", "recommended") for i in range(n_extra)]
    out = interleave(main, extra, every)
    if every <= 0 or not extra:
        assert out == main
        return
    assert [r for r in out if r.reason == "following"] == main
    assert [r for r in out if r.reason == "recommended"] == extra
    for index, item in enumerate(out, start=1):
        slot = index % every == 0
        # A slot holds an extra while extras remain; elsewhere a main koo while any remain.
        placed_before = out[:index - 1]
        extras_left = n_extra - sum(r.reason == "recommended" for r in placed_before)
        mains_left = n_main - sum(r.reason == "following" for r in placed_before)
        if slot and extras_left:
            assert item.reason == "recommended"
        elif mains_left:
            assert item.reason == "following"
