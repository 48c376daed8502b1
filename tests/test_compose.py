"""docker-compose.yml and the Dockerfile: valid, and the settings the service relies on.

Offline and without Docker: the file is checked against the Compose
Specification schema that check-jsonschema ships (``vendor.compose-spec``),
then read with PyYAML for the properties the architecture depends on; the
Dockerfile is read for what it installs, from the pins in constraints.txt.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"
# What the caller must export: compose refuses to start without a token.
CALLER_ENV = {"FEED_API_TOKENS": "compose-test-token-0123"}

APP_SERVICES = ("tables", "api", "worker")
ONE_SHOT = ("tables",)
SERVICES = ("queue-redis", "cache-redis", "dynamodb", *APP_SERVICES)
LONG_RUNNING = tuple(s for s in SERVICES if s not in ONE_SHOT)
CONTRACT_ENV = (
    "FEED_REDIS_URL",
    "FEED_CACHE_REDIS_URL",
    "FEED_DYNAMODB_ENDPOINT",
    "FEED_AWS_REGION",
    "FEED_TABLE_PREFIX",
    "FEED_API_TOKENS",
)


# ---------------------------------------------------------------------------
# helpers


def _load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def _service(name: str) -> dict[str, Any]:
    services = _load()["services"]
    assert name in services, f"no service {name!r} in docker-compose.yml"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation (the subset of it this file may use)."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["bare"]:
            return env.get(match["bare"], "")
        name, op, arg = match["braced"], match["op"], match["arg"] or ""
        current = env.get(name)
        is_set = current is not None and (current != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return current if is_set and current is not None else arg
        if op in (":?", "?"):
            if not is_set or current is None:
                raise ValueError(f"required variable {name} is not set: {arg}")
            return current
        if op in (":+", "+"):
            return arg if is_set else ""
        return current or ""

    return _VAR.sub(substitute, value)


def _environment(service: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.partition("=") for item in raw)
        raw = {key: value for key, _, value in pairs}
    return {
        key: _interpolate("" if value is None else str(value), env) for key, value in raw.items()
    }


def _command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"command is {command!r}"
    return [str(part) for part in command]


def _redis_options(service: Mapping[str, Any]) -> dict[str, str]:
    """``--name value`` pairs of a redis-server command line."""
    args = _command(service)
    assert args[0] == "redis-server", f"command is {args!r}"
    options: dict[str, str] = {}
    index = 1
    while index < len(args):
        flag = args[index]
        assert flag.startswith("--"), f"unexpected argument {flag!r} in {args!r}"
        assert index + 1 < len(args), f"{flag} has no value in {args!r}"
        options[flag[2:]] = args[index + 1]
        index += 2
    return options


def _bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(b|k|kb|m|mb|g|gb)?", size.strip().lower())
    assert match, f"not a Redis memory size: {size!r}"
    unit = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    return int(match[1]) * unit.get(match[2] or "b", 1)


def _depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()
    }


def _dockerfile_final_stage() -> list[str]:
    lines: list[str] = []
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.upper().startswith("FROM "):
            lines = []
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


# ---------------------------------------------------------------------------
# the Compose Specification


def test_compose_file_matches_the_compose_specification() -> None:
    result = _schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    # Proves the check above can fail: a misspelt key must be reported.
    data = _load()
    data["services"]["worker"]["helthcheck"] = data["services"]["worker"].pop("healthcheck")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = _schema_check(broken)
    assert result.returncode != 0
    assert "helthcheck" in result.stdout + result.stderr


def test_services_are_the_documented_ones() -> None:
    assert sorted(_load()["services"]) == sorted(SERVICES)


# ---------------------------------------------------------------------------
# the two Redis roles


def test_queue_redis_never_evicts_and_keeps_an_append_only_file() -> None:
    service = _service("queue-redis")
    options = _redis_options(service)
    assert options.get("maxmemory-policy") == "noeviction"
    assert options.get("appendonly") == "yes"
    volumes = [str(v if isinstance(v, str) else v.get("target")) for v in service["volumes"]]
    assert any(v.endswith(":/data") or v == "/data" for v in volumes), volumes


def test_cache_redis_is_a_bounded_lru_cache() -> None:
    options = _redis_options(_service("cache-redis"))
    assert options.get("maxmemory-policy") == "allkeys-lru"
    assert _bytes(options.get("maxmemory", "0")) > 0


def test_redis_images_are_redis_7() -> None:
    for name in ("queue-redis", "cache-redis"):
        assert _service(name)["image"].startswith("redis:7"), name


def test_dynamodb_local_runs_in_memory_with_a_shared_db() -> None:
    service = _service("dynamodb")
    assert service["image"].split(":")[0] == "amazon/dynamodb-local"
    command = _command(service)
    assert {"-inMemory", "-sharedDb"} <= set(command), command


# ---------------------------------------------------------------------------
# health and start-up order


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_healthcheck(name: str) -> None:
    healthcheck = _service(name).get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    test = healthcheck.get("test")
    assert test, f"{name}: healthcheck has no test"
    assert test not in (["NONE"], "NONE")
    assert _service(name).get("restart") not in (None, "no"), f"{name} is not restarted"


def test_tables_is_a_one_shot_job_after_dynamodb_is_healthy() -> None:
    service = _service("tables")
    assert _command(service) == ["feed", "tables", "create"]
    assert service.get("restart", "no") == "no"
    assert _depends_on(service) == {"dynamodb": "service_healthy"}


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_start_after_tables_and_healthy_redis(name: str) -> None:
    depends = _depends_on(_service(name))
    assert depends.get("tables") == "service_completed_successfully"
    assert depends.get("queue-redis") == "service_healthy"
    assert depends.get("cache-redis") == "service_healthy"


def test_api_serves_on_all_interfaces_and_checks_healthz() -> None:
    service = _service("api")
    assert _command(service) == ["feed", "api", "--host", "0.0.0.0", "--port", "8080"]
    test = service["healthcheck"]["test"]
    assert "/healthz" in " ".join(test if isinstance(test, list) else [test])
    ports = [str(p) for p in service.get("ports", [])]
    assert any(p.endswith(":8080") for p in ports), ports


def _published(service: Mapping[str, Any]) -> list[dict[str, str]]:
    """Its ports in the long syntax's terms, every value a string."""
    found = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            found.append({key: str(value) for key, value in port.items()})
            continue
        # The short syntax: [[HOST_IP:]PUBLISHED:]TARGET.
        parts = str(port).split(":")
        found.append({
            "target": parts[-1],
            "published": parts[-2] if len(parts) > 1 else "",
            "host_ip": parts[-3] if len(parts) > 2 else "",
        })
    return found


