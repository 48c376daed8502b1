"""The notification answers: one aggregated notification, and a page of them."""

from __future__ import annotations

from dataclasses import dataclass

from koo_feed_client._models import (
    JSONObject,
    _int,
    _items,
    _list,
    _opt_str,
    _str,
)

__all__ = ["Notification", "NotificationPage"]


@dataclass(frozen=True, slots=True)
class Notification:
    """Activity of one kind (``like``, ``rekoo``, ``comment``, ``reply``, ``follow``) on
    one koo (None for ``follow``) within one window: the 3 newest actors, how many
    distinct actors, the newest activity's time (ms) and whether it is seen."""

    notification_id: str
    kind: str
    koo_id: str | None
    actors: tuple[str, ...]
    actor_count: int
    updated_at: int
    seen: bool

    @classmethod
    def from_json(cls, data: JSONObject) -> Notification:
        actors = _list(data, "actors")
        if not all(isinstance(a, str) for a in actors):
            raise ValueError(f"actors holds a non-string: {actors!r}")
        seen = data.get("seen")
        if not isinstance(seen, bool):
            raise ValueError(f"seen is not a boolean: {seen!r}")
        return cls(notification_id=_str(data, "notification_id"), kind=_str(data, "kind"),
                   koo_id=_opt_str(data, "koo_id"), actors=tuple(str(a) for a in actors),
                   actor_count=_int(data, "actor_count"), updated_at=_int(data, "updated_at"),
                   seen=seen)


@dataclass(frozen=True, slots=True)
class NotificationPage:
    """One page of notifications, newest activity first; ``unseen`` counts all those
    updated after the user's seen mark, not only this page's."""

    items: tuple[Notification, ...]
    unseen: int
    next_cursor: str | None

    @classmethod
    def from_json(cls, data: JSONObject) -> NotificationPage:
        return cls(items=_items(data, Notification.from_json), unseen=_int(data, "unseen"),
                   next_cursor=_opt_str(data, "next_cursor"))
