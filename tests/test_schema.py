"""relay/protocol/schema.py: the dataclass <-> map codec on its own, with toy dataclasses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol import schema
from relay.protocol.schema import Bounded, Finite, MaxItems, Range, Text, from_map, to_map


class Bad(ValueError):
    """The caller's error class: the codec raises whatever it is given."""


@dataclass(frozen=True, slots=True)
class Point:
    x: Annotated[int, Range(-5, 5)]
    label: Annotated[str, Text(max_len=4)] = "p"


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    points: Annotated[list[Point], MaxItems(3)]
    scale: Annotated[float, Finite()] = 1.0
    visible: bool = True
    origin: Point | None = None
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    anything: Any = None
    note: Annotated[str, Text(max_len=10, allow_empty=True)] = ""


@dataclass(frozen=True, slots=True)
class Tree:
    value: int
    children: list[Tree] = field(default_factory=list)


def decode(body: object, cls: type[Any] = Shape) -> Any:
    return from_map(cls, body, Bad, "shape")


SHAPE = Shape(
    "tri",
    [Point(1), Point(-5, "a\tb"), Point(5, "z")],
    scale=2.5,
    visible=False,
    origin=Point(0, "o"),
    tags=["x", ""],
    extra={"k": [1, {"z": None}]},
    anything=[1, "two"],
    note="",
)


def test_to_map_recurses_into_lists_and_nested_dataclasses() -> None:
    assert to_map(SHAPE) == {
        "name": "tri",
        "points": [{"x": 1, "label": "p"}, {"x": -5, "label": "a\tb"}, {"x": 5, "label": "z"}],
        "scale": 2.5,
        "visible": False,
        "origin": {"x": 0, "label": "o"},
        "tags": ["x", ""],
        "extra": {"k": [1, {"z": None}]},
        "anything": [1, "two"],
        "note": "",
    }


@dataclass(frozen=True, slots=True)
class Flagged:
    OMIT_DEFAULTS = ("flag",)
    n: int
    flag: bool = False


def test_omitted_defaults_are_left_out_until_set() -> None:
    assert to_map(Flagged(1)) == {"n": 1}
    assert to_map(Flagged(1, True)) == {"n": 1, "flag": True}
    assert from_map(Flagged, {"n": 1}, Bad, "f") == Flagged(1)


def test_round_trip() -> None:
    shape = Shape("tri", [Point(1), Point(-5, "a\tb")], origin=Point(0, "o"), anything={"a": 1})
    assert decode(to_map(shape)) == shape
    assert decode(to_map(Shape("s", []))) == Shape("s", [])


def test_recursive_dataclass() -> None:
    tree = Tree(1, [Tree(2), Tree(3, [Tree(4)])])
    assert from_map(Tree, to_map(tree), Bad, "tree") == tree
    with pytest.raises(Bad, match=r"^tree.children\[1\].children\[0\].value must be an integer"):
        from_map(
            Tree,
            {"value": 1, "children": [{"value": 2}, {"value": 3, "children": [{"value": "4"}]}]},
            Bad,
            "tree",
        )


def test_defaults_may_be_absent_and_unknown_keys_are_ignored() -> None:
    assert decode({"name": "n", "points": [], "whatever": 1}) == Shape("n", [])
    assert decode({"name": "n", "points": [], "origin": None}) == Shape("n", [])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"points": []}, "shape lacks the field 'name'"),
        ([], "shape must be a map, got list"),
        ({"name": b"n", "points": []}, "shape.name must be a string, got bytes"),
        ({"name": "n", "points": {}}, "shape.points must be a list, got dict"),
        ({"name": "n", "points": [{"x": 0}] * 4}, "shape.points has 4 entries; at most 3"),
        ({"name": "n", "points": [{"x": 0}, 7]}, r"shape.points\[1\] must be a map, got int"),
        ({"name": "n", "points": [{}]}, r"shape.points\[0\] lacks the field 'x'"),
        (
            {"name": "n", "points": [{"x": True}]},
            r"shape.points\[0\].x must be an integer, got bool",
        ),
        (
            {"name": "n", "points": [{"x": 1.0}]},
            r"shape.points\[0\].x must be an integer, got float",
        ),
        ({"name": "n", "points": [{"x": 6}]}, r"shape.points\[0\].x is 6, outside -5..5"),
        (
            {"name": "n", "points": [{"x": 0, "label": "abcde"}]},
            r"shape.points\[0\].label is 5 characters; at most 4",
        ),
        (
            {"name": "n", "points": [{"x": 0, "label": " "}]},
            r"shape.points\[0\].label must not be empty",
        ),
        (
            {"name": "n", "points": [{"x": 0, "label": "a\x00"}]},
            r"shape.points\[0\].label contains control characters",
        ),
        (
            {"name": "n", "points": [{"x": 0, "label": "a\x1f"}]},
            r"shape.points\[0\].label contains control characters",
        ),
        ({"name": "n", "points": [], "scale": "1"}, "shape.scale must be a number, got str"),
        ({"name": "n", "points": [], "scale": False}, "shape.scale must be a number, got bool"),
        ({"name": "n", "points": [], "scale": math.nan}, "shape.scale must be finite"),
        ({"name": "n", "points": [], "scale": -math.inf}, "shape.scale must be finite"),
        ({"name": "n", "points": [], "visible": 1}, "shape.visible must be a bool, got int"),
        ({"name": "n", "points": [], "origin": 3}, "shape.origin must be a map, got int"),
        ({"name": "n", "points": [], "tags": [1]}, r"shape.tags\[0\] must be a string, got int"),
        ({"name": "n", "points": [], "extra": []}, "shape.extra must be a map, got list"),
        ({"name": "n", "points": [], "note": "\x07"}, "shape.note contains control characters"),
    ],
)
def test_bad_values_raise_the_callers_error_naming_the_path(body: object, message: str) -> None:
    with pytest.raises(Bad, match=f"^{message}"):
        decode(body)