def test_worker_can_be_scaled() -> None:
    service = _service("worker")
    assert _command(service) == ["feed", "worker"]
    # `docker compose up --scale worker=N` fails with a fixed name or host port.
    assert "container_name" not in service
    for port in _published(service):
        assert not port.get("published"), f"a fixed host port: {port}"


def test_worker_metrics_are_reachable_like_the_apis() -> None:
    from config.settings import Settings

    service = _service("worker")
    settings = Settings.from_env(_environment(service, CALLER_ENV))
    # Inside its container the worker must listen beyond loopback to be scraped at all.
    assert settings.worker_metrics_host == "0.0.0.0"
    assert settings.worker_metrics_port
    ports = [p for p in _published(service)
             if p["target"].split("/")[0] == str(settings.worker_metrics_port)]
    assert ports, f"port {settings.worker_metrics_port} is not published: {service.get('ports')}"
    # On the host, on loopback, as the API's port is.
    api_ports = [str(p) for p in _service("api").get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in api_ports), api_ports
    assert all(p.get("host_ip") == "127.0.0.1" for p in ports), ports


# ---------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_sets_the_contract_variables(name: str) -> None:
    env = _environment(_service(name), CALLER_ENV)
    for variable in CONTRACT_ENV:
        assert env.get(variable), f"{name}: {variable} is not set"


def test_app_services_share_one_environment() -> None:
    environments = [_service(name).get("environment") for name in APP_SERVICES]
    assert all(e == environments[0] for e in environments), environments


def test_api_tokens_come_from_the_callers_environment() -> None:
    service = _service("api")
    override = {"FEED_API_TOKENS": "token-one-1234,token-two-5678"}
    assert _environment(service, override)["FEED_API_TOKENS"] == override["FEED_API_TOKENS"]


@pytest.mark.parametrize("env", [{}, {"FEED_API_TOKENS": ""}], ids=["unset", "empty"])
def test_api_tokens_have_no_default(env: dict[str, str]) -> None:
    # A default token would be one anyone who read this file knows.
    for name in APP_SERVICES:
        with pytest.raises(ValueError, match="FEED_API_TOKENS"):
            _environment(_service(name), env)


def test_a_missing_token_is_explained() -> None:
    raw = str(_load()["x-feed-env"]["FEED_API_TOKENS"])
    match = re.fullmatch(r"\$\{FEED_API_TOKENS:\?(?P<message>[^}]+)\}", raw)
    assert match, f"FEED_API_TOKENS is {raw!r}, not ${{FEED_API_TOKENS:?message}}"
    assert "FEED_API_TOKENS" in match["message"]


def test_app_services_point_at_the_compose_services() -> None:
    env = _environment(_service("api"), CALLER_ENV)
    assert urlsplit(env["FEED_REDIS_URL"]).hostname == "queue-redis"
    assert urlsplit(env["FEED_CACHE_REDIS_URL"]).hostname == "cache-redis"
    endpoint = urlsplit(env["FEED_DYNAMODB_ENDPOINT"])
    assert endpoint.hostname == "dynamodb"
    command = _command(_service("dynamodb"))
    port = command[command.index("-port") + 1] if "-port" in command else "8000"
    assert str(endpoint.port) == port


