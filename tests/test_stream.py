"""Unit tests of the realtime stream's pieces: event ids, a listener's bounded buffer,
entry order, and the resumption rule over a real Redis."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import Settings
from feed import keys
from feed.api._server import DirectBody
from feed.cache.live import LIVE_MAXLEN, Appended, entry_key, parse_wake, wake_message
from feed.fields import ID_PATTERN
from feed.services import Services
from feed.stream import listener as listener_module
from feed.stream.hub import RESUME_LIMIT, Listener
from feed.stream.ids import StreamIds
from tests.conftest import uid

SECRET = "stream-test-secret-0123456789"


def test_ids_round_trip_and_hide_the_entry() -> None:
    """Pass: an id opens to its entry for its reader only, and shows neither."""
    ids = StreamIds(SECRET)
    sealed = ids.seal("alice", "1764150000000-7", now=1_000.0)
    assert "alice" not in sealed
    assert "1764150000000" not in sealed
    assert ids.open("alice", sealed, now=1_001.0) == "1764150000000-7"
    assert ids.open("bob", sealed, now=1_001.0) is None  # foreign
    assert ids.seal("alice", "1-0", now=1.0) != ids.seal("alice", "1-0", now=1.0)


@pytest.mark.parametrize("change", ["flip", "cut", "other_secret", "garbage", "expired"])
def test_bad_ids_do_not_open(change: str) -> None:
    """Pass: an altered, truncated, foreign-deployment, malformed or expired id is None."""
    ids = StreamIds(SECRET)
    sealed = ids.seal("alice", "5-0", now=1_000.0)
    now = 1_001.0
    if change == "flip":
        sealed = sealed[:10] + ("A" if sealed[10] != "A" else "B") + sealed[11:]
    elif change == "cut":
        sealed = sealed[:-4]
    elif change == "other_secret":
        ids = StreamIds(SECRET + "x")
    elif change == "garbage":
        sealed = "hello world"
    else:
        now = 1_000.0 + 86_400 * 2
    assert ids.open("alice", sealed, now=now) is None


def test_entry_ids_order_numerically() -> None:
    assert entry_key("10-0") > entry_key("9-5")
    assert entry_key("9-10") > entry_key("9-9")
    assert sorted(["2-1", "10-0", "2-0"], key=entry_key) == ["2-0", "2-1", "10-0"]


async def test_listener_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass: frames are handed over in order; past the bound the listener is closed as
    stalled instead of growing."""
    monkeypatch.setattr(listener_module, "MAX_PENDING_FRAMES", 4)
    listener = Listener("alice", "1-0")
    for i in range(3):
        listener.offer(b"%d" % i)
    assert await listener.next() == [b"0", b"1", b"2"]
    for i in range(10):
        listener.offer(b"%d" % i)
    assert listener.closed == "stalled"
    assert len(listener.frames) == 4


async def test_a_quiet_listener_is_nudged_and_a_busy_one_is_not() -> None:
    """Pass: a nudge wakes a listener that has written nothing since the given time,
    with no frames (a keep-alive is due); one that wrote since, or has frames waiting,
    is left alone."""
    quiet, busy, waiting = (Listener(r, "1-0") for r in ("q", "b", "w"))
    for listener in (quiet, busy, waiting):
        listener.sent_at = 10.0
    busy.sent_at = 20.0
    waiting.offer(b"x")
    waiting.ready.clear()
    for listener in (quiet, busy, waiting):
        listener.nudge(15.0)
    assert quiet.ready.is_set()
    assert await quiet.next() == []
    assert not busy.ready.is_set()
    assert not waiting.ready.is_set()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await busy.next()


async def test_resumption_rule(services: Services, settings: Settings) -> None:
    """Pass: entries after a known id come back in order; an id the stream no longer
    holds, or more than the limit after it, means no resumption (None)."""
    cache = services.cache
    reader = uid("r")
    start = await cache.open_live(reader)
    await cache.live_removes(reader, ["k1", "k2", "k3"])
    since = await cache.live_since(reader, start, limit=RESUME_LIMIT)
    assert since is not None
    assert [f["k"] for _, f in since] == ["k1", "k2", "k3"]
    assert await cache.live_since(reader, "1-0", limit=RESUME_LIMIT) is None
    await cache.live_removes(reader, [f"x{i}" for i in range(RESUME_LIMIT)])
    assert await cache.live_since(reader, start, limit=RESUME_LIMIT) is None
    assert await cache.redis.xlen(keys.live_stream(reader)) < LIVE_MAXLEN * 2


