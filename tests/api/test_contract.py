"""The read API against the API reference (docs/api.md), word for word.

Auth (401 and its body), health/readiness/metrics, 404/405 bodies, the exact
fields of every route's answer, 404 for unknown and deleted things, the
``limit`` and id rules (422, ids refused before any storage call), and
cursors (tampered, foreign, expired: 400 ``invalid_cursor``; paging to the
end returns every item once).
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import feed.reader
from config.settings import Settings
from feed.errors import StorageUnavailable
from feed.services import Services
from tests.api.conftest import TOKEN, assert_error, seed
from tests.conftest import uid
from tests.helpers import event, follow, koo, signup

pytestmark = pytest.mark.timeout(120)

KOO_FIELDS = {"koo_id", "author_id", "text", "lang", "created_at", "hashtags", "reply_to",
              "rekoo_of", "likes", "rekoos", "comments"}
PROFILE_FIELDS = {"user_id", "handle", "lang", "region", "followers", "following",
                  "created_at"}
REASONS = {"following", "self", "celebrity", "recommended"}
KINDS = {"like", "rekoo", "comment"}

# (path template, id kind, max limit or None when the route takes no limit)
GET_ROUTES: list[tuple[str, str, int | None]] = [
    ("/v1/users/{id}/feed", "user", 100),
    ("/v1/users/{id}", "user", None),
    ("/v1/users/{id}/koos", "user", 100),
    ("/v1/users/{id}/recommendations/follows", "user", 100),
    ("/v1/users/{id}/recommendations/koos", "user", 100),
    ("/v1/koos/{id}", "koo", None),
    ("/v1/koos/{id}/reactions", "koo", 200),
]
LIMITED = [(path, kind, top) for path, kind, top in GET_ROUTES if top is not None]


def reaction(kind: str, koo_id: str, user_id: str, *, added: bool = True,
             **kw: Any) -> dict[str, Any]:
    # tests.helpers.react passes ``kind`` twice (TypeError); build the event here.
    ev = event("reaction_added" if added else "reaction_removed", koo_id=koo_id,
               user_id=user_id, **kw)
    ev["kind"] = kind
    return ev


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- a small social graph, written once per module -------------------------------------


@dataclass
class World:
    author: str  # followed by reader; follows friend; 25 live koos and a deleted one
    reader: str  # follows author; one own koo
    friend: str  # followed by author only: a friend of a friend of reader
    stranger: str  # followed by nobody; a trending koo
    reactors: list[str]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> creating event
    author_koos: list[str] = field(default_factory=list)  # live, oldest first
    deleted: str = ""
    reader_koo: str = ""
    target: str = ""  # the koo the reply and the rekoo point at
    reply: str = ""
    rekoo: str = ""
    reacted: str = ""  # an author koo with one reaction per reactor
    reactions: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> event
    trending: str = ""  # the stranger's koo


@pytest.fixture(scope="module")
async def world(session_settings: Settings, tables: str) -> World:
    """Users, koos and reactions, in DynamoDB (each test then starts with a cold cache)."""
    w = World(author=uid(), reader=uid(), friend=uid(), stranger=uid(),
              reactors=[uid() for _ in range(5)])
    evs: list[dict[str, Any]] = []
    for user in (w.author, w.reader, w.friend, w.stranger, *w.reactors):
        evs.append(signup(user, lang="hi", region="ap-south-1"))
        w.events[user] = evs[-1]
    evs += [follow(w.reader, w.author), follow(w.author, w.friend)]
    w.target = uid("k")
    evs.append(koo(w.target, w.friend, text="the target"))
    w.events[w.target] = evs[-1]
    for i in range(23):
        k = uid("k")
        evs.append(koo(k, w.author, text=f"koo number {i}", hashtags=["one", f"n{i}"]))
        w.events[k] = evs[-1]
        w.author_koos.append(k)
    w.reply, w.rekoo = uid("k"), uid("k")
    evs.append(koo(w.reply, w.author, text="a reply", reply_to=w.target))
    w.events[w.reply] = evs[-1]
    evs.append(koo(w.rekoo, w.author, text="", rekoo_of=w.target))
    w.events[w.rekoo] = evs[-1]
    w.author_koos += [w.reply, w.rekoo]
    w.deleted = uid("k")
    evs.append(koo(w.deleted, w.author, text="soon gone"))
    w.events[w.deleted] = evs[-1]
    w.reader_koo = uid("k")
    evs.append(koo(w.reader_koo, w.reader, text="mine"))
    w.events[w.reader_koo] = evs[-1]
    w.trending = uid("k")
    evs.append(koo(w.trending, w.stranger, text="trending"))
    w.events[w.trending] = evs[-1]
    w.reacted = w.author_koos[3]
    for user, kind in zip(w.reactors, ["like", "like", "rekoo", "comment", "like"],
                          strict=True):
        evs.append(reaction(kind, w.reacted, user))
        w.reactions[user] = evs[-1]
    evs += [reaction("like", w.trending, r) for r in w.reactors]
    # Deleted after it is stored: a delete racing its create can be lost (see
    # test_events.py::test_a_delete_racing_its_create_is_not_lost).
    await seed(session_settings, evs,
               [event("koo_deleted", koo_id=w.deleted, author_id=w.author)])
    return w


# --- auth --------------------------------------------------------------------------------

BAD_AUTH: dict[str, dict[str, str]] = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer not-the-token-000"},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token plus one": {"Authorization": f"Bearer {TOKEN}x"},
    "basic scheme": {"Authorization": "Basic " + base64.b64encode(
        f"user:{TOKEN}".encode()).decode()},
    "token scheme": {"Authorization": f"Token {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
    "bearer without token": {"Authorization": "Bearer"},
    "bearer and blanks": {"Authorization": "Bearer   "},
}


def all_v1_requests(user: str, koo_id: str) -> list[tuple[str, str]]:
    reqs = [("GET", path.format(id=user if kind == "user" else koo_id))
            for path, kind, _ in GET_ROUTES]
    return [*reqs, ("POST", "/v1/events")]


@pytest.mark.parametrize("headers", list(BAD_AUTH.values()), ids=list(BAD_AUTH))
async def test_every_v1_route_refuses_without_a_valid_bearer_token(
    anon: httpx.AsyncClient, data_guard: list[str], headers: dict[str, str]
) -> None:
    body = {"events": [signup(uid())]}
    for method, path in all_v1_requests(uid(), uid("k")):
        r = await anon.request(method, path, headers=headers,
                               json=body if method == "POST" else None)
        assert_error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), path
    # Refused before anything was read or enqueued (the failures were only counted, in
    # the cache Redis).
    assert data_guard == []


async def test_auth_comes_before_validation(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/v1/users/a:b/feed", params={"limit": "abc"})
    assert_error(r, 401, "unauthorized")
    r = await anon.post("/v1/events", content=b"not json")
    assert_error(r, 401, "unauthorized")


# --- health, readiness, metrics -------------------------------------------------------------


async def test_healthz_needs_no_auth_and_no_io(anon: httpx.AsyncClient,
                                               storage_guard: list[str]) -> None:
    r = await anon.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert storage_guard == []


async def test_readyz_is_200_when_redis_and_dynamodb_answer(anon: httpx.AsyncClient) -> None:
    r = await anon.get("/readyz")
    assert r.status_code == 200, r.text


async def test_readyz_is_503_when_dynamodb_does_not_answer(
    anon: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(operation: str, **request: Any) -> dict[str, Any]:
        raise StorageUnavailable(f"{operation}: connection refused")

    monkeypatch.setattr(services.stores.db, "call", down)
    r = await anon.get("/readyz")
    assert r.status_code == 503, r.text


async def test_readyz_is_503_when_redis_does_not_answer(
    anon: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(services.cache.redis.connection_pool, "get_connection", down)
    r = await anon.get("/readyz")
    assert r.status_code == 503, r.text


async def test_metrics_is_prometheus_text(anon: httpx.AsyncClient,
                                          client: httpx.AsyncClient) -> None:
    secret_user = uid("secret")
    await client.get(f"/v1/users/{secret_user}")  # a 404, but a measured request
    r = await anon.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    text = r.text
    assert "# TYPE feed_http_request_duration_seconds histogram" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = [s for s in families["feed_http_request_duration_seconds"].samples
              if s.name == "feed_http_request_duration_seconds_count"
              and s.labels == {"route": "get_user", "method": "GET", "status": "404"}]
    assert len(counts) == 1
    assert counts[0].value >= 1
    assert secret_user not in text  # labelled by route, never by raw path


# --- unknown routes and methods ---------------------------------------------------------


async def test_unknown_route_is_404_with_the_error_body(anon: httpx.AsyncClient,
                                                        client: httpx.AsyncClient) -> None:
    assert_error(await anon.get("/nothing/here"), 404, "not_found")
    assert_error(await client.get("/v1/nothing"), 404, "not_found")
    assert_error(await client.get("/v1/users/abc/feed/more"), 404, "not_found")


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/healthz"),
    ("DELETE", "/metrics"),
    ("GET", "/v1/events"),
    ("PUT", "/v1/events"),
    ("POST", "/v1/users/abc"),
    ("DELETE", "/v1/koos/abc"),
    ("PATCH", "/v1/users/abc/feed"),
])
async def test_wrong_method_is_405_with_the_error_body(client: httpx.AsyncClient,
                                                       method: str, path: str) -> None:
    r = await client.request(method, path)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers.get("allow"), r.headers


# --- happy paths: the exact fields --------------------------------------------------------


async def test_profile_fields(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"/v1/users/{world.author}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == PROFILE_FIELDS
    signed_up = world.events[world.author]
    assert body == {
        "user_id": world.author, "handle": signed_up["handle"], "lang": "hi",
        "region": "ap-south-1", "followers": 1, "following": 1,
        "created_at": signed_up["occurred_at"],
    }
    reader = (await client.get(f"/v1/users/{world.reader}")).json()
    assert (reader["followers"], reader["following"]) == (0, 1)


async def test_koo_fields(client: httpx.AsyncClient, world: World) -> None:
    created = world.events[world.reacted]
    r = await client.get(f"/v1/koos/{world.reacted}")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "koo_id": world.reacted, "author_id": world.author, "text": created["text"],
        "lang": "hi", "created_at": created["occurred_at"], "hashtags": created["hashtags"],
        "reply_to": None, "rekoo_of": None, "likes": 3, "rekoos": 1, "comments": 1,
    }
    reply = (await client.get(f"/v1/koos/{world.reply}")).json()
    assert set(reply) == KOO_FIELDS
    assert (reply["reply_to"], reply["rekoo_of"], reply["hashtags"]) == (world.target, None, [])
    rekoo = (await client.get(f"/v1/koos/{world.rekoo}")).json()
    assert set(rekoo) == KOO_FIELDS
    assert (rekoo["reply_to"], rekoo["rekoo_of"], rekoo["text"]) == (None, world.target, "")


def check_koo(item: dict[str, Any]) -> None:
    for name in ("koo_id", "author_id", "text", "lang"):
        assert isinstance(item[name], str), item
    assert isinstance(item["created_at"], int), item
    assert isinstance(item["hashtags"], list), item
    assert all(isinstance(t, str) for t in item["hashtags"]), item
    assert item["reply_to"] is None or isinstance(item["reply_to"], str), item
    assert item["rekoo_of"] is None or isinstance(item["rekoo_of"], str), item
    for count in ("likes", "rekoos", "comments"):
        assert isinstance(item[count], int), item
        assert item[count] >= 0, item


async def test_feed_item_fields(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"/v1/users/{world.reader}/feed", params={"limit": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_cursor"}
    assert body["items"]
    for item in body["items"]:
        assert set(item) == KOO_FIELDS | {"score", "reason"}, item
        check_koo(item)
        assert is_number(item["score"]), item
        assert item["reason"] in REASONS, item
    by_id = {i["koo_id"]: i for i in body["items"]}
    assert by_id[world.reader_koo]["reason"] == "self"
    assert by_id[world.reacted]["reason"] == "following"
    created = world.events[world.reacted]
    assert {k: by_id[world.reacted][k] for k in KOO_FIELDS} == {
        "koo_id": world.reacted, "author_id": world.author, "text": created["text"],
        "lang": "hi", "created_at": created["occurred_at"], "hashtags": created["hashtags"],
        "reply_to": None, "rekoo_of": None, "likes": 3, "rekoos": 1, "comments": 1,
    }


async def test_feed_explain_adds_components_that_sum_to_the_score(
    client: httpx.AsyncClient, world: World
) -> None:
    r = await client.get(f"/v1/users/{world.reader}/feed",
                         params={"limit": 30, "explain": "true"})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items
    for item in items:
        assert set(item) == KOO_FIELDS | {"score", "reason", "explain"}, item
        explain = item["explain"]
        assert isinstance(explain, dict), item
        assert explain, item
        assert all(isinstance(k, str) and is_number(v) for k, v in explain.items()), item
        # Every value is rounded to 6 decimals, so the sum may be off by one unit there.
        assert math.fsum(explain.values()) == pytest.approx(item["score"], abs=1e-6 + 1e-9)
    r = await client.get(f"/v1/users/{world.reader}/feed", params={"explain": "false"})
    assert all("explain" not in i for i in r.json()["items"])


async def test_author_koos_fields_newest_first_without_deleted(
    client: httpx.AsyncClient, world: World
) -> None:
    r = await client.get(f"/v1/users/{world.author}/koos", params={"limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    for item in body["items"]:
        assert set(item) == KOO_FIELDS, item
        check_koo(item)
        assert item["author_id"] == world.author
    assert [i["koo_id"] for i in body["items"]] == world.author_koos[::-1]


async def test_reactions_fields(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"/v1/koos/{world.reacted}/reactions")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    for item in body["items"]:
        assert set(item) == {"user_id", "kind", "created_at"}, item
        assert item["kind"] in KINDS
    got = {i["user_id"]: (i["kind"], i["created_at"]) for i in body["items"]}
    assert got == {u: (e["kind"], e["occurred_at"]) for u, e in world.reactions.items()}
    assert len(body["items"]) == len(world.reactors)


async def test_follow_recommendation_fields(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"/v1/users/{world.reader}/recommendations/follows")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items"}
    for item in body["items"]:
        assert set(item) == {"user_id", "score", "reason"}, item
        assert isinstance(item["user_id"], str)
        assert is_number(item["score"])
        assert isinstance(item["reason"], str)
        assert item["reason"]
    ids = [i["user_id"] for i in body["items"]]
    assert world.friend in ids  # followed by someone the reader follows
    assert world.reader not in ids
    assert world.author not in ids  # already followed


async def test_koo_recommendation_fields(client: httpx.AsyncClient, world: World) -> None:
    r = await client.get(f"/v1/users/{world.reader}/recommendations/koos",
                         params={"limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"items"}
    for item in body["items"]:
        assert set(item) == KOO_FIELDS | {"score", "reason"}, item
        check_koo(item)
        assert is_number(item["score"])
        assert isinstance(item["reason"], str)
        assert item["author_id"] not in {world.reader, world.author}
    assert world.trending in {i["koo_id"] for i in body["items"]}


# --- 404 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "kind", "top"), GET_ROUTES, ids=[p for p, _, _ in GET_ROUTES])
async def test_unknown_user_or_koo_is_404(client: httpx.AsyncClient, path: str, kind: str,
                                          top: int | None) -> None:
    r = await client.get(path.format(id=uid("nobody")))
    assert_error(r, 404, "not_found")


@pytest.mark.parametrize("path", ["/v1/koos/{id}", "/v1/koos/{id}/reactions"])
async def test_deleted_koo_is_404(client: httpx.AsyncClient, world: World, path: str) -> None:
    r = await client.get(path.format(id=world.deleted))
    assert_error(r, 404, "not_found")


async def test_deleted_koo_is_in_no_listing(client: httpx.AsyncClient, world: World) -> None:
    feed_ids = await page_through(client, f"/v1/users/{world.reader}/feed", limit=9)
    own = await page_through(client, f"/v1/users/{world.author}/koos", limit=100)
    assert world.deleted not in feed_ids
    assert world.deleted not in own


# --- limit -------------------------------------------------------------------------------------


def bad_limits(top: int) -> list[str]:
    return ["0", str(top + 1), "-1", "abc", "1.5", "", "1e2", " 5", "+5", "0x10", "true",
            "1000000000000000000000"]


@pytest.mark.parametrize(("path", "kind", "top"), LIMITED, ids=[p for p, _, _ in LIMITED])
async def test_limit_out_of_range_or_not_an_integer_is_422(
    client: httpx.AsyncClient, path: str, kind: str, top: int
) -> None:
    url = path.format(id=uid())
    for raw in bad_limits(top):
        r = await client.get(url, params={"limit": raw})
        err = assert_error(r, 422, "validation_failed", extra=frozenset({"details"}))
        assert "limit" in err["message"], (raw, err)


@pytest.mark.parametrize("raw", ["²", "①", "9" * 5000])
async def test_limit_with_non_ascii_digits_or_huge_is_422_not_500(
    client: httpx.AsyncClient, raw: str
) -> None:
    r = await client.get(f"/v1/users/{uid()}/feed", params={"limit": raw})
    assert_error(r, 422, "validation_failed", extra=frozenset({"details"}))


async def test_limit_maxima_and_minimum_are_accepted(client: httpx.AsyncClient,
                                                     world: World) -> None:
    for path, kind, top in LIMITED:
        url = path.format(id=world.reader if kind == "user" else world.reacted)
        for raw in (str(top), "1"):
            r = await client.get(url, params={"limit": raw})
            assert r.status_code == 200, (url, raw, r.text)
            assert len(r.json()["items"]) <= int(raw)
    r = await client.get(f"/v1/users/{world.author}/koos", params={"limit": 1})
    assert len(r.json()["items"]) == 1


# --- hostile ids: 422 before any storage call -----------------------------------------------

HOSTILE_IDS = {
    "colon": "a:b",
    "brace": "a{b}",
    "star": "a*",
    "nul": "a%00b",
    "65 chars": "a" * 65,
    "non-ascii": "bü",
    "space": "a b",
    "dot": "a.b",
    "percent": "a%25b",
    "tab": "a%09b",
    "newline": "a%0A",
    "glob": "[ab]%3F",
}


@pytest.mark.parametrize("bad", list(HOSTILE_IDS.values()), ids=list(HOSTILE_IDS))
async def test_hostile_ids_are_422_before_any_storage_call(
    client: httpx.AsyncClient, storage_guard: list[str], bad: str
) -> None:
    for path, _, top in GET_ROUTES:
        params = {"limit": "1"} if top else {}
        r = await client.get(path.replace("{id}", bad), params=params)
        err = assert_error(r, 422, "validation_failed", extra=frozenset({"details"}))
        assert "_id" in err["message"], (path, err)
    assert storage_guard == []


async def test_the_storage_guard_sees_a_read(client: httpx.AsyncClient,
                                             storage_guard: list[str]) -> None:
    """The control of the test above: a valid id does reach storage, and the guard sees it."""
    r = await client.get(f"/v1/users/{uid()}")
    assert r.status_code >= 500
    assert storage_guard


async def test_the_longest_id_is_accepted(client: httpx.AsyncClient) -> None:
    for path, _, _ in GET_ROUTES:
        r = await client.get(path.format(id="A-z_9" * 12 + "abcd"))  # 64 characters
        assert_error(r, 404, "not_found")


# --- cursors ---------------------------------------------------------------------------------


async def first_cursor(client: httpx.AsyncClient, url: str, limit: int) -> str:
    r = await client.get(url, params={"limit": limit})
    assert r.status_code == 200, r.text
    cursor = r.json()["next_cursor"]
    assert isinstance(cursor, str), r.json()
    return cursor


def paged_urls(world: World) -> dict[str, tuple[str, int]]:
    return {
        "feed": (f"/v1/users/{world.reader}/feed", 5),
        "koos": (f"/v1/users/{world.author}/koos", 5),
        "reactions": (f"/v1/koos/{world.reacted}/reactions", 2),
    }


def flip(cursor: str, index: int) -> str:
    old = cursor[index]
    new = "A" if old != "A" else "B"
    return cursor[:index] + new + cursor[index + 1:]


async def test_tampered_cursors_are_400_invalid_cursor(client: httpx.AsyncClient,
                                                       world: World) -> None:
    for url, limit in paged_urls(world).values():
        cursor = await first_cursor(client, url, limit)
        tampered = {
            flip(cursor, 0), flip(cursor, 5), flip(cursor, len(cursor) // 2),
            flip(cursor, len(cursor) - 2), cursor[:-3], cursor + "AAAA", cursor[4:],
            "." + cursor, cursor + ".x", "garbage", "!!!.###", "ü.ü", "x" * 3000,
            base64.urlsafe_b64encode(b'{"s":"feed"}').decode().rstrip("="),
        }
        for bad in tampered:
            r = await client.get(url, params={"limit": limit, "cursor": bad})
            assert_error(r, 400, "invalid_cursor")
        r = await client.get(url, params={"limit": limit, "cursor": cursor})
        assert r.status_code == 200, r.text  # the untouched one still works


async def test_foreign_cursors_are_400_invalid_cursor(client: httpx.AsyncClient,
                                                      world: World) -> None:
    urls = paged_urls(world)
    feed_cursor = await first_cursor(client, *urls["feed"])
    koos_cursor = await first_cursor(client, *urls["koos"])
    reactions_cursor = await first_cursor(client, *urls["reactions"])
    foreign = [
        (f"/v1/users/{world.author}/feed", feed_cursor),  # another reader
        (f"/v1/users/{world.reader}/koos", koos_cursor),  # another author
        (f"/v1/koos/{world.author_koos[0]}/reactions", reactions_cursor),  # another koo
        (f"/v1/users/{world.reader}/koos", feed_cursor),  # same user, another listing
        (f"/v1/users/{world.author}/feed", koos_cursor),
        (f"/v1/users/{world.reader}/feed", reactions_cursor),
    ]
    for url, cursor in foreign:
        r = await client.get(url, params={"cursor": cursor})
        assert_error(r, 400, "invalid_cursor")


class ShiftedClock:
    """Stands in for the ``time`` module in feed.reader: the wall clock plus an offset."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


