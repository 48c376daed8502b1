"""Sort keys of the notifications table (see feed/store/notifications.py).

One DynamoDB partition per recipient (sort key ``nk``): group rows ``g#<group>``, actor
rows ``a#<group>#<actor>``, source rows ``s#<kind>#<koo>#<actor>#<source>`` and the seen
mark. ``<group>`` is ``<kind>#<koo or ->#<window:08d>``.
"""

from __future__ import annotations

from feed.keys import SORT_SEP

__all__ = [
    "NOTIFY_NO_KOO",
    "NOTIFY_SEEN",
    "notify_actor_index_sk",
    "notify_actor_sk",
    "notify_group",
    "notify_group_sk",
    "notify_koo_prefix",
    "notify_live_sk",
    "notify_pending_sk",
    "notify_source_sk",
    "notify_updated_sk",
    "split_notify_group",
]

NOTIFY_NO_KOO = "-"  # the koo part of a follow group
NOTIFY_SEEN = "seen"  # sort key of a recipient's seen mark


def notify_group(kind: str, koo_id: str | None, window: int) -> str:
    """A notification's group: one kind, on one koo (or new followers), in one window."""
    return f"{kind}{SORT_SEP}{koo_id or NOTIFY_NO_KOO}{SORT_SEP}{window:08d}"


def split_notify_group(group: str) -> tuple[str, str | None, int]:
    """Inverse of :func:`notify_group`."""
    kind, koo_id, window = group.split(SORT_SEP)
    return kind, (None if koo_id == NOTIFY_NO_KOO else koo_id), int(window)


def notify_group_sk(group: str) -> str:
    """Sort key of a group row (one notification)."""
    return f"g{SORT_SEP}{group}"


def notify_actor_sk(group: str, actor_id: str) -> str:
    """Sort key of an actor row: one actor counted (or to be counted) in one group."""
    return f"a{SORT_SEP}{group}{SORT_SEP}{actor_id}"


def notify_source_sk(kind: str, koo_id: str | None, actor_id: str, source: str) -> str:
    """Sort key of a source row: one action (a reaction, a follow, one reply) of an actor."""
    return (
        f"s{SORT_SEP}{kind}{SORT_SEP}{koo_id or NOTIFY_NO_KOO}{SORT_SEP}{actor_id}"
        f"{SORT_SEP}{source}"
    )


def notify_koo_prefix(kind: str, koo_id: str, row: str) -> str:
    """Prefix of the ``row`` ("g", "a" or "s") rows of one kind on one koo."""
    return f"{row}{SORT_SEP}{kind}{SORT_SEP}{koo_id}{SORT_SEP}"


def notify_updated_sk(updated_at: int, group: str) -> str:
    """Sort key of a live group on the newest-first index: time, then group."""
    return f"{updated_at:013d}{SORT_SEP}{group}"


def notify_live_sk(group: str, at: int, actor_id: str) -> str:
    """Sort key of a counted actor on the live-actors index: newest last."""
    return f"{group}{SORT_SEP}{at:013d}{SORT_SEP}{actor_id}"


def notify_pending_sk(group: str, actor_id: str) -> str:
    """Sort key of an actor row whose group count is still to move."""
    return f"{group}{SORT_SEP}{actor_id}"


def notify_actor_index_sk(recipient: str, nk: str) -> str:
    """Sort key on the by-actor index (partition: the actor): recipient, then row."""
    return f"{recipient}{SORT_SEP}{nk}"
