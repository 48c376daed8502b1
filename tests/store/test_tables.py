"""Tables: ``create_tables`` is idempotent and waits for ACTIVE; ``feed tables create``
reconciles existing tables with their definitions (indexes, TTL, point-in-time recovery)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from config.tables import (
    KOOS,
    KOOS_BY_AUTHOR,
    KOOS_BY_LANG_DAY,
    KOOS_FANOUT_PENDING,
    LEDGER,
    NOTIFICATIONS,
    REACTIONS,
    RECOMMENDATIONS,
    TABLES,
    TIMELINES,
    USERS,
    TableDef,
)
from feed.cli import main
from feed.store import (
    Change,
    Dynamo,
    create_tables,
    drop_tables,
    open_dynamo,
    reconcile_tables,
)
from feed.store.tables import PITR_DATASETS, plan_table
from tests.conftest import BACKEND, uid
from tests.fault.conftest import dynamodb_local

TTL_DATASETS = {TIMELINES: "expires_at", LEDGER: "expires_at", RECOMMENDATIONS: "expires_at",
                NOTIFICATIONS: "expires_at"}


async def prefix_tables(db: Dynamo) -> set[str]:
    names: set[str] = set()
    request: dict[str, str] = {}
    while True:
        response = await db.admin("list_tables", **request)
        names.update(n for n in response["TableNames"] if n.startswith(db.prefix))
        if not response.get("LastEvaluatedTableName"):
            return names
        request = {"ExclusiveStartTableName": response["LastEvaluatedTableName"]}


async def assert_tables_ready(db: Dynamo) -> None:
    for dataset, definition in TABLES.items():
        table = (await db.admin("describe_table", TableName=db.table(dataset)))["Table"]
        assert table["TableStatus"] == "ACTIVE", dataset
        key = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
        assert key == ({"HASH": definition.pk, "RANGE": definition.sk} if definition.sk
                       else {"HASH": definition.pk}), dataset
        gsis = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
        lsis = {i["IndexName"] for i in table.get("LocalSecondaryIndexes", [])}
        for index in definition.indexes:
            if index.local:
                assert index.name in lsis, (dataset, index.name)
            else:
                assert gsis[index.name].get("IndexStatus", "ACTIVE") == "ACTIVE"
        ttl = (await db.admin("describe_time_to_live", TableName=db.table(dataset)))
        description = ttl["TimeToLiveDescription"]
        if dataset in TTL_DATASETS:
            assert description["TimeToLiveStatus"] in {"ENABLED", "ENABLING"}, dataset
            assert description["AttributeName"] == TTL_DATASETS[dataset]
        else:
            assert description["TimeToLiveStatus"] in {"DISABLED", "DISABLING"}, dataset


def test_ttl_is_defined_on_the_expiring_datasets() -> None:
    assert {d: t.ttl_attribute for d, t in TABLES.items() if t.ttl_attribute} == TTL_DATASETS


async def test_create_tables_is_idempotent(session_settings: Settings) -> None:
    settings = session_settings.replace(table_prefix=f"{uid('ct')}_")
    async with open_dynamo(settings) as db:
        try:
            assert await prefix_tables(db) == set()
            created = await create_tables(db)
            expected = {db.table(d) for d in TABLES}
            assert sorted(created) == sorted(expected)
            await assert_tables_ready(db)

            assert await create_tables(db) == []
            assert await prefix_tables(db) == expected
            await assert_tables_ready(db)
        finally:
            await drop_tables(db)
        assert await prefix_tables(db) == set()


async def test_two_create_tables_at_once_both_succeed(settings: Settings) -> None:
    fresh = settings.replace(table_prefix=f"c{uid()[:8]}_")
    async with open_dynamo(fresh) as db:
        try:
            first, second = await asyncio.gather(create_tables(db), create_tables(db))
            assert not set(first) & set(second)
            assert set(first) | set(second) == {db.table(d) for d in TABLES}
            await assert_tables_ready(db)
        finally:
            await drop_tables(db)


# --- the diff: a definition against what DynamoDB describes -------------------------------


def described(name: str, definition: TableDef, *, without: frozenset[str] = frozenset(),
              ) -> dict[str, Any]:
    """DescribeTable's ``Table`` for ``definition`` as CreateTable would make it, less
    the indexes named in ``without``."""
    request = definition.create_request(name)
    table: dict[str, Any] = {
        "TableName": name, "TableStatus": "ACTIVE", "KeySchema": request["KeySchema"],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
    }
    used = {k["AttributeName"] for k in request["KeySchema"]}
    for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        indexes = [dict(i, IndexStatus="ACTIVE") for i in request.get(kind, [])
                   if i["IndexName"] not in without]
        if indexes:
            table[kind] = indexes
        used |= {k["AttributeName"] for i in indexes for k in i["KeySchema"]}
    table["AttributeDefinitions"] = [a for a in request["AttributeDefinitions"]
                                     if a["AttributeName"] in used]
    return table


TTL_ON = {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
TTL_OFF = {"TimeToLiveStatus": "DISABLED"}
PITR_ON = {"ContinuousBackupsStatus": "ENABLED",
           "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "ENABLED"}}
PITR_OFF = {"ContinuousBackupsStatus": "ENABLED",
            "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "DISABLED"}}


def test_a_missing_table_is_created_with_its_ttl_and_backups() -> None:
    assert plan_table("t_timelines", TABLES[TIMELINES], None).changes == [
        Change("table", "t_timelines"), Change("ttl", "t_timelines", "expires_at")]
    assert plan_table("t_users", TABLES[USERS], None, pitr=True).changes == [
        Change("table", "t_users"), Change("pitr", "t_users")]


def test_a_table_matching_its_definition_needs_nothing() -> None:
    for dataset, definition in TABLES.items():
        name = f"t_{dataset}"
        plan = plan_table(name, definition, described(name, definition),
                          ttl=TTL_ON if definition.ttl_attribute else TTL_OFF,
                          backups=PITR_ON, pitr=True)
        assert plan.changes == [], dataset
        assert plan.problems == [], dataset


def test_missing_global_indexes_ttl_and_backups_are_planned_in_order() -> None:
    koos = described("t_koos", TABLES[KOOS],
                     without=frozenset({KOOS_BY_LANG_DAY, KOOS_FANOUT_PENDING}))
    plan = plan_table("t_koos", TABLES[KOOS], koos, backups=PITR_OFF, pitr=True)
    assert plan.changes == [Change("index", "t_koos", KOOS_BY_LANG_DAY),
                            Change("index", "t_koos", KOOS_FANOUT_PENDING),
                            Change("pitr", "t_koos")]
    assert plan.problems == []
    timelines = described("t_timelines", TABLES[TIMELINES])
    assert plan_table("t_timelines", TABLES[TIMELINES], timelines, ttl=TTL_OFF).changes == [
        Change("ttl", "t_timelines", "expires_at")]


def test_what_was_not_described_is_not_planned() -> None:
    timelines = described("t_timelines", TABLES[TIMELINES])
    assert plan_table("t_timelines", TABLES[TIMELINES], timelines, pitr=True).changes == []
    users = described("t_users", TABLES[USERS])
    assert plan_table("t_users", TABLES[USERS], users, backups=PITR_OFF).changes == []


def test_an_index_with_other_keys_is_a_problem_not_a_change() -> None:
    koos = described("t_koos", TABLES[KOOS])
    by_author = next(i for i in koos["GlobalSecondaryIndexes"]
                     if i["IndexName"] == KOOS_BY_AUTHOR)
    by_author["KeySchema"] = [{"AttributeName": "author_key", "KeyType": "HASH"}]
    plan = plan_table("t_koos", TABLES[KOOS], koos)
    assert plan.changes == []
    assert plan.problems == [
        "t_koos: index by_author has the key author_key (HASH), the definition's is "
        "author_key (HASH), created_sk (RANGE); an index's key cannot change (define a new "
        "index under another name)"]


def test_what_cannot_be_added_is_a_problem() -> None:
    reactions = described("t_reactions", TABLES[REACTIONS], without=frozenset({"by_time"}))
    assert plan_table("t_reactions", TABLES[REACTIONS], reactions).problems == [
        "t_reactions: local index by_time is missing; a local index can only be created "
        "with its table"]
    koos = described("t_koos", TABLES[KOOS], without=frozenset({KOOS_FANOUT_PENDING}))
    koos["AttributeDefinitions"].append({"AttributeName": "fanout_deadline",
                                         "AttributeType": "S"})
    plan = plan_table("t_koos", TABLES[KOOS], koos)
    assert plan.changes == []
    assert plan.problems == ["t_koos: index fanout_pending cannot be added: fanout_deadline "
                             "is S on the table, N in the definition"]
    ledger = described("t_ledger", TABLES[LEDGER])
    plan = plan_table("t_ledger", TABLES[LEDGER], ledger,
                      ttl={"TimeToLiveStatus": "ENABLED", "AttributeName": "gone_at"})
    assert plan.changes == []
    assert plan.problems[0].startswith("t_ledger: TTL is on gone_at")


def test_change_lines() -> None:
    index = Change("index", "t_koos", "by_lang_day")
    assert index.line() == "index added: by_lang_day on t_koos"
    assert index.line(dry_run=True) == "would add index: by_lang_day on t_koos"
    assert Change("table", "t_koos").line() == "table created: t_koos"
    assert Change("ttl", "t_ledger", "expires_at").line(dry_run=True) == (
        "would enable TTL: t_ledger (expires_at)")
    assert Change("pitr", "t_users").line() == "PITR enabled: t_users"


def test_backups_cover_the_system_of_record_only() -> None:
    assert frozenset({USERS, KOOS, REACTIONS, "relations"}) == PITR_DATASETS
    assert not {TIMELINES, RECOMMENDATIONS, LEDGER} & PITR_DATASETS


# --- the reconcile against the emulator ----------------------------------------------------


def partial_request(db: Dynamo, dataset: str, *, without: frozenset[str]) -> dict[str, Any]:
    """The CreateTable request of an older version of ``dataset``: no ``without`` indexes."""
    table = described(db.table(dataset), TABLES[dataset], without=without)
    request = {k: table[k] for k in ("TableName", "KeySchema", "AttributeDefinitions")}
    if "GlobalSecondaryIndexes" in table:
        request["GlobalSecondaryIndexes"] = [
            {k: i[k] for k in ("IndexName", "KeySchema", "Projection")}
            for i in table["GlobalSecondaryIndexes"]]
    return {**request, "BillingMode": "PAY_PER_REQUEST"}


async def global_indexes(db: Dynamo, dataset: str) -> dict[str, str]:
    table = (await db.admin("describe_table", TableName=db.table(dataset)))["Table"]
    return {i["IndexName"]: i.get("IndexStatus", "ACTIVE")
            for i in table.get("GlobalSecondaryIndexes", [])}


async def ttl_status(db: Dynamo, dataset: str) -> tuple[str, str | None]:
    described = await db.admin("describe_time_to_live", TableName=db.table(dataset))
    ttl = described["TimeToLiveDescription"]
    return ttl["TimeToLiveStatus"], ttl.get("AttributeName")


@pytest.fixture
def own_settings(session_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """On DynamoDB Local, an emulator of the test's own. In a long run sharing one (the
    10,000-event replay before it), an index added to a table stayed CREATING for minutes:
    the emulator's index builder, not the command, which a fresh one shows in seconds."""
    if BACKEND != "local":
        yield session_settings
        return
    with dynamodb_local(tmp_path / "dynamodb") as instance:
        yield session_settings.replace(dynamodb_endpoint=instance.endpoint)


