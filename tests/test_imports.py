"""The service's modules import one another without cycles, and lazily only for a reason.

Pass criteria: the graph of module-level imports among feed/, workers/ and config/
(``if TYPE_CHECKING:`` blocks aside) has no cycle; every import of one of these modules
inside a function is listed in LAZY with its reason, and the graph stays free of cycles
with those imports counted too (a lazy import must never be what hides one).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feed", "workers", "config")

# (importing module, imported module) -> why the import waits until the function runs.
_CLI_START = "feed imports the CLI on every start, even for --help"
LAZY: dict[tuple[str, str], str] = {
    ("feed.cli", "feed.demo"): "the whole service plus the demo's stand-ins, only for "
    "`feed demo`, whose missing extra is reported where it is imported",
    ("feed.cli", "workers.runner"): f"every job module, arq's worker and the service's "
    f"clients, only for `feed worker`: {_CLI_START}",
    ("feed.cli", "feed.api._server"): f"uvicorn, only for `feed api`: {_CLI_START}",
    ("feed.admin", "feed.store.regions"): "the DynamoDB client, only for `feed tables`; the "
    "CLI imports this module for its parsers on every start",
    ("feed.cli", "feed.queue"): f"arq and redis, only for a failure's message: {_CLI_START}",
    ("feed.cli", "feed.publisher"): f"arq and redis, only for `feed publish`: {_CLI_START}",
    ("feed.admin", "feed.inspection"): "the whole service, only for `feed inspect`; the CLI "
    "imports this module for its parsers on every start",
    ("feed.admin", "feed.services"): "the whole service, only for `feed inspect`; the CLI "
    "imports this module for its parsers on every start",
    ("feed.admin", "feed.deadletters"): "the DynamoDB client (and the metrics with it), only "
    "for `feed dead-letters`; the CLI imports this module for its parsers on every start",
    ("feed.admin", "feed.queue"): "arq and redis, only to run an operator's command; the "
    "CLI imports this module for its parsers on every start",
    ("feed.admin", "feed.store"): "the DynamoDB client, only to run an operator's command; "
    "the CLI imports this module for its parsers on every start",
    ("feed.backfill", "feed.queue"): "arq and redis, only to run a backfill; the CLI "
    "imports this module for its parser on every start",
    ("feed.backfill", "feed.store"): "the DynamoDB client, only to run a backfill; the CLI "
    "imports this module for its parser on every start",
    ("feed.backfill", "feed.store.users"): "the DynamoDB client, only to run a backfill; "
    "the CLI imports this module for its parser on every start",
    ("feed.demo", "feed.api.app"): "the API app, only for `feed demo --serve`",
    ("feed.export", "feed.services"): "the whole service, only for `feed users export`; "
    "the CLI imports this module for its parser on every start",
    ("feed.export", "feed.audit"): "the DynamoDB client, only for `feed users export`; "
    "the CLI imports this module for its parser on every start",
    ("feed.export", "feed.notifications"): "the read path, only for `feed users export`; "
    "the CLI imports this module for its parser on every start",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(nodes: Iterable[ast.AST], *, lazy: bool
             ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``nodes``, and whether it runs only inside a function;
    imports for type checkers only are left out."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, lazy
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, lazy=lazy)
        else:
            inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from _imports(ast.iter_child_nodes(node), lazy=inner)


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The project modules one import statement loads (``from p import m`` loads p.m if it
    is a module, else p)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {_nearest(name) for name in names} - {""}
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            found.add(f"{base}.{alias.name}")
        elif (nearest := _nearest(base)) != "":
            found.add(nearest)
    return found


def _nearest(name: str) -> str:
    """The project module ``name`` is, or is in ("" for anything else)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    """Module-level edges, and the function-level imports (with their line)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    lazy: dict[tuple[str, str], int] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, in_function in _imports(tree.body, lazy=False):
            for target in _targets(node, name) - {name}:
                if in_function:
                    lazy.setdefault((name, target), node.lineno)
                else:
                    edges[name].add(target)
    return edges, lazy


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_module_level_imports_have_no_cycle() -> None:
    edges, _ = _graph()
    assert "feed.queue" in edges["feed.services"]  # the graph is read at all
    assert "workers.events" in edges["workers.settings"]
    assert _cycles(edges) == []


def test_function_level_imports_are_listed_with_a_reason() -> None:
    _, lazy = _graph()
    unlisted = {f"{a} -> {b} (line {line})" for (a, b), line in lazy.items()
                if (a, b) not in LAZY}
    assert not unlisted, f"imports inside functions without a reason in LAZY: {unlisted}"
    stale = set(LAZY) - set(lazy)
    assert not stale, f"LAZY lists imports that are gone: {stale}"
    assert all(reason.strip() for reason in LAZY.values())


def test_no_function_level_import_hides_a_cycle() -> None:
    edges, lazy = _graph()
    every = {name: set(targets) for name, targets in edges.items()}
    for importer, target in lazy:
        every[importer].add(target)
    assert _cycles(every) == []
