"""The service's records, as frozen dataclasses with their wire (JSON) forms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Koo", "Reaction", "RelationSets", "User"]


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    handle: str
    lang: str
    region: str
    created_at: int
    followers: int = 0
    following: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "handle": self.handle,
            "lang": self.lang,
            "region": self.region,
            "followers": self.followers,
            "following": self.following,
            "created_at": self.created_at,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> User:
        """From a stored item or a cached profile (counters never below zero)."""
        return cls(
            user_id=item["user_id"],
            handle=item.get("handle", ""),
            lang=item.get("lang", ""),
            region=item.get("region", ""),
            created_at=int(item.get("created_at", 0)),
            followers=max(0, int(item.get("followers", 0))),
            following=max(0, int(item.get("following", 0))),
        )


@dataclass(frozen=True, slots=True)
class Koo:
    koo_id: str
    author_id: str
    text: str
    lang: str
    created_at: int
    hashtags: tuple[str, ...] = ()
    reply_to: str | None = None
    rekoo_of: str | None = None
    likes: int = 0
    rekoos: int = 0
    comments: int = 0
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "koo_id": self.koo_id,
            "author_id": self.author_id,
            "text": self.text,
            "lang": self.lang,
            "created_at": self.created_at,
            "hashtags": list(self.hashtags),
            "reply_to": self.reply_to,
            "rekoo_of": self.rekoo_of,
            "likes": self.likes,
            "rekoos": self.rekoos,
            "comments": self.comments,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Koo:
        """From a stored item (DynamoDB or the cache's hash, decoded)."""
        return cls(
            koo_id=item["koo_id"],
            author_id=item.get("author_id", ""),
            text=item.get("text", ""),
            lang=item.get("lang", ""),
            created_at=int(item.get("created_at", 0)),
            hashtags=tuple(item.get("hashtags") or ()),
            reply_to=item.get("reply_to"),
            rekoo_of=item.get("rekoo_of"),
            likes=max(0, int(item.get("likes", 0))),
            rekoos=max(0, int(item.get("rekoos", 0))),
            comments=max(0, int(item.get("comments", 0))),
            deleted=bool(item.get("deleted", False)),
        )


@dataclass(frozen=True, slots=True)
class Reaction:
    koo_id: str
    user_id: str
    kind: str
    created_at: int

    def as_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "kind": self.kind, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class RelationSets:
    """A reader's relations, and the one rule of who may see whom (:meth:`sees`)."""

    following: frozenset[str]
    blocking: frozenset[str]
    muting: frozenset[str]
    blocked_by: frozenset[str]
    # When each follow was made (ms), where read from DynamoDB with the sets; the cached
    # sets do not carry it.
    followed_at: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    # Authors whose koos never appear for this reader: those they block or mute, and
    # those who block them.
    hidden: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", self.blocking | self.muting | self.blocked_by)

    @classmethod
    def with_author(cls, author: str, *, follows: bool, blocks: bool, mutes: bool,
                    blocked_by: bool) -> RelationSets:
        """A reader's relations with one author only (enough for :meth:`sees` of them)."""
        one = frozenset((author,))
        none: frozenset[str] = frozenset()
        return cls(following=one if follows else none, blocking=one if blocks else none,
                   muting=one if mutes else none, blocked_by=one if blocked_by else none)

    def sees(self, reader: str, author: str) -> bool:
        """Whether ``reader`` (whose relations these are) sees ``author``'s koos in their
        feed: their own, and those of whom they follow, unless hidden."""
        return author == reader or (author in self.following and author not in self.hidden)
