"""The answers of the API as frozen dataclasses, each parsed from its JSON by ``from_json``.

Parsing is strict about the fields the API documents (a wrong type is a ``ValueError``, so
a changed answer fails loudly) and ignores fields it does not know, so a service that adds
one does not break its callers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypedDict, TypeVar

__all__ = [
    "ErrorDetail",
    "Explain",
    "FeedItem",
    "FollowRecommendation",
    "Health",
    "Koo",
    "KooRecommendation",
    "Page",
    "Problem",
    "Reaction",
    "User",
]

T = TypeVar("T")
JSONObject = Mapping[str, object]


def as_object(value: object, what: str) -> JSONObject:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{what} is not a JSON object")
    return value


def _str(data: JSONObject, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string: {value!r}")
    return value


def _opt_str(data: JSONObject, key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} is neither a string nor null: {value!r}")
    return value


def _int(data: JSONObject, key: str) -> int:
    value = data.get(key)
    # bool is an int in Python, never in the API's JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is not an integer: {value!r}")
    return value


def _opt_int(data: JSONObject, key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def _float(data: JSONObject, key: str) -> float:
    value = data.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{key} is not a number: {value!r}")
    return float(value)


def _list(data: JSONObject, key: str) -> list[object]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list: {value!r}")
    return value


def _items(data: JSONObject, parse: Callable[[JSONObject], T]) -> tuple[T, ...]:
    return tuple(parse(as_object(item, "an item")) for item in _list(data, "items"))


class _KooFields(TypedDict):
    koo_id: str
    author_id: str
    text: str
    lang: str
    created_at: int
    hashtags: tuple[str, ...]
    reply_to: str | None
    rekoo_of: str | None
    likes: int
    rekoos: int
    comments: int


@dataclass(frozen=True, slots=True)
class Koo:
    """A koo with its counters, as every route that returns koos answers it."""

    koo_id: str
    author_id: str
    text: str
    lang: str
    created_at: int
    hashtags: tuple[str, ...]
    reply_to: str | None
    rekoo_of: str | None
    likes: int
    rekoos: int
    comments: int

    @staticmethod
    def _fields(data: JSONObject) -> _KooFields:
        """The koo's fields, shared by the scored shapes built on it."""
        tags = data.get("hashtags")
        if tags is None:
            hashtags: tuple[str, ...] = ()
        elif isinstance(tags, list) and all(isinstance(t, str) for t in tags):
            hashtags = tuple(tags)
        else:
            raise ValueError(f"hashtags is not a list of strings: {tags!r}")
        fields: _KooFields = {
            "koo_id": _str(data, "koo_id"), "author_id": _str(data, "author_id"),
            "text": _str(data, "text"), "lang": _str(data, "lang"),
            "created_at": _int(data, "created_at"), "hashtags": hashtags,
            "reply_to": _opt_str(data, "reply_to"), "rekoo_of": _opt_str(data, "rekoo_of"),
            "likes": _int(data, "likes"), "rekoos": _int(data, "rekoos"),
            "comments": _int(data, "comments"),
        }
        return fields

    @classmethod
    def from_json(cls, data: JSONObject) -> Koo:
        return cls(**cls._fields(data))


@dataclass(frozen=True, slots=True)
class Explain:
    """The components of a feed item's score (``explain=true``); they add up to it."""

    recency: float
    engagement: float
    affinity: float
    diversity: float

    @classmethod
    def from_json(cls, data: JSONObject) -> Explain:
        return cls(recency=_float(data, "recency"), engagement=_float(data, "engagement"),
                   affinity=_float(data, "affinity"), diversity=_float(data, "diversity"))


@dataclass(frozen=True, slots=True)
class FeedItem(Koo):
    """A koo of a home feed: why it is there (``reason``: following, self, celebrity or
    recommended) and its ``score``; ``explain`` only when asked for."""

    score: float
    reason: str
    explain: Explain | None = None

    @classmethod
    def from_json(cls, data: JSONObject) -> FeedItem:
        raw = data.get("explain")
        explain = None if raw is None else Explain.from_json(as_object(raw, "explain"))
        return cls(**cls._fields(data),
                   score=_float(data, "score"), reason=_str(data, "reason"), explain=explain)


