"""Event schemas and validation (CONTRACT.md "Events"), shared by HTTP and the publisher.

Validation is table-driven: each event type names its fields and a checker
for each. Unknown fields are dropped; a missing or ill-typed field is an error
that names the field and the event.

``occurred_at`` is checked against the caller's clock (``now_ms``), so a
value in seconds or one far in the future is refused before it can pin a koo
to the top of every feed. :func:`event_digest` names an event's content, so a
reused ``event_id`` on a different event can be told from a replay.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from feed.errors import ValidationFailed

__all__ = [
    "EVENT_TYPES",
    "MAX_BATCH",
    "EventError",
    "check_id",
    "event_digest",
    "is_valid_id",
    "validate_batch",
    "validate_event",
]

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
LANG_PATTERN: Final = re.compile(r"[a-z]{2}")
REGION_PATTERN: Final = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
MAX_TEXT: Final = 500
MAX_HASHTAGS: Final = 30
MAX_HASHTAG_LENGTH: Final = 100
MAX_HANDLE: Final = 64
MAX_EVENT_ID: Final = 128
MIN_OCCURRED_AT: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_AHEAD_MS: Final = 24 * 3600 * 1000  # how far past our clock a producer's clock may run
MAX_BATCH: Final = 500
REACTION_KINDS: Final = ("like", "rekoo", "comment")

ID_RULE: Final = "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"


def is_valid_id(value: object) -> bool:
    """True if ``value`` is a user or koo id of the contract's alphabet and length."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(name: str, value: object) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`ValidationFailed`."""
    if not is_valid_id(value):
        raise ValidationFailed([{"field": name, "message": f"{name} {ID_RULE}"}])
    assert isinstance(value, str)
    return value


class _Invalid(Exception):
    pass


Checker = Callable[[object], Any]


def _id(value: object) -> str:
    if not is_valid_id(value):
        raise _Invalid(ID_RULE)
    assert isinstance(value, str)
    return value


def _optional_id(value: object) -> str | None:
    return None if value is None else _id(value)


def _string(min_len: int, max_len: int) -> Checker:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"must be a string, not {_type_name(value)}")
        if not min_len <= len(value) <= max_len:
            raise _Invalid(f"must be {min_len}-{max_len} characters long (got {len(value)})")
        if any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise _Invalid("must not contain control characters")
        return value

    return check


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_type_name(value)}")
    if len(value) > MAX_TEXT:
        raise _Invalid(f"must be at most {MAX_TEXT} characters (got {len(value)})")
    if "\x00" in value:
        raise _Invalid("must not contain NUL characters")
    return value


def _lang(value: object) -> str:
    if not isinstance(value, str) or LANG_PATTERN.fullmatch(value.lower()) is None:
        raise _Invalid("must be a two-letter ISO 639-1 code such as 'hi' or 'en'")
    return value.lower()


def _region(value: object) -> str:
    if not isinstance(value, str) or len(value) > 32 or not REGION_PATTERN.fullmatch(value):
        raise _Invalid("must be a region name such as 'ap-south-1'")
    return value


def _kind(value: object) -> str:
    if value not in REACTION_KINDS:
        raise _Invalid(f"must be one of {', '.join(REACTION_KINDS)}")
    assert isinstance(value, str)
    return value


def _hashtags(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of strings, not {_type_name(value)}")
    if len(value) > MAX_HASHTAGS:
        raise _Invalid(f"must hold at most {MAX_HASHTAGS} hashtags (got {len(value)})")
    tags: list[str] = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_HASHTAG_LENGTH:
            raise _Invalid(f"item {i} must be a string of 1-{MAX_HASHTAG_LENGTH} characters")
        if any(ord(c) < 32 for c in tag):
            raise _Invalid(f"item {i} must not contain control characters")
        if tag not in tags:
            tags.append(tag)
    return tags


def _timestamp(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"must be an integer (ms since the Unix epoch), not {_type_name(value)}")
    return value


def _check_time(value: int, now_ms: int) -> str | None:
    """What is wrong with ``occurred_at`` (already an int) at ``now_ms``, if anything."""
    latest = now_ms + MAX_AHEAD_MS
    if MIN_OCCURRED_AT <= value <= latest:
        return None
    if MIN_OCCURRED_AT <= value * 1000 <= latest:
        return f"looks like seconds ({value}); it must be milliseconds since the Unix epoch"
    if value > latest:
        return ("is in the future (more than 24 h past the service's clock): it must be "
                "milliseconds since the Unix epoch")
    return "must be milliseconds since the Unix epoch, from 2000-01-01"


def _event_id(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_type_name(value)}")
    if not 1 <= len(value) <= MAX_EVENT_ID:
        raise _Invalid(f"must be 1-{MAX_EVENT_ID} characters long (got {len(value)})")
    # Cc: C0 (newline, tab, ...), DEL and C1. Ids end up in logs, job ids and keys.
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise _Invalid("must not contain control characters")
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    check: Checker
    required: bool = True


_COMMON: Final = (
    _Field("event_id", _event_id),
    _Field("occurred_at", _timestamp),
)

SCHEMAS: Final[Mapping[str, tuple[_Field, ...]]] = {
    "user_signed_up": (
        _Field("user_id", _id),
        _Field("handle", _string(1, MAX_HANDLE)),
        _Field("lang", _lang),
        _Field("region", _region),
    ),
    "koo_created": (
        _Field("koo_id", _id),
        _Field("author_id", _id),
        _Field("text", _text),
        _Field("lang", _lang),
        _Field("hashtags", _hashtags, required=False),
        _Field("reply_to", _optional_id, required=False),
        _Field("rekoo_of", _optional_id, required=False),
    ),
    "koo_deleted": (_Field("koo_id", _id), _Field("author_id", _id)),
    "reaction_added": (_Field("koo_id", _id), _Field("user_id", _id), _Field("kind", _kind)),
    "reaction_removed": (_Field("koo_id", _id), _Field("user_id", _id), _Field("kind", _kind)),
    "user_followed": (_Field("follower_id", _id), _Field("followee_id", _id)),
    "user_unfollowed": (_Field("follower_id", _id), _Field("followee_id", _id)),
    "user_blocked": (_Field("user_id", _id), _Field("target_id", _id)),
    "user_unblocked": (_Field("user_id", _id), _Field("target_id", _id)),
    "user_muted": (_Field("user_id", _id), _Field("target_id", _id)),
    "user_unmuted": (_Field("user_id", _id), _Field("target_id", _id)),
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
        problem = ("event", f"must be a JSON object, not {_type_name(raw)}")
        return None, EventError(index, None, None, (problem,))
    event_id = raw.get("event_id")
    shown_id = event_id if isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID else None
    kind = raw.get("type")
    problems: list[tuple[str, str]] = []
    if not isinstance(kind, str) or kind not in SCHEMAS:
        shown = kind if isinstance(kind, str) else None
        problems.append(("type", f"must be one of {', '.join(EVENT_TYPES)}"))
        fields: Iterable[_Field] = _COMMON
    else:
        shown = kind
        fields = (*_COMMON, *SCHEMAS[kind])
    event: dict[str, Any] = {"type": kind}
    for spec in fields:
        if spec.name not in raw:
            if spec.required:
                problems.append((spec.name, "is required"))
            else:
                event[spec.name] = spec.check(None)
            continue
        try:
            value = spec.check(raw[spec.name])
            if spec.name == "occurred_at":  # the one check that needs the clock
                wrong = _check_time(value, now_ms)
                if wrong is not None:
                    raise _Invalid(wrong)
            event[spec.name] = value
        except _Invalid as exc:
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
