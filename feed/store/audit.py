"""The audit table: one row per erasure or export, with no personal data in it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from typing import Any

from config.tables import AUDIT
from feed.errors import ConditionFailed
from feed.store._dynamo import Dynamo

__all__ = ["AuditRows"]


class AuditRows:
    """Rows of the audit table (written once, never changed)."""

    def __init__(self, db: Dynamo) -> None:
        self.db = db

    async def add(self, *, action: str, subject: str, by: str, at: int,
                  counts: Mapping[str, int], audit_id: str | None = None) -> str:
        """Write one row (under ``audit_id`` only if none is there yet); returns its id."""
        audit_id = audit_id or uuid.uuid4().hex
        with contextlib.suppress(ConditionFailed):
            await self.db.put(AUDIT, {
                "audit_id": audit_id, "action": action, "subject": subject,
                "requested_by": by, "at": at,
                "counts": {k: int(v) for k, v in counts.items()},
            }, condition="attribute_not_exists(audit_id)")
        return audit_id

    async def all(self) -> list[dict[str, Any]]:
        """Every row, oldest first (a Scan: the table holds one row per request)."""
        rows: list[dict[str, Any]] = []
        async for page, _ in self.db.scan_pages(AUDIT, limit=1000):
            rows.extend(page)
        return sorted(rows, key=lambda r: (int(r.get("at", 0)), r["audit_id"]))
