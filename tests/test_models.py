"""The records, and the one rule of who may see whom."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from feed.models import RelationSets

USERS = st.sampled_from(["r", "a", "b", "c"])
SETS = st.frozensets(USERS, max_size=4)


@given(SETS, SETS, SETS, SETS, USERS)
def test_a_reader_sees_themselves_and_followed_authors_not_hidden(
    following: frozenset[str], blocking: frozenset[str], muting: frozenset[str],
    blocked_by: frozenset[str], author: str,
) -> None:
    relations = RelationSets(following, blocking, muting, blocked_by)
    expected = author == "r" or (
        author in following and author not in blocking and author not in muting
        and author not in blocked_by
    )
    assert relations.sees("r", author) == expected
    assert relations.hidden == blocking | muting | blocked_by


@given(st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_relations_with_one_author_decide_as_the_full_sets_do(
    follows: bool, blocks: bool, mutes: bool, blocked_by: bool,
) -> None:
    one = RelationSets.with_author("a", follows=follows, blocks=blocks, mutes=mutes,
                                   blocked_by=blocked_by)

    def with_others(on: bool) -> frozenset[str]:
        return frozenset({"a", "b"} if on else {"b"})

    full = RelationSets(with_others(follows), with_others(blocks), with_others(mutes),
                        with_others(blocked_by))
    assert one.sees("r", "a") == full.sees("r", "a")
    assert one.sees("r", "a") == (follows and not (blocks or mutes or blocked_by))


def test_blocking_either_way_or_muting_hides_a_followed_author() -> None:
    follows = frozenset({"a"})
    none: frozenset[str] = frozenset()
    assert RelationSets(follows, none, none, none).sees("r", "a")
    assert not RelationSets(follows, follows, none, none).sees("r", "a")
    assert not RelationSets(follows, none, follows, none).sees("r", "a")
    assert not RelationSets(follows, none, none, follows).sees("r", "a")
    assert not RelationSets(none, none, none, none).sees("r", "a")
