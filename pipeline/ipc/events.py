"""Typed events and commands on the client's ZeroMQ bus, encoded and decoded here only.

A bus message is two frames: the topic (ASCII) and a msgpack map of the
event's fields, made and checked by :mod:`relay.protocol.schema`, the codec the
control messages use too. Each event class names its topic; ``stats.<stage>`` and
``cmd.<name>`` are families. The bus is local (ipc://) but a process must
still survive a bad message from another one: ``decode`` raises BusError for
anything it cannot turn into its typed event, and the receiving loop drops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from relay.protocol import schema
from relay.protocol.messages import UserInfo


class BusError(ValueError):
    """A bus message that does not decode to its typed event."""


_BY_TOPIC: dict[str, type[Event]] = {}


class Event:
    """Base of every bus message. ``TOPIC`` is the ZeroMQ topic it travels on."""

    __slots__ = ()
    TOPIC: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TOPIC:
            _BY_TOPIC[cls.TOPIC] = cls

    @property
    def topic(self) -> str:
        return self.TOPIC


# --- from the control process -------------------------------------------------------

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
FAILED = "failed"
STOPPED = "stopped"


@dataclass(slots=True, frozen=True)
class ConnectionState(Event):
    """The TCP session's state, as the status bar shows it."""

    TOPIC = "state"
    state: str
    server: str = ""
    attempt: int = 0
    reason: str = ""
    user_id: int = 0
    name: str = ""
    channel: str = ""


@dataclass(slots=True, frozen=True)
class Session(Event):
    """What the network stage needs to send voice: the secret token and the relay address."""

    TOPIC = "session"
    token: int
    user_id: int
    host: str
    udp_port: int


@dataclass(slots=True, frozen=True)
class Roster(Event):
    """The whole presence picture, re-sent whole on every change (late subscribers catch up)."""

    TOPIC = "presence"
    me: int
    channel: str
    channels: list[str] = field(default_factory=list)
    users: list[UserInfo] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class ChatLine(Event):
    TOPIC = "chat"
    user_id: int
    name: str
    channel: str
    text: str
    ts: float


@dataclass(slots=True, frozen=True)
class Notice(Event):
    """A line for the chat log that is not chat: joins, leaves, errors from the relay."""

    TOPIC = "notice"
    text: str


# --- stats from every stage -----------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Stats(Event):
    """Periodic metrics of one stage; ``values`` maps a metric name to a number or a map."""

    TOPIC = "stats"
    stage: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return f"stats.{self.stage}"


@dataclass(slots=True, frozen=True)
class Activity(Event):
    """Who is audible right now (public user ids), published by the decode stage."""

    TOPIC = "activity"
    speaking: list[int] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class InputLevel(Event):
    """The microphone's recent peak RMS level (0..1), published by the capture stage."""

    TOPIC = "level"
    level: float


# --- commands (from the UI or the CLI) ------------------------------------------------------


@dataclass(slots=True, frozen=True)
class JoinCmd(Event):
    TOPIC = "cmd.join"
    channel: str


@dataclass(slots=True, frozen=True)
class ChatCmd(Event):
    TOPIC = "cmd.chat"
    text: str


@dataclass(slots=True, frozen=True)
class WhisperCmd(Event):
    """Whisper to one user id; 0 goes back to talking to the channel."""

    TOPIC = "cmd.whisper"
    target: int


@dataclass(slots=True, frozen=True)
class ChaosCmd(Event):
    """Drop this percentage of outgoing voice datagrams before the socket."""

    TOPIC = "cmd.chaos"
    loss_percent: float


@dataclass(slots=True, frozen=True)
class BitrateCmd(Event):
    TOPIC = "cmd.bitrate"
    bps: int


@dataclass(slots=True, frozen=True)
class MuteCmd(Event):
    TOPIC = "cmd.mute"
    muted: bool


@dataclass(slots=True, frozen=True)
class DeafenCmd(Event):
    TOPIC = "cmd.deafen"
    deafened: bool


@dataclass(slots=True, frozen=True)
class QuitCmd(Event):
    TOPIC = "cmd.quit"
    reason: str = ""


# --- encoding -------------------------------------------------------------------------


def encode(event: Event) -> list[bytes]:
    """The two ZeroMQ frames of an event: topic and msgpack body."""
    return [event.topic.encode("ascii"), msgpack.packb(schema.to_map(event), use_bin_type=True)]


def decode(frames: list[bytes]) -> Event:
    """Turn two ZeroMQ frames back into the typed event; BusError on anything else."""
    if len(frames) != 2:
        raise BusError(f"a bus message has 2 frames, got {len(frames)}")
    try:
        topic = frames[0].decode("ascii")
    except UnicodeDecodeError:
        raise BusError("topic is not ASCII") from None
    cls = _BY_TOPIC.get("stats" if topic.startswith("stats.") else topic)
    if cls is None:
        raise BusError(f"unknown topic {topic[:40]!r}")
    try:
        body = msgpack.unpackb(frames[1], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack's many error types all mean "not msgpack"
        raise BusError(f"{topic}: body is not msgpack ({type(exc).__name__})") from None
    return schema.from_map(cls, body, BusError, topic)
