"""The app factory: routes, error handlers, auth, metrics and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings
from feed import metrics
from feed.api import routes
from feed.api._http import error, json
from feed.api.auth import AuthMiddleware, request_deadline
from feed.api.notifications import get_notifications, post_notifications_seen
from feed.api.openapi import openapi_schema
from feed.api.ratelimit import TokenBuckets
from feed.api.stream import feed_stream
from feed.cursor import InvalidCursor
from feed.errors import FeedError, NotFound, StorageUnavailable, ValidationFailed
from feed.logs import setup_logging
from feed.notifications import Notifications
from feed.reader import Reader
from feed.services import Services, open_services
from feed.stream import StreamHub

__all__ = ["GC_THRESHOLDS", "app_from_env", "create_app", "tune_gc"]

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 1.0
LOOP_LAG_INTERVAL_SECONDS = 0.05


async def sample_loop_lag(interval: float = LOOP_LAG_INTERVAL_SECONDS) -> None:
    """Record how late the event loop wakes a sleeper: the wait every request sees on top
    of its own work when something blocks the loop (feed_event_loop_lag_duration_seconds)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        metrics.LOOP_LAG.observe(max(0.0, loop.time() - started - interval))


async def healthz(request: Request) -> Response:
    return json({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    checks: dict[str, bool] = {}

    async def check(name: str, probe: Any) -> None:
        try:
            await asyncio.wait_for(probe, READY_TIMEOUT_SECONDS)
            checks[name] = True
        except Exception:
            checks[name] = False

    await asyncio.gather(
        check("cache_redis", services.cache.redis.ping()),
        check("queue_redis", services.queue_redis.ping()),
        # A read on the data plane: the table exists, the credentials work, and it
        # answers; the absent item costs one read unit.
        check("dynamodb", services.stores.db.probe()),
    )
    ready = all(checks.values())
    return json({"status": "ok" if ready else "unavailable", "checks": checks},
                200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    # Under `feed api --workers N` this sums the values of every API process.
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json(request.app.state.openapi)


# --- errors: always the contract's body -------------------------------------------------

# nginx's number for "the client closed the request": counted apart from server errors.
CLIENT_CLOSED = 499

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {404: "No such route.", 405: "Method not allowed on this route."}.get(
        exc.status_code, str(exc.detail)
    )
    return error(exc.status_code, code, message,
                 headers=dict(exc.headers) if exc.headers else None)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationFailed)
    return error(422, "validation_failed", str(exc), details=exc.errors)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, "not_found", str(exc))


async def _invalid_cursor(request: Request, exc: Exception) -> Response:
    return error(400, "invalid_cursor", f"The cursor is not valid here: {exc}.")


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("storage unavailable", extra={"path": request.url.path, "error": str(exc)})
    return error(503, "unavailable", "Storage is not answering; try again shortly.",
                 headers={"Retry-After": "1"})


async def _too_large(request: Request, exc: Exception) -> Response:
    return error(413, "payload_too_large", str(exc))


async def _feed_error(request: Request, exc: Exception) -> Response:
    log.error("request failed", extra={"path": request.url.path, "error": repr(exc)})
    return error(500, "internal_error", "The request could not be completed.")


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client went away mid-body (or was cut off by FEED_API_REQUEST_TIMEOUT): no
    # server error, and no one to answer; the status is only what the metrics record.
    log.debug("client disconnected", extra={"path": request.url.path})
    return Response(status_code=CLIENT_CLOSED)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", extra={"path": request.url.path})
    return error(500, "internal_error", "The request could not be completed.")


Endpoint = Callable[[Request], Awaitable[Response]]


class ReadGate:
    """Bounds of the read routes: an answer within ``seconds`` (DynamoDB's own timeouts
    and retries can add up to many seconds), and at most ``limit`` reads in flight in
    this process. Past the limit a read is refused at once (503): an overloaded process
    then keeps finishing the reads it took instead of interleaving more and more of
    them until each one runs out of time."""

    def __init__(self, seconds: float, limit: int) -> None:
        self.seconds = seconds
        self.limit = limit
        self.in_flight = 0

    def __call__(self, endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def bounded(request: Request) -> Response:
            if self.in_flight >= self.limit:
                metrics.READS_SHED.inc()
                raise StorageUnavailable(f"{self.limit} reads in flight", "overloaded")
            self.in_flight += 1
            # One bound from the request's arrival: what the limiters waited is spent.
            deadline = request_deadline(request.scope)
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.seconds
            try:
                async with asyncio.timeout_at(deadline):  # no task per request (wait_for)
                    return await endpoint(request)
            except TimeoutError:
                raise StorageUnavailable(f"no answer within {self.seconds:g} s",
                                         "timeout") from None
            finally:
                self.in_flight -= 1

        return bounded


class MetricsMiddleware:
    """Request latency histogram by route (the endpoint's name, never the raw path); a
    request whose client left before its answer started is status 499, not 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = False
        gone = False

        async def receive_wrapper() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect" and not answered:
                gone = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = True
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            if gone:
                status = CLIENT_CLOSED
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched")
            metrics.REQUEST_LATENCY.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


_ENCODED_SLASH = re.compile(r"%2f", re.IGNORECASE)


class EncodedSlashes:
    """Route on the path as sent: servers decode ``%2F`` into ``/`` before routing, which
    would serve ``/v1/users/alice%2Ffeed`` as alice's feed. An encoded slash stays
    encoded inside its segment, so the id holding it is refused (422) or no route matches
    (404)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw: bytes | None = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%" in raw:
            # Some servers (and test transports) leave the query on raw_path.
            path = raw.partition(b"?")[0].decode("latin-1")
            if _ENCODED_SLASH.search(path):
                decoded = "%2F".join(unquote(part) for part in _ENCODED_SLASH.split(path))
                scope = {**scope, "path": decoded}
        await self.app(scope, receive, send)


GC_THRESHOLDS = (50_000, 20, 100)  # allocations before a collection of the youngest, ...


def tune_gc() -> None:
    """Keep the garbage collector off what a serving process holds for its lifetime.

    Everything alive once the process is up (modules, clients, pools) is frozen out of
    collections, and the youngest generation is collected every 50,000 allocations
    rather than 700. With 3,000 streams open, a native profile of the process found a
    quarter of its samples in the collector, and ``python -m bench.stream`` measured
    38-39 against 45-47 µs of its CPU per streamed frame (two runs each, interleaved).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings, services: Services | None = None) -> Starlette:
    """The read API. Pass ``services`` to share already-open clients (tests, the demo);
    otherwise they are opened in the lifespan and closed on shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # Last on the way out: a process that stops serving drops its live gauges
            # from the directory the API's processes share (uvicorn offers no hook in
            # the parent when a worker exits, so each process marks itself).
            stack.callback(metrics.process_exiting)
            svc = services
            if svc is None:
                svc = await stack.enter_async_context(open_services(settings))
            app.state.services = svc
            app.state.buckets = TokenBuckets(svc.cache.redis)  # AuthMiddleware's limiters
            app.state.reader = Reader(svc.manager)
            app.state.publisher = svc.publisher
            app.state.notifications = Notifications.over(svc.manager)
            hub = StreamHub(svc.manager, max_streams=settings.stream_max_per_process)
            app.state.stream_hub = hub  # the realtime streams' one subscriber here
            hub.start()
            stack.push_async_callback(hub.stop)
            sampler = asyncio.create_task(sample_loop_lag())
            stack.callback(sampler.cancel)
            if services is None:
                tune_gc()  # a serving process of its own, not a test's or the demo's
            yield

    bound = ReadGate(settings.api_timeout, settings.api_max_in_flight)
    route_list = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi),
        Route("/v1/users/{user_id}/feed", bound(routes.get_feed)),
        # Not bound by the read gate: a stream stays open (its bounds are the hub's).
        Route("/v1/users/{user_id}/feed/stream", feed_stream),
        Route("/v1/users/{user_id}", bound(routes.get_user)),
        Route("/v1/users/{user_id}/koos", bound(routes.get_user_koos)),
        Route("/v1/users/{user_id}/notifications", bound(get_notifications)),
        Route("/v1/users/{user_id}/notifications/seen", bound(post_notifications_seen),
              methods=["POST"]),
        Route("/v1/users/{user_id}/recommendations/follows", bound(routes.recommend_follows)),
        Route("/v1/users/{user_id}/recommendations/koos", bound(routes.recommend_koos)),
        Route("/v1/koos/{koo_id}", bound(routes.get_koo)),
        Route("/v1/koos/{koo_id}/reactions", bound(routes.get_koo_reactions)),
        Route("/v1/events", routes.post_events, methods=["POST"]),
    ]
    handlers: dict[Any, Any] = {
        HTTPException: _http_error,
        ValidationFailed: _validation_error,
        NotFound: _not_found,
        InvalidCursor: _invalid_cursor,
        StorageUnavailable: _unavailable,
        routes.PayloadTooLarge: _too_large,
        ClientDisconnect: _client_gone,
        FeedError: _feed_error,
        Exception: _unexpected,
    }
    app = Starlette(routes=route_list, exception_handlers=handlers, lifespan=lifespan)
    app.state.openapi = openapi_schema()
    app.add_middleware(AuthMiddleware, settings=settings)
    app.add_middleware(EncodedSlashes)
    app.add_middleware(MetricsMiddleware)
    return app


def app_from_env() -> Starlette:
    """The app configured from FEED_* variables (``feed api`` and uvicorn's factory)."""

    settings = Settings.from_env()
    setup_logging(settings.log_level, json_format=settings.log_json)
    return create_app(settings)
