"""The relay's TOML configuration file (``--config relay.toml``), checked against its flags.

The keys are not listed here: they are derived from the command line's
``argparse`` definitions (:func:`relay.__main__.build_parser`), one key per flag,
named after the flag's destination (``--max-per-address`` is ``max_per_address``,
the repeatable ``--channel`` is the list ``channels``). A flag added to the parser
is a key of the file with no more work. The value a key takes is what its flag
takes, typed as TOML: a flag without a value (``--echo``) is a boolean, a
repeatable one a list, one whose converter returns ``int`` or ``float`` a number,
anything else a string; the flag's own converter and ``choices`` then check it,
so ``grace = -1`` is refused with the same words as ``--grace -1``.

One key is richer than its flag: ``channels`` may list tables as well as names,
``{ name = "Ops", description = "...", max_users = 8 }``, which no flag can say.

Flags given on the command line override the file; the file overrides the
defaults. Every problem (a file that does not parse, an unknown key, a wrong
type, a refused value) raises :class:`ConfigError` with one line naming the
file and the key; nothing here reads the file twice or touches anything else.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import tomllib
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.protocol import schema
from relay.protocol.messages import ChannelInfo

NOT_KEYS = frozenset({"help", "config"})  # flags that have no key in the file
CHANNELS_KEY = "channels"
CHANNEL_FIELDS = {"name": str, "description": str, "max_users": int}


class ConfigError(ValueError):
    """A configuration file the relay refuses to start with; ``str()`` is one line."""


@dataclass(slots=True, frozen=True)
class Key:
    """One key of the file: the flag it stands for and the TOML type its value has."""

    dest: str
    flag: str
    kind: type  # bool, int, float or str: of the value, or of each item of a list
    is_list: bool
    action: argparse.Action


@functools.lru_cache(maxsize=16)
def keys_of(parser: argparse.ArgumentParser) -> dict[str, Key]:
    """Every key the file may hold, by name, from ``parser``'s optional arguments."""
    out: dict[str, Key] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_KEYS:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # store_true / store_false / store_const
            kind: type = bool
        else:
            kind = _value_type(action.type)
        is_list = isinstance(action, argparse._AppendAction)
        out[action.dest] = Key(action.dest, flag, kind, is_list, action)
    return out


def _value_type(convert: Any) -> type:
    """The type a flag's converter returns: what the TOML value must be."""
    if convert is None or convert is str:
        return str
    if convert in (int, float, bool):
        return typing.cast(type, convert)
    try:
        hints = typing.get_type_hints(convert) if callable(convert) else {}
    except Exception:  # hints naming what cannot be resolved here: take the value as text
        hints = {}
    ret = hints.get("return", str)
    return ret if ret in (int, float, str) else str


def load(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The values ``path`` sets, by destination, each checked as its flag would be."""
    where = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the configuration file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    return parse(data, parser, where)


def parse(data: dict[str, Any], parser: argparse.ArgumentParser, where: str) -> dict[str, Any]:
    """Check a decoded TOML document against ``parser``'s flags; values by destination."""
    keys = keys_of(parser)
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = keys.get(name)
        if key is None:
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {name!r}{hint}")
        out[key.dest] = _value(key, value, where)
    return out


def _value(key: Key, value: object, where: str) -> Any:
    at = f"{where}: key {key.dest!r}"
    if key.dest == CHANNELS_KEY:
        return _channels(key, value, at)
    if key.is_list:
        if not isinstance(value, list):
            raise ConfigError(f"{at} must be a list of {_kind_name(key.kind)}, not {_toml(value)}")
        return [_scalar(key, item, f"{at}[{i}]") for i, item in enumerate(value)]
    return _scalar(key, value, at)


def _scalar(key: Key, value: object, at: str) -> Any:
    if not _is(value, key.kind):
        raise ConfigError(f"{at} must be {_kind_name(key.kind)}, not {_toml(value)}")
    if key.kind is bool:
        return value
    if key.kind is float:
        try:
            value = float(typing.cast(float, value))
        except OverflowError:
            raise ConfigError(f"{at} is too large") from None
    convert: Callable[[str], Any] | None = key.action.type  # type: ignore[assignment]
    if convert is not None:
        try:
            value = convert(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{at}: {exc}") from None
    choices = key.action.choices
    if choices is not None and value not in choices:
        allowed = ", ".join(map(str, choices))
        raise ConfigError(f"{at} is {value!r}; one of {allowed}")
    return value


def _channels(key: Key, value: object, at: str) -> list[ChannelInfo]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{at} must be a non-empty list of channel names or tables")
    out = []
    for i, item in enumerate(value):
        here = f"{at}[{i}]"
        if isinstance(item, str):
            out.append(ChannelInfo(_scalar(key, item, here)))
            continue
        if not isinstance(item, dict):
            raise ConfigError(f"{here} must be a channel name or a table, not {_toml(item)}")
        fields: dict[str, Any] = {}
        for field, v in item.items():
            kind = CHANNEL_FIELDS.get(field)
            if kind is None:
                known = ", ".join(CHANNEL_FIELDS)
                raise ConfigError(f"{here}: unknown key {field!r} (a channel has {known})")
            if not _is(v, kind):
                raise ConfigError(f"{here}.{field} must be {_kind_name(kind)}, not {_toml(v)}")
            fields[field] = v
        if "name" not in fields:
            raise ConfigError(f"{here} has no name")
        fields["name"] = _scalar(key, fields["name"], f"{here}.name")
        if fields.get("max_users", 0) < 0:
            raise ConfigError(f"{here}.max_users must be 0 (no limit) or more")
        # The wire's own limits (description length, the u32 limit), as the wire states them.
        out.append(schema.from_map(ChannelInfo, fields, ConfigError, here))
    names = [c.name for c in out]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{at} lists {name!r} twice")
    return out


def _is(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool  # TOML's true is never a number
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]


def _toml(value: object) -> str:
    """What a TOML value is, in the file's words."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def from_text(parser: argparse.ArgumentParser, dest: str, text: str) -> Any:
    """The value of key ``dest`` written as ``text`` (as an operator types it), checked."""
    key = keys_of(parser).get(dest)
    if key is None or key.is_list:
        raise ConfigError(f"unknown key {dest!r}")
    value: object = text
    if key.kind is bool:
        words = {
            "true": True,
            "on": True,
            "yes": True,
            "1": True,
            "false": False,
            "off": False,
            "no": False,
            "0": False,
        }
        if text.strip().lower() not in words:
            raise ConfigError(f"key {dest!r} must be true or false, not {text!r}")
        value = words[text.strip().lower()]
    elif key.kind in (int, float):
        try:
            value = key.kind(text)
        except ValueError:
            raise ConfigError(
                f"key {dest!r} must be {_kind_name(key.kind)}, not {text!r}"
            ) from None
    return _scalar(key, value, f"key {dest!r}")


def explicit(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> dict[str, Any]:
    """The values given on the command line ``argv`` itself, by destination: no defaults.

    Flags override the file, so only these may replace what the file says.
    """
    saved = {a.dest: a.default for a in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        return vars(parser.parse_args(argv))
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]


def merge(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, path: str | Path | None
) -> argparse.Namespace:
    """The defaults, then what the file at ``path`` sets, then the flags in ``argv``.

    Raises :class:`ConfigError` for a bad file; the parser exits on bad flags.
    """
    given = explicit(parser, argv)
    ns = parser.parse_args([])
    if path is not None:
        for dest, value in load(path, parser).items():
            setattr(ns, dest, value)
    for dest, value in given.items():
        setattr(ns, dest, value)
    return ns
