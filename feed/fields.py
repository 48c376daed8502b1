"""The rules every field of an event or a route obeys: ids, text, languages, regions, times.

Each checker takes a decoded JSON value and returns it normalized, or raises
:class:`Invalid` with a message that completes "<field> ...".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from feed.errors import ValidationFailed

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
LANG_PATTERN: Final = re.compile(r"[a-z]{2}")
REGION_PATTERN: Final = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+")
MAX_TEXT: Final = 500
MAX_HASHTAGS: Final = 30
MAX_HASHTAG_LENGTH: Final = 100
MAX_HANDLE: Final = 64
MAX_REGION: Final = 32
MAX_EVENT_ID: Final = 128
MIN_OCCURRED_AT: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_AHEAD_MS: Final = 24 * 3600 * 1000  # how far past our clock a producer's clock may run
MAX_BATCH: Final = 500
REACTION_KINDS: Final = ("like", "rekoo", "comment")

ID_RULE: Final = "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"


def is_valid_id(value: object) -> bool:
    """True if ``value`` is a user or koo id of the documented alphabet and length."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(name: str, value: object) -> str:
    """Return ``value`` if it is a valid id, else raise :class:`ValidationFailed`."""
    if not is_valid_id(value):
        raise ValidationFailed([{"field": name, "message": f"{name} {ID_RULE}"}])
    assert isinstance(value, str)
    return value


class Invalid(Exception):
    pass


Checker = Callable[[object], Any]


def ident(value: object) -> str:
    if not is_valid_id(value):
        raise Invalid(ID_RULE)
    assert isinstance(value, str)
    return value


def optional_ident(value: object) -> str | None:
    return None if value is None else ident(value)


def string(min_len: int, max_len: int) -> Checker:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise Invalid(f"must be a string, not {type_name(value)}")
        if not min_len <= len(value) <= max_len:
            raise Invalid(f"must be {min_len}-{max_len} characters long (got {len(value)})")
        if any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise Invalid("must not contain control characters")
        return value

    return check


def text(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {type_name(value)}")
    if len(value) > MAX_TEXT:
        raise Invalid(f"must be at most {MAX_TEXT} characters (got {len(value)})")
    if "\x00" in value:
        raise Invalid("must not contain NUL characters")
    return value


def lang(value: object) -> str:
    # isascii: str.lower() maps a few non-ASCII letters (the Kelvin sign) onto a-z.
    if (not isinstance(value, str) or not value.isascii()
            or LANG_PATTERN.fullmatch(value.lower()) is None):
        raise Invalid("must be a two-letter ISO 639-1 code such as 'hi' or 'en'")
    return value.lower()


def region(value: object) -> str:
    if (not isinstance(value, str) or len(value) > MAX_REGION
            or not REGION_PATTERN.fullmatch(value)):
        raise Invalid("must be a region name such as 'ap-south-1'")
    return value


def kind(value: object) -> str:
    if value not in REACTION_KINDS:
        raise Invalid(f"must be one of {', '.join(REACTION_KINDS)}")
    assert isinstance(value, str)
    return value


def hashtags(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"must be a list of strings, not {type_name(value)}")
    if len(value) > MAX_HASHTAGS:
        raise Invalid(f"must hold at most {MAX_HASHTAGS} hashtags (got {len(value)})")
    tags: list[str] = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_HASHTAG_LENGTH:
            raise Invalid(f"item {i} must be a string of 1-{MAX_HASHTAG_LENGTH} characters")
        if any(ord(c) < 32 for c in tag):
            raise Invalid(f"item {i} must not contain control characters")
        if tag not in tags:
            tags.append(tag)
    return tags


def timestamp(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be an integer (ms since the Unix epoch), not {type_name(value)}")
    return value


def check_time(value: int, now_ms: int) -> str | None:
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


def event_id(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {type_name(value)}")
    if not 1 <= len(value) <= MAX_EVENT_ID:
        raise Invalid(f"must be 1-{MAX_EVENT_ID} characters long (got {len(value)})")
    # Cc: C0 (newline, tab, ...), DEL and C1. Ids end up in logs, job ids and keys.
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise Invalid("must not contain control characters")
    return value


def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)
