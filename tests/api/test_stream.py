"""The realtime feed stream over real HTTP, against real Redis and DynamoDB (moto or
DynamoDB Local): what enters and leaves a reader's feed arrives as Server-Sent Events.

Events are applied by the workers (``seed``) as in production: fan-out, the author's own
timeline, a celebrity's pulled koo, deletes and relation changes each reach the stream
through the delivery path itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette

from config.settings import Settings
from feed import keys, metrics
from feed.api._server import DirectBody
from feed.api.app import create_app
from feed.cache.live import LIVE_MAXLEN, wake_message
from feed.services import Services, open_services
from feed.stream import hub as hub_module
from tests.api.conftest import seed
from tests.conftest import uid
from tests.helpers import event, follow, koo, relation, signup, unfollow
from tests.stream_client import open_stream, serve

CELEBRITY_FOLLOWERS = 3


@pytest.fixture
async def svc(settings: Settings) -> AsyncIterator[Services]:
    async with open_services(settings.replace(celebrity_followers=CELEBRITY_FOLLOWERS)) as s:
        yield s


@pytest.fixture
async def app(svc: Services) -> AsyncIterator[Starlette]:
    application = create_app(svc.settings, svc)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def url(app: Starlette) -> AsyncIterator[str]:
    async with serve(app) as base:
        yield base


def people(*names: str) -> dict[str, str]:
    return {n: uid(n) for n in names}


async def test_followee_own_and_celebrity_koos_arrive_and_others_do_not(
    svc: Services, url: str
) -> None:
    """Pass: a followee's koo (fan-out), the reader's own and a followed celebrity's
    (pulled) arrive as ``koo`` events with the FeedItem fields and the right reason; a
    stranger's koo never does; nothing arrives twice."""
    p = people("r", "a", "c", "f1", "f2", "s")
    await seed(svc.settings, [signup(u) for u in p.values()],
               [follow(p["r"], p["a"]), follow(p["r"], p["c"]), follow(p["f1"], p["c"]),
                follow(p["f2"], p["c"])])
    async with open_stream(url, p["r"]) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        k = {n: uid("k") for n in ("a", "r", "c", "s")}
        await seed(svc.settings, [koo(k["s"], p["s"]), koo(k["a"], p["a"], text="hi there"),
                                  koo(k["r"], p["r"]), koo(k["c"], p["c"])])
        got = [await stream.next_of("koo") for _ in range(3)]
        by_id = {e.data["koo_id"]: e for e in got}
        assert set(by_id) == {k["a"], k["r"], k["c"]}
        assert by_id[k["a"]].data["reason"] == "following"
        assert by_id[k["a"]].data["text"] == "hi there"
        assert by_id[k["r"]].data["reason"] == "self"
        assert by_id[k["c"]].data["reason"] == "celebrity"
        for e in got:
            assert e.id
            assert p["r"] not in e.id
            assert "live" not in e.id
            assert {"koo_id", "author_id", "text", "lang", "created_at", "hashtags",
                    "reply_to", "rekoo_of", "likes", "rekoos", "comments", "score",
                    "reason"} == set(e.data)
        assert not [e for e in await stream.quiet(1.0) if e.event == "koo"]


