"""The audit trail of erasures and exports, and logs free of personal data.

Pass criteria: an erasure writes exactly one audit row (action, who asked: the event
id, when, counts) whose every field is free of the user's id, handle, text and region;
the row is found again from the id through its keyed digest, which differs per user;
the audit table is one of the tables ``feed tables create`` makes; and the log output of
a whole run (signup, koos, reactions, a dead letter, the erasure and refused replays),
at DEBUG in both formats, never holds a user's handle, koo text or region.
"""

from __future__ import annotations

import logging
import time

import orjson
import pytest

from config.tables import AUDIT, TABLES
from feed.audit import AuditTrail, subject_of
from feed.logs import JsonFormatter, TextFormatter
from feed.services import Services
from tests.conftest import uid
from tests.helpers import apply_all, event, follow, koo, react, signup

REGION = "sa-east-1"


def test_subjects_are_keyed_digests() -> None:
    assert subject_of("alice") == subject_of("alice")
    assert subject_of("alice") != subject_of("alicf")
    assert "alice" not in subject_of("alice")
    assert len(subject_of("alice")) == 32


def test_the_audit_table_is_created_with_the_others() -> None:
    assert TABLES[AUDIT].pk == "audit_id"


async def test_an_erasure_is_audited_without_personal_data(services: Services) -> None:
    user, fan = uid("au"), uid("fa")
    handle, text = f"@secret-{uid('h')}", f"private words {uid('t')}"
    signed = signup(user, region=REGION)
    signed["handle"] = handle
    await apply_all(services, signed, signup(fan), follow(fan, user),
                    koo(uid("k"), user, text=text))
    before = time.time() * 1000
    erase = event("user_deleted", user_id=user)
    await apply_all(services, erase)

    rows = await AuditTrail(services.stores.db).about(user)
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"audit_id", "action", "subject", "requested_by", "at", "counts"}
    assert row["action"] == "erasure"
    assert row["requested_by"] == erase["event_id"]
    assert row["at"] >= before
    assert row["counts"]["koos"] == 1
    assert row["counts"]["relations"] == 1
    dumped = orjson.dumps(row).decode()
    for personal in (user, handle, text, REGION):
        assert personal not in dumped
    assert await AuditTrail(services.stores.db).about(fan) == []


async def test_logs_hold_no_handle_text_or_region(services: Services,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    user, fan, other = uid("lg"), uid("fa"), uid("ot")
    handle, text = f"@handle-{uid('h')}", f"words-{uid('t')}"
    signed = signup(user, region=REGION)
    signed["handle"] = handle
    mine = uid("k")
    history = [signed, signup(fan), follow(fan, user), koo(mine, user, text=text),
               react("like", mine, fan),
               # Never applies (not the author): dead-lettered, and logged as such.
               event("koo_deleted", koo_id=mine, author_id=other),
               # A bad event: its reason names the field, never the value.
               koo(uid("k"), user, text=text, lang="not-a-language")]
    with caplog.at_level(logging.DEBUG):
        await apply_all(services, *history[:-1])
        await services.stores.dead_letters.add("dl-" + uid(), history[-1],
                                               "invalid event: lang")
        await apply_all(services, event("user_deleted", user_id=user))
        await apply_all(services, *({**e, "event_id": uid("re")} for e in history[:-1]))
        # A careless caller: the formatters drop personal fields whatever is passed.
        logging.getLogger("feed.apply").warning(
            "probe", extra={"user_id": user, "handle": handle, "text": text, "region": REGION})
    assert caplog.records, "the run logged nothing: the check would prove nothing"
    assert any(user in (r.getMessage() + str(vars(r))) for r in caplog.records), (
        "the run's records name the user by id")
    lines = [f(r) for r in caplog.records
             for f in (JsonFormatter().format, TextFormatter().format)]
    for personal in (handle, text, REGION):
        leaked = [line for line in lines if personal in line]
        assert leaked == [], leaked