def test_app_environment_is_accepted_by_the_settings() -> None:
    from config.settings import Settings

    settings = Settings.from_env(_environment(_service("api"), CALLER_ENV))
    assert settings.redis_url != settings.cache_redis_url
    assert settings.api_tokens


async def test_app_environment_finds_credentials_for_its_dynamodb(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """``dynamodb`` is not this host, so the service needs the chain to find a key."""
    from feed.store._credentials import resolve_credentials

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    env = _environment(_service("api"), CALLER_ENV)
    for name, value in env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    source = await resolve_credentials(env["FEED_DYNAMODB_ENDPOINT"], env["FEED_AWS_REGION"])
    assert source.method == "env"


# ---------------------------------------------------------------------------
# the image


def test_app_services_build_the_one_image_from_the_dockerfile() -> None:
    images = set()
    for name in APP_SERVICES:
        service = _service(name)
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
        images.add(service.get("image"))
    assert len(images) == 1, images


def test_dockerfile_runs_python_312_slim_as_a_non_root_user() -> None:
    stage = _dockerfile_final_stage()
    assert stage[0].split()[1] == "python:3.12-slim"
    users = [line.split()[1] for line in stage if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"pip install [^\n&]*?\s\.(\s|$)", text), "the image does not pip install ."


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    allowed = {
        line.strip()[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("!")
    }
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in words[1:-1]:
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), f"{source} does not exist"


# ---------------------------------------------------------------------------
# pinned dependencies

# The image's platform, for the environment markers of what the dependencies pull in.
IMAGE_MARKERS = {
    "python_version": "3.12", "python_full_version": "3.12.0", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux",
    "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
}


def _pins() -> dict[str, str]:
    """constraints.txt as canonical name -> exact version."""
    pins: dict[str, str] = {}
    for raw in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"not an exact pin: {raw!r}"
        assert re.fullmatch(r"[A-Za-z0-9.+!]+", version), f"not an exact pin: {raw!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"{name} is pinned twice"
        pins[key] = version
    return pins


def _runtime_requirements() -> list[Requirement]:
    with PYPROJECT.open("rb") as file:
        project = tomllib.load(file)["project"]
    return [Requirement(r) for r in project["dependencies"]]


def _pip_installs() -> list[str]:
    """Every pip install command of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [m.group(0) for m in re.finditer(r"pip install[^\n&|;]*", text)]


def _dockerfile_stage(name: str) -> list[str]:
    """The instructions of the stage ``FROM ... AS name``."""
    lines: list[str] = []
    inside = False
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.upper().startswith("FROM "):
            inside = stripped.split()[-1] == name
            continue
        if inside and stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def test_the_image_installs_from_the_committed_constraints() -> None:
    installs = _pip_installs()
    assert len(installs) >= 2, installs  # the dependencies' layer and the package
    for command in installs:
        assert re.search(r"(--constraint|-c)[ =]constraints\.txt(\s|$)", command), command
    copied = [line.split()[1:-1] for line in _dockerfile_stage("build")
              if line.upper().startswith("COPY ")]
    assert any("constraints.txt" in sources for sources in copied), copied


def test_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    pins = _pins()
    for requirement in _runtime_requirements():
        key = canonicalize_name(requirement.name)
        assert key in pins, f"{requirement.name} (pyproject.toml) is not in constraints.txt"
        assert requirement.specifier.contains(pins[key], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[key]}, outside {requirement}")


def test_constraints_pin_what_the_runtime_dependencies_pull_in() -> None:
    """Their whole closure, as this environment's installed metadata declares it."""
    import importlib.metadata as metadata

    pins = _pins()
    needed: dict[str, set[str]] = {}
    todo = _runtime_requirements()
    while todo:
        requirement = todo.pop()
        key = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if key in needed and extras <= needed[key]:
            continue
        needed[key] = needed.get(key, set()) | extras
        try:
            declared = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here; still checked for a pin below
        for line in declared:
            child = Requirement(line)
            if child.marker is None or any(
                child.marker.evaluate({**IMAGE_MARKERS, "extra": extra})
                for extra in needed[key] or {""}
            ):
                todo.append(child)
    missing = sorted(set(needed) - set(pins))
    assert not missing, f"pulled in but not pinned in constraints.txt: {missing}"
    extra = sorted(set(pins) - set(needed))
    assert not extra, f"pinned but not needed at run time: {extra}"


def test_a_missing_pin_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Proves the pin checks can fail: constraints.txt without its first pin.
    lines = CONSTRAINTS.read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    broken = tmp_path / "constraints.txt"
    broken.write_text("\n".join(lines[:first] + lines[first + 1:]), encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "CONSTRAINTS", broken)
    with pytest.raises(AssertionError, match="not pinned"):
        test_constraints_pin_what_the_runtime_dependencies_pull_in()


def test_the_worker_s_healthcheck_asks_the_workers_themselves() -> None:
    check = _service("worker")["healthcheck"]["test"]
    assert check == ["CMD", "feed", "worker", "--check"]
