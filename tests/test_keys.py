"""Unit and property tests of the key builders in feed/keys.py: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from feed import keys

ids = st.from_regex(re.compile(r"[A-Za-z0-9_-]{1,64}"), fullmatch=True)
created = st.integers(min_value=0, max_value=10**13 - 1)

# Every Redis key that belongs to one user, and so must live on the user's slot.
PER_USER: dict[str, Callable[[str], str]] = {
    "timeline": keys.timeline,
    "timeline_lock": keys.timeline_lock,
    "following": keys.following,
    "blocking": keys.blocking,
    "muting": keys.muting,
    "blocked_by": keys.blocked_by,
    "affinity": keys.affinity,
    "author_recent": keys.author_recent,
    "rec_follows": lambda u: keys.recommendations(u, "follows"),
    "rec_koos": lambda u: keys.recommendations(u, "koos"),
}


def slot(key: str) -> int:
    return key_slot(key.encode())


# --- sort keys --------------------------------------------------------------------------


def test_sort_key_format() -> None:
    assert keys.sort_key(1_700_000_000_123, "k1") == "1700000000123#k1"
    assert keys.sort_key(5, "abc") == "0000000000005#abc"
    assert keys.parse_sort_key("0000000000005#abc") == (5, "abc")


@settings(max_examples=150, deadline=None)
@given(created, ids)
def test_sort_key_round_trip(created_ms: int, koo_id: str) -> None:
    value = keys.sort_key(created_ms, koo_id)
    assert keys.parse_sort_key(value) == (created_ms, koo_id)
    assert len(value) == 13 + 1 + len(koo_id)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(created | st.sampled_from([0, 1, 10**12, 10**13 - 1]), ids),
                min_size=2, max_size=10))
def test_lexical_order_of_sort_keys_is_time_then_id_order(pairs: list[tuple[int, str]]) -> None:
    by_key = sorted(pairs, key=lambda p: keys.sort_key(*p))
    assert by_key == sorted(pairs)
    # byte order too, which is what Redis ZRANGEBYLEX and DynamoDB use
    by_bytes = sorted(pairs, key=lambda p: keys.sort_key(*p).encode())
    assert by_bytes == sorted(pairs)


@pytest.mark.parametrize(("a", "b"), [
    ((9, "z"), (10, "a")),
    ((1, "a"), (1, "a-")),
    ((1, "a-"), (1, "a0")),
    ((1, "Z"), (1, "_")),
    ((1, "_"), (1, "a")),
    ((999_999_999_999, "zzz"), (1_000_000_000_000, "A")),
])
def test_sort_key_order_examples(a: tuple[int, str], b: tuple[int, str]) -> None:
    assert keys.sort_key(*a) < keys.sort_key(*b)


# --- per-user Redis keys: one hash tag, one slot -------------------------------------------


@pytest.mark.parametrize("name", sorted(PER_USER))
def test_per_user_key_has_exactly_one_hash_tag(name: str) -> None:
    key = PER_USER[name]("user_42")
    assert key.count("{user_42}") == 1
    assert key.count("{") == 1
    assert key.count("}") == 1
    assert key.startswith("feed:")


@settings(max_examples=100, deadline=None)
@given(ids)
def test_all_keys_of_one_user_share_one_cluster_slot(user_id: str) -> None:
    slots = {name: slot(build(user_id)) for name, build in PER_USER.items()}
    # the slot is the slot of the user id itself: the hash tag is exactly the id
    assert set(slots.values()) == {slot(user_id)}, slots
    for build in PER_USER.values():
        key = build(user_id)
        assert key.count("{") == 1
        assert key.count("}") == 1
        assert f"{{{user_id}}}" in key


def test_known_slot_values() -> None:
    # Pinned against the Redis Cluster spec's CRC16 so a change of tag format shows up.
    assert slot(keys.timeline("alice")) == key_slot(b"alice")
    assert slot(keys.timeline("alice")) != slot(keys.timeline("bob"))


@settings(max_examples=100, deadline=None)
@given(ids, ids)
def test_keys_of_different_users_never_collide(a: str, b: str) -> None:
    if a == b:
        return
    keys_a = {build(a) for build in PER_USER.values()}
    keys_b = {build(b) for build in PER_USER.values()}
    assert not keys_a & keys_b


def test_per_user_keys_are_all_distinct() -> None:
    built = [build("u1") for build in PER_USER.values()]
    assert len(set(built)) == len(built)


def test_other_keys_are_tagged_by_their_own_id() -> None:
    assert keys.koo("k1") == "feed:koo:{k1}"
    assert slot(keys.koo("k1")) == key_slot(b"k1")
    assert slot(keys.trending("hi")) == slot(keys.popular_authors("hi")) == key_slot(b"hi")
    assert keys.trending("hi") != keys.popular_authors("hi")
    assert keys.rate_limit(keys.token_digest("secret-token")).count("{") == 1
    assert "secret-token" not in keys.rate_limit(keys.token_digest("secret-token"))


def test_token_digest() -> None:
    digest = keys.token_digest("secret-token-1")
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert digest == keys.token_digest("secret-token-1")
    assert digest != keys.token_digest("secret-token-2")


# --- job ids --------------------------------------------------------------------------


def test_job_ids() -> None:
    assert keys.event_job("e1", "0123456789abcdef0123") == "ev:e1:0123456789abcdef"
    assert keys.fanout_job("k1") == "fanout:k1:0"
    assert keys.fanout_job("k1", 2) == "fanout:k1:2"
    assert keys.fanout_chunk_job("k1", "abc-10") == "fanout:k1:chunk:abc-10"
    assert keys.fanout_job("k1") != keys.fanout_job("k1", 1)


def test_chunk_id_is_stable() -> None:
    # Job ids outlive a deploy (they sit in Redis), so the digest must never change.
    assert keys.chunk_id("u1", 1000) == "ce5510688282-1000"
    assert keys.chunk_id("alice", 500) == "a165f8c5ae0e-500"


@settings(max_examples=100, deadline=None)
@given(ids, st.integers(1, 10_000))
def test_chunk_id_is_deterministic_and_shaped(first: str, size: int) -> None:
    value = keys.chunk_id(first, size)
    assert value == keys.chunk_id(first, size)
    assert re.fullmatch(rf"[0-9a-f]{{12}}-{size}", value)
    assert value != keys.chunk_id(first, size + 1)


def test_chunk_id_differs_by_first_follower() -> None:
    values = {keys.chunk_id(f"u{i}", 1000) for i in range(200)}
    assert len(values) == 200


# --- DynamoDB sort keys ----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(keys.REL_KINDS), ids)
def test_relation_sk_round_trip(kind: str, other: str) -> None:
    value = keys.relation_sk(kind, other)
    assert value == f"{kind}#{other}"
    assert keys.split_relation_sk(value) == (kind, other)
    assert value.startswith(keys.relation_prefix(kind))
    assert keys.relation_inverse_sk(kind, other) == value


def test_relation_prefixes_do_not_overlap() -> None:
    for kind in keys.REL_KINDS:
        for other in keys.REL_KINDS:
            if kind != other:
                assert not keys.relation_sk(kind, "x").startswith(keys.relation_prefix(other))


@settings(max_examples=100, deadline=None)
@given(ids, st.sampled_from(["like", "rekoo", "comment"]))
def test_reaction_sk_round_trip(user_id: str, kind: str) -> None:
    value = keys.reaction_sk(user_id, kind)
    assert value == f"{user_id}#{kind}"
    assert keys.split_reaction_sk(value) == (user_id, kind)


def test_recommendation_sk_sorts_by_rank() -> None:
    ranked = [keys.recommendation_sk("koos", r) for r in (0, 1, 2, 9, 10, 99, 100, 999)]
    assert ranked == sorted(ranked)
    assert keys.recommendation_sk("follows", 7) == "follows#0007"


def test_queues() -> None:
    assert keys.QUEUES == {"realtime": keys.QUEUE_REALTIME, "backfill": keys.QUEUE_BACKFILL}
    assert keys.QUEUE_REALTIME != keys.QUEUE_BACKFILL


def test_auth_failures_key_hides_the_address() -> None:
    key = keys.auth_failures("2001:db8::/64")
    assert re.fullmatch(r"feed:authfail:\{[0-9a-f]{16}\}", key)
    assert "2001" not in key
    assert key == keys.auth_failures("2001:db8::/64")
    assert key != keys.auth_failures("10.0.0.1")
    assert key != keys.rate_limit(keys.token_digest("2001:db8::/64"))
