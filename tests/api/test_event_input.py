"""POST /v1/events against hostile or careless producers: a Content-Encoding other than
identity is 415; two different events under one event_id, an occurred_at in seconds or
in the future, and an event_id with a control character are 422 with one error per bad
index and nothing enqueued; the publisher refuses the same batches."""

from __future__ import annotations

import gzip
import time
import zlib
from typing import Any

import httpx
import orjson
import pytest

from feed.errors import ValidationFailed
from feed.services import Services
from tests.api.conftest import assert_error, discard, queued
from tests.conftest import uid
from tests.helpers import follow, signup, unfollow

pytestmark = pytest.mark.timeout(60)

DETAILS = frozenset({"details"})
DAY_MS = 24 * 3600 * 1000


def body_of(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"events": events})


# --- Content-Encoding --------------------------------------------------------------------


ENCODED: dict[str, tuple[str, Any]] = {
    "gzip": ("gzip", gzip.compress),
    "deflate": ("deflate", zlib.compress),
    "upper case": ("GZIP", gzip.compress),
    "gzip then identity": ("gzip, identity", gzip.compress),
    # Said to be compressed, sent plain: still not a body to read as-is.
    "identity then br": ("identity, br", lambda b: b),
    "unknown coding": ("x-custom", lambda b: b),
}


@pytest.mark.parametrize("variant", list(ENCODED))
async def test_a_content_encoding_other_than_identity_is_415(
    client: httpx.AsyncClient, services: Services, variant: str
) -> None:
    """Before: a gzip body was read as JSON and refused as 422 "not JSON" (and a plain
    body declared compressed was accepted)."""
    coding, encode = ENCODED[variant]
    events = [signup(uid()), signup(uid())]
    r = await client.post("/v1/events", content=encode(body_of(events)),
                          headers={"content-type": "application/json",
                                   "content-encoding": coding})
    err = assert_error(r, 415, "unsupported_media_type")
    assert coding.lower().split(",")[0] in err["message"]
    assert r.headers["accept-encoding"] == "identity"
    assert await queued(services, events) == 0


@pytest.mark.parametrize("coding", ["identity", "IDENTITY", " identity ", "identity, identity"])
async def test_identity_is_accepted(client: httpx.AsyncClient, services: Services,
                                    coding: str) -> None:
    events = [signup(uid())]
    r = await client.post("/v1/events", content=body_of(events),
                          headers={"content-type": "application/json",
                                   "content-encoding": coding})
    assert r.status_code == 202, r.text
    assert await queued(services, events) == 1
    await discard(services, events)


async def test_two_content_encoding_headers_are_both_checked(
    client: httpx.AsyncClient, services: Services
) -> None:
    events = [signup(uid())]
    r = await client.post("/v1/events", content=body_of(events), headers=[
        ("content-type", "application/json"), ("content-encoding", "identity"),
        ("content-encoding", "gzip")])
    assert_error(r, 415, "unsupported_media_type")
    assert await queued(services, events) == 0


# --- one event_id per event ----------------------------------------------------------------


async def test_two_different_events_under_one_event_id_are_422(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Before: 202 for both, and the second was silently dropped by the queue."""
    a, b = uid(), uid()
    first = follow(a, b)
    events = [signup(a), first, signup(b), unfollow(a, b, event_id=first["event_id"])]
    r = await client.post("/v1/events", json={"events": events})
    err = assert_error(r, 422, "validation_failed", extra=DETAILS)
    assert [(d["index"], d["field"]) for d in err["details"]] == [(1, "event_id"),
                                                                  (3, "event_id")]
    assert all(first["event_id"] in d["message"] for d in err["details"])
    assert await queued(services, events) == 0
    with pytest.raises(ValidationFailed) as caught:
        await services.publisher.publish(events)
    assert caught.value.errors == err["details"]
    assert await queued(services, events) == 0


async def test_the_same_event_twice_in_a_batch_is_accepted_and_queued_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    ev = signup(uid())
    r = await client.post("/v1/events", json={"events": [ev, {**ev, "extra": 1}]})
    assert r.status_code == 202, r.text
    assert await queued(services, [ev]) == 1
    await discard(services, [ev])


# --- occurred_at and event_id --------------------------------------------------------------


def bad_events(user: str) -> dict[str, tuple[dict[str, Any], str, str]]:
    """name -> (event, field, a word its message must hold)"""
    now = int(time.time() * 1000)
    return {
        "seconds": (signup(user, occurred_at=now // 1000), "occurred_at", "seconds"),
        "year 2286": (signup(user, occurred_at=10**13 - 1), "occurred_at", "future"),
        "two days ahead": (signup(user, occurred_at=now + 2 * DAY_MS), "occurred_at",
                           "future"),
        "1999": (signup(user, occurred_at=915_148_800_000), "occurred_at", "2000"),
        "newline in event_id": (signup(user, event_id="ev-1\n"), "event_id", "control"),
        "escape in event_id": (signup(user, event_id="ev\x1b[31m"), "event_id", "control"),
    }


@pytest.mark.parametrize("variant", list(bad_events("x")))
async def test_a_bad_time_or_event_id_refuses_the_batch(
    client: httpx.AsyncClient, services: Services, variant: str
) -> None:
    bad, field, word = bad_events(uid())[variant]
    events = [signup(uid()), bad, signup(uid())]
    r = await client.post("/v1/events", json={"events": events})
    err = assert_error(r, 422, "validation_failed", extra=DETAILS)
    assert [(d["index"], d["field"]) for d in err["details"]] == [(1, field)]
    assert word in err["details"][0]["message"]
    assert await queued(services, events) == 0
    with pytest.raises(ValidationFailed):
        await services.publisher.publish(events)
    with pytest.raises(ValidationFailed):
        await services.publisher.publish([bad])
    assert await queued(services, events) == 0


async def test_a_time_up_to_a_day_ahead_is_accepted(client: httpx.AsyncClient,
                                                     services: Services) -> None:
    """Producers' clocks run ahead of ours a little: up to 24 h is accepted."""
    ev = signup(uid(), occurred_at=int(time.time() * 1000) + DAY_MS - 60_000)
    r = await client.post("/v1/events", json={"events": [ev]})
    assert r.status_code == 202, r.text
    await discard(services, [ev])
