"""What a valid event is: each type's fields, and the validation of events and batches.

Validation is table-driven: each event type names its fields and a checker
for each (the checkers are in :mod:`feed.fields`). Unknown fields are
dropped; a missing or ill-typed field is an error that names the field and
the event. A validated event is a plain dict, its wire form: what the queue
carries and the ledger digests (:mod:`feed.events` gives it a type).

``occurred_at`` is checked against the caller's clock (``now_ms``), so a
value in seconds or one far in the future is refused before it can pin a koo
to the top of every feed. :func:`event_digest` names an event's content, so a
reused ``event_id`` on a different event can be told from a replay.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from feed import fields
from feed.errors import ValidationFailed
from feed.fields import (
    ID_PATTERN,
    ID_RULE,
    LANG_PATTERN,
    MAX_AHEAD_MS,
    MAX_EVENT_ID,
    MAX_HANDLE,
    MAX_HASHTAG_LENGTH,
    MAX_HASHTAGS,
    MAX_TEXT,
    MIN_OCCURRED_AT,
    REACTION_KINDS,
    REGION_PATTERN,
    check_id,
    is_valid_id,
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
    "EventError",
    "check_id",
    "event_digest",
    "is_valid_id",
    "validate_batch",
    "validate_event",
]

MAX_BATCH: Final = 500


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    check: fields.Checker
    required: bool = True


_COMMON: Final = (
    _Field("event_id", fields.event_id),
    _Field("occurred_at", fields.timestamp),
)

_REACTION: Final = (
    _Field("koo_id", fields.ident), _Field("user_id", fields.ident), _Field("kind", fields.kind),
)

SCHEMAS: Final[Mapping[str, tuple[_Field, ...]]] = {
    "user_signed_up": (
        _Field("user_id", fields.ident),
        _Field("handle", fields.string(1, fields.MAX_HANDLE)),
        _Field("lang", fields.lang),
        _Field("region", fields.region),
    ),
    "koo_created": (
        _Field("koo_id", fields.ident),
        _Field("author_id", fields.ident),
        _Field("text", fields.text),
        _Field("lang", fields.lang),
        _Field("hashtags", fields.hashtags, required=False),
        _Field("reply_to", fields.optional_ident, required=False),
        _Field("rekoo_of", fields.optional_ident, required=False),
    ),
    "koo_deleted": (_Field("koo_id", fields.ident), _Field("author_id", fields.ident)),
    "reaction_added": _REACTION,
    "reaction_removed": _REACTION,
    "user_followed": (_Field("follower_id", fields.ident), _Field("followee_id", fields.ident)),
    "user_unfollowed": (_Field("follower_id", fields.ident), _Field("followee_id", fields.ident)),
    "user_blocked": (_Field("user_id", fields.ident), _Field("target_id", fields.ident)),
    "user_unblocked": (_Field("user_id", fields.ident), _Field("target_id", fields.ident)),
    "user_muted": (_Field("user_id", fields.ident), _Field("target_id", fields.ident)),
    "user_unmuted": (_Field("user_id", fields.ident), _Field("target_id", fields.ident)),
    "user_deleted": (_Field("user_id", fields.ident),),
}

EVENT_TYPES: Final = tuple(SCHEMAS)

# Pairs of fields that must name two different users.
_DISTINCT: Final = {
    "user_followed": ("follower_id", "followee_id"),
    "user_unfollowed": ("follower_id", "followee_id"),
    "user_blocked": ("user_id", "target_id"),
    "user_unblocked": ("user_id", "target_id"),
    "user_muted": ("user_id", "target_id"),
    "user_unmuted": ("user_id", "target_id"),
}


@dataclass(frozen=True, slots=True)
class EventError:
    """Everything wrong with one event of a batch."""

    index: int
    event_id: str | None
    type: str | None
    problems: tuple[tuple[str, str], ...]  # (field, message)

    def as_dict(self) -> dict[str, Any]:
        field, message = self.problems[0]
        where = f"events[{self.index}]"
        if self.event_id is not None:
            where += f" (event_id {self.event_id!r})"
        return {
            "index": self.index,
            "event_id": self.event_id,
            "type": self.type,
            "field": field,
            "message": f"{where}: {field} {message}",
            "problems": [{"field": f, "message": m} for f, m in self.problems],
        }


def _check(raw: object, index: int, now_ms: int
           ) -> tuple[dict[str, Any] | None, EventError | None]:
    if not isinstance(raw, Mapping):
        problem = ("event", f"must be a JSON object, not {fields.type_name(raw)}")
        return None, EventError(index, None, None, (problem,))
    event_id = raw.get("event_id")
    shown_id = event_id if isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID else None
    kind = raw.get("type")
    problems: list[tuple[str, str]] = []
    if not isinstance(kind, str) or kind not in SCHEMAS:
        shown = kind if isinstance(kind, str) else None
        problems.append(("type", f"must be one of {', '.join(EVENT_TYPES)}"))
        specs: Iterable[_Field] = _COMMON
    else:
        shown = kind
        specs = (*_COMMON, *SCHEMAS[kind])
    event: dict[str, Any] = {"type": kind}
    for spec in specs:
        if spec.name not in raw:
            if spec.required:
                problems.append((spec.name, "is required"))
            else:
                event[spec.name] = spec.check(None)
            continue
        try:
            value = spec.check(raw[spec.name])
            if spec.name == "occurred_at":  # the one check that needs the clock
                wrong = fields.check_time(value, now_ms)
                if wrong is not None:
                    raise fields.Invalid(wrong)
            event[spec.name] = value
        except fields.Invalid as exc:
            problems.append((spec.name, str(exc)))
    if not problems and kind in _DISTINCT:
        a, b = _DISTINCT[kind]
        if event[a] == event[b]:
            problems.append((b, f"must differ from {a}"))
    if problems:
        return None, EventError(index, shown_id, shown, tuple(problems))
    return event, None


def _now_ms() -> int:
    return int(time.time() * 1000)


def validate_event(raw: object, *, now_ms: int | None = None) -> dict[str, Any]:
    """Validate one event (against the clock, or ``now_ms``); return it normalized (known
    fields only) or raise."""
    event, error = _check(raw, 0, _now_ms() if now_ms is None else now_ms)
    if error is not None:
        raise ValidationFailed([error.as_dict()])
    assert event is not None
    return event


def validate_batch(raw_events: Sequence[object], *, now_ms: int | None = None
                   ) -> list[dict[str, Any]]:
    """Validate a whole batch; raise with one error per bad index if any is bad.

    Two different events under one ``event_id`` are both bad (the same event twice is
    a harmless duplicate): the service could apply only one of them.
    """
    if not 1 <= len(raw_events) <= MAX_BATCH:
        raise ValidationFailed(
            [{"field": "events", "message": f"events must hold 1-{MAX_BATCH} events "
              f"(got {len(raw_events)})"}]
        )
    now = _now_ms() if now_ms is None else now_ms
    good: list[dict[str, Any]] = []
    errors: dict[int, EventError] = {}
    by_id: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, raw in enumerate(raw_events):
        event, error = _check(raw, index, now)
        if error is not None:
            errors[index] = error
        elif event is not None:
            good.append(event)
            by_id.setdefault(event["event_id"], []).append((index, event))
    for event_id, sharing in by_id.items():
        if len(sharing) < 2 or len({event_digest(e) for _, e in sharing}) < 2:
            continue
        for index, event in sharing:
            other = [f"events[{i}]" for i, _ in sharing if i != index]
            others = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if other[3:] else "")
            problem = ("event_id", f"is also the event_id of {others}, a different event: "
                       "each event needs its own event_id")
            errors[index] = EventError(index, event_id, event["type"], (problem,))
    if errors:
        raise ValidationFailed([errors[i].as_dict() for i in sorted(errors)])
    return good


def event_digest(event: Mapping[str, Any]) -> str:
    """A stable name for a validated event's content: a hash of its canonical JSON
    (sorted keys, known fields only), equal for a replay and different for another
    event under the same ``event_id``."""
    canonical = orjson.dumps(dict(event), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()
