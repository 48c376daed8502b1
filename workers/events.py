"""The apply_event job: one event, applied idempotently; poison goes to the dead letters."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from feed import keys, metrics
from feed.errors import FeedError, NotReady, StorageUnavailable, Unapplicable, ValidationFailed
from feed.events import Event, KooCreated, UserSignedUp, typed, validate_event
from feed.store import Stores
from workers._context import retry_later, services, soft_deadline

__all__ = ["apply_event"]

log = logging.getLogger(__name__)


async def apply_event(ctx: dict[str, Any], raw: Any) -> str:
    """Apply one event. Transient failures retry with backoff; events that can never
    apply are dead-lettered with their reason and the worker carries on."""
    svc = services(ctx)
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    dl_id = (keys.dead_letter_of_event(event_id) if isinstance(event_id, str)
             else keys.dead_letter_of_job(str(ctx.get("job_id"))))
    try:
        event = typed(validate_event(raw))
    except ValidationFailed as exc:
        await svc.stores.dead_letters.add(dl_id, raw, f"invalid event: {exc}")
        return "dead-lettered"
    try:
        async with soft_deadline(ctx):
            outcome = await svc.applier.apply(event)
    except (StorageUnavailable, NotReady) as exc:
        if int(ctx.get("job_try", 1)) >= svc.settings.job_max_tries:
            await _dead_letter(ctx, dl_id, event, f"gave up after {ctx.get('job_try')} tries: "
                               f"{exc}")
            return "dead-lettered"
        raise retry_later(ctx, exc) from exc
    except Unapplicable as exc:
        await _dead_letter(ctx, dl_id, event, str(exc))
        return "dead-lettered"
    except FeedError as exc:
        await _dead_letter(ctx, dl_id, event, f"{type(exc).__name__}: {exc}")
        return "dead-lettered"
    log.debug("event applied", extra={"event_id": event_id, "outcome": outcome})
    return outcome


async def _dead_letter(ctx: dict[str, Any], dl_id: str, event: Event, reason: str) -> None:
    svc = services(ctx)
    log.error("event dead-lettered", extra={"event_id": event.event_id, "reason": reason})
    metrics.EVENTS_APPLIED.labels(event.TYPE, "dead-lettered").inc()
    await svc.stores.dead_letters.add(dl_id, event.wire(), reason,
                                      attempts=int(ctx.get("job_try", 1)),
                                      home=await _home_region(svc.stores, event))
    await svc.stores.ledger.record(event, "dead-lettered")


async def _home_region(stores: Stores, event: Event) -> str | None:
    """The home region of the user whose personal data the event carries (a signup's
    profile, a koo's text): where a dead letter's whole event is kept."""
    if isinstance(event, UserSignedUp):
        return event.region
    if isinstance(event, KooCreated):
        with contextlib.suppress(StorageUnavailable):
            return await stores.users.region_of(event.author_id)
    return None
