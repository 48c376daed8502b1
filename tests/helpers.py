"""Event builders and job-running helpers for the tests."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from config.tables import LEDGER, USERS
from feed import keys
from feed._embedded import free_port
from feed.errors import ValidationFailed
from feed.events import event_digest, validate_event
from feed.services import Services
from workers.runner import run_workers

_clock = itertools.count(int(time.time() * 1000) - 3_600_000)


def event_job(raw: dict[str, Any]) -> str:
    """The arq job id the publisher gives this (valid) event."""
    valid = validate_event(raw)
    return keys.event_job(valid["event_id"], event_digest(valid))


def job_ids(events: Iterable[object]) -> list[str]:
    """The job ids of those of ``events`` that could be queued (an invalid one never is)."""
    found: set[str] = set()
    for e in events:
        if isinstance(e, dict):
            with contextlib.suppress(ValidationFailed):
                found.add(event_job(e))
    return sorted(found)


def now_ms() -> int:
    """Increasing timestamps, one per call, so event order is explicit in each test."""
    return next(_clock)


def event(event_type: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("event_id", f"ev-{uuid.uuid4().hex}")
    fields.setdefault("occurred_at", now_ms())
    return {"type": event_type, **fields}


def signup(user_id: str, *, lang: str = "hi", region: str = "ap-south-1", **kw: Any
           ) -> dict[str, Any]:
    return event("user_signed_up", user_id=user_id, handle=f"@{user_id}", lang=lang,
                 region=region, **kw)


def koo(koo_id: str, author_id: str, *, text: str = "hello", lang: str = "hi", **kw: Any
        ) -> dict[str, Any]:
    return event("koo_created", koo_id=koo_id, author_id=author_id, text=text, lang=lang, **kw)


def follow(follower: str, followee: str, **kw: Any) -> dict[str, Any]:
    return event("user_followed", follower_id=follower, followee_id=followee, **kw)


def unfollow(follower: str, followee: str, **kw: Any) -> dict[str, Any]:
    return event("user_unfollowed", follower_id=follower, followee_id=followee, **kw)


def relation(kind: str, user: str, target: str, **kw: Any) -> dict[str, Any]:
    return event(kind, user_id=user, target_id=target, **kw)


def react(kind: str, koo_id: str, user_id: str, *, added: bool = True, **kw: Any
          ) -> dict[str, Any]:
    return event("reaction_added" if added else "reaction_removed", koo_id=koo_id,
                 user_id=user_id, kind=kind, **kw)


async def drain(svc: Services) -> None:
    """Run every queued job (and what they enqueue) until both queues are empty."""
    await run_workers(svc.settings, burst=True, services=svc)


async def apply_all(svc: Services, *events: dict[str, Any]) -> None:
    """Publish events and run the workers until everything is done."""
    for start in range(0, len(events), 500):
        await svc.publisher.publish(list(events[start:start + 500]))
    await drain(svc)


async def user_counters(svc: Services, user_id: str) -> tuple[int, int]:
    """(followers, following) of a user as stored (0, 0 for an unknown user)."""
    item = await svc.stores.db.get(USERS, {"user_id": user_id}, consistent=True,
                                   attributes=["followers", "following"])
    if not item:
        return 0, 0
    return int(item.get("followers", 0)), int(item.get("following", 0))


async def in_ledger(svc: Services, event_id: str) -> bool:
    """Whether the ledger holds an entry for ``event_id`` (the event was handled)."""
    item = await svc.stores.db.get(LEDGER, {"event_id": event_id}, consistent=True,
                                   attributes=["event_id"])
    return item is not None


def second_dynamodb() -> Iterator[str]:
    """A second DynamoDB endpoint (another region's): moto's server in its own process,
    stopped after. For a module-scoped fixture: ``yield from second_dynamodb()``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the second DynamoDB endpoint did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
