"""FEED_API_REQUEST_TIMEOUT and the connection limits `feed api` hands its server (the
behaviour itself is tested against real processes in tests/fault/test_hostile_clients.py)."""

from __future__ import annotations

import functools
import pickle

import pytest

from config.settings import Settings, SettingsError
from feed.api._server import (
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    ConnectionLimits,
    GuardedHttpProtocol,
    guarded_protocol,
)


def test_the_request_timeout_defaults_to_10_s_and_is_read() -> None:
    assert Settings().api_request_timeout == 10.0
    assert Settings.from_env({}).api_request_timeout == 10.0
    assert Settings.from_env({"FEED_API_REQUEST_TIMEOUT": "2.5"}).api_request_timeout == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "soon"])
def test_an_invalid_request_timeout_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="FEED_API_REQUEST_TIMEOUT"):
        Settings.from_env({"FEED_API_REQUEST_TIMEOUT": value})


def test_the_guarded_protocol_survives_the_trip_to_spawned_workers() -> None:
    """`--workers N` pickles the server's configuration into each worker process: the
    protocol and its limits must come out the same."""
    factory = pickle.loads(pickle.dumps(guarded_protocol(ConnectionLimits(3.0))))
    assert isinstance(factory, functools.partial)
    assert factory.func is GuardedHttpProtocol
    assert factory.keywords["limits"] == ConnectionLimits(
        request_timeout=3.0, max_head_bytes=MAX_HEAD_BYTES, max_header_fields=MAX_HEADER_FIELDS)
    assert (MAX_HEAD_BYTES, MAX_HEADER_FIELDS) == (16 * 1024, 100)  # the documented 16 KB
