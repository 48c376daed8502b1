"""Nobody let in (issue 7, item 10): auth on every /v1 route, cursors bound to their user,
per-token rate limits, no pickle on the queue, Redis passwords and TLS from the URLs, and
no secret in the logs.

Tampered, foreign and expired cursors and the 401 body are covered route by route in
tests/api/test_contract.py; here the same rules are checked from other sides (the OpenAPI
schema as the list of routes, real processes and their logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from arq.constants import job_key_prefix, result_key_prefix
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError
from starlette.applications import Starlette
from starlette.routing import Route

from config.settings import Settings
from feed import keys
from feed._embedded import free_port
from feed.api.app import create_app
from feed.api.openapi import openapi_schema
from feed.services import Services, open_services
from tests.conftest import uid
from tests.helpers import drain, follow, in_ledger, koo, signup

pytestmark = [pytest.mark.fault, pytest.mark.timeout(180)]

TOKEN = "test-token-123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BAD_AUTH: dict[str, dict[str, str]] = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer wrong-token-0000000"},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token plus one": {"Authorization": f"Bearer {TOKEN}0"},
    "other scheme": {"Authorization": f"Token {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
}


@contextlib.asynccontextmanager
async def api_client(app: Starlette, headers: dict[str, str] | None = None
                     ) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers=headers) as client:
            yield client


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.request.url, response.text[:300])
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"].strip(), body


# --- every /v1 route needs a valid token -------------------------------------------------


def schema_operations() -> list[tuple[str, str]]:
    """(method, path template) of every /v1 operation the OpenAPI schema lists."""
    ops = []
    for path, item in openapi_schema()["paths"].items():
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"} and path.startswith("/v1"):
                ops.append((method.upper(), path))
    return sorted(ops)


def app_operations(app: Starlette) -> list[tuple[str, str]]:
    """(method, path template) of every /v1 route the app serves."""
    ops = []
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/v1"):
            ops += [(m, route.path) for m in route.methods or () if m != "HEAD"]
    return sorted(ops)


def concrete(path: str) -> str:
    return path.replace("{user_id}", uid()).replace("{koo_id}", uid("k"))


async def test_no_v1_route_of_the_openapi_schema_answers_without_a_valid_token(
    services: Services,
) -> None:
    """Pass: the schema lists exactly the app's /v1 routes, and every one of them answers
    401 ``unauthorized`` (with WWW-Authenticate: Bearer) to each bad Authorization header,
    while the valid token gets past auth (anything but 401)."""
    # Every bad header on every route from one address: far past the failed-authentication
    # limit, which has its own tests (tests/api/test_auth.py).
    app = create_app(services.settings.replace(auth_failures_per_minute=0), services)
    ops = schema_operations()
    assert ops == app_operations(app)  # a route missing from the schema would go unwalked
    assert len(ops) >= 8
    body = {"events": [signup(uid())]}
    async with api_client(app) as client:
        for method, template in ops:
            path = concrete(template)
            for name, headers in BAD_AUTH.items():
                r = await client.request(method, path, headers=headers,
                                         json=body if method == "POST" else None)
                assert_error(r, 401, "unauthorized")
                assert r.headers["www-authenticate"].lower().startswith("bearer"), (path, name)
            r = await client.request(method, path, headers=AUTH,
                                     json=body if method == "POST" else None)
            assert r.status_code != 401, (method, path, r.text[:200])


# --- rate limiting per token ---------------------------------------------------------------


async def test_rate_limit_per_token_answers_429_with_retry_after(services: Services) -> None:
    """Pass: with FEED_RATE_LIMIT_PER_TOKEN=5, a burst of 30 requests on one token gets at
    most the bucket (5) plus what refilled while it ran, the rest 429 ``rate_limited`` with
    an integer Retry-After >= 1; a second token is not limited meanwhile; after waiting
    Retry-After seconds the first token is served again."""
    rate = 5
    other = "second-token-abcdef"
    settings = services.settings.replace(rate_limit_per_token=float(rate),
                                         api_tokens=(TOKEN, other))
    app = create_app(settings, services)
    path = f"/v1/users/{uid()}"
    async with api_client(app) as client:
        started = time.monotonic()
        answers = [await client.get(path, headers=AUTH) for _ in range(30)]
        elapsed = time.monotonic() - started
        others = [await client.get(path, headers={"Authorization": f"Bearer {other}"})
                  for _ in range(3)]
        limited = [r for r in answers if r.status_code == 429]
        served = [r for r in answers if r.status_code != 429]
        assert served, "nothing was served"
        assert all(r.status_code == 404 for r in served)  # an unknown user: past the limiter
        assert len(served) <= rate + int(rate * elapsed) + 1, (len(served), elapsed)
        assert limited
        waits = set()
        for r in limited:
            assert_error(r, 429, "rate_limited")
            waits.add(int(r.headers["retry-after"]))
        assert min(waits) >= 1
        assert [r.status_code for r in others] == [404, 404, 404]  # per token
        await asyncio.sleep(max(waits))
        again = await client.get(path, headers=AUTH)
        assert again.status_code == 404, again.text


# --- jobs are JSON: a pickle on the queue is never run -------------------------------------


class Planted:
    """Unpickling this creates ``path``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


