"""The stream iterator over ``httpx.MockTransport``: events parsed, reconnects with
``Last-Event-ID`` after the stream ends or a 503 (waiting ``Retry-After``), a koo sent
twice across a reconnect yielded once, and errors that cannot be retried raised."""

from __future__ import annotations

import json

import httpx
import pytest
from client_fakes import FakeTime, Recorder, error, koo_json
from conftest import MakeClient

from koo_feed_client import FeedItem, NotFound, StreamEvent


def sse(*events: tuple[str, str | None, dict[str, object]]) -> httpx.Response:
    body = ": open\n\n"
    for kind, event_id, data in events:
        body += f"event: {kind}\n" + (f"id: {event_id}\n" if event_id else "")
        body += f"data: {json.dumps(data)}\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"},
                          content=body.encode())


def item(koo_id: str) -> dict[str, object]:
    return koo_json(koo_id, score=1.5, reason="following")


async def test_reconnects_with_the_last_id_and_skips_repeats(
    make_client: MakeClient, fake_time: FakeTime
) -> None:
    recorder = Recorder(
        sse(("koo", "id-1", item("k1")), ("remove", "id-2", {"koo_id": "k0"})),
        error(503, "unavailable", headers={"Retry-After": "2"}),
        sse(("koo", "id-1b", item("k1")), ("koo", "id-3", item("k3")),
            ("reset", None, {})),
    )
    client = make_client(recorder)
    got: list[StreamEvent] = []
    async for event in client.stream("user0010"):
        got.append(event)
        if event.event == "reset":
            break
    assert [(e.event, e.koo_id) for e in got] == [
        ("koo", "k1"), ("remove", "k0"), ("koo", "k3"), ("reset", None)]
    assert isinstance(got[0].item, FeedItem)
    assert got[0].item.reason == "following"
    assert got[0].id == "id-1"
    paths = {r.url.path for r in recorder.requests}
    assert paths == {"/v1/users/user0010/feed/stream"}
    assert "last-event-id" not in recorder.requests[0].headers
    assert recorder.requests[1].headers["last-event-id"] == "id-2"
    assert recorder.requests[2].headers["last-event-id"] == "id-2"  # 503: nothing new
    assert 2.0 <= fake_time.sleeps[1] <= 2.2  # Retry-After (and up to a tenth more)


async def test_resumes_from_a_given_id_and_raises_what_cannot_be_retried(
    make_client: MakeClient,
) -> None:
    recorder = Recorder(error(404, "not_found"))
    client = make_client(recorder)
    with pytest.raises(NotFound):
        async for _ in client.stream("ghost", last_event_id="id-9"):
            pass
    assert recorder.requests[0].headers["last-event-id"] == "id-9"
