"""Unit and property tests of the key builders in feed/keys.py: pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from feed import keys
from feed.fields import is_valid_id

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
    "profile": keys.profile,
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


# Event ids are any text without control characters: colons included.
event_ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
digests = st.from_regex(re.compile(r"[0-9a-f]{16,64}"), fullmatch=True)

# Every job id builder, by name: (builder, a strategy of its arguments).
JOB_IDS: dict[str, tuple[Callable[..., str], st.SearchStrategy[tuple[object, ...]]]] = {
    "event": (keys.event_job, st.tuples(event_ids, digests)),
    "fanout": (keys.fanout_job, st.tuples(ids, st.integers(0, 2**40))),
    "fanout_chunk": (keys.fanout_chunk_job, st.tuples(ids, ids)),
    "purge_koo": (keys.purge_koo_job, st.tuples(ids)),
    "merge": (keys.merge_job, st.tuples(ids, ids, event_ids)),
    "unmerge": (keys.unmerge_job, st.tuples(ids, ids, event_ids)),
    "demote": (keys.demote_job, st.tuples(ids, event_ids)),
    "backfill_chunk": (keys.backfill_chunk_job, st.tuples(ids, ids)),
}


def test_job_ids_of_the_follow_up_jobs() -> None:
    # Pinned: job ids sit in Redis across a deploy, and a changed format would run a job
    # twice (or not at all) while the old and new workers overlap.
    assert keys.purge_koo_job("k1") == "purge-koo:k1"
    assert keys.merge_job("r1", "a1", "e1") == "merge:r1:a1:e1"
    assert keys.unmerge_job("r1", "a1", "e1") == "unmerge:r1:a1:e1"
    assert keys.demote_job("a1", "e1") == "demote:a1:e1"
    assert keys.backfill_chunk_job("0123abcd", "c7") == "backfill:0123abcd:c7"


@pytest.mark.parametrize("name", sorted(JOB_IDS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_job_id_is_stable_contains_its_arguments_and_differs_for_other_ones(
    name: str, data: st.DataObject,
) -> None:
    build, arguments = JOB_IDS[name]
    first = data.draw(arguments)
    second = data.draw(arguments)
    value = build(*first)
    assert value == build(*first)
    for argument in first:
        part = str(argument)
        assert (part[:16] if name == "event" and argument == first[1] else part) in value
    if name == "event":
        differs = first[0] != second[0] or str(first[1])[:16] != str(second[1])[:16]
    else:
        differs = first != second
    assert (build(*second) != value) == differs


@settings(max_examples=100, deadline=None)
@given(ids, ids, event_ids)
def test_job_ids_of_different_jobs_never_collide(a: str, b: str, event_id: str) -> None:
    built = [keys.event_job(event_id, "0" * 16), keys.fanout_job(a),
             keys.fanout_chunk_job(a, b), keys.purge_koo_job(a), keys.merge_job(a, b, event_id),
             keys.unmerge_job(a, b, event_id), keys.demote_job(a, event_id),
             keys.backfill_chunk_job(a, b)]
    assert len(set(built)) == len(built)


def test_merge_and_unmerge_after_different_events_are_different_jobs() -> None:
    """A follow after an unfollow must merge again: its job id is not the first merge's."""
    assert keys.merge_job("r", "a", "e1") != keys.merge_job("r", "a", "e2")
    assert keys.merge_job("r", "a", "e1") != keys.unmerge_job("r", "a", "e1")
    assert keys.merge_job("r", "a", "e1") != keys.merge_job("a", "r", "e1")


# --- backfill runs and dead letters ---------------------------------------------------------


def test_backfill_run_keys() -> None:
    assert keys.backfill_run("0123abcd") == "feed:backfill:0123abcd"
    assert keys.backfill_enqueued("0123abcd") == "feed:backfill:0123abcd:enqueued"
    assert keys.backfill_done("0123abcd") == "feed:backfill:0123abcd:done"


@settings(max_examples=100, deadline=None)
@given(ids, ids)
def test_backfill_run_keys_are_distinct_stable_and_named_after_their_run(a: str, b: str
                                                                         ) -> None:
    for run in (a, b):
        built = [keys.backfill_run(run), keys.backfill_enqueued(run), keys.backfill_done(run)]
        assert len(set(built)) == 3
        assert all(run in key and key.startswith("feed:backfill:") for key in built)
        assert built == [keys.backfill_run(run), keys.backfill_enqueued(run),
                         keys.backfill_done(run)]
    of_a = {keys.backfill_run(a), keys.backfill_enqueued(a), keys.backfill_done(a)}
    of_b = {keys.backfill_run(b), keys.backfill_enqueued(b), keys.backfill_done(b)}
    assert (of_a & of_b == set()) == (a != b)


def test_dead_letter_ids() -> None:
    # Pinned: a replay must land on the letter its first failure wrote.
    assert keys.dead_letter_of_event("e1") == "event:e1"
    assert keys.dead_letter_of_job("ev:e1:0123456789abcdef") == "job:ev:e1:0123456789abcdef"


@settings(max_examples=150, deadline=None)
@given(event_ids, event_ids)
def test_dead_letter_ids_are_stable_contain_their_id_and_never_collide(a: str, b: str
                                                                       ) -> None:
    assert keys.dead_letter_of_event(a) == keys.dead_letter_of_event(a)
    assert a in keys.dead_letter_of_event(a)
    assert a in keys.dead_letter_of_job(a)
    assert (keys.dead_letter_of_event(a) == keys.dead_letter_of_event(b)) == (a == b)
    assert (keys.dead_letter_of_job(a) == keys.dead_letter_of_job(b)) == (a == b)
    # An event's letter and a job's letter are never one another, whatever the ids.
    assert keys.dead_letter_of_event(a) != keys.dead_letter_of_job(b)


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


def test_sentinels_share_the_prefix_no_id_can_start_with() -> None:
    for sentinel in (keys.TIMELINE_READY, keys.TIMELINE_BUILDING, keys.COMPLETE, keys.LOADED,
                     keys.TRENDING_AT, keys.trending_computed_at(1_700_000_000_000)):
        assert keys.is_sentinel(sentinel)
    assert not keys.is_sentinel("k1")
    assert not is_valid_id(keys.SENTINEL_PREFIX + "x")


def test_trending_computed_at_keeps_the_time_after_its_prefix() -> None:
    member = keys.trending_computed_at(1_700_000_000_123)
    assert member.startswith(keys.TRENDING_AT)
    assert int(member[len(keys.TRENDING_AT):]) == 1_700_000_000_123


def test_lang_day_partitions_by_language_and_utc_day() -> None:
    assert keys.lang_day("hi", 1_700_000_000_000) == "hi#20231114"
    assert keys.lang_day("hi", 1_699_919_999_999) == "hi#20231113"  # 23:59:59.999 UTC
    assert keys.lang_day("en", 1_700_000_000_000) != keys.lang_day("hi", 1_700_000_000_000)
