"""Both log formats: a record's context is shown, secrets and duplicates are not.

Pass criteria: the plain-text line carries a record's ``extra`` fields as ``key=value``
after the message (quoted when a value has spaces), before any traceback; neither
format carries uvicorn's ANSI ``color_message`` or a field that could hold a secret;
URLs in logs and messages keep no password.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from feed.logs import JsonFormatter, TextFormatter, redacted_url, setup_logging

# What uvicorn logs at start-up: the plain message, and the same with colour codes.
UVICORN_EXTRA = {"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}


def _record(msg: str = "queue Redis does not answer", args: tuple[Any, ...] = (),
            name: str = "workers.settings", exc_info: Any = None, **extra: Any
            ) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(
        name, logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra)


def test_the_text_line_carries_the_records_context_after_the_message() -> None:
    line = TextFormatter().format(_record(
        address="redis://127.0.0.1:1/0", error="Error 111 connecting", failures=3,
        user_id="u1", ids=["a", "b"]))
    assert line.endswith(
        ' WARNING workers.settings queue Redis does not answer address=redis://127.0.0.1:1/0 '
        'error="Error 111 connecting" failures=3 user_id=u1 ids=["a","b"]'), line


def test_a_text_line_without_context_is_the_message_alone() -> None:
    line = TextFormatter().format(_record("plain"))
    assert line.endswith(" WARNING workers.settings plain"), line


def test_the_context_comes_before_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record("failed", exc_info=sys.exc_info(), koo_id="k1")
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("failed koo_id=k1"), first
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()],
                         ids=["json", "text"])
def test_uvicorns_color_message_and_secrets_are_left_out(formatter: logging.Formatter
                                                         ) -> None:
    record = _record("Started server process [%d]", (42,), name="uvicorn.error",
                     token="tok-123456", cursor="cur-abc", **UVICORN_EXTRA)
    out = formatter.format(record)
    assert "Started server process [42]" in out
    for absent in ("color_message", "\x1b", "tok-123456", "cur-abc"):
        assert absent not in out, out


def test_the_json_line_keeps_the_context_and_drops_the_duplicate() -> None:
    entry = orjson.loads(JsonFormatter().format(_record(
        "Started server process [%d]", (42,), name="uvicorn.error", event_id="e1",
        **UVICORN_EXTRA)))
    assert entry["message"] == "Started server process [42]"
    assert entry["event_id"] == "e1"
    assert set(entry) == {"ts", "level", "logger", "message", "event_id"}


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(("json_format", "kind"), [(True, JsonFormatter),
                                                   (False, TextFormatter)])
def test_setup_logging_picks_the_format(root_logger: logging.Logger, json_format: bool,
                                        kind: type[logging.Formatter]) -> None:
    setup_logging("INFO", json_format=json_format)
    assert [type(h.formatter) for h in root_logger.handlers] == [kind]


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@cache.internal:6379/0", "redis://cache.internal:6379/0"),
    ("rediss://feed:s3cret@10.0.0.7:6380/1?ssl_ca_certs=/ca.pem&password=s3cret",
     "rediss://feed@10.0.0.7:6380/1"),
    ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
])
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
