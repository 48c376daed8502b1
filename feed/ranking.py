"""Feed ranking: pure functions, data and ``now`` in, a new list out.

A koo's score is the sum of four named components (``explain=true`` shows
them):

- ``recency``: ``w_recency * 0.5 ** (age_hours / half_life_hours)``, in (0, w];
- ``engagement``: ``w_engagement * log1p(likes + 2 * rekoos + 3 * comments)``;
- ``affinity``: ``w_affinity * log1p(reader's reaction weight on the author)``;
- ``diversity``: ``-w_diversity * n``, where n counts newer koos by the same
  author already in the page, so one author cannot fill a page.

Recency strictly decreases with age and ties are broken by time and id, so
with equal engagement and affinity (and the same author, or different authors
seen equally often) a newer koo ranks higher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.settings import RankWeights
from feed.models import Koo

__all__ = ["COMPONENTS", "Ranked", "engagement_of", "rank", "score_koo"]

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


def interleave(ranked: Sequence[Ranked], extra: Sequence[Ranked], every: int) -> list[Ranked]:
    """Put one of ``extra`` at every ``every``-th position (1-based), the rest after."""
    if every <= 0 or not extra:
        return list(ranked)
    out: list[Ranked] = []
    pending = list(extra)
    main = list(ranked)
    while main or pending:
        if pending and (len(out) + 1) % every == 0:
            out.append(pending.pop(0))
        elif main:
            out.append(main.pop(0))
        else:
            out.append(pending.pop(0))
    return out