async def test_a_reader_without_a_stream_gets_no_live_entries(services: Services) -> None:
    """Pass: the delivery path writes live streams only for readers who stream, once
    per koo however often it is delivered, and publishes their ids, each with the entry
    before the koo's and the koo's own."""
    cache = services.cache
    idle, live = uid("idle"), uid("live")
    await cache.open_live(live)
    redis: Any = cache.redis  # standalone here; a Cluster's stream is test_stream_cluster's
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.LIVE_WAKE_CHANNEL)
    try:
        for _ in range(2):  # announce, then push: streamed once
            await cache.push_live([idle, live], "k1", 1_000, "author")
        assert not await cache.redis.exists(keys.live_stream(idle), keys.live_seen(idle))
        entries = await cache.redis.xrange(keys.live_stream(live))
        (opened, _), (appended, fields) = entries  # the stream's opening, then the koo
        assert (fields["t"], fields["k"]) == ("koo", "k1")
        mine: list[tuple[list[str], str, list[Appended]]] = []
        async with asyncio.timeout(5):  # other tests may publish on the channel meanwhile
            while not mine:
                message = await pubsub.get_message(timeout=1.0)
                data = message["data"] if message and message["type"] == "message" else ""
                if live in data or idle in data:
                    mine.append(parse_wake(data))
        assert mine == [([], "k1", [(live, opened, appended)])]
        await asyncio.sleep(0.2)
        while message := await pubsub.get_message(timeout=0.1):
            assert live not in message["data"]  # the second delivery woke no one
            assert idle not in message["data"]
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize(("readers", "koo_id", "appended"), [
    (["r1", "r-2"], "", []),
    ([], "k_1", [("r1", "1-0", "2-0"), ("r2", "0-0", "17-3")]),
    (["r3"], "k", [("r1", "1-0", "2-0")]),
])
def test_wake_messages_round_trip(readers: list[str], koo_id: str,
                                  appended: list[Appended]) -> None:
    assert parse_wake(wake_message(readers, koo_id, appended)) == (readers, koo_id, appended)


@given(st.lists(st.from_regex(ID_PATTERN, fullmatch=True), max_size=5),
       st.from_regex(ID_PATTERN, fullmatch=True),
       st.lists(st.tuples(st.from_regex(ID_PATTERN, fullmatch=True),
                          st.from_regex(r"[0-9]{1,13}-[0-9]{1,4}", fullmatch=True),
                          st.from_regex(r"[0-9]{1,13}-[0-9]{1,4}", fullmatch=True)),
                max_size=5))
def test_any_ids_survive_a_wake_message(readers: list[str], koo_id: str,
                                        appended: list[Appended]) -> None:
    """Property: whatever valid ids, the message gives back what was put in (ids never
    hold the separators)."""
    expected = (readers, koo_id if appended else "", appended)
    assert parse_wake(wake_message(readers, koo_id, appended)) == expected


class _Cycle:
    """The parts of a response's connection that DirectBody looks at."""

    def __init__(self) -> None:
        self.disconnected = False
        self.response_complete = False
        self.response_started = True
        self.chunked_encoding: bool | None = True
        self.flow = SimpleNamespace(write_paused=False)
        self.written: list[bytes] = []
        self.closing = False
        self.transport = SimpleNamespace(write=self.written.append,
                                         is_closing=lambda: self.closing)


def test_direct_body_writes_a_chunk_only_while_the_connection_takes_it() -> None:
    """Pass: a frame goes out as one HTTP chunk while the answer is open, chunked and its
    connection is not paused; after a disconnect, before the start, after the end, on a
    paused connection or a non-chunked answer nothing is written and it says so."""
    cycle = _Cycle()
    direct = DirectBody(cycle)
    assert direct(b"event: koo\n\n")
    assert cycle.written == [b"c\r\nevent: koo\n\n\r\n"]
    for change in ({"disconnected": True}, {"response_complete": True},
                   {"response_started": False}, {"chunked_encoding": None}):
        other = _Cycle()
        vars(other).update(change)
        assert not DirectBody(other)(b"x")
        assert other.written == []
    paused = _Cycle()
    paused.flow.write_paused = True
    assert not DirectBody(paused)(b"x")
    assert paused.written == []
    closing = _Cycle()
    closing.closing = True
    assert not DirectBody(closing)(b"x")
    assert closing.written == []


def test_direct_body_says_false_when_the_connection_closes_under_the_write() -> None:
    """Pass: a transport that refuses the write (closed after the checks) is a False,
    never an exception in the hub that hands frames to every stream."""

    def refuse(data: bytes) -> None:
        raise RuntimeError("unable to perform operation: the handler is closed")

    cycle = _Cycle()
    cycle.transport.write = refuse
    assert not DirectBody(cycle)(b"x")


async def test_a_listener_writes_directly_only_when_nothing_is_ahead_of_the_frame() -> None:
    """Pass: with a direct writer, a frame goes straight out when no frame waits and the
    response is not writing; otherwise (frames waiting, a write under way, the writer
    refusing) it waits in order for the response's task, which is woken."""
    written: list[bytes] = []
    takes = True

    def direct(frame: bytes) -> bool:
        if takes:
            written.append(frame)
        return takes

    listener = Listener("alice", "1-0")
    listener.direct = direct
    listener.offer(b"1")
    assert written == [b"1"]
    assert not listener.ready.is_set()
    takes = False
    listener.offer(b"2")  # refused (a paused connection): queued, the task is woken
    takes = True
    listener.offer(b"3")  # "2" is waiting: "3" must not overtake it
    assert written == [b"1"]
    assert listener.ready.is_set()
    assert await listener.next() == [b"2", b"3"]
    listener.sending = True  # the task is writing
    listener.offer(b"4")
    assert written == [b"1"]
    listener.sending = False
    assert await listener.next() == [b"4"]
    listener.offer(b"5")
    assert written == [b"1", b"5"]
