"""Events as the workers apply them: one frozen dataclass per event type.

A validated event (:mod:`feed.schemas`) is a plain dict, its wire form;
:func:`typed` gives it its class here, and :meth:`Event.wire` gives the dict
back. Validation and the schemas are re-exported, so callers import events
from one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from feed import keys
from feed.schemas import (
    EVENT_TYPES,
    ID_PATTERN,
    ID_RULE,
    LANG_PATTERN,
    MAX_AHEAD_MS,
    MAX_BATCH,
    MAX_EVENT_ID,
    MAX_HANDLE,
    MAX_HASHTAG_LENGTH,
    MAX_HASHTAGS,
    MAX_TEXT,
    MIN_OCCURRED_AT,
    REACTION_KINDS,
    REGION_PATTERN,
    SCHEMAS,
    EventError,
    check_id,
    event_digest,
    is_valid_id,
    validate_batch,
    validate_event,
)

__all__ = [
    "EVENT_TYPES",
    "ID_PATTERN",
    "ID_RULE",
    "LANG_PATTERN",
    "MAX_AHEAD_MS",
    "MAX_BATCH",
    "MAX_EVENT_ID",
    "MAX_HANDLE",
    "MAX_HASHTAGS",
    "MAX_HASHTAG_LENGTH",
    "MAX_TEXT",
    "MIN_OCCURRED_AT",
    "REACTION_KINDS",
    "REGION_PATTERN",
    "SCHEMAS",
    "Event",
    "EventError",
    "KooCreated",
    "KooDeleted",
    "Reaction",
    "ReactionAdded",
    "ReactionRemoved",
    "Relation",
    "UserBlocked",
    "UserDeleted",
    "UserFollowed",
    "UserMuted",
    "UserSignedUp",
    "UserUnblocked",
    "UserUnfollowed",
    "UserUnmuted",
    "check_id",
    "event_digest",
    "is_valid_id",
    "named_users",
    "typed",
    "validate_batch",
    "validate_event",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A validated event; ``TYPE`` is its wire ``type``."""

    TYPE: ClassVar[str] = ""
    event_id: str
    occurred_at: int

    def wire(self) -> dict[str, Any]:
        """The validated dict this event was made from: what the queue carries and the
        ledger digests."""
        out: dict[str, Any] = {"type": self.TYPE}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSignedUp(Event):
    TYPE: ClassVar[str] = "user_signed_up"
    user_id: str
    handle: str
    lang: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KooCreated(Event):
    TYPE: ClassVar[str] = "koo_created"
    koo_id: str
    author_id: str
    text: str
    lang: str
    hashtags: tuple[str, ...] = ()
    reply_to: str | None = None
    rekoo_of: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KooDeleted(Event):
    TYPE: ClassVar[str] = "koo_deleted"
    koo_id: str
    author_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction(Event):
    """A reaction switched on (``ADDED``) or off."""

    ADDED: ClassVar[bool]
    koo_id: str
    user_id: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionAdded(Reaction):
    TYPE: ClassVar[str] = "reaction_added"
    ADDED: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionRemoved(Reaction):
    TYPE: ClassVar[str] = "reaction_removed"
    ADDED: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Relation(Event):
    """A relation of ``KIND`` (follow, block, mute) from ``user`` to ``other`` switched on
    (``ON``) or off."""

    KIND: ClassVar[str]
    ON: ClassVar[bool]

    @property
    def user(self) -> str:
        raise NotImplementedError

    @property
    def other(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class _FollowChange(Relation):
    KIND: ClassVar[str] = keys.REL_FOLLOW
    follower_id: str
    followee_id: str

    @property
    def user(self) -> str:
        return self.follower_id

    @property
    def other(self) -> str:
        return self.followee_id


@dataclass(frozen=True, slots=True, kw_only=True)
class _TargetChange(Relation):
    user_id: str
    target_id: str

    @property
    def user(self) -> str:
        return self.user_id

    @property
    def other(self) -> str:
        return self.target_id


@dataclass(frozen=True, slots=True, kw_only=True)
class UserFollowed(_FollowChange):
    TYPE: ClassVar[str] = "user_followed"
    ON: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class UserUnfollowed(_FollowChange):
    TYPE: ClassVar[str] = "user_unfollowed"
    ON: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UserBlocked(_TargetChange):
    TYPE: ClassVar[str] = "user_blocked"
    KIND: ClassVar[str] = keys.REL_BLOCK
    ON: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class UserUnblocked(_TargetChange):
    TYPE: ClassVar[str] = "user_unblocked"
    KIND: ClassVar[str] = keys.REL_BLOCK
    ON: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMuted(_TargetChange):
    TYPE: ClassVar[str] = "user_muted"
    KIND: ClassVar[str] = keys.REL_MUTE
    ON: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class UserUnmuted(_TargetChange):
    TYPE: ClassVar[str] = "user_unmuted"
    KIND: ClassVar[str] = keys.REL_MUTE
    ON: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class UserDeleted(Event):
    """Erase a user everywhere (:mod:`feed.erasure`)."""

    TYPE: ClassVar[str] = "user_deleted"
    user_id: str


def named_users(event: Event) -> tuple[str, ...]:
    """Every user id an event names, in any role (an erased one refuses the event)."""
    match event:
        case UserSignedUp() | Reaction() | UserDeleted():
            return (event.user_id,)
        case KooCreated() | KooDeleted():
            return (event.author_id,)
        case Relation():
            return (event.user, event.other)
    return ()


_TYPED: Final[Mapping[str, type[Event]]] = {
    cls.TYPE: cls for cls in (
        UserSignedUp, KooCreated, KooDeleted, ReactionAdded, ReactionRemoved, UserFollowed,
        UserUnfollowed, UserBlocked, UserUnblocked, UserMuted, UserUnmuted, UserDeleted,
    )
}


def typed(event: Mapping[str, Any]) -> Event:
    """The typed form of a validated event (from :func:`validate_event`; not checked
    again)."""
    cls = _TYPED[event["type"]]
    values: dict[str, Any] = {
        field.name: tuple(event[field.name]) if field.name == "hashtags" else event[field.name]
        for field in dataclasses.fields(cls)
    }
    return cls(**values)
