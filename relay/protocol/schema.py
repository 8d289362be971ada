"""The one codec between a dataclass and a plain msgpack map, driven by its type hints.

The control messages (:mod:`relay.protocol.messages`) and the client's bus events
(:mod:`pipeline.ipc.events`) both go through it, so a dataclass is its own schema:

* field types: ``int``, ``float``, ``bool``, ``str``, ``bytes``, ``list[X]``, ``dict`` (checked
  to be a map, passed through), a nested dataclass, ``X | None`` and ``Any``;
* constraints, written once as ``typing.Annotated`` metadata on the field type:
  ``Annotated[int, Range(1, U32_MAX)]``, ``Annotated[str, Text(max_len=32)]``,
  ``Annotated[float, Finite()]``, ``Annotated[float, Bounded(0.0, 100.0)]``,
  ``Annotated[bytes, Size(16, 32)]``,
  ``Annotated[list[X], MaxItems(4096)]``;
* a field with a default may be absent from a map (it keeps the default); a field
  without one must be there; keys that name no field are ignored;
* a class may name fields in ``OMIT_DEFAULTS``: :func:`to_map` leaves such a field out
  while it holds its default (a field added later then costs old maps nothing).

Decoding checks every value against its hint (a bool is never accepted as an int,
though an int is as a float) and raises the error class the caller chooses, with
a message naming the field's path, e.g. ``welcome.users[3].name is 40 characters;
at most 32``. The compiled checks of a class are cached on first use.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

T = TypeVar("T")


# --- constraints -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    """An ``int`` field's inclusive bounds."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Text:
    """A ``str`` field of at most ``max_len`` characters and no control characters
    but tab and newline; not blank unless ``allow_empty``."""

    max_len: int
    allow_empty: bool = False


@dataclass(frozen=True, slots=True)
class Finite:
    """A ``float`` field that must not be NaN or infinite."""


@dataclass(frozen=True, slots=True)
class Bounded:
    """A ``float`` field within ``lo..hi`` inclusive (so never NaN or infinite)."""

    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class Size:
    """A ``bytes`` field of ``lo`` to ``hi`` bytes."""

    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class MaxItems:
    """A ``list`` field of at most ``n`` entries."""

    n: int


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")  # C0 controls but tab (09) and newline (0a)


# --- encoding --------------------------------------------------------------------------


def to_map(obj: object) -> dict[str, Any]:
    """The plain map of a dataclass instance: one key per field, nested dataclasses
    (also inside lists and ``X | None``) turned into maps; other values as they are."""
    cls = type(obj)
    plan = _PLANS.get(cls) or _plan(cls)
    out = {}
    for name in plan.names:  # a plain loop: cheaper than a comprehension's frame, per user
        out[name] = getattr(obj, name)
    for name, plain in plan.plains:
        out[name] = plain(out[name])
    for name, default in plan.omit:
        if out[name] == default:
            del out[name]
    return out


# --- decoding --------------------------------------------------------------------------


def from_map(cls: type[T], body: object, error: Callable[[str], Exception], where: str) -> T:
    """Build ``cls`` from a plain map, checking every field against its type hint.

    Raises ``error(message)`` for anything else; the message starts with ``where``
    and the path of the field at fault.
    """
    try:
        return _build(_plan(cls), body)
    except _Invalid as exc:
        raise error(f"{where}{''.join(reversed(exc.path))} {exc.reason}") from None


class _Invalid(Exception):
    """Raised inside the codec; ``path`` grows (innermost first) as it unwinds."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _build(plan: _Plan, body: object) -> Any:
    if not isinstance(body, dict):
        raise _Invalid(f"must be a map, got {type(body).__name__}")
    kwargs: dict[str, Any] = {}
    for f in plan.fields:
        if f.name not in body:
            if f.required:
                raise _Invalid(f"lacks the field {f.name!r}")
            continue
        try:
            kwargs[f.name] = f.check(body[f.name])
        except _Invalid as exc:
            exc.path.append(f".{f.name}")
            raise
    return plan.cls(**kwargs)


# --- compiled plans --------------------------------------------------------------------

Check = Callable[[Any], Any]  # a decoded value, or _Invalid
Plain = Callable[[Any], Any]  # a field value made plain for msgpack


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    required: bool
    check: Check
    plain: Plain | None  # None: the value is plain already


@dataclass(frozen=True, slots=True)
class _Plan:
    cls: type[Any]
    fields: tuple[_Field, ...]
    names: tuple[str, ...]  # what to_map() reads: every field, in order
    plains: tuple[tuple[str, Plain], ...]  # and the few it must convert
    omit: tuple[tuple[str, Any], ...]  # fields left out while they hold this default


_PLANS: dict[type[Any], _Plan] = {}


def _plan(cls: type[Any]) -> _Plan:
    """The compiled checks and conversions of a dataclass, built on its first use."""
    plan = _PLANS.get(cls)
    if plan is None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = tuple(
            _Field(
                f.name,
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                _checker(hints[f.name], f"{cls.__name__}.{f.name}"),
                _plainer(hints[f.name]),
            )
            for f in dataclasses.fields(cls)
        )
        plan = _PLANS[cls] = _Plan(
            cls,
            fields,
            tuple(f.name for f in fields),
            tuple((f.name, f.plain) for f in fields if f.plain is not None),
            tuple(
                (f.name, f.default)
                for f in dataclasses.fields(cls)
                if f.name in getattr(cls, "OMIT_DEFAULTS", ())
            ),
        )
    return plan


def _split(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(type, constraints)`` of a hint, ``Annotated`` or not."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        return base, tuple(meta)
    return hint, ()


def _optional_of(hint: Any) -> Any:
    """X of ``X | None``, or None when the hint is no such union."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(hint)
    if len(args) != 2 or type(None) not in args:
        return None
    return args[0] if args[1] is type(None) else args[1]