async def test_frames_go_straight_to_a_reading_client(
    svc: Services, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass: over the HTTP protocol `feed api` serves with, the hub writes a koo to a
    client that reads without waking the stream's task (the direct write is taken),
    and the client gets it as a well-formed event."""
    taken: list[bool] = []
    write = DirectBody.__call__

    def counted(self: DirectBody, body: bytes) -> bool:
        taken.append(write(self, body))
        return taken[-1]

    monkeypatch.setattr(DirectBody, "__call__", counted)
    p = people("r", "a")
    await seed(svc.settings, [signup(u) for u in p.values()], [follow(p["r"], p["a"])])
    async with open_stream(url, p["r"]) as stream:
        posted = uid("k")
        await seed(svc.settings, [koo(posted, p["a"])])
        assert (await stream.next_of("koo")).data["koo_id"] == posted
    assert True in taken


async def test_a_koo_announced_past_an_unseen_entry_is_read_back_in_order(
    svc: Services, url: str
) -> None:
    """Pass: a wake-up whose entry follows one the process has not passed (messages out
    of order, or a note whose wake-up was lost) makes the process read the live stream:
    both entries arrive, in order, and neither is sent twice."""
    p = people("r", "a")
    await seed(svc.settings, [signup(u) for u in p.values()], [follow(p["r"], p["a"])])
    first, second = uid("k"), uid("k")
    await seed(svc.settings, [koo(first, p["a"]), koo(second, p["a"])])  # before streaming
    async with open_stream(url, p["r"]) as stream:
        redis: Any = svc.cache.redis
        live = keys.live_stream(p["r"])
        unseen = await redis.xadd(live, {"t": "koo", "k": first, "a": p["a"], "c": 1})
        entry = await redis.xadd(live, {"t": "koo", "k": second, "a": p["a"], "c": 2})
        await redis.publish(keys.LIVE_WAKE_CHANNEL,
                            wake_message((), second, [(p["r"], str(unseen), str(entry))]))
        got = [(await stream.next_of("koo")).data["koo_id"] for _ in range(2)]
        assert got == [first, second]
        assert not [e for e in await stream.quiet(0.5) if e.event == "koo"]


async def test_removes_on_delete_unfollow_block_and_mute(svc: Services, url: str) -> None:
    """Pass: a deleted koo, and the koos of an author the reader unfollows, blocks or
    mutes, each arrive as ``remove`` events with their koo_id; after a mute, the muted
    author's new koo is not streamed, while another followee's is."""
    p = people("r", "a", "b", "m", "d")
    await seed(svc.settings, [signup(u) for u in p.values()],
               [follow(p["r"], p[n]) for n in ("a", "b", "m", "d")])
    k = {n: uid("k") for n in ("a", "b", "m", "d")}
    await seed(svc.settings, [koo(k[n], p[n]) for n in k])
    async with open_stream(url, p["r"]) as stream:
        await seed(svc.settings, [event("koo_deleted", koo_id=k["d"], author_id=p["d"])])
        assert (await stream.next_of("remove")).data == {"koo_id": k["d"]}
        for change, author in ((unfollow(p["r"], p["a"]), "a"),
                               (relation("user_blocked", p["r"], p["b"]), "b"),
                               (relation("user_muted", p["r"], p["m"]), "m")):
            await seed(svc.settings, [change])
            removed = await stream.next_of("remove")
            assert removed.data == {"koo_id": k[author]}, (author, removed)
        later, fresh = uid("k"), uid("k")
        await seed(svc.settings, [koo(later, p["m"])])
        await seed(svc.settings, [koo(fresh, p["d"])])
        assert (await stream.next_of("koo")).data["koo_id"] == fresh


async def test_an_author_who_blocks_the_reader_is_never_streamed(svc: Services, url: str
                                                                 ) -> None:
    """Pass: once the author blocks the reader, the author's next koo never arrives,
    though the reader still follows them; a later koo of another followee does."""
    p = people("r", "a", "o")
    await seed(svc.settings, [signup(u) for u in p.values()],
               [follow(p["r"], p["a"]), follow(p["r"], p["o"]),
                relation("user_blocked", p["a"], p["r"])])
    async with open_stream(url, p["r"]) as stream:
        hidden, shown = uid("k"), uid("k")
        await seed(svc.settings, [koo(hidden, p["a"])])
        await seed(svc.settings, [koo(shown, p["o"])])
        assert (await stream.next_of("koo")).data["koo_id"] == shown


async def test_keep_alive_comments_while_idle(svc: Services,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass: an idle stream gets a comment line within each keep-alive interval."""
    (reader,) = people("r").values()
    await seed(svc.settings, [signup(reader)])
    monkeypatch.setattr(hub_module, "KEEPALIVE_SECONDS", 0.3)
    application = create_app(svc.settings, svc)
    async with (application.router.lifespan_context(application), serve(application) as base,
                open_stream(base, reader) as stream):
        await asyncio.sleep(1.2)
        assert stream.comments.count("keep-alive") >= 2, stream.comments


async def test_last_event_id_resumes_in_order_then_goes_live(svc: Services, url: str
                                                            ) -> None:
    """Pass: reconnecting with the id of the last event seen first sends, in order,
    every koo delivered while disconnected, then live ones; no ``reset``."""
    p = people("r", "a")
    await seed(svc.settings, [signup(u) for u in p.values()], [follow(p["r"], p["a"])])
    first = uid("k")
    async with open_stream(url, p["r"]) as stream:
        await seed(svc.settings, [koo(first, p["a"])])
        seen = await stream.next_of("koo")
    missed = [uid("k") for _ in range(3)]
    for koo_id in missed:
        await seed(svc.settings, [koo(koo_id, p["a"])])
    async with open_stream(url, p["r"], last_event_id=seen.id) as stream:
        caught = [await stream.next() for _ in range(3)]
        assert [e.event for e in caught] == ["koo"] * 3
        assert [e.data["koo_id"] for e in caught] == missed
        live = uid("k")
        await seed(svc.settings, [koo(live, p["a"])])
        assert (await stream.next()).data["koo_id"] == live


async def test_reset_on_too_much_missed_or_a_tampered_or_foreign_id(
    svc: Services, url: str
) -> None:
    """Pass: ``event: reset`` first when more than 200 entries came after the id, when
    the id was altered, and when it was issued for another reader; the stream then goes
    live (a later koo arrives)."""
    p = people("r", "a", "x")
    await seed(svc.settings, [signup(u) for u in p.values()],
               [follow(p["r"], p["a"]), follow(p["x"], p["a"])])
    first = uid("k")
    async with open_stream(url, p["r"]) as r_stream, open_stream(url, p["x"]) as x_stream:
        await seed(svc.settings, [koo(first, p["a"])])
        mine = await r_stream.next_of("koo")
        foreign = await x_stream.next_of("koo")
    assert mine.id
    assert foreign.id
    tampered = mine.id[:-2] + ("AA" if mine.id[-2:] != "AA" else "BB")
    for bad in (tampered, foreign.id, "not-an-id"):
        async with open_stream(url, p["r"], last_event_id=bad) as stream:
            assert (await stream.next()).event == "reset", bad
    # More than 200 entries after the id: removes written by the delivery path itself.
    await svc.cache.live_removes(p["r"], [uid("gone") for _ in range(LIVE_MAXLEN + 1)])
    async with open_stream(url, p["r"], last_event_id=mine.id) as stream:
        assert (await stream.next()).event == "reset"
        live = uid("k")
        await seed(svc.settings, [koo(live, p["a"])])
        assert (await stream.next_of("koo")).data["koo_id"] == live


async def test_unknown_user_404_and_bad_id_422_before_the_stream(svc: Services, url: str
                                                                ) -> None:
    """Pass: JSON error bodies, not a stream, for an unknown reader and a bad id; and
    401 without a token."""
    async with open_stream(url, uid("nobody")) as stream:
        assert stream.status == 404
        assert stream.headers["content-type"].startswith("application/json")
        assert b'"not_found"' in stream.body
    async with open_stream(url, "x" * 65) as stream:
        assert stream.status == 422
        assert b'"validation_failed"' in stream.body
    async with open_stream(url, uid("r"), headers={}) as stream:
        assert stream.status == 401


async def test_503_with_retry_after_past_the_cap(app: Starlette, svc: Services, url: str
                                                 ) -> None:
    """Pass: with the cap at one stream, a second is 503 ``unavailable`` with
    Retry-After; once the first ends, a stream opens again."""
    (reader,) = people("r").values()
    await seed(svc.settings, [signup(reader)])
    app.state.stream_hub.max_streams = 1
    before = metrics.STREAMS_OPEN._value.get()
    async with open_stream(url, reader) as first:
        assert first.status == 200
        async with open_stream(url, reader) as second:
            assert second.status == 503
            assert int(second.headers["retry-after"]) > 0
            assert b'"unavailable"' in second.body
        assert metrics.STREAMS_OPEN._value.get() == before + 1  # the refused one not counted
    for _ in range(50):
        if app.state.stream_hub.open_streams == 0:
            break
        await asyncio.sleep(0.1)
    assert metrics.STREAMS_OPEN._value.get() == before
    async with open_stream(url, reader) as again:
        assert again.status == 200


async def test_a_client_that_stops_reading_is_disconnected(
    app: Starlette, svc: Services, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass: a client that opens a stream and never reads is dropped (the process no
    longer counts its stream) once frames pile up, instead of being buffered."""
    (reader,) = people("r").values()
    await seed(svc.settings, [signup(reader)])
    monkeypatch.setattr(hub_module, "MAX_PENDING_FRAMES", 16)
    hub = app.state.stream_hub
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, (
        f"GET /v1/users/{reader}/feed/stream HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer test-token-123456\r\n\r\n").encode())
    try:
        for _ in range(100):
            if hub.open_streams == 1:
                break
            await asyncio.sleep(0.05)
        assert hub.open_streams == 1
        long_id = "x" * 60
        for _ in range(200):
            await svc.cache.live_removes(reader, [f"{long_id}{i:04d}" for i in range(100)])
            if hub.open_streams == 0:
                break
            await asyncio.sleep(0.02)
        assert hub.open_streams == 0
    finally:
        sock.close()