async def test_reconcile_adds_indexes_ttl_and_backups_to_existing_tables(
    own_settings: Settings,
) -> None:
    settings = own_settings.replace(table_prefix=f"{uid('rc')}_")
    datasets = (KOOS, TIMELINES)
    async with open_dynamo(settings) as db:
        try:
            await db.admin("create_table", **partial_request(
                db, KOOS, without=frozenset({KOOS_BY_LANG_DAY, KOOS_FANOUT_PENDING})))
            await db.admin("create_table", **partial_request(db, TIMELINES,
                                                             without=frozenset()))
            koos, timelines = db.table(KOOS), db.table(TIMELINES)
            heard: list[Change] = []

            result = await reconcile_tables(db, pitr=True, datasets=datasets,
                                            on_change=heard.append)

            expected = [Change("index", koos, KOOS_BY_LANG_DAY),
                        Change("index", koos, KOOS_FANOUT_PENDING)]
            if BACKEND == "local":  # DynamoDB Local has no backups: said, not failed
                assert result.notes == [f"PITR not supported by this endpoint "
                                        f"(UnknownOperationException): {koos} left as it is"]
            else:
                expected.append(Change("pitr", koos))
                assert result.notes == []
            expected.append(Change("ttl", timelines, "expires_at"))
            assert result.changes == expected
            assert heard == expected
            assert result.problems == []
            assert await global_indexes(db, KOOS) == {
                KOOS_BY_AUTHOR: "ACTIVE", KOOS_BY_LANG_DAY: "ACTIVE",
                KOOS_FANOUT_PENDING: "ACTIVE"}
            assert await ttl_status(db, TIMELINES) in {("ENABLED", "expires_at"),
                                                       ("ENABLING", "expires_at")}
            if BACKEND != "local":
                backups = await db.admin("describe_continuous_backups", TableName=koos)
                pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
                assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"

            again = await reconcile_tables(db, pitr=True, datasets=datasets)
            assert again.changes == []
            assert again.problems == []
        finally:
            await drop_tables(db)