@dataclass(frozen=True, slots=True)
class KooRecommendation(Koo):
    """A recommended koo, with its score and why (e.g. ``trending in hi``)."""

    score: float
    reason: str

    @classmethod
    def from_json(cls, data: JSONObject) -> KooRecommendation:
        return cls(**cls._fields(data),
                   score=_float(data, "score"), reason=_str(data, "reason"))


@dataclass(frozen=True, slots=True)
class FollowRecommendation:
    """Someone the user might follow, with a score and why."""

    user_id: str
    score: float
    reason: str

    @classmethod
    def from_json(cls, data: JSONObject) -> FollowRecommendation:
        return cls(user_id=_str(data, "user_id"), score=_float(data, "score"),
                   reason=_str(data, "reason"))


@dataclass(frozen=True, slots=True)
class User:
    """A profile."""

    user_id: str
    handle: str
    lang: str
    region: str
    followers: int
    following: int
    created_at: int

    @classmethod
    def from_json(cls, data: JSONObject) -> User:
        return cls(user_id=_str(data, "user_id"), handle=_str(data, "handle"),
                   lang=_str(data, "lang"), region=_str(data, "region"),
                   followers=_int(data, "followers"), following=_int(data, "following"),
                   created_at=_int(data, "created_at"))


@dataclass(frozen=True, slots=True)
class Reaction:
    """Who reacted to a koo, how (``like``, ``rekoo`` or ``comment``) and when."""

    user_id: str
    kind: str
    created_at: int

    @classmethod
    def from_json(cls, data: JSONObject) -> Reaction:
        return cls(user_id=_str(data, "user_id"), kind=_str(data, "kind"),
                   created_at=_int(data, "created_at"))


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list; ``next_cursor`` is the cursor of the next one, None on the last."""

    items: tuple[T, ...]
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: JSONObject, parse: Callable[[JSONObject], T]) -> Page[T]:
        return cls(items=_items(data, parse), next_cursor=_opt_str(data, "next_cursor"))


def parse_items(data: JSONObject, parse: Callable[[JSONObject], T]) -> tuple[T, ...]:
    """The ``items`` of an answer that has no paging (the recommendations)."""
    return _items(data, parse)


@dataclass(frozen=True, slots=True)
class Health:
    """The answer of /healthz or /readyz; ``checks`` (readyz only) says which service
    answered."""

    status: str
    checks: Mapping[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_json(cls, data: JSONObject) -> Health:
        raw = data.get("checks")
        checks = {} if raw is None else as_object(raw, "checks")
        if not all(isinstance(v, bool) for v in checks.values()):
            raise ValueError(f"checks are not all true or false: {checks!r}")
        return cls(status=_str(data, "status"),
                   checks={k: bool(v) for k, v in checks.items()})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an event: the field and what is wrong with it."""

    field: str
    message: str

    @classmethod
    def from_json(cls, data: JSONObject) -> Problem:
        return cls(field=_str(data, "field"), message=_str(data, "message"))


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One entry of a 422's ``details``: a bad parameter (``field``, ``message``) or, for
    ``publish``, a bad event (also its ``index`` in the batch, ``event_id``, ``type`` and
    every one of its ``problems``)."""

    message: str
    field: str | None = None
    index: int | None = None
    event_id: str | None = None
    type: str | None = None
    problems: tuple[Problem, ...] = ()

    @classmethod
    def from_json(cls, data: JSONObject) -> ErrorDetail:
        raw = data.get("problems")
        problems = () if raw is None else tuple(
            Problem.from_json(as_object(p, "a problem")) for p in _list(data, "problems"))
        return cls(message=_str(data, "message"), field=_opt_str(data, "field"),
                   index=_opt_int(data, "index"), event_id=_opt_str(data, "event_id"),
                   type=_opt_str(data, "type"), problems=problems)
