"""Filters: JSON conditions on an event, parsed once and matched without evaluating code.

A filter is a JSON object. Each key is a path into the event, mapped to an
object of operators that must all hold, or one of ``and``/``or`` (a list of
filters) and ``not`` (a filter); all keys of one object must hold::

    {"data.severity": {"in": ["error", "critical"]}, "not": {"data.test": {"eq": true}}}

A path starts at ``type``, ``id`` or ``data`` and goes down ``data`` by keys
separated with dots; a number also indexes a list (``data.items.0.sku``).
Operators: ``eq``, ``ne``, ``in``, ``nin`` (any JSON values); ``gt``, ``gte``,
``lt``, ``lte`` (a number or a string); ``exists`` (true or false).

Values compare as JSON does: ``true`` is not ``1``, and ``1`` is ``1.0``.
Values of different kinds (a string and a number) are never ordered: such a
comparison is false, never an error. A missing value equals nothing, is in
nothing and is ordered against nothing, so ``ne`` and ``nin`` hold for it.

:func:`parse_filter` checks a filter whole, before anything is matched
against it, and raises :class:`FilterError` naming the path and operator at
fault; matching a parsed filter never raises.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# What a path may start at: the parts of an event a filter sees.
ROOTS = ("type", "id", "data")
# Deeper nesting is a generated or hostile filter, not one a person wrote;
# the bound keeps parsing and matching far from Python's recursion limit.
MAX_DEPTH = 32
COMBINATORS = ("and", "or", "not")
ORDERINGS = ("gt", "gte", "lt", "lte")
OPERATORS = ("eq", "ne", "in", "nin", *ORDERINGS, "exists")

# What parsing makes of each part of a filter: a test of one event.
Test = Callable[[Mapping[str, Any]], bool]
# What :func:`lookup` finds at a path the event does not have (unlike a null).
MISSING = object()


class FilterError(ValueError):
    """A filter that cannot be parsed; the message names the path and operator at fault."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter: ``spec`` as written, and the test it compiles to."""

    spec: dict[str, Any]
    _test: Test = field(repr=False, compare=False)

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` (``{"type", "id", "data"}``) satisfies the filter."""
        return self._test(event)


def parse_filter(spec: Any) -> Filter:
    """Check ``spec`` and compile it; :class:`FilterError` naming the path and operator if bad.

    An empty object holds for every event.
    """
    return Filter(spec, _condition(spec, "", 1))


def parse_path(text: Any) -> tuple[str, ...]:
    """The keys of a path such as ``data.user.plan``; :class:`ValueError` unless it is one."""
    if not isinstance(text, str):
        raise ValueError(f"a path is a string like 'data.plan', not {_shown(text)}")
    keys = tuple(text.split("."))
    if keys[0] not in ROOTS or not all(keys):
        raise ValueError(
            f"{text!r} is no path into the event: it starts at type, id or data "
            "and goes down data by dotted keys, e.g. data.plan"
        )
    if keys[0] != "data" and len(keys) > 1:
        raise ValueError(f"{text!r}: {keys[0]} is a string, with nothing below it")
    return keys


def _condition(spec: Any, where: str, depth: int) -> Test:
    if depth > MAX_DEPTH:
        raise FilterError(where, f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(spec, dict):
        raise FilterError(
            where, f'a condition is an object like {{"data.x": {{"eq": 1}}}}, not {_shown(spec)}'
        )
    tests = [_entry(key, value, where, depth) for key, value in spec.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda event: all(test(event) for test in tests)


def _entry(key: str, value: Any, where: str, depth: int) -> Test:
    """The test of one key of a condition: a combinator, or a path with its operators."""
    here = f"{where}.{key}" if where else key
    if key == "not":
        inner = _condition(value, here, depth + 1)
        return lambda event: not inner(event)
    if key in ("and", "or"):
        if not isinstance(value, list) or not value:
            raise FilterError(here, f"takes a non-empty list of conditions, not {_shown(value)}")
        tests = [_condition(item, f"{here}[{i}]", depth + 1) for i, item in enumerate(value)]
        combine = all if key == "and" else any
        return lambda event: combine(test(event) for test in tests)
    try:
        keys = parse_path(key)
    except ValueError as exc:
        raise FilterError(where, str(exc)) from None
    if not isinstance(value, dict) or not value:
        raise FilterError(
            here, f'expected an object of operators like {{"eq": ...}}, not {_shown(value)}'
        )
    tests = [_operator(name, operand, here) for name, operand in value.items()]
    return lambda event: _holds(tests, lookup(event, keys))


def _holds(tests: list[Callable[[Any], bool]], value: Any) -> bool:
    return all(test(value) for test in tests)


def _operator(name: str, operand: Any, where: str) -> Callable[[Any], bool]:
    """The test ``name`` makes of a value found at a path, ``operand`` checked first."""
    if name not in OPERATORS:
        known = ", ".join(OPERATORS)
        hint = "; and, or, not combine whole conditions" if name in COMBINATORS else ""
        raise FilterError(where, f"unknown operator {name!r} (known: {known}){hint}")
    _check_json(operand, f"{where}: {name!r}")
    if name in ("in", "nin") and not isinstance(operand, list):
        raise FilterError(where, f"{name!r} takes a list of values, not {_shown(operand)}")
    if name in ORDERINGS and _kind(operand) not in ("number", "string"):
        raise FilterError(where, f"{name!r} takes a number or a string, not {_shown(operand)}")
    if name == "exists" and not isinstance(operand, bool):
        raise FilterError(where, f"'exists' takes true or false, not {_shown(operand)}")
    return _TESTS[name](operand)


def _check_json(value: Any, where: str) -> None:
    """Refuse what JSON cannot hold (a TOML date, NaN), so equality stays JSON's."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise FilterError(where, f"{_shown(value)} is not a JSON value") from None


def lookup(event: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value at ``keys`` (from :func:`parse_path`) in ``event``, or :data:`MISSING`."""
    value: Any = event
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return MISSING
    return value


def _kind(value: Any) -> str:
    """A value's JSON kind; bool is checked first, as Python counts it an int."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "list" if isinstance(value, list) else "object"


def _equal(left: Any, right: Any) -> bool:
    """JSON equality: kinds must agree at every level (``true`` is not ``1``)."""
    if left is MISSING or (kind := _kind(left)) != _kind(right):
        return False
    if kind == "list":
        return len(left) == len(right) and all(map(_equal, left, right))
    if kind == "object":
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    return bool(left == right)


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any], Callable[[Any], bool]]:
    """An ordering operator: false unless both sides are numbers, or both strings."""

    def make(operand: Any) -> Callable[[Any], bool]:
        kind = _kind(operand)
        return lambda value: (
            value is not MISSING and _kind(value) == kind and compare(value, operand)
        )

    return make


_TESTS: dict[str, Callable[[Any], Callable[[Any], bool]]] = {
    "eq": lambda operand: lambda value: _equal(value, operand),
    "ne": lambda operand: lambda value: not _equal(value, operand),
    "in": lambda operand: lambda value: any(_equal(value, item) for item in operand),
    "nin": lambda operand: lambda value: not any(_equal(value, item) for item in operand),
    "gt": _ordered(lambda value, operand: value > operand),
    "gte": _ordered(lambda value, operand: value >= operand),
    "lt": _ordered(lambda value, operand: value < operand),
    "lte": _ordered(lambda value, operand: value <= operand),
    "exists": lambda operand: lambda value: (value is not MISSING) is operand,
}


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON, shortened: error messages quote what they refuse."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        text = reprlib.repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
