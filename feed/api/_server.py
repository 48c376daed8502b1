"""The HTTP/1.1 connection guard `feed api` serves with: uvicorn's httptools protocol plus
bounds on what one client can make a process hold (docs/api.md).

- The request head (request line and headers) is read at most ``max_head_bytes`` at a
  time and refused past it: 431 ``headers_too_large`` (414 ``uri_too_long`` while still
  in the request line), and also past ``max_header_fields`` fields. The parser never sees
  more, so a 64 MiB header costs one 16 KB read instead of seconds of the event loop.
- A whole request, head and body, must arrive within ``request_timeout`` of its first
  byte (or of the connection, for one that sends nothing): otherwise 408
  ``request_timeout`` and the connection is closed; a connection that never sent a byte
  is closed without an answer, as a keep-alive timeout would.
- What the parser refuses (bad bytes, conflicting Content-Length and Transfer-Encoding,
  an unknown method) is answered with the API's JSON error body, not plain text.
- Upgrades (WebSocket, h2c) are not offered: the request is served as plain HTTP/1.1 and
  the connection closed after it.

Every refusal is counted in ``feed_http_refused_total{reason}``.

Each request's scope also carries :class:`DirectBody` (under ``DIRECT_BODY`` in its
``extensions``): the realtime streams write frames with it from the stream hub itself,
without waking the response's task, while the connection takes them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from feed import metrics
from feed.api._http import error_body

__all__ = ["DIRECT_BODY", "REFUSED", "ConnectionLimits", "DirectBody", "GuardedHttpProtocol",
           "guarded_protocol"]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100
# How long a refused connection stays open, not read from, after its answer: closing a
# socket with unread bytes sends a reset that can destroy the answer before the client
# reads it.
LINGER_SECONDS = 1.0
# The longest method llhttp knows (MKACTIVITY, VERSION-CONTROL...) plus the space after it.
_METHOD_ROOM = 24

REFUSED = metrics.HTTP_REFUSED


DIRECT_BODY = "feed.direct_body"  # the key of a request's DirectBody in its extensions


class DirectBody:
    """Write one chunk of a streaming answer straight to its connection, from outside the
    answer's task (the ASGI ``send`` is for that task; this is for the stream hub, which
    hands a frame to thousands of streams at once).

    It writes only when nothing can be reordered or held: the answer has started,
    chunked, and is not complete; the client is connected; the connection takes data
    (its transport is open and has not paused writing). Otherwise, or if the write
    fails (a connection closing under it), it returns False and the caller goes through
    the answer's task and ``send``, which waits for the client or ends the answer. The
    caller must also know that nothing it sent earlier is still waiting to be written.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    def __call__(self, body: bytes) -> bool:
        cycle = self._cycle
        if (cycle.disconnected or cycle.response_complete or not cycle.response_started
                or cycle.chunked_encoding is not True or cycle.flow.write_paused
                or cycle.transport.is_closing()):
            return False
        try:
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        except (RuntimeError, OSError):  # closed between the check and the write
            return False
        return True


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds one connection lives under (picklable: uvicorn hands them to its workers)."""

    request_timeout: float = 10.0
    max_head_bytes: int = MAX_HEAD_BYTES
    max_header_fields: int = MAX_HEADER_FIELDS
    linger: float = LINGER_SECONDS


class _TooManyFields(Exception):
    """Raised from a parser callback to stop parsing at the field over the limit."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`ConnectionLimits`."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 limits: ConnectionLimits | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits or ConnectionLimits()
        self.url = b""
        self._due: float | None = None  # when the request in progress must be complete
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes of the current request's head fed to the parser
        self._head_done = False  # the current request's headers are complete
        self._sent_anything = False
        self._refused = False

    # --- connection -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_deadline()  # an idle socket gets the same time as a request

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already; what follows is not read on
        self._unset_keepalive_if_required()
        self._sent_anything = True
        self._arm_deadline()
        rest: bytes | memoryview = data
        while rest:
            if self._head_done:
                self._feed(rest)
                return
            room = self.limits.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            # Feeding the head in pieces is what keeps a huge header out of the parser.
            # A request that ends inside a piece leaves the next one's first bytes
            # uncounted: the bound is loose by at most one read, never unbounded.
            if len(rest) <= room:  # the usual case: a whole small request, no copy
                piece, rest = rest, b""
            else:
                view = memoryview(rest)
                piece, rest = view[:room], view[room:]
            self._head_bytes += len(piece)
            if not self._feed(piece):
                return

    def _feed(self, data: bytes | memoryview) -> bool:
        """Feed the parser; False once the connection is being refused."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrade is offered: the request was served as plain HTTP, and whatever
            # follows the upgrade request is not HTTP/1.1 any more.
            if self.cycle is not None:
                self.cycle.keep_alive = False
            self.flow.pause_reading()
            return False
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooManyFields):
                self._refuse_head()
            else:
                self._refuse(400, "bad_request", _parser_reason(exc), "bad_request")
            return False
        return not self._refused

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "bad_request", "The request is not valid HTTP/1.1.", "bad_request")

    def _should_upgrade(self) -> bool:
        return False

    # --- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_done = False
        self._arm_deadline()  # a pipelined request starts its own clock

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.limits.max_header_fields:
            raise _TooManyFields
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # Only once uvicorn has made this request's cycle: a head it refuses (a URL it
        # cannot parse) is answered as a head, not as a request the app holds.
        self._head_done = True
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # this request's, not the last
            scope = cast("dict[str, Any]", self.scope)
            scope.setdefault("extensions", {})[DIRECT_BODY] = DirectBody(cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm_deadline()
        self._head_done = False
        self._head_bytes = 0

    # --- refusing -----------------------------------------------------------------------

    def _arm_deadline(self) -> None:
        if self._due is None:
            self._due = self.loop.time() + self.limits.request_timeout
            if self._timer is None:
                self._timer = self.loop.call_at(self._due, self._deadline_passed)

    def _disarm_deadline(self) -> None:
        # The timer stays: on a busy keep-alive connection one timer per timeout period
        # serves every request, instead of one made and cancelled per request.
        self._due = None

    def _deadline_passed(self) -> None:
        self._timer = None
        if self._due is None or self.transport.is_closing() or self._refused:
            return
        if self.loop.time() < self._due:  # a later request's deadline
            self._timer = self.loop.call_at(self._due, self._deadline_passed)
            return
        if not self._sent_anything:
            # Nothing was asked: an answer could be mistaken for the reply to a request
            # the client is about to send on this connection.
            REFUSED.labels("idle_timeout").inc()
            self._refused = True
            self.transport.close()
            return
        self._refuse(408, "request_timeout",
                     f"The whole request must arrive within "
                     f"{self.limits.request_timeout:g} s.", "request_timeout")

    def _refuse_head(self) -> None:
        # Nothing but the method precedes the URL: the head is the request line still.
        if self._head_bytes - len(self.url) <= _METHOD_ROOM and not self.headers:
            self._refuse(414, "uri_too_long", "The request line is over "
                         f"{self.limits.max_head_bytes // 1024} KB.", "uri_too_long")
        else:
            self._refuse(431, "headers_too_large",
                         f"Request headers are limited to {self.limits.max_head_bytes // 1024}"
                         f" KB and {self.limits.max_header_fields} fields.",
                         "headers_too_large")

    def _refuse(self, status: int, code: str, message: str, reason: str) -> None:
        """Answer ``status`` with the JSON error body (when nothing else is being written
        on this connection) and close, reading nothing more."""
        self._refused = True
        self._disarm_deadline()
        self.flow.pause_reading()
        REFUSED.labels(reason).inc()
        log.debug("request refused", extra={"status": status, "reason": reason,
                                            "client": _client(self.client)})
        cycle = self.cycle
        if self.pipeline:
            # An earlier request is still being answered on this connection: another
            # answer now would interleave with it.
            self.transport.close()
            return
        if self._head_done and cycle is not None:  # the app has this request
            if cycle.response_started:
                self.transport.close()  # it has its answer; the rest of it never came
                return
            cycle.disconnected = True  # its handler sees the client gone (499)
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # the previous answer ends the connection
            return
        self.transport.write(self._answer(status, code, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.limits.linger, self._close)

    def _answer(self, status: int, code: str, message: str) -> bytes:
        body = error_body(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]
        return b"".join(head)

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def _parser_reason(exc: httptools.HttpParserError) -> str:
    # llhttp's reasons are fixed sentences ("Invalid header value char"), never the
    # client's bytes; a callback's own error is summed up instead.
    if isinstance(exc, httptools.HttpParserCallbackError) or not exc.args:
        return "The request is not valid HTTP/1.1."
    if str(exc.args[0]).startswith("Pause on PRI"):  # llhttp's word for an HTTP/2 preface
        return "HTTP/2 without TLS is not served here; send HTTP/1.1."
    reason = str(exc.args[0]).rstrip(".")
    return f"The request is not valid HTTP/1.1: {reason}."


def _client(address: tuple[str, int] | None) -> str:
    return f"{address[0]}:{address[1]}" if address else ""


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """What to pass as uvicorn's ``http``: the guarded protocol bound to ``limits``."""
    # uvicorn calls ``http`` with its config and server state for each connection, so a
    # partial works where it asks for a class; unlike a class made on the fly, a partial
    # of a module-level class pickles into the processes `--workers` spawns.
    return cast("type[asyncio.Protocol]", functools.partial(GuardedHttpProtocol, limits=limits))
