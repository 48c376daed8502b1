"""The client over ``httpx.MockTransport``: requests, retries and ``Retry-After``,
deadlines, cursors, and which answers raise what."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from client_fakes import TOKEN, FakeTime, Recorder, error, koo_json
from conftest import MakeClient

from koo_feed_client import (
    Backoff,
    ClientError,
    FeedClient,
    FeedItem,
    Health,
    InvalidCursor,
    InvalidRequest,
    Koo,
    NotFound,
    RateLimited,
    Reaction,
    Unauthorized,
    Unavailable,
    User,
)

OK_FEED = httpx.Response(200, json={"items": [koo_json(score=1.0, reason="following")],
                                   "next_cursor": None})
PROFILE: dict[str, Any] = {
    "user_id": "user0042", "handle": "ravi", "lang": "hi", "region": "ap-south-1",
    "followers": 1, "following": 1, "created_at": 1764149000000}


# --- one request per route -------------------------------------------------------------

Call = Callable[[FeedClient], Awaitable[Any]]
ROUTES: list[tuple[str, Call, str, dict[str, Any], Any]] = [
    ("feed", lambda c: c.feed("user0010", limit=5, cursor="c1", explain=True),
     "/v1/users/user0010/feed?limit=5&cursor=c1&explain=true",
     {"items": [koo_json(score=1.5, reason="self")], "next_cursor": "c2"}, "page"),
    ("feed defaults", lambda c: c.feed("user0010"), "/v1/users/user0010/feed",
     {"items": [], "next_cursor": None}, "page"),
    ("user", lambda c: c.user("user0042"), "/v1/users/user0042", PROFILE, User(**PROFILE)),
    ("user koos", lambda c: c.user_koos("user0042", limit=20),
     "/v1/users/user0042/koos?limit=20", {"items": [koo_json()], "next_cursor": None}, "page"),
    ("koo", lambda c: c.koo("tour-koo"), "/v1/koos/tour-koo", koo_json(),
     Koo.from_json(koo_json())),
    ("reactions", lambda c: c.reactions("tour-koo", limit=50, cursor="r"),
     "/v1/koos/tour-koo/reactions?limit=50&cursor=r",
     {"items": [{"user_id": "user0010", "kind": "like", "created_at": 1}],
      "next_cursor": None}, "page"),
    ("follow picks", lambda c: c.recommended_follows("user0010", limit=10),
     "/v1/users/user0010/recommendations/follows?limit=10",
     {"items": [{"user_id": "user0077", "score": 1.0, "reason": "r"}]}, "items"),
    ("koo picks", lambda c: c.recommended_koos("user0010"),
     "/v1/users/user0010/recommendations/koos",
     {"items": [koo_json("k-chai", score=0.38, reason="trending in hi")]}, "items"),
    ("healthz", lambda c: c.healthz(), "/healthz", {"status": "ok"}, Health("ok")),
    ("readyz", lambda c: c.readyz(), "/readyz",
     {"status": "ok", "checks": {"dynamodb": True}}, Health("ok", {"dynamodb": True})),
]


@pytest.mark.parametrize(("name", "call", "target", "body", "expected"), ROUTES,
                         ids=[r[0] for r in ROUTES])
async def test_each_route_is_one_get_with_the_token(
    make_client: MakeClient, name: str, call: Call, target: str, body: dict[str, Any],
    expected: Any,
) -> None:
    handler = Recorder(httpx.Response(200, json=body))
    result = await call(make_client(handler))
    [request] = handler.requests
    assert request.method == "GET"
    assert request.url.raw_path.decode() == target
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"].startswith("koo-feed-client/")
    if expected == "page":
        assert len(result.items) == len(body["items"])
        assert result.next_cursor == body["next_cursor"]
    elif expected == "items":
        assert [i.score for i in result] == [i["score"] for i in body["items"]]
    else:
        assert result == expected


async def test_an_id_stays_one_path_segment(make_client: MakeClient) -> None:
    handler = Recorder(error(422, "validation_failed", "user_id ..."))
    with pytest.raises(InvalidRequest):
        await make_client(handler).user("../koos/x")
    assert handler.requests[0].url.raw_path == b"/v1/users/..%2Fkoos%2Fx"


async def test_feed_items_carry_score_reason_and_explain(make_client: MakeClient) -> None:
    explain = {"recency": 0.5, "engagement": 0.25, "affinity": 0.25, "diversity": -0.0}
    handler = Recorder(httpx.Response(200, json={
        "items": [koo_json(score=1, reason="following", explain=explain)],
        "next_cursor": None}))
    page = await make_client(handler).feed("user0010", explain=True)
    [item] = page.items
    assert isinstance(item, FeedItem)
    assert item.explain is not None
    assert item.score == item.explain.recency + item.explain.engagement \
        + item.explain.affinity + item.explain.diversity


# --- publish ---------------------------------------------------------------------------

EVENTS = [{"type": "user_followed", "event_id": "e-1", "occurred_at": 1764150060000,
           "follower_id": "user0010", "followee_id": "user0042"}]


async def test_publish_posts_the_batch_and_returns_the_count(make_client: MakeClient) -> None:
    handler = Recorder(httpx.Response(202, json={"accepted": 1}))
    assert await make_client(handler).publish(EVENTS) == 1
    [request] = handler.requests
    assert (request.method, request.url.path) == ("POST", "/v1/events")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"events": EVENTS}


async def test_a_bad_batch_raises_with_every_problem(make_client: MakeClient) -> None:
    message = "events[0] (event_id 'e-1'): followee_id must differ from follower_id"
    handler = Recorder(error(422, "validation_failed", message, details=[
        {"index": 0, "event_id": "e-1", "type": "user_followed", "field": "followee_id",
         "message": message,
         "problems": [{"field": "followee_id", "message": "must differ from follower_id"}]},
    ]))
    with pytest.raises(InvalidRequest) as caught:
        await make_client(handler).publish(EVENTS)
    assert len(handler.requests) == 1
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        422, "validation_failed", message)
    [detail] = caught.value.details
    assert (detail.index, detail.event_id, detail.field) == (0, "e-1", "followee_id")
    assert [p.message for p in detail.problems] == ["must differ from follower_id"]


async def test_publish_is_retried_after_a_connection_error(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    handler = Recorder(httpx.ConnectError("refused"), httpx.ReadError("reset"),
                       httpx.Response(202, json={"accepted": 1}))
    assert await make_client(handler).publish(EVENTS) == 1
    assert len(handler.requests) == 3
    assert all(json.loads(r.content) == {"events": EVENTS} for r in handler.requests)
    assert len(fake_time.sleeps) == 2


# --- retries ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(
    make_client: MakeClient, fake_time: FakeTime, status: int
) -> None:
    handler = Recorder(error(status, "x", headers={"Retry-After": "2"}), OK_FEED)
    page = await make_client(handler).feed("user0010")
    assert len(page.items) == 1
    assert len(handler.requests) == 2
    [wait] = fake_time.sleeps
    assert 2 <= wait <= 2.2  # never sooner than asked, a little later to spread callers


async def test_a_zero_retry_after_still_backs_off(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    handler = Recorder(error(429, "rate_limited", headers={"Retry-After": "0"}), OK_FEED)
    await make_client(handler, backoff=Backoff(first=0.2)).feed("user0010")
    [wait] = fake_time.sleeps
    assert 0.1 <= wait <= 0.2


async def test_without_retry_after_the_backoff_grows_to_its_cap(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    handler = Recorder(*[error(503, "unavailable")] * 6, OK_FEED)
    client = make_client(handler, backoff=Backoff(first=0.1, cap=0.5), deadline=60)
    await client.feed("user0010")
    assert len(handler.requests) == 7
    ceilings = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert len(fake_time.sleeps) == len(ceilings)
    for wait, ceiling in zip(fake_time.sleeps, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling


async def test_reads_are_retried_after_connection_errors(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    handler = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), OK_FEED)
    assert len((await make_client(handler).feed("user0010")).items) == 1
    assert len(handler.requests) == 3


@pytest.mark.parametrize(("answer", "kind"), [
    (error(400, "invalid_cursor"), InvalidCursor),
    (error(400, "bad_request"), InvalidRequest),
    (error(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"}), Unauthorized),
    (error(404, "not_found", "user nobody is not known"), NotFound),
    (error(405, "method_not_allowed"), ClientError),
    (error(422, "validation_failed", details=[{"field": "limit", "message": "1-100"}]),
     InvalidRequest),
    (error(500, "internal_error"), ClientError),
])
async def test_other_errors_are_raised_at_once(
    make_client: MakeClient, fake_time: FakeTime, answer: httpx.Response,
    kind: type[ClientError],
) -> None:
    handler = Recorder(answer)
    with pytest.raises(kind) as caught:
        await make_client(handler).feed("user0010")
    assert type(caught.value) is kind
    assert caught.value.status == answer.status_code
    assert caught.value.code == answer.json()["error"]["code"]
    assert len(handler.requests) == 1
    assert fake_time.sleeps == []


async def test_the_details_of_a_bad_parameter(make_client: MakeClient) -> None:
    handler = Recorder(error(422, "validation_failed", "limit must be an integer from 1 to 100",
                             details=[{"field": "limit", "message": "limit must be ..."}]))
    with pytest.raises(InvalidRequest) as caught:
        await make_client(handler).feed("user0010", limit=0)
    assert handler.requests[0].url.params["limit"] == "0"  # the service is the judge
    assert [d.field for d in caught.value.details] == ["limit"]


async def test_an_error_without_the_service_body(make_client: MakeClient) -> None:
    handler = Recorder(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ClientError) as caught:
        await make_client(handler).koo("tour-koo")
    assert (caught.value.status, caught.value.code) == (502, None)
    assert "bad gateway" in caught.value.message


async def test_an_answer_of_another_shape_is_an_error(make_client: MakeClient) -> None:
    handler = Recorder(httpx.Response(200, json={"user_id": "user0042"}))
    with pytest.raises(ClientError, match="handle"):
        await make_client(handler).user("user0042")


async def test_readyz_reports_a_503_without_retrying(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    handler = Recorder(httpx.Response(503, json={"status": "unavailable", "checks": {
        "cache_redis": True, "queue_redis": True, "dynamodb": False}}))
    health = await make_client(handler).readyz()
    assert not health.ok
    assert health.checks["dynamodb"] is False
    assert len(handler.requests) == 1


# --- deadlines -------------------------------------------------------------------------

async def test_retries_stop_at_the_deadline(make_client: MakeClient, fake_time: FakeTime
                                            ) -> None:
    handler = Recorder(error(503, "unavailable", "storage", headers={"Retry-After": "1"}))
    start = fake_time.now
    with pytest.raises(Unavailable) as caught:
        await make_client(handler, deadline=10).feed("user0010", deadline=3.5)
    # Attempts at 0, 1, 2 and 3 s (plus jitter); a fifth would start after 3.5 s.
    assert len(handler.requests) == 4
    assert fake_time.now - start <= 3.5
    assert (caught.value.status, caught.value.retry_after) == (503, 1.0)


async def test_a_wait_longer_than_the_deadline_is_not_started(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    handler = Recorder(error(429, "rate_limited", headers={"Retry-After": "30"}))
    with pytest.raises(RateLimited) as caught:
        await make_client(handler, deadline=5).user("user0042")
    assert caught.value.retry_after == 30
    assert len(handler.requests) == 1
    assert fake_time.sleeps == []


async def test_connection_errors_until_the_deadline_raise_unavailable(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    handler = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(Unavailable) as caught:
        await make_client(handler, deadline=2).koo("tour-koo")
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(handler.requests) > 2
    assert sum(fake_time.sleeps) <= 2


async def test_a_hung_answer_is_cut_off_at_the_deadline() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return OK_FEED

    async with FeedClient("http://feed.test", TOKEN, deadline=0.3,
                          transport=httpx.MockTransport(hang)) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="deadline"):
            await client.feed("user0010")
        assert time.monotonic() - started < 2


async def test_a_hung_connection_is_retried_within_the_deadline() -> None:
    """``timeout`` bounds one attempt: a server that never answers the first connection
    costs that long, not the whole deadline."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if connections > 1:
            body = json.dumps({"status": "ok"}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        else:
            await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with FeedClient(f"http://127.0.0.1:{port}", TOKEN, timeout=0.3,
                              deadline=5) as client:
            started = time.monotonic()
            assert (await client.healthz()).ok
            assert time.monotonic() - started < 2
        assert connections == 2
    finally:
        server.close()


@pytest.mark.parametrize("deadline", [0, -1])
async def test_a_deadline_must_be_positive(make_client: MakeClient, deadline: float) -> None:
    with pytest.raises(ValueError, match="deadline"):
        await make_client(Recorder(OK_FEED)).feed("user0010", deadline=deadline)


# --- cursors ---------------------------------------------------------------------------

def paged(make_item: Callable[[int], dict[str, Any]], pages: int, per_page: int
          ) -> Recorder:
    """Answers page n (cursor ``p<n>``) with ``per_page`` items; the last has no cursor."""
    answers = []
    for n in range(pages):
        items = [make_item(n * per_page + i) for i in range(per_page)]
        cursor = f"p{n + 1}" if n + 1 < pages else None
        answers.append(httpx.Response(200, json={"items": items, "next_cursor": cursor}))
    return Recorder(*answers)


Iterate = Callable[[FeedClient], AsyncIterator[Any]]
ITERATORS: list[tuple[str, Iterate, Callable[[int], dict[str, Any]], str, Callable[[Any], str]]]
ITERATORS = [
    ("feed", lambda c: c.iter_feed("user0010", limit=2, explain=True),
     lambda i: koo_json(f"k{i}", score=1.0, reason="following"), "/v1/users/user0010/feed",
     lambda item: item.koo_id),
    ("user koos", lambda c: c.iter_user_koos("user0042", limit=2),
     lambda i: koo_json(f"k{i}"), "/v1/users/user0042/koos", lambda item: item.koo_id),
    ("reactions", lambda c: c.iter_reactions("tour-koo", limit=2),
     lambda i: {"user_id": f"k{i}", "kind": "like", "created_at": i},
     "/v1/koos/tour-koo/reactions", lambda item: item.user_id),
]


@pytest.mark.parametrize(("name", "iterate", "make_item", "path", "key"), ITERATORS,
                         ids=[i[0] for i in ITERATORS])
async def test_iteration_follows_next_cursor_until_null(
    make_client: MakeClient, name: str, iterate: Iterate,
    make_item: Callable[[int], dict[str, Any]], path: str, key: Callable[[Any], str],
) -> None:
    handler = paged(make_item, pages=3, per_page=2)
    seen = [key(item) async for item in iterate(make_client(handler))]
    assert seen == [f"k{i}" for i in range(6)]
    assert [r.url.path for r in handler.requests] == [path] * 3
    assert [r.url.params.get("cursor") for r in handler.requests] == [None, "p1", "p2"]
    assert all(r.url.params["limit"] == "2" for r in handler.requests)


async def test_iteration_yields_typed_items(make_client: MakeClient) -> None:
    handler = paged(lambda i: {"user_id": f"u{i}", "kind": "like", "created_at": i}, 2, 1)
    items = [r async for r in make_client(handler).iter_reactions("tour-koo")]
    assert items == [Reaction("u0", "like", 0), Reaction("u1", "like", 1)]


async def test_a_page_is_retried_without_restarting_the_walk(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    pages = paged(lambda i: koo_json(f"k{i}"), pages=2, per_page=1)
    pages.answers.insert(1, error(503, "unavailable", headers={"Retry-After": "1"}))
    seen = [k.koo_id async for k in make_client(pages).iter_user_koos("user0042")]
    assert seen == ["k0", "k1"]
    assert [r.url.params.get("cursor") for r in pages.requests] == [None, "p1", "p1"]


async def test_an_expired_cursor_ends_the_walk_with_invalid_cursor(
    make_client: MakeClient
) -> None:
    pages = paged(lambda i: koo_json(f"k{i}"), pages=2, per_page=1)
    pages.answers[1] = error(400, "invalid_cursor", "the cursor expired")
    seen: list[str] = []

    async def walk() -> None:
        async for koo in make_client(pages).iter_user_koos("user0042"):
            seen.append(koo.koo_id)

    with pytest.raises(InvalidCursor):
        await walk()
    assert seen == ["k0"]


def test_the_token_is_required() -> None:
    with pytest.raises(ValueError, match="token"):
        FeedClient("http://feed.test", "")


# --- notifications -----------------------------------------------------------------------

def _notification(n: int, **extra: Any) -> dict[str, Any]:
    return {"notification_id": f"n{n}", "kind": "like", "koo_id": "tour-koo",
            "actors": ["user0010"], "actor_count": 1, "updated_at": 1764150060000 - n,
            "seen": False, **extra}


async def test_notifications_follow_cursors_and_parse(make_client: MakeClient) -> None:
    from koo_feed_client import Notification

    answers = Recorder(
        httpx.Response(200, json={"items": [_notification(1)], "unseen": 2,
                                  "next_cursor": "c2"}),
        httpx.Response(200, json={"items": [_notification(2, kind="follow", koo_id=None)],
                                  "unseen": 2, "next_cursor": None}))
    client = make_client(answers)
    items = [n async for n in client.notifications("user0042", limit=1)]
    assert [str(r.url) for r in answers.requests] == [
        "http://feed.test/v1/users/user0042/notifications?limit=1",
        "http://feed.test/v1/users/user0042/notifications?limit=1&cursor=c2"]
    assert items[0] == Notification("n1", "like", "tour-koo", ("user0010",), 1,
                                    1764150059999, False)
    assert items[1].koo_id is None


async def test_a_notification_page_of_the_wrong_shape_is_an_error(
        make_client: MakeClient) -> None:
    client = make_client(Recorder(httpx.Response(
        200, json={"items": [_notification(1, seen="no")], "unseen": 1, "next_cursor": None})))
    with pytest.raises(ClientError):
        await client.notifications_page("user0042")


async def test_mark_seen_posts_up_to_and_takes_no_content(make_client: MakeClient) -> None:
    answers = Recorder(httpx.Response(503, headers={"Retry-After": "1"}),
                       httpx.Response(204))
    client = make_client(answers)
    await client.mark_seen("user0042", 1764150060000)
    assert [r.method for r in answers.requests] == ["POST", "POST"]
    assert answers.requests[-1].url.path == "/v1/users/user0042/notifications/seen"
    assert json.loads(answers.requests[-1].content) == {"up_to": 1764150060000}
    with pytest.raises(ValueError, match="up_to"):
        await client.mark_seen("user0042", 1.5)  # type: ignore[arg-type]
    missing = make_client(Recorder(error(404, "not_found")))
    with pytest.raises(NotFound):
        await missing.mark_seen("nobody", 1)
