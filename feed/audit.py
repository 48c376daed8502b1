"""The audit trail of data-privacy requests: every erasure and export, who asked for it
(the event id or the command line that ran it), when, and what was removed or exported,
as counts.

A row holds no personal data: the user appears only as a keyed digest of their id
(``subject``), which an operator who knows the id can recompute (:func:`subject_of`) to
find a request, and which tells nothing to anyone else.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from feed.store._dynamo import Dynamo
from feed.store.audit import AuditRows

__all__ = ["AuditTrail", "cli_requester", "subject_of"]

_DIGEST_KEY = b"koo-feed audit subject v1"


def subject_of(user_id: str) -> str:
    """The audit trail's name for a user: a keyed digest of the id, never the id."""
    return hashlib.blake2b(user_id.encode(), key=_DIGEST_KEY, digest_size=16).hexdigest()


def cli_requester(command: str) -> str:
    """Who asked, for a request made on the command line: the command, the operator's
    account and host, and the process."""
    try:
        account = getpass.getuser()
    except (KeyError, OSError):
        account = "unknown"
    return f"cli: {command} ({account}@{socket.gethostname()}, pid {os.getpid()})"


class AuditTrail:
    """Records and lists data-privacy requests."""

    def __init__(self, db: Dynamo) -> None:
        self.rows = AuditRows(db)

    async def record(self, action: str, user_id: str, *, by: str,
                     counts: Mapping[str, int], once: str | None = None) -> str:
        """Record one request (``action``: "erasure" or "export"); returns the row's id.
        ``once``: a name of the request that makes recording it again a no-op."""
        subject = subject_of(user_id)
        audit_id = None if once is None else subject_of(f"{subject}/{once}")
        return await self.rows.add(action=action, subject=subject, by=by,
                                   at=int(time.time() * 1000), counts=counts,
                                   audit_id=audit_id)

    async def about(self, user_id: str) -> list[dict[str, Any]]:
        """Every recorded request about one user, oldest first."""
        subject = subject_of(user_id)
        return [r for r in await self.rows.all() if r.get("subject") == subject]