async def test_a_pickled_job_planted_in_the_queue_is_never_executed(
    services: Services, tmp_path: Path
) -> None:
    """Pass: a job whose bytes are a pickle that creates a marker file when unpickled
    (checked live on a second marker) is taken off the queue as failed without running
    it: the marker never appears, the job's result records a failure, and an event
    published after it is applied by the same worker run."""
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Planted(control))).close()
    assert control.exists(), "the planted payload must be live for this test to mean anything"

    marker = tmp_path / "pwned"
    job_id = f"planted-{uid()}"
    payload = pickle.dumps(Planted(marker))
    queue = services.queue_redis
    await queue.psetex(job_key_prefix + job_id, 60_000, payload)
    await queue.zadd(keys.QUEUE_REALTIME, {job_id: int(time.time() * 1000)})
    good = signup(uid())
    await services.publisher.publish([good])

    await asyncio.wait_for(drain(services), 120)

    assert not marker.exists(), "the pickle was unpickled: code from the queue ran"
    assert await queue.zscore(keys.QUEUE_REALTIME, job_id) is None
    assert await queue.get(job_key_prefix + job_id) is None
    result = orjson.loads(await queue.get(result_key_prefix + job_id))
    assert result["s"] is False, result
    assert await in_ledger(services, good["event_id"]), "the worker stopped"


# --- Redis passwords and TLS from the URLs -----------------------------------------------