def test_constraints_bind_decoding_only() -> None:
    assert to_map(Point(99, "")) == {"x": 99, "label": ""}  # the sender's own values are trusted


def test_int_is_accepted_as_float_and_empty_allowed_where_said() -> None:
    got = decode({"name": "", "points": [], "scale": 3, "note": ""})
    assert got.scale == 3.0 and isinstance(got.scale, float) and got.name == ""


@dataclass(frozen=True, slots=True)
class Maybe:
    outer: Annotated[int | None, Range(0, 1)] = None
    inner: Annotated[int, Range(0, 1)] | None = None


@pytest.mark.parametrize("key", ["outer", "inner"])
def test_constraints_of_an_optional_field_bind_its_value(key: str) -> None:
    assert from_map(Maybe, {key: None}, Bad, "m") == Maybe()
    assert from_map(Maybe, {key: 1}, Bad, "m") == Maybe(**{key: 1})
    with pytest.raises(Bad, match=f"^m.{key} is 2, outside 0..1$"):
        from_map(Maybe, {key: 2}, Bad, "m")


@dataclass(frozen=True, slots=True)
class Share:
    percent: Annotated[float, Bounded(0.0, 100.0)]
    maybe: Annotated[float | None, Bounded(-1.0, 1.0)] = None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"percent": 100.01}, "s.percent is 100.01, outside 0..100"),
        ({"percent": -0.5}, "s.percent is -0.5, outside 0..100"),
        ({"percent": math.nan}, "s.percent must be finite"),
        ({"percent": math.inf}, "s.percent must be finite"),
        ({"percent": "1"}, "s.percent must be a number, got str"),
        ({"percent": False}, "s.percent must be a number, got bool"),
        ({"percent": 1, "maybe": 2}, "s.maybe is 2, outside -1..1"),
    ],
)
def test_bounded_floats_stay_within_their_bounds(body: object, message: str) -> None:
    with pytest.raises(Bad, match=f"^{message}$"):
        from_map(Share, body, Bad, "s")


def test_bounded_floats_take_their_ends_and_ints() -> None:
    assert from_map(Share, {"percent": 0}, Bad, "s") == Share(0.0)
    assert from_map(Share, {"percent": 100.0, "maybe": None}, Bad, "s") == Share(100.0)
    assert from_map(Share, {"percent": 1, "maybe": -1}, Bad, "s") == Share(1.0, -1.0)


@given(st.floats() | st.integers() | st.booleans() | st.none() | st.text(max_size=3))
def test_fuzz_a_bounded_float_is_in_bounds_or_refused(value: object) -> None:
    try:
        got = from_map(Share, {"percent": value}, Bad, "s")
    except Bad:
        return
    assert 0.0 <= got.percent <= 100.0


def test_plans_are_built_once_per_class() -> None:
    decode(to_map(SHAPE))
    plan = schema._PLANS[Shape]
    decode(to_map(SHAPE))
    assert schema._PLANS[Shape] is plan


def test_unsupported_types_are_a_bug_not_input() -> None:
    @dataclass
    class Union2:
        v: int | str

    @dataclass
    class Misplaced:
        v: Annotated[str, Range(0, 1)]

    @dataclass
    class Doubled:
        v: Annotated[int, Range(0, 1), Range(0, 2)]

    @dataclass
    class BoundedInt:
        v: Annotated[int, Bounded(0, 1)]

    @dataclass
    class BoundedAndFinite:
        v: Annotated[float, Bounded(0, 1), Finite()]

    for cls in (Union2, Misplaced, Doubled, BoundedInt, BoundedAndFinite):
        with pytest.raises(TypeError):
            from_map(cls, {"v": 0}, Bad, "x")
    with pytest.raises(TypeError, match="not a dataclass"):
        to_map(object())


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    ["name", "points", "scale", "visible", "origin", "tags", "extra", "note", "x"]
)


@given(st.dictionaries(keys, json_like) | json_like)
def test_fuzz_any_value_decodes_or_raises_the_callers_error(body: object) -> None:
    try:
        shape = decode(body)
    except Bad:
        return
    assert decode(to_map(shape)) == shape


@dataclass(frozen=True, slots=True)
class Keyed:
    key: Annotated[bytes, schema.Size(16, 16)]
    maybe: Annotated[bytes, schema.Size(32, 32)] | None = None


def test_bytes_fields_check_their_type_and_size() -> None:
    k = Keyed(b"k" * 16, b"m" * 32)
    assert from_map(Keyed, to_map(k), Bad, "keyed") == k
    assert from_map(Keyed, {"key": b"k" * 16}, Bad, "keyed") == Keyed(b"k" * 16)
    for body, message in (
        ({"key": "k" * 16}, "keyed.key must be bytes, got str"),
        ({"key": b"k" * 15}, "keyed.key is 15 bytes, outside 16..16"),
        ({"key": b"k" * 16, "maybe": b"x"}, "keyed.maybe is 1 bytes, outside 32..32"),
    ):
        with pytest.raises(Bad, match=message):
            from_map(Keyed, body, Bad, "keyed")


@given(st.dictionaries(st.sampled_from(["key", "maybe"]), json_like))
def test_fuzz_bytes_fields_decode_or_raise_the_callers_error(body: dict[str, object]) -> None:
    try:
        k = from_map(Keyed, body, Bad, "keyed")
    except Bad:
        return
    assert len(k.key) == 16 and from_map(Keyed, to_map(k), Bad, "keyed") == k