def _only(meta: tuple[Any, ...], kind: type[T] | None, where: str) -> T | None:
    """The one constraint of ``kind`` in ``meta`` (None if there is none); TypeError
    for any other constraint or a second one, which this field type cannot take."""
    for m in meta:
        if kind is None or not isinstance(m, kind) or len(meta) > 1:
            raise TypeError(f"{where}: {meta!r} does not apply to this field type")
    return meta[0] if meta else None


def _checker(hint: Any, where: str) -> Check:
    """The check of one field type; TypeError for a type this codec does not support
    (a bug in a dataclass, found when its plan is first built, never input)."""
    base, meta = _split(hint)
    if base is int:
        return _int_check(_only(meta, Range, where))
    if base is float:
        if any(isinstance(m, Bounded) for m in meta):
            bounds = _only(meta, Bounded, where)
            assert bounds is not None
            return _bounded_check(bounds)
        return _float_check(_only(meta, Finite, where) is not None)
    if base is str:
        return _str_check(_only(meta, Text, where))
    if base is bool:
        _only(meta, None, where)
        return _bool_check
    if base is bytes:
        return _bytes_check(_only(meta, Size, where))
    origin = typing.get_origin(base)
    if origin is list:
        (item,) = typing.get_args(base)
        limit = _only(meta, MaxItems, where)
        return _list_check(_checker(item, f"{where}[]"), None if limit is None else limit.n)
    if base is dict or origin is dict:
        _only(meta, None, where)
        return _dict_check
    if dataclasses.is_dataclass(base) and isinstance(base, type):
        _only(meta, None, where)
        nested: type[Any] = base
        return lambda value: _build(_plan(nested), value)  # plan looked up late: recursion-safe
    if base is Any:
        _only(meta, None, where)
        return lambda value: value
    inner = _optional_of(base)
    if inner is not None:
        # Annotated[X | None, c] constrains X: hand the constraints down with it.
        check = _checker(Annotated[(inner, *meta)] if meta else inner, where)
        return lambda value: None if value is None else check(value)
    raise TypeError(f"{where}: no codec for the type {base!r}")


def _plainer(hint: Any) -> Plain | None:
    """How to make a value of this hint plain, or None when it already is."""
    base, _meta = _split(hint)
    if typing.get_origin(base) is list:
        item = _plainer(typing.get_args(base)[0])
        return None if item is None else (lambda value: [item(v) for v in value])
    if dataclasses.is_dataclass(base) and isinstance(base, type):
        return to_map
    inner = _optional_of(base)
    if inner is not None:
        plain = _plainer(inner)
        return None if plain is None else (lambda value: None if value is None else plain(value))
    return None


def _kind(value: object) -> str:
    return type(value).__name__


def _int_check(limits: Range | None) -> Check:
    def check(value: Any) -> int:
        # bool is an int in Python but never a valid id or counter.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"must be an integer, got {_kind(value)}")
        if limits is not None and not limits.lo <= value <= limits.hi:
            raise _Invalid(f"is {value}, outside {limits.lo}..{limits.hi}")
        return value

    return check


def _float_check(finite: bool) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"must be a number, got {_kind(value)}")
        value = float(value)
        if finite and not math.isfinite(value):
            raise _Invalid("must be finite")
        return value

    return check


def _bounded_check(bounds: Bounded) -> Check:
    number = _float_check(True)

    def check(value: Any) -> float:
        value = number(value)
        if not bounds.lo <= value <= bounds.hi:
            raise _Invalid(f"is {value:g}, outside {bounds.lo:g}..{bounds.hi:g}")
        return value

    return check


def _str_check(text: Text | None) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"must be a string, got {_kind(value)}")
        if text is not None:
            if len(value) > text.max_len:
                raise _Invalid(f"is {len(value)} characters; at most {text.max_len}")
            if not text.allow_empty and not value.strip():
                raise _Invalid("must not be empty")
            if _CONTROL.search(value):
                raise _Invalid("contains control characters")
        return value

    return check


def _bytes_check(size: Size | None) -> Check:
    def check(value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise _Invalid(f"must be bytes, got {_kind(value)}")
        if size is not None and not size.lo <= len(value) <= size.hi:
            raise _Invalid(f"is {len(value)} bytes, outside {size.lo}..{size.hi}")
        return value

    return check


def _bool_check(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be a bool, got {_kind(value)}")
    return value


def _dict_check(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a map, got {_kind(value)}")
    return value


def _list_check(item: Check, max_items: int | None) -> Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _Invalid(f"must be a list, got {_kind(value)}")
        if max_items is not None and len(value) > max_items:
            raise _Invalid(f"has {len(value)} entries; at most {max_items}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except _Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
        return out

    return check
