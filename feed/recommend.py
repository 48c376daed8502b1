"""Recommendation scoring: pure functions, data and ``now`` in, a new list out.

Who to follow: friends of friends, weighted by how many of the reader's
followees follow them, plus popular creators in the reader's language.
Recommended koos: recent koos in the reader's language scored by engagement
that decays with age (trending), from authors the reader does not follow.
Nobody the reader follows, blocks or mutes, nobody who blocks the reader,
and never the reader themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from feed.models import Koo
from feed.ranking import engagement_of

__all__ = [
    "KooPick",
    "UserPick",
    "recommend_follows",
    "recommend_koos",
    "trending",
]

MS_PER_HOUR = 3_600_000
TRENDING_GRAVITY = 1.5
MUTUAL_WEIGHT = 1.0
POPULAR_WEIGHT = 0.25
# Fairness: one prolific author cannot fill a language's trending list, nor a reader's
# recommended koos.
TRENDING_PER_AUTHOR = 3
RECOMMENDED_PER_AUTHOR = 2  # while other authors remain


@dataclass(frozen=True, slots=True)
class UserPick:
    user_id: str
    score: float
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"user_id": self.user_id, "score": round(self.score, 6), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class KooPick:
    koo_id: str
    score: float
    reason: str


def recommend_follows(
    reader: str,
    *,
    excluded: Iterable[str],
    mutual_counts: Mapping[str, int],
    popular: Sequence[tuple[str, int]],
    lang: str,
    limit: int,
) -> list[UserPick]:
    """Rank who-to-follow candidates.

    ``mutual_counts``: candidate -> how many of the reader's followees follow them.
    ``popular``: (candidate, followers) of popular creators in the reader's language.
    ``excluded``: everyone the reader follows, blocks or mutes, and who blocks them.
    """
    banned = set(excluded) | {reader}
    scores: dict[str, tuple[float, str]] = {}
    for user, mutual in mutual_counts.items():
        if user in banned or mutual <= 0:
            continue
        noun = "person" if mutual == 1 else "people"
        scores[user] = (MUTUAL_WEIGHT * mutual, f"followed by {mutual} {noun} you follow")
    for user, followers in popular:
        if user in banned or followers <= 0:
            continue
        boost = POPULAR_WEIGHT * math.log1p(followers)
        if user in scores:
            base, reason = scores[user]
            scores[user] = (base + boost, reason)
        else:
            scores[user] = (boost, f"popular in {lang}")
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return [UserPick(user, score, reason) for user, (score, reason) in ordered[:limit]]


def trending(
    koos: Iterable[Koo], *, now_ms: int, per_author: int = TRENDING_PER_AUTHOR,
) -> list[tuple[str, float]]:
    """(koo_id, score) best first: engagement over age, like a link aggregator's front
    page; at most ``per_author`` koos of any one author (their best)."""
    scored: list[tuple[str, float, str]] = []
    for koo in koos:
        if koo.deleted:
            continue
        age_hours = max(0.0, (now_ms - koo.created_at) / MS_PER_HOUR)
        score = (1 + engagement_of(koo)) / (age_hours + 2) ** TRENDING_GRAVITY
        scored.append((koo.koo_id, score, koo.author_id))
    scored.sort(key=lambda kv: (-kv[1], kv[0]))
    return [(koo_id, score) for koo_id, score, _ in _capped(scored, per_author)]


def recommend_koos(
    reader: str,
    *,
    trending_koos: Sequence[tuple[Koo, float]],
    following: Iterable[str],
    excluded: Iterable[str],
    limit: int,
    per_author: int = RECOMMENDED_PER_AUTHOR,
) -> list[KooPick]:
    """Trending koos the reader would not otherwise see, best first, authors spread out:
    at most ``per_author`` of any one author while other authors' koos remain, then the
    rest in score order (a language with few trending authors still fills the list)."""
    banned = set(following) | set(excluded) | {reader}
    eligible = [(koo, score) for koo, score in trending_koos
                if not koo.deleted and koo.author_id not in banned]
    taken: dict[str, int] = {}
    first: list[tuple[Koo, float]] = []
    rest: list[tuple[Koo, float]] = []
    for koo, score in eligible:
        count = taken.get(koo.author_id, 0)
        (first if count < per_author else rest).append((koo, score))
        taken[koo.author_id] = count + 1
    chosen = (first + rest)[:limit]
    return [KooPick(koo.koo_id, score, f"trending in {koo.lang}") for koo, score in chosen]


def _capped(scored: Sequence[tuple[str, float, str]], per_author: int
            ) -> list[tuple[str, float, str]]:
    """``scored`` in order, without an author's entries past their first ``per_author``."""
    taken: dict[str, int] = {}
    out: list[tuple[str, float, str]] = []
    for entry in scored:
        count = taken.get(entry[2], 0)
        if count < per_author:
            taken[entry[2]] = count + 1
            out.append(entry)
    return out
