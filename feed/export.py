"""``feed users export USER_ID [--out FILE]``: everything stored about a user, as one JSON
document (for data-access requests).

The profile is read from the user's home region (``FEED_REGIONS``), never from a cache;
the rest from every table that holds the user's data: their koos, their reactions,
their relations both ways, their timeline, their stored recommendations and their
notifications. Each export is recorded in the audit trail (:mod:`feed.audit`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from config.settings import Settings
from feed import keys
from feed.fields import is_valid_id

if TYPE_CHECKING:
    from feed.services import Services
    from feed.store import Stores

__all__ = ["Exporter", "add_users_parser", "run_users"]

PAGE = 500
EXIT_OK, EXIT_NOT_FOUND = 0, 1


class Exporter:
    """Reads everything stored about one user."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.stores: Stores = services.stores

    async def export(self, user_id: str) -> dict[str, Any] | None:
        """The user's data as one JSON-ready document; None for an unknown (or erased)
        user."""
        user = await self.stores.users.get(user_id, consistent=True)
        if user is None:
            return None
        relations = await self.stores.relations.outgoing(user_id)
        timeline = await self.stores.timelines.scan_reader(user_id, max_items=1_000_000)
        return {
            "user_id": user_id,
            "exported_at": int(time.time() * 1000),
            "profile": user.as_json(),
            "koos": await self._koos(user_id),
            "reactions": await self._reactions(user_id),
            "following": sorted(relations.get(keys.REL_FOLLOW, ())),
            "blocking": sorted(relations.get(keys.REL_BLOCK, ())),
            "muting": sorted(relations.get(keys.REL_MUTE, ())),
            "followers": sorted(await self.stores.relations.incoming(user_id,
                                                                     keys.REL_FOLLOW)),
            "timeline": [{"koo_id": e.koo_id, "author_id": e.author_id,
                          "created_at": e.created_at} for e in timeline],
            "recommendations": {
                kind: await self.stores.recommendations.load(user_id, kind,
                                                             include_expired=True)
                for kind in ("follows", "koos")
            },
            "notifications": await self._notifications(user_id),
        }

    async def _koos(self, user_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        before: tuple[int, str] | None = None
        while True:
            ids = await self.stores.koos.by_author(user_id, limit=PAGE, before=before)
            bodies = await self.stores.koos.get_many([k for k, _ in ids])
            found += [bodies[k].as_json() for k, _ in ids if k in bodies]
            if len(ids) < PAGE:
                return found
            koo_id, created = ids[-1]
            before = (created, koo_id)

    async def _reactions(self, user_id: str) -> list[dict[str, Any]]:
        items = await self.stores.reactions.all_by_user(user_id)
        return [{"koo_id": i["koo_id"], "kind": i["kind"], "created_at": int(i["created_at"])}
                for i in items]

    async def _notifications(self, user_id: str) -> list[dict[str, Any]]:
        from feed.notifications import Notifications

        notifications = Notifications.over(self.services.manager)
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await notifications.page(user_id, limit=100, cursor=cursor)
            found += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found


def counts_of(document: dict[str, Any]) -> dict[str, int]:
    """What an export held, as counts (for the audit trail)."""
    counts = {name: len(value) for name, value in document.items()
              if isinstance(value, list)}
    counts["recommendations"] = sum(len(v) for v in document["recommendations"].values())
    counts["profile"] = 1
    return counts


def add_users_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "users", help="data-privacy requests about one user",
        description="`users export` writes one JSON document with everything stored about "
        "a user (profile from its home region, koos, reactions, relations both ways, "
        "timeline, recommendations, notifications) and records the export in the audit "
        "trail. A user is erased with the `user_deleted` event.",
    )
    actions = parser.add_subparsers(dest="users_command", required=True, metavar="WHAT")
    export = actions.add_parser("export", help="everything stored about a user, as JSON")
    export.add_argument("user_id", type=_id)
    export.add_argument("--out", metavar="FILE", help="write here (default: standard output)")


def _id(text: str) -> str:
    if not is_valid_id(text):
        raise argparse.ArgumentTypeError(f"not a user id: {text!r}")
    return text


async def run_users(settings: Settings, args: argparse.Namespace) -> int:
    from feed.audit import AuditTrail, cli_requester
    from feed.services import open_services

    async with open_services(settings) as services:
        document = await Exporter(services).export(args.user_id)
        if document is None:
            print(f"feed: no user {args.user_id!r}", file=sys.stderr)
            return EXIT_NOT_FOUND
        command = f"feed users export --out {args.out}" if args.out else "feed users export"
        await AuditTrail(services.stores.db).record(
            "export", args.user_id, by=cli_requester(command), counts=counts_of(document))
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    if args.out:
        await asyncio.to_thread(Path(args.out).write_bytes, data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK
