"""Spec: a subscription's filter is a JSON condition on the event, parsed first, never run as code.

Parsing refuses a bad filter whole, naming the path and operator at fault;
matching a parsed filter is a pure function of the event that never raises,
whatever the event holds.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.filters import MAX_DEPTH, FilterError, parse_filter

EVENT = {
    "type": "task.failed",
    "id": "evt_1",
    "data": {
        "severity": "error",
        "attempts": 3,
        "ratio": 0.5,
        "retried": True,
        "owner": None,
        "tags": ["billing", "nightly"],
        "user": {"plan": "pro", "seats": 10},
    },
}


def matches(spec: dict[str, Any], event: dict[str, Any] = EVENT) -> bool:
    return parse_filter(spec).matches(event)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"data.severity": {"eq": "error"}}, True),
        ({"data.severity": {"eq": "warning"}}, False),
        ({"data.severity": {"ne": "info"}}, True),
        ({"data.severity": {"in": ["error", "critical"]}}, True),
        ({"data.severity": {"in": ["info", "warning"]}}, False),
        ({"data.severity": {"nin": ["info", "warning"]}}, True),
        ({"data.attempts": {"gt": 2}}, True),
        ({"data.attempts": {"gt": 3}}, False),
        ({"data.attempts": {"gte": 3}}, True),
        ({"data.attempts": {"lt": 3}}, False),
        ({"data.attempts": {"lte": 3.0}}, True),
        ({"data.ratio": {"gt": 0.25, "lt": 1}}, True),
        ({"data.severity": {"gte": "e", "lt": "f"}}, True),
        ({"data.user.plan": {"eq": "pro"}}, True),
        ({"data.tags.0": {"eq": "billing"}}, True),
        ({"data.tags": {"eq": ["billing", "nightly"]}}, True),
        ({"data.user": {"eq": {"plan": "pro", "seats": 10}}}, True),
        ({"type": {"eq": "task.failed"}}, True),
        ({"id": {"in": ["evt_1", "evt_2"]}}, True),
        ({"data.owner": {"eq": None}}, True),
        ({"data.owner": {"exists": True}}, True),
        ({"data.nope": {"exists": False}}, True),
        ({"data.user.nope": {"exists": True}}, False),
    ],
)
def test_each_operator_compares_the_value_at_a_dotted_path(
    spec: dict[str, Any], expected: bool
) -> None:
    assert matches(spec) is expected


def test_and_or_not_combine_conditions_and_keys_of_one_object_must_all_hold() -> None:
    error = {"data.severity": {"eq": "error"}}
    pro = {"data.user.plan": {"eq": "pro"}}
    free = {"data.user.plan": {"eq": "free"}}

    assert matches({"and": [error, pro]})
    assert not matches({"and": [error, free]})
    assert matches({"or": [free, error]})
    assert not matches({"or": [free, {"data.severity": {"eq": "info"}}]})
    assert matches({"not": free})
    assert matches({**error, **pro})
    assert not matches({**error, **free})
    assert matches({"or": [free, {"and": [error, {"not": free}]}]})


def test_an_empty_filter_matches_every_event() -> None:
    assert matches({})
    assert matches({}, {"type": "x", "id": "y", "data": {}})


def test_json_equality_keeps_booleans_apart_from_numbers() -> None:
    assert not matches({"data.retried": {"eq": 1}})
    assert matches({"data.retried": {"eq": True}})
    assert not matches({"data.attempts": {"in": [True]}})
    assert matches({"data.attempts": {"eq": 3.0}})
    assert not matches({"data.tags": {"eq": [True, "nightly"]}})


@pytest.mark.parametrize(
    "spec",
    [
        {"data.severity": {"gt": 1}},
        {"data.attempts": {"gt": "1"}},
        {"data.retried": {"gte": 0}},
        {"data.owner": {"lt": 1}},
        {"data.tags": {"lte": "z"}},
        {"data.user": {"gt": 0}},
    ],
)
def test_comparing_values_of_different_kinds_is_false_not_an_error(spec: dict[str, Any]) -> None:
    assert matches(spec) is False


def test_a_missing_value_equals_nothing_so_ne_and_nin_hold_for_it() -> None:
    assert not matches({"data.nope": {"eq": None}})
    assert not matches({"data.nope": {"in": [None, "x"]}})
    assert not matches({"data.nope": {"gt": 0}})
    assert matches({"data.nope": {"ne": "x"}})
    assert matches({"data.nope": {"nin": ["x"]}})
    # Going down through a string, a number or past a list's end finds nothing.
    assert not matches({"data.severity.x": {"exists": True}})
    assert not matches({"data.tags.5": {"exists": True}})
    assert not matches({"data.tags.x": {"exists": True}})


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"data.severity": {"contains": "err"}}, ["data.severity", "'contains'"]),
        ({"data.severity": {"in": "error"}}, ["data.severity", "'in'", "list"]),
        ({"data.severity": {"nin": 1}}, ["data.severity", "'nin'", "list"]),
        ({"data.attempts": {"gt": [1]}}, ["data.attempts", "'gt'", "number or a string"]),
        ({"data.attempts": {"lte": None}}, ["data.attempts", "'lte'"]),
        ({"data.attempts": {"gte": True}}, ["data.attempts", "'gte'"]),
        ({"data.owner": {"exists": "yes"}}, ["data.owner", "'exists'", "true or false"]),
        ({"data.owner": "alice"}, ["data.owner", "object of operators"]),
        ({"data.owner": {}}, ["data.owner", "object of operators"]),
        ({"severity": {"eq": "error"}}, ["'severity'", "type, id or data"]),
        ({"data..x": {"eq": 1}}, ["'data..x'"]),
        ({"type.name": {"eq": 1}}, ["'type.name'"]),
        ({"and": []}, ["and", "non-empty list"]),
        ({"or": {"data.x": {"eq": 1}}}, ["or", "list"]),
        ({"not": [{"data.x": {"eq": 1}}]}, ["not", "condition"]),
        ({"or": [{"data.x": {"eq": 1}}, {"data.y": {"in": 2}}]}, ["or[1].data.y", "'in'"]),
        ({"data.x": {"and": [1]}}, ["data.x", "'and'", "combine whole conditions"]),
        ({"data.x": {"eq": float("nan")}}, ["data.x", "'eq'", "not a JSON value"]),
    ],
)
def test_a_bad_filter_is_refused_naming_its_path_and_operator(
    spec: dict[str, Any], named: list[str]
) -> None:
    with pytest.raises(FilterError) as refused:
        parse_filter(spec)

    for part in named:
        assert part in str(refused.value)


@pytest.mark.parametrize("spec", [None, [], "data.x == 1", 42])
def test_a_filter_is_an_object(spec: Any) -> None:
    with pytest.raises(FilterError, match="a condition is an object"):
        parse_filter(spec)


def test_a_filter_nested_too_deep_is_refused_at_parse_time() -> None:
    spec: dict[str, Any] = {"data.x": {"eq": 1}}
    for _ in range(MAX_DEPTH):
        spec = {"not": spec}

    with pytest.raises(FilterError, match=f"deeper than {MAX_DEPTH}"):
        parse_filter(spec)


def test_text_that_looks_like_code_is_only_ever_compared() -> None:
    code = "__import__('os').system('false')"

    assert matches({"data.x": {"eq": code}}, {"type": "t", "id": "i", "data": {"x": code}})
    assert not matches({"data.x": {"eq": code}})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)
OPERATORS = st.sampled_from(["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists"])


@given(
    data=JSON,
    operator=OPERATORS,
    operand=JSON,
    path=st.sampled_from(["data", "data.a", "data.0.a"]),
)
def test_matching_never_raises_whatever_the_event_holds(
    data: Any, operator: str, operand: Any, path: str
) -> None:
    try:
        parsed = parse_filter({path: {operator: operand}})
    except FilterError:
        return  # refused at parse time, as it should be, never at match time
    assert parsed.matches({"type": "t", "id": "i", "data": data}) in (True, False)