async def test_expired_cursors_are_400_invalid_cursor(
    client: httpx.AsyncClient, world: World, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings.cursor_ttl_seconds == 3600  # the contract's default: 1 h
    cursors = {name: (url, limit, await first_cursor(client, url, limit))
               for name, (url, limit) in paged_urls(world).items()}
    monkeypatch.setattr(feed.reader, "time", ShiftedClock(3600 - 30))
    for url, limit, cursor in cursors.values():
        r = await client.get(url, params={"limit": limit, "cursor": cursor})
        assert r.status_code == 200, (url, r.text)  # not expired yet
    monkeypatch.setattr(feed.reader, "time", ShiftedClock(3600 + 30))
    for url, limit, cursor in cursors.values():
        r = await client.get(url, params={"limit": limit, "cursor": cursor})
        err = assert_error(r, 400, "invalid_cursor")
        assert "expired" in err["message"], err


async def page_through(client: httpx.AsyncClient, url: str, *, limit: int,
                       key: str = "koo_id", keep: Any = None) -> list[str]:
    """Follow next_cursor to the end; the ids of every page, in order."""
    seen: list[str] = []
    cursor = None
    for _ in range(200):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        r = await client.get(url, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= limit
        seen += [i[key] for i in body["items"] if keep is None or keep(i)]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError(f"{url}: next_cursor never became null")


async def test_paging_the_feed_to_the_end_returns_each_koo_once(
    client: httpx.AsyncClient, world: World
) -> None:
    expected = {*world.author_koos, world.reader_koo}
    url = f"/v1/users/{world.reader}/feed"
    # Recommended koos are mixed in (1 in 10 of the walk, small pages too), and never
    # the same koo twice.
    for limit in (1, 4, 7, 10):
        ids = await page_through(client, url, limit=limit)
        assert len(ids) == len(set(ids)), limit
        own = await page_through(client, url, limit=limit,
                                 keep=lambda i: i["reason"] != "recommended")
        assert set(own) == expected, limit


async def test_paging_author_koos_and_reactions_returns_each_once(
    client: httpx.AsyncClient, world: World
) -> None:
    koos = await page_through(client, f"/v1/users/{world.author}/koos", limit=4)
    assert koos == world.author_koos[::-1]
    users = await page_through(client, f"/v1/koos/{world.reacted}/reactions", limit=2,
                               key="user_id")
    assert sorted(users) == sorted(world.reactors)


async def test_empty_cursor_means_first_page(client: httpx.AsyncClient, world: World) -> None:
    url = f"/v1/users/{world.author}/koos"
    first = (await client.get(url, params={"limit": 3})).json()
    again = (await client.get(url, params={"limit": 3, "cursor": ""})).json()
    assert [i["koo_id"] for i in again["items"]] == [i["koo_id"] for i in first["items"]]
