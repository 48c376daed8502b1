"""Every fenced code block of README.md and docs/*.md runs as pasted, or says why not.

The first word of a block's info string decides what is done with it:

- ``python``: run by this interpreter in a directory of its own, with the environment
  of the shell blocks;
- ``sh`` (``bash``, ``shell``): run by ``bash -e -o pipefail`` against a live ``feed
  api`` this module starts, on tables of its own seeded with the users and koos the
  examples name (``user0010``, ``user0042``, ``user0077``, ``tour-koo``, ``k-chai``).
  ``FEED_URL`` and ``FEED_TOKEN`` are set as docs/api.md says, the ``FEED_*`` variables
  point at the test's Redis and DynamoDB, and ``feed`` is the project's command. ``curl``
  runs with ``--fail-with-body``, so an answer of 4xx or 5xx fails the block;
- ``json``: parsed. An event (its ``type`` is an event type) must be accepted by
  ``validate_event`` and valid under the OpenAPI schema; an error body must match the
  ``Error`` schema; an example under a route's heading in docs/api.md must match that
  route's success answer in ``/openapi.json``;
- ``yaml``: parsed;
- ``text``: not code (diagrams, headers);
- any of these followed by ``no-run``: not run, for commands that need Docker, make,
  AWS or minutes, or that start servers; the prose around each says how to run it.

Any other block fails the test until it is marked.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from redis.asyncio import Redis

from feed.api.app import create_app
from feed.api.openapi import openapi_schema
from feed.events import EVENT_TYPES, SCHEMAS, validate_event
from feed.store import create_tables, open_dynamo
from tests.api.conftest import seed
from tests.conftest import CACHE_URL, QUEUE_URL, free_port, make_settings
from tests.helpers import event, follow, koo, react

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "docs-token-0123456789"
RUN = {"python": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
PARSE = {"json", "yaml"}
NOT_CODE = {"text"}
# Makes curl fail on an HTTP error status, so a snippet that gets 404 or 422 fails.
CURL = 'curl() { command curl --fail-with-body "$@"; }\n'
SNIPPET_TIMEOUT = 60

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    line: int  # of the opening fence
    info: str
    heading: str  # the nearest heading above the block
    code: str

    @property
    def lang(self) -> str:
        words = self.info.split()
        return words[0].lower() if words else ""

    @property
    def excluded(self) -> bool:
        return "no-run" in self.info.split()[1:]

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    heading = ""
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            if lines[i].startswith("#"):
                heading = lines[i].lstrip("#").strip()
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.fullmatch(rf" *{fence[0]}{{{len(fence)},}} *", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        assert j < len(lines), f"{path}:{i + 1}: a code block that never closes"
        found.append(Block(str(path.relative_to(ROOT)), i + 1, opening["info"].strip(),
                           heading, "\n".join(body) + "\n"))
        i = j + 1
    return found


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [b for path in DOCS for b in blocks_of(path)]
RUNNABLE = [b for b in BLOCKS if b.lang in RUN and not b.excluded]
JSON_BLOCKS = [b for b in BLOCKS if b.lang == "json" and not b.excluded]
YAML_BLOCKS = [b for b in BLOCKS if b.lang == "yaml" and not b.excluded]
API_MD = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")


def _ids(blocks: list[Block]) -> list[str]:
    return [b.id for b in blocks]


# --- every block is marked -----------------------------------------------------------------

def test_every_block_runs_or_is_marked() -> None:
    unmarked = [b.id for b in BLOCKS if not b.excluded
                and b.lang not in RUN and b.lang not in PARSE and b.lang not in NOT_CODE]
    assert not unmarked, ("code blocks without a known language: mark them python, sh, "
                          f"json, yaml or text, and add no-run if they cannot run: {unmarked}")
    assert {b.path for b in RUNNABLE} >= {"README.md", "docs/api.md", "docs/architecture.md"}


# --- python and shell blocks, against a live API ------------------------------------------

def _seed_events() -> list[list[dict[str, Any]]]:
    """The users, relations, koos and reactions the examples read."""
    users = [event("user_signed_up", user_id=user, handle=handle, lang="hi",
                   region="ap-south-1")
             for user, handle in (("user0010", "meera"), ("user0042", "ravi"),
                                  ("user0077", "anu"))]
    graph = [follow("user0010", "user0042"), follow("user0042", "user0077"),
             koo("tour-koo", "user0042", text="namaste", hashtags=["koo"]),
             koo("k-chai", "user0077", text="chai time", hashtags=["chai"])]
    reactions = [react("like", "tour-koo", "user0010"), react("like", "k-chai", "user0042")]
    return [users, graph, reactions]


def _tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


def _start_api(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "feed.cli", "api", "--port", str(port)],
                                env=env, stdout=sink, stderr=sink)


@pytest.fixture(scope="module")
async def live(dynamo_endpoint: str, tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[dict[str, str]]:
    """A `feed api` process over tables of its own holding the examples' data; yields the
    environment of the snippets."""
    settings = make_settings(dynamo_endpoint)  # a fresh table prefix: the ids are fixed
    async with open_dynamo(settings) as db:
        await create_tables(db)
    for url in (QUEUE_URL, CACHE_URL):
        redis = Redis.from_url(url)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()
    await seed(settings, *_seed_events())
    port = free_port()
    env = {
        **os.environ,
        "FEED_URL": f"http://127.0.0.1:{port}",
        "FEED_TOKEN": TOKEN,
        "FEED_API_TOKENS": TOKEN,
        "FEED_REDIS_URL": settings.redis_url,
        "FEED_CACHE_REDIS_URL": settings.cache_redis_url,
        "FEED_DYNAMODB_ENDPOINT": dynamo_endpoint,
        "FEED_TABLE_PREFIX": settings.table_prefix,
        "FEED_WORKER_METRICS_PORT": "0",
        "FEED_LOG_LEVEL": "WARNING",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = tmp_path_factory.mktemp("api") / "api.log"
    api = _start_api(port, env, log)
    env["_API_LOG"] = str(log)
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=env["FEED_URL"], timeout=5) as client:
            while True:
                assert api.poll() is None, _tail(log)
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, _tail(log)
                await asyncio.sleep(0.2)
        yield env
    finally:
        if api.poll() is None:
            api.send_signal(signal.SIGTERM)
            try:
                api.wait(30)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=_ids(RUNNABLE))
def test_block_runs_as_pasted(live: dict[str, str], block: Block, tmp_path: Path) -> None:
    env = {k: v for k, v in live.items() if not k.startswith("_")}
    if RUN[block.lang] == "python":
        script = tmp_path / "snippet.py"
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", CURL + block.code]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                          timeout=SNIPPET_TIMEOUT, check=False)
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode}\n--- block\n{block.code}"
        f"--- stdout\n{done.stdout.decode(errors='replace')[-2000:]}"
        f"\n--- stderr\n{done.stderr.decode(errors='replace')[-2000:]}"
        f"\n--- feed api log\n{_tail(Path(live['_API_LOG']), 1500)}")


# --- json and yaml blocks -------------------------------------------------------------------

@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_schema()


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    import openapi_schema_validator as oas
    return oas.OAS30Validator({**schema, "components": document["components"]})


def _answer_schema(document: dict[str, Any], heading: str) -> dict[str, Any] | None:
    """The success answer's schema of the route a docs/api.md heading names, if it does."""
    if heading == "A koo":
        return {"$ref": "#/components/schemas/Koo"}
    method, _, path = heading.partition(" ")
    operation = document["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return None
    for status in ("200", "202"):
        if status in operation["responses"]:
            schema: dict[str, Any] = (
                operation["responses"][status]["content"]["application/json"]["schema"])
            return schema
    return None


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=_ids(JSON_BLOCKS))
def test_json_block_is_valid(document: dict[str, Any], block: Block) -> None:
    value = orjson.loads(block.code)
    if isinstance(value, dict) and value.get("type") in EVENT_TYPES:
        validate_event(value)
        _validator(document, {"$ref": "#/components/schemas/Event"}).validate(value)
    elif isinstance(value, dict) and "error" in value:
        _validator(document, {"$ref": "#/components/schemas/Error"}).validate(value)
    elif block.path == "docs/api.md":
        schema = _answer_schema(document, block.heading)
        assert schema is not None, f"{block.id}: no route answers under {block.heading!r}"
        _validator(document, schema).validate(value)


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_yaml_block_parses(block: Block) -> None:
    assert yaml.safe_load(block.code) is not None


# --- docs/api.md covers the API ------------------------------------------------------------

def test_api_md_has_a_section_for_every_route() -> None:
    app = create_app(make_settings("http://127.0.0.1:9"))
    routes = [(method, getattr(route, "path", "")) for route in app.routes
              for method in sorted(getattr(route, "methods", None) or ()) if method != "HEAD"]
    assert routes
    missing = [f"{m} {p}" for m, p in routes if f"\n### {m} {p}\n" not in API_MD]
    assert not missing, f"routes without a section in docs/api.md: {missing}"


def test_api_md_has_an_example_of_every_event_type_and_names_every_field() -> None:
    examples = {orjson.loads(b.code).get("type") for b in JSON_BLOCKS
                if b.path == "docs/api.md" and b.code.lstrip().startswith("{")}
    assert set(EVENT_TYPES) <= examples
    for event_type, specs in SCHEMAS.items():
        assert f"\n### {event_type}\n" in API_MD, event_type
        for spec in specs:
            assert f"`{spec.name}`" in API_MD, spec.name
