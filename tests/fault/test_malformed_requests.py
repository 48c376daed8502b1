"""Careless clients and malformed requests against a real `feed api` (issue 17, items 3
and 6): a client gone mid-body is not a server error, an encoded slash never routes
across path segments, and what the HTTP parser refuses still has the contract's JSON
error body. Each test states its pass criterion.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from config.settings import Settings
from tests.api.conftest import seed
from tests.conftest import uid
from tests.fault._raw_http import AUTH, Reply, exchange, open_stream, running_api
from tests.helpers import koo, signup

pytestmark = [pytest.mark.fault, pytest.mark.default_client_only, pytest.mark.timeout(60)]

BEARER = b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"


async def test_a_client_gone_mid_body_is_a_499_logged_at_debug(
    settings: Settings, tmp_path: Path
) -> None:
    """Pass: three clients that close their connection halfway through a
    `POST /v1/events` body are counted as status 499 in feed_http_request_duration_seconds (none
    as 500), and the API's log (at DEBUG) holds no ERROR record and no traceback, but one
    debug record per disconnect. Before: each was two ERROR records with a traceback and
    a 500."""
    log = tmp_path / "api.log"
    async with running_api(settings, log, FEED_LOG_LEVEL="DEBUG") as api:
        for _ in range(3):
            _, writer = await open_stream(api.port)
            writer.write(b"POST /v1/events HTTP/1.1\r\nHost: api\r\n" + BEARER
                         + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                         + b'{"events": [')
            await writer.drain()
            await asyncio.sleep(0.2)  # the handler is waiting for the rest of the body
            writer.close()
        deadline = time.monotonic() + 5
        while await api.metric("feed_http_request_duration_seconds_count", status="499") < 3:
            assert time.monotonic() < deadline, "the disconnects were not counted as 499"
            await asyncio.sleep(0.1)
        assert await api.metric("feed_http_request_duration_seconds_count", route="post_events",
                                status="499") == 3
        assert await api.metric("feed_http_request_duration_seconds_count", status="500") == 0
    records = [orjson.loads(line) for line in log.read_text().splitlines()
               if line.startswith("{")]
    errors = [r for r in records if r["level"] in {"error", "critical"} or "exception" in r]
    assert not errors, errors[:2]
    gone = [r for r in records if r["message"] == "client disconnected"]
    assert len(gone) == 3, gone
    assert all(r["level"] == "debug" for r in gone), gone


async def test_an_encoded_slash_in_an_id_never_routes_to_another_resource(
    settings: Settings, tmp_path: Path
) -> None:
    """Pass: with alice and her koo stored, `/v1/users/alice%2Ffeed` (and `%2f`,
    `alice%2Fkoos`, `alice%2Frecommendations%2Ffollows`, `k%2Freactions`) answer 404 or
    422 with the JSON error body, never alice's feed, koos or recommendations (before:
    `alice%2Ffeed` was served as her feed, 200); the plain routes answer 200, and an
    encoded slash in the query string is still an ordinary character."""
    alice, koo_id = uid(), uid("k")
    await seed(settings, [signup(alice)], [koo(koo_id, alice)])
    async with running_api(settings, tmp_path / "api.log") as api:
        async def get(path: str) -> Reply:
            return await exchange(api.port, f"GET {path} HTTP/1.1\r\nHost: api\r\n".encode()
                                  + BEARER + b"Connection: close\r\n\r\n")

        for path in (f"/v1/users/{alice}/feed", f"/v1/users/{alice}/koos",
                     f"/v1/koos/{koo_id}/reactions"):
            reply = await get(path)
            assert reply.status == 200, (path, reply.raw[:300])
        for path in (f"/v1/users/{alice}%2Ffeed", f"/v1/users/{alice}%2ffeed",
                     f"/v1/users/{alice}%2Fkoos",
                     f"/v1/users/{alice}%2Frecommendations%2Ffollows",
                     f"/v1/koos/{koo_id}%2Freactions", f"/v1%2Fusers/{alice}"):
            reply = await get(path)
            assert reply.status in {404, 422}, (path, reply.raw[:300])
            code = reply.json_error()["code"]
            assert code == {404: "not_found", 422: "validation_failed"}[reply.status], path
        reply = await get(f"/v1/users/{alice}/feed?cursor=a%2Fb")  # a cursor, not a path
        assert reply.status == 400, reply.raw[:300]
        assert reply.json_error()["code"] == "invalid_cursor"


# What the parser refuses before the app sees it (before: text/plain, "Invalid HTTP
# request received.", or an empty 403 for a WebSocket upgrade).
MALFORMED = {
    "control byte in a header": (b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-A: a\x01b\r\n\r\n",
                                 400, "bad_request"),
    "control byte in the path": (b"GET /heal\x7fthz HTTP/1.1\r\nHost: api\r\n\r\n",
                                 400, "bad_request"),
    "space in the path": (b"GET /v1/users/a b HTTP/1.1\r\nHost: api\r\n\r\n", 400, "bad_request"),
    "URL over 64 KB": (b"GET /v1/users/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: api\r\n\r\n",
                       414, "uri_too_long"),
    "Content-Length with Transfer-Encoding": (
        b"POST /v1/events HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "two Content-Lengths": (b"POST /v1/events HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n"
                            b"Content-Length: 6\r\n\r\nhello", 400, "bad_request"),
    "bad chunk size": (b"POST /v1/events HTTP/1.1\r\nHost: api\r\n" + BEARER
                       + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request"),
    "unknown method": (b"FROB /healthz HTTP/1.1\r\nHost: api\r\n\r\n", 400, "bad_request"),
    "not HTTP at all": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
                        400, "bad_request"),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
}


async def test_requests_the_parser_refuses_get_the_json_error_body(
    settings: Settings, tmp_path: Path
) -> None:
    """Pass: each malformed request in MALFORMED gets its status (400 ``bad_request``, 414
    for the long URL) with ``Content-Type: application/json``, the contract's error body
    and ``Connection: close``, and the connection is closed within 2 s; a WebSocket
    upgrade request is served as plain HTTP (200 JSON from /healthz, not an empty 403);
    the process still serves reads afterwards."""
    async with running_api(settings, tmp_path / "api.log") as api:
        for name, (request, status, code) in MALFORMED.items():
            reply = await exchange(api.port, request, within=5)
            assert reply.status == status, (name, reply.raw[:300])
            assert reply.json_error()["code"] == code, name
            assert reply.headers.get("connection") == "close", (name, reply.headers)
            assert reply.closed, name
            assert reply.seconds < 2, (name, reply.seconds)
        upgrade = await exchange(
            api.port, b"GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", within=5)
        assert upgrade.status == 200, upgrade.raw[:300]
        assert orjson.loads(upgrade.body) == {"status": "ok"}
        reply = await exchange(api.port, b"GET /v1/users/" + uid().encode()
                               + b" HTTP/1.1\r\nHost: api\r\n" + BEARER
                               + b"Connection: close\r\n\r\n")
        assert reply.status == 404, reply.raw[:300]
        assert reply.json_error()["code"] == "not_found"
        assert await api.metric("feed_http_refused_total", reason="bad_request") == \
            sum(status == 400 for _, status, _ in MALFORMED.values())
