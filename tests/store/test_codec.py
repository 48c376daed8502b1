"""Unit and property tests of the DynamoDB attribute codec (feed/store/_codec.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feed.store._codec import from_attr, from_wire, to_attr, to_wire, values


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same kind all the way down (1 != 1.0 != True here)."""
    if isinstance(a, set | frozenset):
        return isinstance(b, set | frozenset) and set(a) == set(b)
    if isinstance(a, list | tuple):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, float):
        return type(b) is float and (a == b) and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


# --- the wire format ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "attr"), [
    ("koo", {"S": "koo"}),
    ("", {"S": ""}),
    (0, {"N": "0"}),
    (-42, {"N": "-42"}),
    (10**20, {"N": "100000000000000000000"}),
    (1.5, {"N": "1.5"}),
    (-0.25, {"N": "-0.25"}),
    (True, {"BOOL": True}),
    (False, {"BOOL": False}),
    (None, {"NULL": True}),
    ([1, "a", None], {"L": [{"N": "1"}, {"S": "a"}, {"NULL": True}]}),
    (("a",), {"L": [{"S": "a"}]}),
    ({"a": 1, "b": {"c": False}}, {"M": {"a": {"N": "1"}, "b": {"M": {"c": {"BOOL": False}}}}}),
    ({"b", "a", "c"}, {"SS": ["a", "b", "c"]}),
    (frozenset({"x"}), {"SS": ["x"]}),
])
def test_to_attr(value: Any, attr: dict[str, Any]) -> None:
    assert to_attr(value) == attr


@pytest.mark.parametrize(("attr", "value"), [
    ({"S": "koo"}, "koo"),
    ({"N": "7"}, 7),
    ({"N": "-7"}, -7),
    ({"N": "7.5"}, 7.5),
    ({"N": "1E+3"}, 1000.0),
    ({"N": "-0.001"}, -0.001),
    ({"BOOL": True}, True),
    ({"NULL": True}, None),
    ({"L": [{"NULL": True}, {"N": "1"}]}, [None, 1]),
    ({"M": {"x": {"NULL": True}}}, {"x": None}),
    ({"SS": ["b", "a"]}, {"a", "b"}),
    ({"NS": ["1", "2.5", "-3"]}, {1, 2.5, -3}),
])
def test_from_attr(attr: dict[str, Any], value: Any) -> None:
    assert same(from_attr(attr), value)


def test_bool_is_not_stored_as_number() -> None:
    assert same(from_attr(to_attr(True)), True)
    assert same(from_attr(to_attr(1)), 1)


def test_integral_float_stays_float() -> None:
    assert same(from_attr(to_attr(2.0)), 2.0)
    assert same(from_attr(to_attr(1e16)), 1e16)


@pytest.mark.parametrize("value", [b"bytes", object(), 1 + 2j])
def test_unsupported_types_raise(value: object) -> None:
    with pytest.raises(TypeError):
        to_attr(value)


@pytest.mark.parametrize("attr", [{"B": b"x"}, {"BS": [b"x"]}])
def test_unsupported_attribute_types_raise(attr: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        from_attr(attr)


def test_to_wire_drops_top_level_none_only() -> None:
    wire = to_wire({"pk": "u1", "gone": None, "m": {"inner": None}, "l": [None]})
    assert wire == {"pk": {"S": "u1"}, "m": {"M": {"inner": {"NULL": True}}},
                    "l": {"L": [{"NULL": True}]}}
    assert from_wire(wire) == {"pk": "u1", "m": {"inner": None}, "l": [None]}


def test_values_builds_expression_attribute_values() -> None:
    assert values(t=1, s="a", n=None) == {
        ":t": {"N": "1"}, ":s": {"S": "a"}, ":n": {"NULL": True}}
    assert values() == {}


# --- round trips ------------------------------------------------------------------------


scalars = (
    st.text(max_size=20)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)
string_sets = st.frozensets(st.text(max_size=10), min_size=1, max_size=5) | st.sets(
    st.text(max_size=10), min_size=1, max_size=5)
leaves = scalars | string_sets
documents = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=4),
    max_leaves=15,
)
items = st.dictionaries(st.text(min_size=1, max_size=10), documents, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_attr_round_trip(value: Any) -> None:
    assert same(value, from_attr(to_attr(value)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items)
def test_wire_round_trip(item: dict[str, Any]) -> None:
    wire = to_wire(item)
    assert None not in (item[k] for k in wire)
    expected = {k: v for k, v in item.items() if v is not None}
    assert same(expected, from_wire(wire))


@settings(max_examples=200, deadline=None)
@given(st.sets(st.text(max_size=10), min_size=1))
def test_string_sets_go_on_the_wire_sorted(value: set[str]) -> None:
    attr = to_attr(value)
    assert attr == {"SS": sorted(value)}


# --- values DynamoDB cannot store ---------------------------------------------------------


def test_an_empty_set_is_refused_not_sent() -> None:
    # DynamoDB rejects an empty set ("An string set may not be empty"): the codec refuses
    # it here, naming the problem, rather than sending {"SS": []}.
    with pytest.raises(ValueError, match="empty set"):
        to_wire({"pk": "u1", "tags": set()})


def test_a_number_set_is_sent_as_a_number_set() -> None:
    assert to_attr({2, 1}) == {"NS": ["1", "2"]}
    assert from_attr(to_attr({2, 1})) == {1, 2}


def test_a_mixed_set_is_refused() -> None:
    with pytest.raises(TypeError, match="only strings or only numbers"):
        to_attr({"a", 1})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    # {"N": "nan"} / {"N": "inf"} are not DynamoDB numbers: the call fails later, far from
    # the code that produced the value.
    with pytest.raises((TypeError, ValueError)):
        to_attr(value)