class RedisServer:
    """A throwaway redis-server on a free port, stopped (and waited for) on exit."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = tmp / f"redis-{uid()}.log"
        self.args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--daemonize", "no", "--dir", str(tmp), *args]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(self.args, stdout=sink, stderr=sink)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    async def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            assert self.process is not None
            assert self.process.poll() is None, _tail(self.log)
            client: Redis = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                if await client.ping():
                    return
            except (ConnectionError, OSError):
                assert time.monotonic() < deadline, _tail(self.log)
                await asyncio.sleep(0.1)
            finally:
                await client.aclose()


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[tuple[str, str, RedisServer]]:
    """(URL with the password, the password, server) of a redis-server with requirepass."""
    password = f"pw-{uid()}-{uid()}"
    port = free_port()
    with RedisServer(tmp_path, "--port", str(port), "--requirepass", password) as server:
        yield f"redis://:{password}@127.0.0.1:{port}/0", password, server


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1/localhost signed by it (PEM files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "koo-feed test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, int, RedisServer]]:
    """(rediss:// URL naming the CA, port, server) of a TLS-only redis-server."""
    ca, cert, key = _certificates(tmp_path)
    port = free_port()
    with RedisServer(tmp_path, "--port", "0", "--tls-port", str(port),
                     "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                     "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no") as server:
        url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        yield url, port, server


async def round_trip(settings: Settings) -> None:
    """Publish follow + koo through the settings' queue Redis, apply them with a worker,
    and read the follower's feed through the API (cache Redis): the koo is in it."""
    reader, author, koo_id = uid(), uid(), uid("k")
    async with open_services(settings) as svc:
        await svc.publisher.publish([signup(reader), signup(author), follow(reader, author)])
        await asyncio.wait_for(drain(svc), 120)
        await svc.publisher.publish([koo(koo_id, author, text="over the wire")])
        await asyncio.wait_for(drain(svc), 120)
        assert await svc.cache.redis.ping()
        async with api_client(create_app(settings, svc), AUTH) as client:
            r = await client.get(f"/v1/users/{reader}/feed")
            assert r.status_code == 200, r.text
            assert koo_id in [i["koo_id"] for i in r.json()["items"]]
            # A second read comes from the cache Redis that the first one filled.
            r = await client.get(f"/v1/users/{reader}/feed")
            assert koo_id in [i["koo_id"] for i in r.json()["items"]]
        assert await svc.cache.redis.exists(keys.timeline(reader))


async def test_a_password_protected_redis_works_from_the_url(
    settings: Settings, password_redis: tuple[str, str, RedisServer]
) -> None:
    """Pass: a client without the password is refused (the server really requires it), and
    publish -> apply -> read works with FEED_REDIS_URL = FEED_CACHE_REDIS_URL =
    redis://:password@host:port/0."""
    url, password, server = password_redis
    await server.wait_ready(url)
    bare: Redis = Redis.from_url(url.replace(f":{password}@", ""))
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await bare.set("probe", "1")
    finally:
        await bare.aclose()
    await round_trip(settings.replace(redis_url=url, cache_redis_url=url))


async def test_a_tls_redis_works_from_a_rediss_url(
    settings: Settings, tls_redis: tuple[str, int, RedisServer]
) -> None:
    """Pass: the server speaks only TLS (a plain redis:// client fails), and publish ->
    apply -> read works with FEED_REDIS_URL = FEED_CACHE_REDIS_URL = rediss://...
    ?ssl_ca_certs=<CA file> (the server's certificate is verified against that CA)."""
    url, port, server = tls_redis
    await server.wait_ready(url)
    plain: Redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=2,
                                  socket_connect_timeout=2)
    try:
        with pytest.raises((ConnectionError, OSError)):
            await plain.ping()
    finally:
        await plain.aclose()
    await round_trip(settings.replace(redis_url=url, cache_redis_url=url))


# --- no secret, token or cursor in the logs ----------------------------------------------


def _tail(path: Path) -> str:
    return path.read_text()[-2000:]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "feed.cli", *args], env=env,
                                stdout=sink, stderr=sink)


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def _wait_for(client: httpx.AsyncClient, path: str, api: subprocess.Popen[bytes],
                    log: Path, status: int = 200, **kw: Any) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        assert api.poll() is None, _tail(log)
        with contextlib.suppress(httpx.TransportError):
            r = await client.get(path, **kw)
            if r.status_code == status:
                return r
        assert time.monotonic() < deadline, (path, _tail(log))
        await asyncio.sleep(0.2)


