"""The admin socket's protocol: one JSON object per line each way, sans-I/O.

A request is ``{"cmd": VERB, ...fields}``; its reply ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": "one line a person can act on"}``. One dataclass per
verb, checked by the same codec as the control messages
(:mod:`relay.protocol.schema`); :func:`parse_request` takes any bytes and returns
a request or raises :class:`AdminError`, nothing else. JSON rather than msgpack:
the socket is for people and their scripts (``socat - UNIX:/run/...``) as much
as for ``voicechat-admin``.

The verbs are named here once (:data:`REQUESTS`); docs/relay.md lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from relay.protocol import schema
from relay.protocol.messages import MAX_CHANNEL, MAX_TEXT, ChannelName
from relay.protocol.schema import Finite, Range, Text
from relay.protocol.widths import U32_MAX

MAX_LINE = 64 * 1024  # bytes in one request or reply line
Words = Annotated[str, Text(max_len=MAX_TEXT, allow_empty=True)]
UserRef = Annotated[str, Text(max_len=MAX_CHANNEL)]  # a user id in decimal, or a name
OptionalRef = Annotated[str, Text(max_len=MAX_CHANNEL, allow_empty=True)]
Key = Annotated[str, Text(max_len=64)]
Count = Annotated[int, Range(0, U32_MAX)]

REQUESTS: dict[str, type[Request]] = {}


class AdminError(ValueError):
    """A request that cannot be carried out; ``str()`` is the reply's one-line error."""


class Request:
    """Base of every admin request: ``cmd`` on the wire, fields from the dataclass."""

    __slots__ = ()
    CMD: ClassVar[str] = ""
    HELP: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.CMD:
            REQUESTS[cls.CMD] = cls

    def encode(self) -> bytes:
        """The request's line, newline included."""
        return _line({"cmd": self.CMD, **schema.to_map(self)})


@dataclass(slots=True, frozen=True)
class Status(Request):
    CMD = "status"
    HELP = "whether the relay is up, its sessions and datagrams forwarded per second"
    window: Annotated[float, Finite()] = 1.0  # seconds the forwarding rate is measured over


@dataclass(slots=True, frozen=True)
class Users(Request):
    CMD = "users"
    HELP = "every session: user id, name, channel, address, connected or in grace"


@dataclass(slots=True, frozen=True)
class Channels(Request):
    CMD = "channels"
    HELP = "every channel, its members, description and user limit"


@dataclass(slots=True, frozen=True)
class Kick(Request):
    CMD = "kick"
    HELP = "end a session now (it may come back)"
    user: UserRef
    reason: Words = ""


@dataclass(slots=True, frozen=True)
class Mute(Request):
    CMD = "mute"
    HELP = "mute a user server-side: the relay forwards none of their voice; everyone sees it"
    user: UserRef


@dataclass(slots=True, frozen=True)
class Unmute(Request):
    CMD = "unmute"
    HELP = "lift a server-side mute: the user's voice is forwarded again"
    user: UserRef


@dataclass(slots=True, frozen=True)
class Ban(Request):
    """``user``: ban that session's address and end it; or name an ``address`` (or
    network) and/or a ``name``. ``duration`` in seconds, 0 for ever."""

    CMD = "ban"
    HELP = "ban a user's address, or an address/network and/or a name, for a time"
    user: OptionalRef = ""
    address: OptionalRef = ""
    name: OptionalRef = ""
    duration: Annotated[float, Finite()] = 0.0
    reason: Words = ""


@dataclass(slots=True, frozen=True)
class Unban(Request):
    CMD = "unban"
    HELP = "lift a ban by its id"
    id: Count


@dataclass(slots=True, frozen=True)
class Bans(Request):
    CMD = "bans"
    HELP = "the bans in force"


@dataclass(slots=True, frozen=True)
class ChannelAdd(Request):
    CMD = "channel_add"
    HELP = "create a channel (kept in the database)"
    name: ChannelName
    description: Words = ""
    max_users: Count = 0


@dataclass(slots=True, frozen=True)
class ChannelEdit(Request):
    CMD = "channel_edit"
    HELP = "change a channel's description or user limit"
    name: ChannelName
    description: Words | None = None
    max_users: Count | None = None


@dataclass(slots=True, frozen=True)
class ChannelRename(Request):
    CMD = "channel_rename"
    HELP = "rename a channel, members and all"
    name: ChannelName
    new_name: ChannelName


@dataclass(slots=True, frozen=True)
class ChannelRemove(Request):
    CMD = "channel_remove"
    HELP = "remove a channel; its members go to the default channel"
    name: ChannelName


@dataclass(slots=True, frozen=True)
class Move(Request):
    CMD = "move"
    HELP = "move a user to a channel (whatever its limit)"
    user: UserRef
    channel: ChannelName


@dataclass(slots=True, frozen=True)
class Say(Request):
    CMD = "say"
    HELP = "a chat from the server to everyone, or to one channel"
    text: Annotated[str, Text(max_len=MAX_TEXT)]
    channel: Annotated[str, Text(max_len=MAX_CHANNEL, allow_empty=True)] = ""


@dataclass(slots=True, frozen=True)
class Set(Request):
    CMD = "set"
    HELP = "change a setting now and across restarts (overrides the file and the flags)"
    key: Key
    value: Words


@dataclass(slots=True, frozen=True)
class Unset(Request):
    CMD = "unset"
    HELP = "forget a run-time setting: the file's or the flag's value applies again"
    key: Key


@dataclass(slots=True, frozen=True)
class Settings(Request):
    CMD = "settings"
    HELP = "the settings made at run time"


@dataclass(slots=True, frozen=True)
class Reload(Request):
    CMD = "reload"
    HELP = "read the configuration file again (as SIGHUP does)"


def parse_request(line: bytes) -> Request:
    """One request line (any bytes) as its typed request, or :class:`AdminError`."""
    if len(line) > MAX_LINE:
        raise AdminError(f"request of {len(line)} bytes exceeds {MAX_LINE}")
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AdminError(f"request is not JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise AdminError(f"request must be a JSON object, got {type(body).__name__}")
    cmd = body.get("cmd")
    if not isinstance(cmd, str):
        raise AdminError("request lacks a string 'cmd' field")
    cls = REQUESTS.get(cmd)
    if cls is None:
        raise AdminError(f"unknown command {cmd[:40]!r}; one of {', '.join(REQUESTS)}")
    unknown = set(body) - {"cmd"} - {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
    if unknown:
        raise AdminError(f"{cmd}: unknown field {sorted(unknown)[0][:40]!r}")
    return schema.from_map(cls, body, AdminError, cmd)


def ok(result: Any = None) -> bytes:
    """A success reply line."""
    return _line({"ok": True, "result": result})


def failed(error: str) -> bytes:
    """A failure reply line."""
    return _line({"ok": False, "error": error})


def parse_reply(line: bytes) -> Any:
    """The result of a reply line, or :class:`AdminError` with the relay's error."""
    try:
        body = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AdminError(f"the relay's reply is not JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        raise AdminError("the relay's reply is not an admin reply")
    if not body["ok"]:
        raise AdminError(str(body.get("error", "failed")))
    return body.get("result")


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
