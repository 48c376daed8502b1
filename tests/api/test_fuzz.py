"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis).

Every operation of ``/openapi.json`` gets generated requests, valid ones
(positive) and ones that break the schema (negative: wrong types, values out
of range, hostile ids, a missing Authorization header, ...), with random ids
and with the ids of a small seeded graph. schemathesis checks every response:
no 5xx, status codes and bodies as documented, negative data refused, positive
data accepted, auth not ignored. A second property posts mutated event batches
and checks the all-or-nothing rule: 202 with every event queued, or 422 with
one error per bad index and nothing queued.

schemathesis runs the app on its own event-loop thread and drives its lifespan
there, so the app here opens its own services (not the test's ``services``).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson
import pytest
import schemathesis
from arq.constants import job_key_prefix
from hypothesis import HealthCheck, Phase, given
from hypothesis import event as tally
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis import Redis
from schemathesis import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.applications import Starlette

from config.settings import Settings
from feed import keys
from feed.api.app import create_app
from feed.api.openapi import openapi_schema
from feed.events import MIN_OCCURRED_AT, SCHEMAS
from tests.api.conftest import AUTH, TOKEN, seed
from tests.conftest import uid
from tests.helpers import event, follow, job_ids, koo, signup

pytestmark = pytest.mark.timeout(300)

MAX_EXAMPLES = 30
HYPOTHESIS = hsettings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)

CONFIG = schemathesis.Config.from_dict({
    "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
    "checks": {"positive_data_acceptance": {
        # A cursor is opaque: a schema-valid string the server never issued is a
        # documented 400, not a failure of the server.
        "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "5xx"],
    }},
})

_PATHS = openapi_schema()["paths"]
OPERATIONS = [(method.upper(), path) for path, item in _PATHS.items() for method in item]
# Negative generation needs something to break: parameters or a body.
NEGATABLE = [(m, p) for m, p in OPERATIONS
             if _PATHS[p][m.lower()].get("parameters") or _PATHS[p][m.lower()].get("requestBody")]
# A stream of a user who exists stays open until the client leaves, so it is not fuzzed
# with the seeded ids (what it validates, and its events, are tests/api/test_stream.py's).
STREAMS = {("GET", "/v1/users/{user_id}/feed/stream")}
WITH_IDS = [(m, p) for m, p in OPERATIONS if "{" in p and (m, p) not in STREAMS]
# The schemas cannot state every rule (occurred_at and a seen mark's up_to against the
# service's clock, two different users in a follow, block or mute, one event_id per event
# of a batch), so a schema-valid body can rightly be refused with 422.
LOOSE_BODY = {("POST", "/v1/events"), ("POST", "/v1/users/{user_id}/notifications/seen")}


def _ids(ops: list[tuple[str, str]]) -> list[str]:
    return [f"{m} {p}" for m, p in ops]


@pytest.fixture(scope="module")
async def seeded(session_settings: Settings, tables: str) -> dict[str, str]:
    """A user with followers, koos and reactions, so requests also reach real data."""
    user, fan, k = uid(), uid(), uid("k")
    like = event("reaction_added", koo_id=k, user_id=fan)
    like["kind"] = "like"
    events = [signup(user), signup(fan), follow(fan, user), follow(user, fan),
              *(koo(uid("k"), user) for _ in range(5)), koo(k, user), like]
    await seed(session_settings, events)
    return {"user_id": user, "koo_id": k}


@pytest.fixture(scope="module")
def app(session_settings: Settings, tables: str) -> Iterator[Starlette]:
    # The fuzzer sends many requests without a valid token from one address on purpose:
    # the failed-authentication limit (tested on its own) would soon refuse them all.
    application = create_app(session_settings.replace(auth_failures_per_minute=0))
    try:
        yield application
    finally:
        schemathesis_asgi.shutdown_lifespans()  # the app's lifespan exit closes its services


@pytest.fixture(scope="module")
def schema(app: Starlette) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)


def run(operation: Any, mode: GenerationMode, check: Callable[[Any], None],
        **fixed: Any) -> None:
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @HYPOTHESIS
    def fuzz(case: Any) -> None:
        check(case)

    fuzz()


def validator(method: str, path: str) -> Callable[[Any], None]:
    excluded = [positive_data_acceptance] if (method, path) in LOOSE_BODY else []

    def validate(case: Any) -> None:
        response = case.call_and_validate(excluded_checks=excluded)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"}, body
            assert {"code", "message"} <= set(body["error"]), body

    return validate


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=_ids(OPERATIONS))
def test_fuzz_positive(schema: Any, method: str, path: str) -> None:
    run(schema[path][method], GenerationMode.POSITIVE, validator(method, path))


@pytest.mark.parametrize(("method", "path"), NEGATABLE, ids=_ids(NEGATABLE))
def test_fuzz_negative(schema: Any, method: str, path: str) -> None:
    run(schema[path][method], GenerationMode.NEGATIVE, validator(method, path))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), WITH_IDS, ids=_ids(WITH_IDS))
