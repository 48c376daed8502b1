"""The client: one method per route, retries within a deadline, and cursor iteration."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from koo_feed_client._errors import (
    ClientError,
    RateLimited,
    Unavailable,
    error_from_response,
)
from koo_feed_client._models import (
    FeedItem,
    FollowRecommendation,
    Health,
    JSONObject,
    Koo,
    KooRecommendation,
    Page,
    Reaction,
    User,
    as_object,
    parse_items,
)
from koo_feed_client._notifications import Notification, NotificationPage
from koo_feed_client._stream import StreamEvent, iter_stream
from koo_feed_client._version import __version__

__all__ = ["Backoff", "FeedClient"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between attempts when the service named none (no ``Retry-After``): the n-th
    wait (from 0) is a random time between half and all of ``min(cap, first * 2**n)``
    seconds, so callers that failed together do not come back together."""

    first: float = 0.1
    cap: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.first * 2 ** min(attempt, 30))
        return rng.uniform(ceiling / 2, ceiling)


class FeedClient:
    """An async client of one ``feed api`` deployment.

    Every call takes a ``deadline`` (seconds, default the client's): the whole time it may
    take, retries and waits included. 429 and 503 are retried, waiting as ``Retry-After``
    says (or as ``backoff`` says when it says nothing), and so are connection errors and
    timeouts: reads are idempotent, and so is publishing, since the service applies an
    event once per ``event_id``. No other error is retried. ``timeout`` bounds each
    attempt, so one hung connection does not use up the whole deadline.

    Use it as an async context manager, or call :meth:`aclose`. ``transport`` replaces the
    HTTP transport (``httpx.MockTransport`` in tests); ``sleep`` and ``clock`` replace
    ``asyncio.sleep`` and ``time.monotonic`` for tests that must not wait.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        deadline: float = 10.0,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("token is empty: every /v1 route needs one")
        _check_positive("deadline", deadline)
        _check_positive("timeout", timeout)
        self.deadline = deadline
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport,
            headers={"Authorization": f"Bearer {token}",
                     "User-Agent": f"koo-feed-client/{__version__}", **(headers or {})},
        )

    async def __aenter__(self) -> FeedClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- reads -------------------------------------------------------------------------

    async def feed(self, user_id: str, *, limit: int | None = None, cursor: str | None = None,
                   explain: bool = False, deadline: float | None = None) -> Page[FeedItem]:
        """One page of the user's ranked home feed."""
        params = _params(limit=limit, cursor=cursor, explain="true" if explain else None)
        data = await self._get(f"/v1/users/{_id(user_id)}/feed", params, deadline)
        return self._parse(data, lambda d: Page.from_json(d, FeedItem.from_json))

    async def user(self, user_id: str, *, deadline: float | None = None) -> User:
        """A profile."""
        data = await self._get(f"/v1/users/{_id(user_id)}", {}, deadline)
        return self._parse(data, User.from_json)

    async def user_koos(self, user_id: str, *, limit: int | None = None,
                        cursor: str | None = None, deadline: float | None = None) -> Page[Koo]:
        """One page of the user's own koos, newest first."""
        data = await self._get(f"/v1/users/{_id(user_id)}/koos",
                               _params(limit=limit, cursor=cursor), deadline)
        return self._parse(data, lambda d: Page.from_json(d, Koo.from_json))

    async def koo(self, koo_id: str, *, deadline: float | None = None) -> Koo:
        """One koo with its counters."""
        data = await self._get(f"/v1/koos/{_id(koo_id)}", {}, deadline)
        return self._parse(data, Koo.from_json)

    async def reactions(self, koo_id: str, *, limit: int | None = None,
                        cursor: str | None = None,
                        deadline: float | None = None) -> Page[Reaction]:
        """One page of the koo's reactions, newest first."""
        data = await self._get(f"/v1/koos/{_id(koo_id)}/reactions",
                               _params(limit=limit, cursor=cursor), deadline)
        return self._parse(data, lambda d: Page.from_json(d, Reaction.from_json))

    async def recommended_follows(self, user_id: str, *, limit: int | None = None,
                                  deadline: float | None = None
                                  ) -> tuple[FollowRecommendation, ...]:
        """Who the user might follow, best first (no paging)."""
        data = await self._get(f"/v1/users/{_id(user_id)}/recommendations/follows",
                               _params(limit=limit), deadline)
        return self._parse(data, lambda d: parse_items(d, FollowRecommendation.from_json))

    async def recommended_koos(self, user_id: str, *, limit: int | None = None,
                               deadline: float | None = None
                               ) -> tuple[KooRecommendation, ...]:
        """Koos recommended to the user, best first (no paging)."""
        data = await self._get(f"/v1/users/{_id(user_id)}/recommendations/koos",
                               _params(limit=limit), deadline)
        return self._parse(data, lambda d: parse_items(d, KooRecommendation.from_json))

    async def healthz(self, *, deadline: float | None = None) -> Health:
        """Liveness: answers while the process serves."""
        return self._parse(await self._get("/healthz", {}, deadline), Health.from_json)

    async def readyz(self, *, deadline: float | None = None) -> Health:
        """Readiness, asked once: a 503 is returned (``ok`` False, ``checks`` say which
        service failed), not retried, since a probe wants the state now."""
        data = await self._call("GET", "/readyz", deadline=deadline, accept=(503,))
        return self._parse(data, Health.from_json)

    # --- every page --------------------------------------------------------------------

    async def iter_feed(self, user_id: str, *, limit: int | None = None,
                        explain: bool = False, cursor: str | None = None,
                        deadline: float | None = None) -> AsyncIterator[FeedItem]:
        """Every item of the feed, page after page until ``next_cursor`` is null;
        ``limit`` is the page size and ``deadline`` applies to each page."""
        while True:
            page = await self.feed(user_id, limit=limit, cursor=cursor, explain=explain,
                                   deadline=deadline)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def iter_user_koos(self, user_id: str, *, limit: int | None = None,
                             cursor: str | None = None,
                             deadline: float | None = None) -> AsyncIterator[Koo]:
        """Every koo of the user, newest first, as :meth:`iter_feed` pages."""
        while True:
            page = await self.user_koos(user_id, limit=limit, cursor=cursor, deadline=deadline)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def iter_reactions(self, koo_id: str, *, limit: int | None = None,
                             cursor: str | None = None,
                             deadline: float | None = None) -> AsyncIterator[Reaction]:
        """Every reaction to the koo, newest first, as :meth:`iter_feed` pages."""
        while True:
            page = await self.reactions(koo_id, limit=limit, cursor=cursor, deadline=deadline)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # --- notifications -----------------------------------------------------------------

    async def notifications_page(self, user_id: str, *, limit: int | None = None,
                                 cursor: str | None = None,
                                 deadline: float | None = None) -> NotificationPage:
        """One page of the user's notifications, newest activity first, with the count
        of unseen ones."""
        data = await self._get(f"/v1/users/{_id(user_id)}/notifications",
                               _params(limit=limit, cursor=cursor), deadline)
        return self._parse(data, NotificationPage.from_json)

    async def notifications(self, user_id: str, *, limit: int | None = None,
                            cursor: str | None = None,
                            deadline: float | None = None) -> AsyncIterator[Notification]:
        """Every notification of the user, newest activity first, as :meth:`iter_feed`
        pages (``limit`` is the page size)."""
        while True:
            page = await self.notifications_page(user_id, limit=limit, cursor=cursor,
                                                  deadline=deadline)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def mark_seen(self, user_id: str, up_to: int, *,
                        deadline: float | None = None) -> None:
        """Mark seen every notification of the user updated at ``up_to`` (ms) or before;
        the highest ``up_to`` ever posted counts, so retrying is safe."""
        if not isinstance(up_to, int) or isinstance(up_to, bool):
            raise ValueError(f"up_to must be an integer time in ms, not {up_to!r}")
        await self._call("POST", f"/v1/users/{_id(user_id)}/notifications/seen",
                         json={"up_to": up_to}, deadline=deadline)

    # --- events ------------------------------------------------------------------------

    def stream(self, user_id: str, *, last_event_id: str | None = None
               ) -> AsyncIterator[StreamEvent]:
        """The user's feed in real time: ``koo``, ``remove`` and ``reset`` events, for as
        long as the caller iterates. It reconnects by itself (with the last event's id,
        so nothing delivered meanwhile is missed, and a koo sent twice is skipped),
        waiting as ``Retry-After`` or the backoff says; ``last_event_id`` resumes an
        earlier stream. Errors other than 429 and 503 (401, 404, 422) are raised."""
        return iter_stream(self._http, f"/v1/users/{_id(user_id)}/feed/stream",
                           last_event_id=last_event_id, wait=self._wait, sleep=self._sleep)

    async def publish(self, events: Iterable[Mapping[str, Any]], *,
                      deadline: float | None = None) -> int:
        """Publish 1-500 events in one request; returns how many were accepted (all of
        them). A batch with a bad event raises :class:`InvalidRequest`, nothing queued,
        with one ``details`` entry per bad event. Retrying is safe: the service applies
        each ``event_id`` once."""
        body = {"events": [dict(event) for event in events]}
        data = await self._call("POST", "/v1/events", json=body, deadline=deadline)
        return self._parse(data, _accepted)

    # --- the wire ----------------------------------------------------------------------

    async def _get(self, path: str, params: dict[str, str], deadline: float | None
                   ) -> JSONObject:
        return await self._call("GET", path, params=params, deadline=deadline)

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    json: object = None, deadline: float | None = None,
                    accept: tuple[int, ...] = ()) -> JSONObject:
        """The JSON object of a successful answer (or of a status in ``accept``), retrying
        what may be retried until the deadline; the error of the last attempt otherwise."""
        budget = self.deadline if deadline is None else deadline
        _check_positive("deadline", budget)
        started = self._clock()
        attempt = 0
        failure: ClientError | None = None
        while True:
            remaining = budget - (self._clock() - started)
            if failure is not None and remaining <= 0:  # the last wait overslept
                raise failure
            try:
                async with asyncio.timeout(remaining):
                    response = await self._http.request(
                        method, path, params=params, json=json,
                        timeout=min(self.timeout, remaining))
            except TimeoutError:
                raise Unavailable(f"{method} {path}: no answer within the {budget:g} s "
                                  "deadline") from None
            except httpx.UnsupportedProtocol as exc:  # a wrong base_url: no retry helps
                raise ClientError(f"{method} {path}: {exc}") from exc
            except httpx.TransportError as exc:
                failure = Unavailable(f"{method} {path}: {type(exc).__name__}: {exc}")
                failure.__cause__ = exc
                wait = self.backoff.delay(attempt, self._rng)
            except httpx.HTTPError as exc:  # e.g. a body that does not decode
                raise ClientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code == 204:  # no content (notifications/seen)
                    return {}
                if response.status_code < 400 or response.status_code in accept:
                    return self._body(method, path, response)
                failure = error_from_response(response)
                if not isinstance(failure, RateLimited | Unavailable):
                    raise failure
                wait = self._wait(failure.retry_after, attempt)
            attempt += 1
            # A wait that would end past the deadline is not worth starting.
            if wait >= budget - (self._clock() - started):
                raise failure
            await self._sleep(wait)

    def _wait(self, retry_after: float | None, attempt: int) -> float:
        """The service's ``Retry-After`` (and up to a tenth more, so that callers it
        refused together spread out), or the backoff when it named no wait (a zero would
        make a loop of requests)."""
        if retry_after is None or retry_after <= 0:
            return self.backoff.delay(attempt, self._rng)
        return retry_after + self._rng.uniform(0, retry_after / 10)

    @staticmethod
    def _body(method: str, path: str, response: httpx.Response) -> JSONObject:
        try:
            return as_object(response.json(), "the body")
        except ValueError as exc:
            raise ClientError(f"{method} {path}: the answer is not a JSON object: {exc}",
                              status=response.status_code) from None

    @staticmethod
    def _parse(data: JSONObject, parse: Callable[[JSONObject], T]) -> T:
        try:
            return parse(data)
        except ValueError as exc:
            raise ClientError(f"the answer does not have the documented shape: {exc}") \
                from None


def _id(value: str) -> str:
    """A user or koo id as one path segment, whatever it holds (the service refuses ids
    outside its alphabet with 422; a ``/`` must not reach another route)."""
    return quote(value, safe="")


def _params(**values: int | str | None) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def _accepted(data: JSONObject) -> int:
    value = data.get("accepted")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"accepted is not an integer: {value!r}")
    return value


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
