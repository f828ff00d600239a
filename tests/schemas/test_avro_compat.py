"""The compatibility checker: a table of schema changes with verdicts worked out from the Avro spec.

Each case is (old schema, new schema, a datum valid under the old schema that exercises the change). The
expected verdicts are written by hand; a second test replays each backward case through fastavro's real
resolver, so the checker and the decoder are shown to agree.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from vatic.schemas.compat import CompatibilityLevel, check, resolution_problems
from vatic.schemas.errors import ConfigError, InvalidSchemaError


def rec(*fields: dict[str, Any], name: str = "Payment", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "dev.vatic.test", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Channel", "symbols": list(symbols), **extra}


ID = f("id", "string")

# name: (old, new, datum under old, backward ok, forward ok)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], bool, bool]] = {
    "add field with default": (
        rec(ID),
        rec(ID, f("score", "double", default=0.0)),
        {"id": "a"},
        True,
        True,
    ),
    "add field without default": (rec(ID), rec(ID, f("score", "double")), {"id": "a"}, False, True),
    "remove field with default": (
        rec(ID, f("score", "double", default=0.0)),
        rec(ID),
        {"id": "a", "score": 1.0},
        True,
        True,
    ),
    "remove required field": (rec(ID, f("score", "double")), rec(ID), {"id": "a", "score": 1.0}, True, False),
    "promote int to long": (rec(f("n", "int")), rec(f("n", "long")), {"n": 7}, True, False),
    "promote long to double": (rec(f("n", "long")), rec(f("n", "double")), {"n": 7}, True, False),
    "promote float to double": (rec(f("n", "float")), rec(f("n", "double")), {"n": 1.5}, True, False),
    "demote long to int": (rec(f("n", "long")), rec(f("n", "int")), {"n": 7}, False, True),
    "string to bytes": (rec(f("s", "string")), rec(f("s", "bytes")), {"s": "x"}, True, True),
    "string to int": (rec(f("s", "string")), rec(f("s", "int")), {"s": "x"}, False, False),
    "enum symbol removed": (
        rec(f("c", enum("POS", "ATM", "ONLINE"))),
        rec(f("c", enum("POS", "ATM"))),
        {"c": "ONLINE"},
        False,
        True,
    ),
    "enum symbol removed, reader has default": (
        rec(f("c", enum("POS", "ATM", "ONLINE"))),
        rec(f("c", enum("POS", "ATM", default="POS"))),
        {"c": "ONLINE"},
        True,
        True,
    ),
    "enum symbol added": (
        rec(f("c", enum("POS", "ATM"))),
        rec(f("c", enum("POS", "ATM", "ONLINE"))),
        {"c": "ATM"},
        True,
        False,
    ),
    "made nullable (union widening)": (
        rec(f("s", "string")),
        rec(f("s", ["null", "string"], default=None)),
        {"s": "x"},
        True,
        False,
    ),
    "made required (union narrowing)": (
        rec(f("s", ["null", "string"], default=None)),
        rec(f("s", "string")),
        {"s": None},
        False,
        True,
    ),
    "union branch added": (
        rec(f("v", ["null", "long"])),
        rec(f("v", ["null", "long", "string"])),
        {"v": 3},
        True,
        False,
    ),
    "union branch removed": (
        rec(f("v", ["null", "long", "string"])),
        rec(f("v", ["null", "long"])),
        {"v": "x"},
        False,
        True,
    ),
    "plain type into a union with a promotion": (
        rec(f("v", "int")),
        rec(f("v", ["null", "long"])),
        {"v": 3},
        True,
        False,
    ),
    "record renamed": (rec(ID), rec(ID, name="Charge"), {"id": "a"}, False, False),
    "record renamed with alias": (
        rec(ID),
        rec(ID, name="Charge", aliases=["dev.vatic.test.Payment"]),
        {"id": "a"},
        True,
        False,
    ),
    "namespace changed": (
        rec(ID),
        {**rec(ID), "namespace": "dev.vatic.other"},
        {"id": "a"},
        True,
        True,
    ),
    "field renamed with alias": (
        rec(f("amount", "double")),
        rec(f("amount_eur", "double", aliases=["amount"])),
        {"amount": 1.0},
        True,
        False,
    ),
    "fixed size changed": (
        rec(f("h", {"type": "fixed", "name": "Hash", "size": 16})),
        rec(f("h", {"type": "fixed", "name": "Hash", "size": 32})),
        {"h": b"0123456789abcdef"},
        False,
        False,
    ),
    "array items promoted": (
        rec(f("xs", {"type": "array", "items": "int"})),
        rec(f("xs", {"type": "array", "items": "long"})),
        {"xs": [1, 2]},
        True,
        False,
    ),
    "map values changed": (
        rec(f("m", {"type": "map", "values": "string"})),
        rec(f("m", {"type": "map", "values": "int"})),
        {"m": {"k": "v"}},
        False,
        False,
    ),
    "nested record gains a required field": (
        rec(f("items", {"type": "array", "items": rec(f("sku", "string"), name="Item")})),
        rec(f("items", {"type": "array", "items": rec(f("sku", "string"), f("qty", "int"), name="Item")})),
        {"items": [{"sku": "x"}]},
        False,
        True,
    ),
    "logical type changed (ignored, like Avro and Confluent)": (
        rec(f("t", {"type": "long", "logicalType": "timestamp-millis"})),
        rec(f("t", {"type": "long", "logicalType": "timestamp-micros"})),
        {"t": 1},
        True,
        True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    "level",
    [CompatibilityLevel.NONE, CompatibilityLevel.BACKWARD, CompatibilityLevel.FORWARD, CompatibilityLevel.FULL],
)
def test_single_step_change(case: str, level: CompatibilityLevel) -> None:
    old, new, _, backward_ok, forward_ok = CASES[case]
    expected = {
        CompatibilityLevel.NONE: True,
        CompatibilityLevel.BACKWARD: backward_ok,
        CompatibilityLevel.FORWARD: forward_ok,
        CompatibilityLevel.FULL: backward_ok and forward_ok,
    }[level]
    problems = check(new, [old], level)
    assert (not problems) is expected, problems


@pytest.mark.parametrize("case", list(CASES))
def test_checker_agrees_with_fastavro_resolution(case: str) -> None:
    old, new, datum, backward_ok, _ = CASES[case]
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(old), datum)
    out.seek(0)
    try:
        fastavro.schemaless_reader(out, fastavro.parse_schema(old), fastavro.parse_schema(new))
        decoded = True
    except Exception:
        decoded = False
    assert decoded is backward_ok
    assert (not resolution_problems(new, old)) is backward_ok


# -- transitive levels: a three-version history ----------------------------------------------------------

V1 = rec(ID)
V2 = rec(ID, f("score", "double", default=0.0))
V3 = rec(ID, f("score", "double"))  # default dropped: reads v2 data, not v1 data


@pytest.mark.parametrize(
    ("level", "compatible"),
    [
        (CompatibilityLevel.BACKWARD, True),
        (CompatibilityLevel.BACKWARD_TRANSITIVE, False),
        (CompatibilityLevel.FULL, True),
        (CompatibilityLevel.FULL_TRANSITIVE, False),
    ],
)
def test_backward_transitive_sees_the_oldest_version(level: CompatibilityLevel, compatible: bool) -> None:
    problems = check(V3, [V1, V2], level)
    assert (not problems) is compatible
    if not compatible:
        assert all("previous schema 1/2" in problem for problem in problems)
        assert any("Payment.score" in problem for problem in problems)


F1 = rec(ID, f("score", "double"))
F2 = rec(ID, f("score", "double", default=0.0))
F3 = rec(ID)  # score removed: v2 readers use the default, v1 readers have none


@pytest.mark.parametrize(
    ("level", "compatible"),
    [(CompatibilityLevel.FORWARD, True), (CompatibilityLevel.FORWARD_TRANSITIVE, False)],
)
def test_forward_transitive_sees_the_oldest_version(level: CompatibilityLevel, compatible: bool) -> None:
    assert (not check(F3, [F1, F2], level)) is compatible


def test_problem_lines_say_direction_version_and_path() -> None:
    (problem,) = check(rec(ID, f("score", "double")), [rec(ID)], "BACKWARD")
    assert problem.startswith("new schema cannot read data written with previous schema 1/1")
    assert "Payment.score" in problem
    assert "no default" in problem
    (problem,) = check(rec(f("n", "long")), [rec(f("n", "int"))], "FORWARD")
    assert problem.startswith("previous schema 1/1 cannot read data written with the new schema")
    assert "Payment.n" in problem


def test_nested_paths_are_reported() -> None:
    old = rec(f("items", {"type": "array", "items": rec(f("qty", "int"), name="Item")}))
    new = rec(f("items", {"type": "array", "items": rec(f("qty", "string"), name="Item")}))
    (problem,) = resolution_problems(new, old)
    assert "Payment.items[].qty" in problem
    assert "string" in problem
    assert "int" in problem


def test_empty_history_is_compatible_with_anything() -> None:
    assert check(rec(f("x", "int")), [], CompatibilityLevel.FULL_TRANSITIVE) == []


def test_recursive_schemas_resolve() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [f("value", "int"), f("next", ["null", "Node"], default=None)],
    }
    grown = {
        "type": "record",
        "name": "Node",
        "fields": [f("value", "long"), f("next", ["null", "Node"], default=None), f("w", "int", default=1)],
    }
    assert check(grown, [node], "BACKWARD") == []
    assert check(node, [grown], "BACKWARD") != []  # long -> int


def test_levels_parse_case_insensitively_and_reject_unknown_names() -> None:
    assert CompatibilityLevel.parse("backward_transitive") is CompatibilityLevel.BACKWARD_TRANSITIVE
    with pytest.raises(ConfigError, match="FULL_TRANSITIVE"):
        CompatibilityLevel.parse("SIDEWAYS")


def test_level_properties() -> None:
    assert CompatibilityLevel.FULL_TRANSITIVE.backward
    assert CompatibilityLevel.FULL_TRANSITIVE.forward
    assert CompatibilityLevel.FULL_TRANSITIVE.transitive
    assert not CompatibilityLevel.FORWARD.backward
    assert not CompatibilityLevel.BACKWARD.transitive
    assert not CompatibilityLevel.NONE.backward


def test_an_invalid_new_schema_is_refused_even_under_none() -> None:
    with pytest.raises(InvalidSchemaError):
        check(rec(f("x", "bigint")), [rec(ID)], CompatibilityLevel.NONE)