async def test_a_dry_run_lists_the_changes_and_makes_none(session_settings: Settings) -> None:
    settings = session_settings.replace(table_prefix=f"{uid('dr')}_")
    async with open_dynamo(settings) as db:
        try:
            await db.admin("create_table", **partial_request(
                db, KOOS, without=frozenset({KOOS_BY_LANG_DAY})))
            koos, timelines = db.table(KOOS), db.table(TIMELINES)

            plan = await reconcile_tables(db, dry_run=True, datasets=(KOOS, TIMELINES))

            assert [c.line(dry_run=True) for c in plan.changes] == [
                f"would add index: {KOOS_BY_LANG_DAY} on {koos}",
                f"would create table: {timelines}",
                f"would enable TTL: {timelines} (expires_at)",
            ]
            assert await prefix_tables(db) == {koos}
            assert await global_indexes(db, KOOS) == {
                KOOS_BY_AUTHOR: "ACTIVE", KOOS_FANOUT_PENDING: "ACTIVE"}
        finally:
            await drop_tables(db)


def feed_command(settings: Settings, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`feed ARGV` in its own process, against the tables of ``settings``."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("FEED_") or k == "FEED_DYNAMODB_CLIENT"}
    environ.update(FEED_DYNAMODB_ENDPOINT=str(settings.dynamodb_endpoint),
                   FEED_AWS_REGION=settings.aws_region, FEED_TABLE_PREFIX=settings.table_prefix,
                   FEED_LOG_LEVEL="WARNING", **env)
    return subprocess.run([sys.executable, "-m", "feed.cli", *argv], capture_output=True,
                          text=True, timeout=120, env=environ)


async def test_feed_tables_create_end_to_end(own_settings: Settings) -> None:
    settings = own_settings.replace(table_prefix=f"{uid('cli')}_")
    async with open_dynamo(settings) as db:
        try:
            await db.admin("create_table", **partial_request(
                db, KOOS, without=frozenset({KOOS_BY_LANG_DAY})))
            koos = db.table(KOOS)
            missing = sorted(db.table(d) for d in TABLES if d != KOOS)
            ttl = sorted(db.table(d) for d, t in TABLES.items() if t.ttl_attribute)
            backed_up = sorted(db.table(d) for d in PITR_DATASETS)

            dry = await asyncio.to_thread(feed_command, settings, "tables", "create",
                                          "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert sorted(dry.stdout.splitlines()) == sorted(
                [f"would add index: {KOOS_BY_LANG_DAY} on {koos}"]
                + [f"would create table: {t}" for t in missing]
                + [f"would enable TTL: {t} (expires_at)" for t in ttl]
                + [f"dry run: {len(missing) + len(ttl) + 1} changes to make, nothing changed"])
            assert await prefix_tables(db) == {koos}

            done = await asyncio.to_thread(feed_command, settings, "tables", "create",
                                           FEED_DYNAMODB_PITR="on")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            changes = ([f"index added: {KOOS_BY_LANG_DAY} on {koos}"]
                       + [f"table created: {t}" for t in missing]
                       + [f"TTL enabled: {t} (expires_at)" for t in ttl])
            if BACKEND == "local":
                changes += [f"PITR not supported by this endpoint (UnknownOperationException):"
                            f" {t} left as it is" for t in backed_up]
                count = len(changes) - len(backed_up)
            else:
                changes += [f"PITR enabled: {t}" for t in backed_up]
                count = len(changes)
            assert sorted(lines) == sorted([*changes, f"tables ready: {count} changes made"])
            assert lines[-1] == f"tables ready: {count} changes made"
            await assert_tables_ready(db)

            again = await asyncio.to_thread(feed_command, settings, "tables", "create",
                                            FEED_DYNAMODB_PITR="on")
            assert again.returncode == 0, again.stderr
            assert again.stdout.splitlines()[-1] == "tables ready: nothing to change"
            assert not [line for line in again.stdout.splitlines()
                        if not line.startswith(("tables ready:", "PITR not supported"))]
        finally:
            await drop_tables(db)


def test_feed_tables_create_reports_what_it_cannot_change(
    session_settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = session_settings.replace(table_prefix=f"{uid('pb')}_")
    request = TABLES[KOOS].create_request(f"{settings.table_prefix}{KOOS}")
    by_author = next(i for i in request["GlobalSecondaryIndexes"]
                     if i["IndexName"] == KOOS_BY_AUTHOR)
    by_author["KeySchema"] = by_author["KeySchema"][:1]  # an older, hash-only by_author

    async def run(*calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        async with open_dynamo(settings) as db:
            return [await db.admin(method, **kwargs) for method, kwargs in calls]

    for name, value in (("DYNAMODB_ENDPOINT", str(settings.dynamodb_endpoint)),
                        ("AWS_REGION", settings.aws_region),
                        ("TABLE_PREFIX", settings.table_prefix), ("LOG_LEVEL", "WARNING")):
        monkeypatch.setenv(f"FEED_{name}", value)
    monkeypatch.delenv("FEED_REGIONS", raising=False)
    monkeypatch.delenv("FEED_DYNAMODB_PITR", raising=False)
    asyncio.run(run(("create_table", request)))
    try:
        assert main(["tables", "create"]) == 1
        out, err = capsys.readouterr()
        assert f"problem: {settings.table_prefix}{KOOS}: index {KOOS_BY_AUTHOR} has the key " \
            "author_key (HASH)" in err
        assert out.splitlines()[-1].endswith("changes made; 1 problem left unfixed")
        [described_koos] = asyncio.run(run(("describe_table",
                                            {"TableName": request["TableName"]})))
        index = next(i for i in described_koos["Table"]["GlobalSecondaryIndexes"]
                     if i["IndexName"] == KOOS_BY_AUTHOR)
        assert index["KeySchema"] == [{"AttributeName": "author_key", "KeyType": "HASH"}]
    finally:
        async def drop() -> None:
            async with open_dynamo(settings) as db:
                await drop_tables(db)
        asyncio.run(drop())
