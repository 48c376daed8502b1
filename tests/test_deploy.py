"""The deployable package under deploy/, checked against the code it describes.

- deploy/prometheus: ``promtool check rules``, ``promtool check config`` and ``promtool
  test rules`` (alerts_test.yml), and every dashboard query through ``promtool check
  rules`` too; every alert carries a severity, a summary, a description and a runbook
  that names an existing section of the docs;
- every metric an alert or a dashboard query names is one feed/metrics.py exports
  (with the ``_total`` of a counter, the ``_bucket``/``_sum``/``_count`` of a
  histogram), every label it matches or groups by is one of that metric's, and the
  values it matches of ``outcome``, ``queue`` and ``job`` exist;
- the IAM policies allow exactly the DynamoDB actions the code calls (the data plane's
  ``Dynamo.call("Operation", ...)`` for the runtime, the control plane's
  ``Dynamo.admin("operation", ...)`` for ``feed tables create``) on exactly the tables
  and indexes of config/tables.py.

promtool comes with Prometheus (Debian: ``apt-get install prometheus``; or the
``promtool`` binary of a release from prometheus.io). Without it on PATH the promtool
tests fail, unless ``FEED_TEST_ALLOW_NO_PROMTOOL=1``: then they skip and only the
checks in Python run.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from config.tables import TABLES
from feed import apply, keys

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "koo-feed.json"
RUNTIME_POLICY = DEPLOY / "iam" / "koo-feed-policy.json"
TABLES_POLICY = DEPLOY / "iam" / "koo-feed-tables-policy.json"

ALLOW_NO_PROMTOOL = "FEED_TEST_ALLOW_NO_PROMTOOL"
SEVERITIES = {"critical", "warning"}
# Grafana's own variables in the dashboard's queries, and what stands in for them when
# promtool checks the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m"}


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --- promtool ----------------------------------------------------------------------------


def _promtool() -> str:
    """promtool's path; without it the test fails, or skips if allowed to."""
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get(ALLOW_NO_PROMTOOL) == "1":
        pytest.skip(f"promtool is not on PATH ({ALLOW_NO_PROMTOOL}=1: checks in Python only)")
    pytest.fail(
        "promtool is not on PATH: install it (Debian: apt-get install prometheus) or set "
        f"{ALLOW_NO_PROMTOOL}=1 to run the checks in Python only"
    )


def _run(*args: str | Path) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"


def test_promtool_checks_the_rules() -> None:
    promtool = _promtool()
    _run(promtool, "check", "rules", ALERTS)


def test_promtool_checks_the_scrape_config() -> None:
    promtool = _promtool()
    _run(promtool, "check", "config", SCRAPE_CONFIG)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    promtool = _promtool()
    tested = {case["alertname"] for test in _load_yaml(ALERTS_TEST)["tests"]
              for case in test.get("alert_rule_test", [])}
    assert {"KooFeedEventsDeadLettered", "KooFeedRealtimeQueueGrowing"} <= tested
    _run(promtool, "test", "rules", ALERTS_TEST)


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = [{"record": f"dashboard:query_{i}", "expr": _promql(expr)}
             for i, expr in enumerate(_dashboard_queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}),
                    encoding="utf-8")
    _run(promtool, "check", "rules", path)


def _promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by what they stand for."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


# --- the rules and the scrape config, in Python --------------------------------------------


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def _job_names() -> set[str]:
    return {job["job_name"] for job in _load_yaml(SCRAPE_CONFIG)["scrape_configs"]}


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    rules = _rules()
    names = [rule.get("alert") for rule in rules]
    assert all(names), "only alerting rules here"
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: a for: duration"
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        _assert_doc_section_exists(annotations["runbook"])


def _assert_doc_section_exists(link: str) -> None:
    path, _, anchor = link.partition("#")
    doc = ROOT / path
    assert doc.is_file(), f"runbook {link}: no such file"
    if anchor:
        headings = re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.MULTILINE)
        assert anchor in {_slug(h) for h in headings}, f"runbook {link}: no such section"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_scrape_config_loads_the_rules_and_scrapes_api_and_workers() -> None:
    config = _load_yaml(SCRAPE_CONFIG)
    assert [PROMETHEUS / f for f in config["rule_files"]] == [ALERTS]
    assert _job_names() == {"koo-feed-api", "koo-feed-worker"}
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics"
        assert all(c["targets"] for c in job["static_configs"]), job["job_name"]


# --- metrics and labels ------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """A name feed/metrics.py exposes, and the labels its samples carry."""

    family: str
    labels: frozenset[str]