def test_fuzz_seeded_ids(schema: Any, seeded: dict[str, str], method: str, path: str,
                         mode: GenerationMode) -> None:
    ids = {k: v for k, v in seeded.items() if "{" + k + "}" in path}
    run(schema[path][method], mode, validator(method, path), path_parameters=ids)


# --- event batches: all or nothing -------------------------------------------------------

T0 = 1_700_000_000_000  # 2023-11-14: in the past for any clock the suite runs under
ID = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)
INT64 = st.integers(-(2**63), 2**63 - 1)  # what JSON (orjson) can carry
JUNK = st.one_of(st.none(), st.booleans(), INT64, st.floats(allow_nan=False,
                                                           allow_infinity=False),
                 st.text(max_size=80), st.lists(INT64, max_size=3),
                 st.dictionaries(st.text(max_size=5), INT64, max_size=2))
VALID_FIELD = {
    "user_id": ID, "koo_id": ID, "author_id": ID, "follower_id": ID, "followee_id": ID,
    "target_id": ID, "handle": st.text(string.printable.strip(), min_size=1, max_size=64),
    "lang": st.sampled_from(["hi", "en", "pt", "ta"]),
    "region": st.sampled_from(["ap-south-1", "us-east-1"]), "text": st.text(max_size=500),
    "kind": st.sampled_from(["like", "rekoo", "comment"]),
    "hashtags": st.lists(st.text(string.ascii_letters, min_size=1, max_size=10), max_size=3),
    "reply_to": st.one_of(st.none(), ID), "rekoo_of": st.one_of(st.none(), ID),
}


@st.composite
def raw_event(draw: st.DrawFn, *, broken: bool) -> Any:
    kind = draw(st.sampled_from(sorted(SCHEMAS)))
    ev: dict[str, Any] = {"type": kind, "event_id": f"fz-{draw(ID)}",
                          "occurred_at": draw(st.integers(MIN_OCCURRED_AT, T0))}
    for spec in SCHEMAS[kind]:
        if spec.required or draw(st.booleans()):
            ev[spec.name] = draw(VALID_FIELD[spec.name])
    if draw(st.booleans()):
        ev[draw(st.text(string.ascii_lowercase, min_size=1, max_size=8))] = draw(JUNK)
    if broken:  # drop a field, give one a junk value, or send something else entirely
        name = draw(st.sampled_from(sorted(ev)))
        how = draw(st.integers(0, 2))
        if how == 0:
            del ev[name]
        elif how == 1:
            ev[name] = draw(JUNK)
        else:
            return draw(JUNK)
    return ev


@st.composite
def batch(draw: st.DrawFn) -> list[Any]:
    """1-8 events; in about half the batches some are broken (and may still be valid)."""
    n = draw(st.integers(1, 8))
    broken = draw(st.sets(st.integers(0, n - 1), max_size=n)) if draw(st.booleans()) else set()
    return [draw(raw_event(broken=i in broken)) for i in range(n)]


@pytest.fixture
def queue(session_settings: Settings) -> Iterator[Redis]:
    redis = Redis.from_url(session_settings.redis_url)
    try:
        yield redis
    finally:
        redis.close()


def queued(queue: Redis, events: list[Any]) -> int:
    """How many of ``events`` have their job on the realtime queue (by job id: another
    suite may share the database)."""
    ids = job_ids(events)
    if not ids:
        return 0
    scores: Any = queue.zmscore(keys.QUEUE_REALTIME, ids)  # the sync client's reply: a list
    return sum(s is not None for s in scores)


def test_event_batches_are_all_or_nothing(app: Starlette, queue: Redis) -> None:
    # The same ASGI callable: Starlette types its messages as mutable mappings, not dicts.
    client = schemathesis_asgi.get_client(cast(schemathesis_asgi.ASGIApp, app))

    @given(events=batch())
    @HYPOTHESIS
    def post(events: list[Any]) -> None:
        for e in events:  # fresh event ids, so earlier examples' jobs never dedupe these
            if isinstance(e, dict) and isinstance(e.get("event_id"), str):
                e["event_id"] = f"{e['event_id'][:100]}-{uid('')}"
        with client:
            r = client.post("/v1/events", data=orjson.dumps({"events": events}),
                            headers={**AUTH, "content-type": "application/json"})
        assert r.status_code in (202, 422), (r.status_code, r.text)
        tally(f"status {r.status_code}")
        if r.status_code == 202:
            assert r.json() == {"accepted": len(events)}
            assert queued(queue, events) == len({e["event_id"] for e in events})
            ids = job_ids(events)  # nobody will run these: take them off again
            queue.zrem(keys.QUEUE_REALTIME, *ids)
            queue.delete(*(job_key_prefix + i for i in ids))
        else:
            details = r.json()["error"]["details"]
            indexes = [d["index"] for d in details]
            assert indexes == sorted(set(indexes)), details
            assert all(0 <= i < len(events) for i in indexes), details
            assert queued(queue, events) == 0

    post()