async def test_no_token_password_or_cursor_reaches_the_logs(
    settings: Settings, password_redis: tuple[str, str, RedisServer], tmp_path: Path
) -> None:
    """Pass: `feed api` and `feed worker` run at DEBUG with JSON logs on a Redis URL with a
    password; requests with wrong tokens, valid ones that issue cursors, a cursor issued
    for user A replayed for user B (400 ``invalid_cursor``), a tampered cursor and a bad
    event all happen; afterwards both logs are non-empty JSON lines that name the events
    applied, and none holds the token, the wrong tokens, the password or any cursor."""
    url, password, server = password_redis
    await server.wait_ready(url)
    port = free_port()
    env = {
        **os.environ,
        "FEED_REDIS_URL": url, "FEED_CACHE_REDIS_URL": url,
        "FEED_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "FEED_TABLE_PREFIX": settings.table_prefix, "FEED_API_TOKENS": TOKEN,
        "FEED_CURSOR_SECRET": settings.cursor_secret,
        "FEED_WORKER_METRICS_PORT": "0", "FEED_LOG_LEVEL": "DEBUG", "FEED_LOG_JSON": "true",
    }
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = _spawn(["api", "--port", str(port)], env, api_log)
    worker = _spawn(["worker"], env, worker_log)
    wrong = [h["Authorization"] for h in BAD_AUTH.values() if h]
    cursors: list[str] = []
    a, b, author = uid(), uid(), uid()
    events = [signup(a), signup(b), signup(author), follow(a, author), follow(b, author)]
    events += [koo(uid("k"), author, text=f"koo {i}") for i in range(5)]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await _wait_for(client, "/readyz", api, api_log)
            for header in wrong:
                r = await client.get(f"/v1/users/{a}/feed", headers={"Authorization": header})
                assert r.status_code == 401
            r = await client.post("/v1/events", json={"events": events}, headers=AUTH)
            assert r.status_code == 202, r.text
            bad = {**koo(uid("k"), author), "koo_id": "no/slashes"}
            r = await client.post("/v1/events", json={"events": [bad]}, headers=AUTH)
            assert r.status_code == 422
            # Wait until A's feed holds all five koos, then page through it.
            deadline = time.monotonic() + 60
            while True:
                r = await client.get(f"/v1/users/{a}/feed", headers=AUTH)
                if r.status_code == 200 and len(r.json()["items"]) >= 5:
                    break
                assert time.monotonic() < deadline, (r.text, _tail(worker_log))
                await asyncio.sleep(0.3)
            r = await client.get(f"/v1/users/{a}/feed", params={"limit": 2}, headers=AUTH)
            cursor = r.json()["next_cursor"]
            assert isinstance(cursor, str)
            cursors.append(cursor)
            r = await client.get(f"/v1/users/{a}/feed", headers=AUTH,
                                 params={"limit": 2, "cursor": cursor})
            assert r.status_code == 200
            if r.json()["next_cursor"]:
                cursors.append(r.json()["next_cursor"])
            # A's cursor is refused for B, even though B follows the same author.
            r = await client.get(f"/v1/users/{b}/feed", headers=AUTH,
                                 params={"limit": 2, "cursor": cursor})
            assert_error(r, 400, "invalid_cursor")
            tampered = cursor[:-4] + ("AAAA" if not cursor.endswith("AAAA") else "BBBB")
            cursors.append(tampered)
            r = await client.get(f"/v1/users/{a}/feed", headers=AUTH,
                                 params={"limit": 2, "cursor": tampered})
            assert_error(r, 400, "invalid_cursor")
            r = await client.get(f"/v1/users/{author}/koos", params={"limit": 1}, headers=AUTH)
            cursors.append(r.json()["next_cursor"])
    finally:
        codes = _stop(api), _stop(worker)
    assert codes == (0, 0), (_tail(api_log), _tail(worker_log))

    secrets = {"token": TOKEN, "password": password, "cursor secret": settings.cursor_secret}
    secrets |= {f"wrong token {i}": h.partition(" ")[2] or h for i, h in enumerate(wrong)}
    secrets |= {f"cursor {i}": c for i, c in enumerate(cursors)}
    for name, log in (("api", api_log), ("worker", worker_log)):
        text = log.read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"the {name} logged nothing"
        records = [orjson.loads(line) for line in lines]  # every line is one JSON object
        assert all("message" in r for r in records)
        for what, secret in secrets.items():
            assert secret not in text, f"the {name} log holds the {what}"
    worker_records = [orjson.loads(line) for line in worker_log.read_text().splitlines()
                      if line.strip()]
    logged_ids = {r.get("event_id") for r in worker_records}
    assert {e["event_id"] for e in events} <= logged_ids, "the worker log names no events"
