"""Structured logging: one JSON object per line (or plain text), with the ids a record
carries.

Records name what they are about through ``extra={"event_id": ..., "koo_id": ...,
"user_id": ...}``; both formats show these fields. Tokens and cursors are never logged:
fields that could hold them are dropped here as a second line of defence, and so are
attributes that only repeat the message for another purpose, and fields that would hold
a user's handle, text or region (logs name users by id only).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = ["JsonFormatter", "TextFormatter", "record_fields", "redacted_url", "setup_logging"]

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRET_FIELDS = frozenset({"token", "authorization", "cursor", "password", "secret"})
# A user's personal data (their handle, what they wrote, where they live) never goes
# into a log, whatever a caller passes: logs name users by id only.
_PERSONAL_FIELDS = frozenset({"handle", "text", "region", "hashtags", "payload"})
# Attributes libraries add that say again what the message says: uvicorn's
# ``color_message`` is the message with ANSI colour codes, for its own console only.
_DUPLICATES = frozenset({"color_message"})


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context a record carries (its ``extra`` fields), secrets and duplicates left out."""
    return {
        key: value for key, value in vars(record).items()
        if key not in _STANDARD and key not in _DUPLICATES and not key.startswith("_")
        and key.lower() not in _SECRET_FIELDS and key.lower() not in _PERSONAL_FIELDS
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(record_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """One line for a person: time, level, logger, message, then the record's context as
    ``key=value`` (a value with spaces or quotes is quoted), before any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        fields = record_fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={_text_value(value)}"
                                     for key, value in fields.items())


def _text_value(value: Any) -> str:
    if not isinstance(value, str):
        return orjson.dumps(value, default=str).decode()
    if value and not any(c.isspace() or c in "\"'=" for c in value):
        return value
    return orjson.dumps(value).decode()


def redacted_url(url: str) -> str:
    """A connection URL fit for a log or a message: scheme, user, host, port and path,
    without the password or the query (which may carry one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL at all: say nothing of what it holds
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    where = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{user}{where}{parts.path}"


def setup_logging(level: str = "INFO", *, json_format: bool = True) -> None:
    """Configure the root logger once (the CLI calls this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log every request or job at INFO would drown ours.
    for noisy in ("botocore", "aiobotocore", "arq.worker", "arq.jobs", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
