"""Feed ranking: pure functions, data and ``now`` in, a new list out.

A koo's score is the sum of four named components (``explain=true`` shows
them):

- ``recency``: ``w_recency * 0.5 ** (age_hours / half_life_hours)``: w for a
  koo not older than ``now``, halved every half-life;
- ``engagement``: ``w_engagement * log1p(likes + 2 * rekoos + 3 * comments)``;
- ``affinity``: ``w_affinity * log1p(reader's reaction weight on the author)``;
- ``diversity``: ``-w_diversity * n``, where n counts newer koos by the same
  author already in the page, so one author cannot fill a page.

Ties are broken by time, then id (the newer, then the greater id, first), so
the order is the same whatever order the candidates come in.

The promise on time: of two koos with equal engagement and affinity, the newer
ranks higher unless its diversity component is lower. So it always holds
between two koos of one author (the newer has fewer newer koos of that author
in the page), and between koos with as many newer koos of their own author in
the page; diversity may lift an older koo of another author above an author's
second or later koo, which is what it is for. Readers notice one author
filling a page, or an author's koos out of order, far more than a slightly
older koo from someone else coming first; and diversity that could never
reorder koos of equal engagement and affinity would let the slightest
engagement difference switch it on or off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.settings import RankWeights
from feed.models import Koo

__all__ = ["COMPONENTS", "Ranked", "engagement_of", "interleave", "rank", "score_koo"]

COMPONENTS = ("recency", "engagement", "affinity", "diversity")
MS_PER_HOUR = 3_600_000


@dataclass(frozen=True, slots=True)
class Ranked:
    koo: Koo
    reason: str
    score: float
    explain: dict[str, float]


def engagement_of(koo: Koo) -> int:
    """Weighted engagement: a comment says more than a rekoo, a rekoo more than a like."""
    return koo.likes + 2 * koo.rekoos + 3 * koo.comments


def score_koo(
    koo: Koo, *, now_ms: int, affinity: float, repeats: int, weights: RankWeights
) -> dict[str, float]:
    """The named components of one koo's score."""
    age_hours = max(0.0, (now_ms - koo.created_at) / MS_PER_HOUR)
    return {
        "recency": weights.recency * 0.5 ** (age_hours / weights.half_life_hours),
        "engagement": weights.engagement * math.log1p(engagement_of(koo)),
        "affinity": weights.affinity * math.log1p(max(0.0, affinity)),
        "diversity": -weights.diversity * repeats,
    }


def rank(
    candidates: Sequence[tuple[Koo, str]],
    *,
    now_ms: int,
    affinity: Mapping[str, float],
    weights: RankWeights,
) -> list[Ranked]:
    """Score (koo, reason) pairs and return them best first."""
    seen_authors: dict[str, int] = {}
    ranked: list[Ranked] = []
    for koo, reason in sorted(candidates, key=lambda c: (c[0].created_at, c[0].koo_id),
                              reverse=True):
        repeats = seen_authors.get(koo.author_id, 0)
        seen_authors[koo.author_id] = repeats + 1
        parts = score_koo(
            koo, now_ms=now_ms, affinity=affinity.get(koo.author_id, 0.0), repeats=repeats,
            weights=weights,
        )
        ranked.append(Ranked(koo, reason, sum(parts.values()), parts))
    ranked.sort(key=lambda r: (r.score, r.koo.created_at, r.koo.koo_id), reverse=True)
    return ranked


def interleave(ranked: Sequence[Ranked], extra: Sequence[Ranked], every: int, *,
               start: int = 0) -> list[Ranked]:
    """Put one of ``extra`` at every ``every``-th position (1-based) of a walk whose
    earlier pages showed ``start`` items; the rest after."""
    if every <= 0 or not extra:
        return list(ranked)
    out: list[Ranked] = []
    pending = list(extra)
    main = list(ranked)
    while main or pending:
        if pending and (start + len(out) + 1) % every == 0:
            out.append(pending.pop(0))
        elif main:
            out.append(main.pop(0))
        else:
            out.append(pending.pop(0))
    return out