def _exported() -> dict[str, Series]:
    """Every sample name feed/metrics.py exposes, read from its constructor calls."""
    exported: dict[str, Series] = {}
    tree = ast.parse((ROOT / "feed" / "metrics.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in {"Counter", "Gauge", "Histogram"}):
            continue
        name = ast.literal_eval(node.args[0])
        labels: list[str] = []
        if len(node.args) > 2:
            labels = list(ast.literal_eval(node.args[2]))
        for keyword in node.keywords:
            if keyword.arg == "labelnames":
                labels = list(ast.literal_eval(keyword.value))
        family = name.removesuffix("_total")
        base = frozenset(labels)
        if node.func.id == "Counter":
            exported[family + "_total"] = Series(family, base)
        elif node.func.id == "Gauge":
            exported[name] = Series(name, base)
        else:
            exported[name + "_bucket"] = Series(name, base | {"le"})
            exported[name + "_sum"] = Series(name, base)
            exported[name + "_count"] = Series(name, base)
    return exported


def _dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in _load_json(DASHBOARD)["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _dashboard_queries() -> list[str]:
    return [t["expr"] for p in _dashboard_panels() for t in p.get("targets", [])]


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert and every dashboard query."""
    found = [(f"alert {r['alert']}", r["expr"]) for r in _rules()]
    found += [(f"dashboard query {q!r}", q) for q in _dashboard_queries()]
    return found


_FEED_NAME = re.compile(r"\bfeed_[a-z_]+\b")
_SELECTOR = re.compile(r"\b(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{(?P<matchers>[^}]*)\}")
_MATCHER = re.compile(r"(?P<label>[a-zA-Z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*\"(?P<value>[^\"]*)\"")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^)]*)\)"
)
# What Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}


def _known_values() -> dict[str, set[str]]:
    """Label values the code or the scrape config defines, to check matchers against."""
    return {
        "outcome": {apply.APPLIED, apply.DUPLICATE, apply.NOOP, apply.DEAD_LETTERED},
        "queue": set(keys.QUEUES),
        "job": _job_names(),
    }


def test_alerts_and_dashboard_use_only_exported_metrics_and_their_labels() -> None:
    exported = _exported()
    known = _known_values()
    problems: list[str] = []
    for where, expr in _expressions():
        names = set(_FEED_NAME.findall(expr))
        if not names and "up{" not in expr:
            problems.append(f"{where}: names no metric of the service")
        problems += [f"{where}: {n} is not exported" for n in sorted(names - exported.keys())]
        labels_here = set(TARGET_LABELS)
        for name in names & exported.keys():
            labels_here |= exported[name].labels
        for selector in _SELECTOR.finditer(expr):
            name = selector["name"]
            allowed = exported[name].labels if name in exported else TARGET_LABELS
            for matcher in _MATCHER.finditer(selector["matchers"]):
                label, op, value = matcher.group("label", "op", "value")
                if label not in allowed | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label}")
                if label in known and not _matches(op, value, known[label]):
                    problems.append(f"{where}: {label}{op}{value!r} matches none of "
                                    f"{sorted(known[label])}")
        for grouping in _GROUPING.finditer(expr):
            for label in filter(None, (s.strip() for s in grouping["labels"].split(","))):
                if label not in labels_here:
                    problems.append(f"{where}: groups by {label}, a label of none of its metrics")
    assert not problems, "\n".join(problems)


def _matches(op: str, value: str, values: set[str]) -> bool:
    if op in {"=", "!="}:
        return value in values
    return any(re.fullmatch(value, v) for v in values)


def test_every_exported_metric_is_on_the_dashboard() -> None:
    shown = {_exported()[n].family for q in _dashboard_queries() for n in _FEED_NAME.findall(q)
             if n in _exported()}
    families = {s.family for s in _exported().values()}
    assert families - shown == set(), "metrics without a panel"


def test_the_dashboard_is_importable() -> None:
    dashboard = _load_json(DASHBOARD)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    titles = {p["title"] for p in panels}
    # The alerts' descriptions send readers to these panels.
    assert "5xx share" in titles


# --- IAM ---------------------------------------------------------------------------------

# TransactWriteItems is no IAM action: each item of a transaction needs the action of
# its kind.
TRANSACT_KINDS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                  "ConditionCheck": "ConditionCheckItem"}
# Control-plane calls made only by functions the tests and the demo use, never by a
# `feed` command against real tables: no policy grants them.
NOT_IN_PRODUCTION = {"drop_tables"}
ARN = "arn:aws:dynamodb:*:*:table/"


@dataclass(frozen=True)
class StoreCalls:
    data: set[str]  # Dynamo.call("Operation", ...)
    control: set[str]  # Dynamo.admin("operation", ...), outside NOT_IN_PRODUCTION
    transact_kinds: set[str]  # the kinds of transaction items built anywhere
    not_in_production: set[str]


class _Calls(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.functions: list[str] = []
        self.calls = StoreCalls(set(), set(), set(), set())
        self.problems: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr in {"call", "admin"}:
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                self.problems.append(f"{self.path}:{node.lineno}: .{node.func.attr}() without "
                                     "a literal operation: this test cannot see what it calls")
            elif node.func.attr == "call":
                self.calls.data.add(first.value)
            elif set(self.functions) & NOT_IN_PRODUCTION:
                self.calls.not_in_production.add(first.value)
            else:
                self.calls.control.add(first.value)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key in node.keys:
            if isinstance(key, ast.Constant) and key.value in TRANSACT_KINDS:
                self.calls.transact_kinds.add(key.value)
        self.generic_visit(node)


def _source_files() -> list[Path]:
    return sorted([*(ROOT / "feed").rglob("*.py"), *(ROOT / "workers").rglob("*.py")])


def _store_calls() -> StoreCalls:
    found = StoreCalls(set(), set(), set(), set())
    problems: list[str] = []
    for path in _source_files():
        visitor = _Calls(path.relative_to(ROOT))
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        problems += visitor.problems
        found.data.update(visitor.calls.data)
        found.control.update(visitor.calls.control)
        found.transact_kinds.update(visitor.calls.transact_kinds)
        found.not_in_production.update(visitor.calls.not_in_production)
    assert not problems, "\n".join(problems)
    return found


def _iam_action(operation: str) -> str:
    """``describe_time_to_live`` -> ``DescribeTimeToLive``; wire names stay."""
    if "_" in operation or operation.islower():
        return "".join(part.capitalize() for part in operation.split("_"))
    return operation


def _data_actions(calls: StoreCalls) -> set[str]:
    actions: set[str] = set()
    for operation in calls.data:
        if operation == "TransactWriteItems":
            actions |= {TRANSACT_KINDS[k] for k in calls.transact_kinds}
        elif operation == "TransactGetItems":
            actions.add("GetItem")
        else:
            actions.add(operation)
    return {f"dynamodb:{a}" for a in actions}


def _policy(path: Path) -> list[dict[str, Any]]:
    policy = _load_json(path)
    assert policy["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = policy["Statement"]
    for statement in statements:
        assert statement["Effect"] == "Allow", path.name
        assert "NotAction" not in statement, path.name
        assert "NotResource" not in statement, path.name
    return statements


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Action -> the resources it is allowed on."""
    grants: dict[str, set[str]] = {}
    for statement in statements:
        for action in _listed(statement["Action"]):
            grants.setdefault(action, set()).update(_listed(statement["Resource"]))
    return grants


def _tables() -> set[str]:
    prefix = Settings().table_prefix
    return {f"{ARN}{prefix}{name}" for name in TABLES}


def _indexes() -> set[str]:
    prefix = Settings().table_prefix
    return {f"{ARN}{prefix}{name}/index/{index.name}"
            for name, table in TABLES.items() for index in table.indexes}


def test_the_code_calls_what_this_test_expects() -> None:
    # The scan finds the calls (a broken scan would make the policy tests vacuous), and
    # what NOT_IN_PRODUCTION leaves out is only reachable from tests and the demo.
    calls = _store_calls()
    assert {"GetItem", "Query", "TransactWriteItems"} <= calls.data
    assert {"create_table", "describe_table"} <= calls.control
    assert calls.not_in_production == {"delete_table"}
    for path in _source_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative in {"feed/store/tables.py", "feed/store/__init__.py"}:
            continue
        for name in NOT_IN_PRODUCTION:
            assert name not in path.read_text(encoding="utf-8"), f"{relative} uses {name}"


def test_the_runtime_policy_allows_exactly_the_data_plane_on_every_table_and_index() -> None:
    calls = _store_calls()
    grants = _grants(_policy(RUNTIME_POLICY))
    assert set(grants) == _data_actions(calls)
    tables, indexes = _tables(), _indexes()
    assert set().union(*grants.values()) == tables | indexes
    for action, resources in grants.items():
        if action in {"dynamodb:Query", "dynamodb:Scan"}:
            assert resources == tables | indexes, action
        else:
            # Item operations name a table, never an index.
            assert resources == tables, action


def test_the_tables_policy_allows_exactly_the_control_plane_on_every_table() -> None:
    calls = _store_calls()
    grants = _grants(_policy(TABLES_POLICY))
    assert set(grants) == {f"dynamodb:{_iam_action(op)}" for op in calls.control}
    assert "dynamodb:DeleteTable" not in grants
    for action, resources in grants.items():
        if action == "dynamodb:ListTables":
            # ListTables names no table: it is allowed on "*" or not at all.
            assert resources == {"*"}
        else:
            assert resources == _tables(), action


def test_iam_action_names() -> None:
    assert _iam_action("describe_time_to_live") == "DescribeTimeToLive"
    assert _iam_action("list_tables") == "ListTables"
    assert _iam_action("BatchWriteItem") == "BatchWriteItem"
