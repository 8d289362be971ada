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
from typing import Annotated, Any, ClassVar

import msgpack

from relay.protocol import schema
from relay.protocol.messages import ChannelInfo, UserInfo
from relay.protocol.schema import Bounded, Finite, MaxItems, Range
from relay.protocol.widths import U32_MAX


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
    server: str = ""  # the relay connected to, or being tried (HOST:PORT)
    attempt: int = 0
    reason: str = ""
    user_id: int = 0
    name: str = ""
    channel: str = ""
    relays: int = 1  # how many relays the client may try (configured and learnt)


@dataclass(slots=True, frozen=True)
class VoiceEndpoint(Event):
    """What the network stage needs to send voice: the relay's address, our public id and
    protocol 2's keys (secret: the session's UDP key, the channel's media key)."""

    TOPIC = "endpoint"
    token: int
    user_id: int
    host: str
    udp_port: int
    udp_key: bytes = b""
    media_key_id: int = 0
    media_key: bytes = b""

    def __repr__(self) -> str:  # never a key or the token in a log line
        return f"VoiceEndpoint(user_id={self.user_id}, {self.host}:{self.udp_port})"


@dataclass(slots=True, frozen=True)
class Roster(Event):
    """The whole presence picture, re-sent whole on every change (late subscribers catch up)."""

    TOPIC = "presence"
    me: int
    channel: str
    channels: list[str] = field(default_factory=list)
    users: list[UserInfo] = field(default_factory=list)
    # The channels the relay describes or limits (its channel_list), by name.
    infos: list[ChannelInfo] = field(default_factory=list)


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


# Hops of a frame's way through a client, each measured by the stage that ends it, on
# this machine's clock: the sending side's from capture, the receiving side's from the
# packet's arrival (another machine's clock is never subtracted from ours).
HOP_CAPTURE_TO_ENCODE = "capture_to_encode"
HOP_ENCODE = "encode"
HOP_ENCODE_TO_NETWORK = "encode_to_network"
HOP_RECEIVE_TO_DECODE = "receive_to_decode"
HOP_DECODE = "decode"
HOP_JITTER_WAIT = "jitter_wait"
HOP_ARRIVAL_TO_EAR = "arrival_to_ear"
SENDING_HOPS = (HOP_CAPTURE_TO_ENCODE, HOP_ENCODE, HOP_ENCODE_TO_NETWORK)


@dataclass(slots=True, frozen=True)
class Percentiles:
    """One hop's latency over the stage's most recent samples, in ms; ``n`` counts all samples."""

    hop: str
    p50: float
    p99: float
    n: int


@dataclass(slots=True, frozen=True, kw_only=True)
class StageReport(Event):
    """Base of every stage's periodic stats (twice a second), one event type per stage.

    Every stage reports its rings in the same words: ``ring_fill`` is the fill of the
    ring the stage consumes (capture: the one it produces into), ``ring_dropped``
    what it could not put into its output ring because that ring was full.
    """

    STAGE: ClassVar[str] = ""
    ring_fill: int = 0
    ring_dropped: int = 0
    latency: list[Percentiles] = field(default_factory=list)
    priority: str = ""  # how the process is scheduled, in words (pipeline/ipc/scheduling.py)
    priority_short: bool = False  # less than it asked for

    @property
    def stage(self) -> str:
        return self.STAGE

    def hop(self, name: str) -> Percentiles | None:
        """The latency of hop ``name`` (a HOP_ constant), None before any sample."""
        return next((h for h in self.latency if h.hop == name), None)


@dataclass(slots=True, frozen=True, kw_only=True)
class CaptureStats(StageReport):
    TOPIC = "stats.capture"
    STAGE = "capture"
    frames: int = 0
    resyncs: int = 0  # a file source's 20 ms schedule, or a device's sample clock, restarted
    overflows: int = 0  # the sound device lost input
    device_latency_ms: float | None = None


@dataclass(slots=True, frozen=True, kw_only=True)
class EncodeStats(StageReport):
    TOPIC = "stats.encode"
    STAGE = "encode"
    packets: int = 0
    packet_bytes: int = 0
    muted_frames: int = 0
    bitrate: int = 0
    muted: bool = False
    loss_hint: int = 0  # the packet loss % the encoder is told to expect (its FEC strength)
    hint_source: str = ""  # which figure set it (pipeline/core/loss_hint.py)
    listener_loss: float = 0.0  # the worst loss a listener reports of our stream, as held
    listener_late: float = 0.0  # the worst late share a listener reports
    listeners: int = 0  # how many listeners the relay's last report counted
    listener_burst: float = 0.0  # the longest mean loss burst a listener reports
    # Redundancy (pipeline/core/redundancy.py): copies of earlier frames in each packet.
    redundancy: int = 0  # copies per packet now
    redundant_bitrate: int = 0  # the copies' encoder
    redundant_copies: int = 0  # copies sent
    redundant_bytes: int = 0  # of packet_bytes, what the copies and their headers took
    # Talk modes (pipeline/core/talk.py): frames the mode kept off the wire (silence, key
    # up; muted ones are muted_frames), talk spurts begun, and the state now.
    talk_mode: str = ""
    talking: bool = False
    ptt_pressed: bool = False
    vad_threshold: float = 0.0  # voice activation's level (cmd.threshold; 0: none)
    unsent_frames: int = 0
    spurts: int = 0
    input_processing: bool = False  # noise suppression and gain control before the encoder
    noise_suppression: bool = False  # of which the noise suppressor is on (cmd.noise)
    # The settings' microphone test (pipeline/core/audio_test.py): frames looped back to
    # this client's own output instead of being sent, and whether that runs now.
    loopback: bool = False
    loopback_frames: int = 0


@dataclass(slots=True, frozen=True, kw_only=True)
class NetworkStats(StageReport):
    TOPIC = "stats.network"
    STAGE = "network"
    sent: int = 0
    chaos_dropped: int = 0
    unsent_no_session: int = 0
    register_sent: int = 0
    keepalive_sent: int = 0
    register_echo: int = 0
    bad_register_echo: int = 0
    received: int = 0
    bad_datagram: int = 0
    # Sealed voice (protocol 2): the speakers' replay windows summed, and refusals by reason.
    good: int = 0
    late: int = 0
    lost: int = 0
    replayed: int = 0
    too_old: int = 0
    bad_auth: int = 0
    no_key: int = 0
    send_errors: int = 0
    recv_errors: int = 0
    resolve_errors: int = 0
    foreign_datagrams: int = 0
    udp_rtt_ms: float | None = None
    udp_silent_ms: float | None = None  # since the last datagram from the relay; None: none yet
    registered: bool = False
    chaos_percent: float = 0.0
    whisper: int = 0
    # The voice path (SPEC.md, "TCP tunnel"): "udp", or "tcp" while UDP is dead; the loss
    # of UDP pings over the last 10 s (None before any); and the tunnel's local hop.
    voice_path: str = "udp"
    udp_loss_percent: float | None = None
    path_switches: int = 0
    tunnel_sent: int = 0  # voice handed to the control process for the tunnel
    tunnel_unsent: int = 0  # what it could not take (not there, or its queue full)
    tunnel_received: int = 0  # voice that came back through the tunnel
    loopback: int = 0  # the microphone test's voice, played back here and never sent
    loopback_unsent: int = 0  # of which the receive side could not take (it fell behind)


@dataclass(slots=True, frozen=True)
class SpeakerStats:
    """One remote speaker's jitter buffer and decoder, as the decode stage sees them."""

    user_id: int
    depth: int = 0
    played: int = 0
    concealed: int = 0  # lost frames synthesised by Opus PLC
    recovered: int = 0  # lost frames rebuilt from the next packet's FEC
    recovered_red: int = 0  # lost frames played from a redundant copy in a later packet
    silenced: int = 0  # lost frames played as silence (PLC off)
    late: int = 0
    duplicate: int = 0
    lost: int = 0
    loss_percent: float = 0.0  # over the last 10 s
    late_percent: float = 0.0  # packets that came after their turn, over the last 10 s
    burst_mean: float = 0.0  # mean run of consecutive lost packets, over the last 10 s
    decode_errors: int = 0
    discarded: int = 0  # held packets dropped to catch up after a stall (not loss)
    # Adaptive playout (0 with a fixed watermark); delays on top of the fastest packet's.
    target_ms: float = 0.0  # the playout delay aimed at
    delay_ms: float = 0.0  # the playout delay now
    accelerated_ms: float = 0.0  # audio removed by time-stretching, in total
    expanded_ms: float = 0.0  # audio inserted by time-stretching, in total
    waited: int = 0  # ticks concealed while waiting for a packet that then played
    spurt_ends: int = 0  # talk spurts that ended where the sender said: nothing concealed


MAX_TEST_SECONDS = 10.0  # an audio test (AudioTestCmd) lasts at most this long
MAX_GAIN = 2.0  # a listener's volume for one speaker goes up to 200 %
MAX_GAINS = 1024  # speakers with a volume of their own, at most (the decode stage's table)


@dataclass(slots=True, frozen=True)
class SpeakerGain:
    """The volume this listener gave one speaker: 0 (muted here) to MAX_GAIN, 1 as sent."""

    user_id: Annotated[int, Range(0, U32_MAX)]
    gain: Annotated[float, Bounded(0.0, MAX_GAIN)]


@dataclass(slots=True, frozen=True, kw_only=True)
class DecodeStats(StageReport):
    TOPIC = "stats.decode"
    STAGE = "decode"
    speakers: list[SpeakerStats] = field(default_factory=list)
    loss_percent: float = 0.0  # the worst speaker's
    burst_mean: float = 0.0  # that speaker's mean loss burst
    retired: int = 0
    refused_speakers: int = 0  # packets of one speaker too many (MAX_SPEAKERS at once)
    bad_bodies: int = 0  # voice bodies that did not parse (SPEC.md, "Voice body"), dropped
    deafened: bool = False
    playback_fill: int = 0  # blocks (5 ms) queued for the sink: the playout queue
    lead_ms: float = 0.0  # frames are made this long before the sink wants them (0: queued)
    worst_late_ms: float = 0.0  # the most a frame was ready after its plan, last 10 s
    test_tone: bool = False  # the settings' test tone is playing (pipeline/core/audio_test.py)
    gains: Annotated[list[SpeakerGain], MaxItems(MAX_GAINS)] = field(default_factory=list)


@dataclass(slots=True, frozen=True, kw_only=True)
class PlaybackStats(StageReport):
    TOPIC = "stats.playback"
    STAGE = "playback"
    frames: int = 0
    underflows: int = 0  # the sink wanted a frame after the first one and none was there


@dataclass(slots=True, frozen=True, kw_only=True)
class ControlStats(StageReport):
    TOPIC = "stats.control"
    STAGE = "control"
    tcp_rtt_ms: float | None = None
    muted: bool = False  # what the control process tells the relay of us (SelfState)
    deafened: bool = False


STAGE_REPORTS: tuple[type[StageReport], ...] = (
    CaptureStats,
    EncodeStats,
    NetworkStats,
    DecodeStats,
    PlaybackStats,
    ControlStats,
)


@dataclass(slots=True, frozen=True)
class ListenerReport(Event):
    """The relay's receiver_report, from the control process to the encode stage: the
    worst loss and late share our current listeners measure of our voice."""

    TOPIC = "feedback"
    loss_percent: Annotated[float, Finite()]
    late_percent: Annotated[float, Finite()]
    listeners: int
    burst_mean: Annotated[float, Finite()] = 0.0  # the longest mean loss burst reported


@dataclass(slots=True, frozen=True)
class Activity(Event):
    """Who is audible right now (public user ids), published by the decode stage."""

    TOPIC = "activity"
    speaking: list[int] = field(default_factory=list)


DEVICE_OPEN = "open"
DEVICE_LOST = "lost"


@dataclass(slots=True, frozen=True)
class DeviceStatus(Event):
    """A sound device's stream opened or lost, from the capture or playback stage.

    ``kind`` is ``input`` or ``output``; ``state`` is DEVICE_OPEN (``device`` names what
    is playing or recording now) or DEVICE_LOST (``reason`` says why, in words, and the
    stage is reopening it with backoff; ``attempt`` counts the tries so far).
    """

    TOPIC = "device"
    kind: str
    state: str
    device: str = ""
    reason: str = ""
    attempt: int = 0

    @property
    def words(self) -> str:
        """One line for a person, e.g. ``microphone lost (stream stopped); reopening``."""
        what = "microphone" if self.kind == "input" else "speaker"
        if self.state == DEVICE_OPEN:
            return f"{what} open: {self.device}" if self.device else f"{what} open"
        tries = f", attempt {self.attempt}" if self.attempt else ""
        return f"{what} lost ({self.reason}); reopening{tries}"


@dataclass(slots=True, frozen=True)
class InputLevel(Event):
    """The microphone's recent peak RMS level (0..1), as it comes from the microphone, and
    whether the talk mode sends it now; published by the encode stage about 16 times a
    second (the level meter, and the threshold of voice activation set on it)."""

    TOPIC = "level"
    level: float
    transmitting: bool = False


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
    target: Annotated[int, Range(0, U32_MAX)]  # it goes into the datagram header


@dataclass(slots=True, frozen=True)
class ChaosCmd(Event):
    """Drop this percentage of outgoing voice datagrams before the socket."""

    TOPIC = "cmd.chaos"
    loss_percent: Annotated[float, Finite()]


@dataclass(slots=True, frozen=True)
class BitrateCmd(Event):
    TOPIC = "cmd.bitrate"
    bps: Annotated[int, Range(1, 10_000_000)]  # the encoder clamps to what Opus takes


@dataclass(slots=True, frozen=True)
class MuteCmd(Event):
    TOPIC = "cmd.mute"
    muted: bool


@dataclass(slots=True, frozen=True)
class TalkModeCmd(Event):
    """Switch the talk mode: "vad", "continuous" or "ptt" (pipeline/core/talk.py)."""

    TOPIC = "cmd.talk"
    mode: str


@dataclass(slots=True, frozen=True)
class PushToTalkCmd(Event):
    """The push-to-talk key went down (True) or up (False)."""

    TOPIC = "cmd.ptt"
    pressed: bool


@dataclass(slots=True, frozen=True)
class DeafenCmd(Event):
    TOPIC = "cmd.deafen"
    deafened: bool


@dataclass(slots=True, frozen=True)
class GainCmd(Event):
    """Play one speaker at this volume here (0: muted here; 1: as sent; up to 2)."""

    TOPIC = "cmd.gain"
    user_id: Annotated[int, Range(0, U32_MAX)]
    gain: Annotated[float, Bounded(0.0, MAX_GAIN)]


@dataclass(slots=True, frozen=True)
class NoiseSuppressionCmd(Event):
    """Turn the encode stage's noise suppressor on or off (gain control stays as it is)."""

    TOPIC = "cmd.noise"
    on: bool


@dataclass(slots=True, frozen=True)
class VadThresholdCmd(Event):
    """Voice activation sends only speech at least this loud (an RMS level, 0..1, as
    ``InputLevel`` gives it; 0: whatever the detector calls speech)."""

    TOPIC = "cmd.threshold"
    level: Annotated[float, Bounded(0.0, 1.0)]


@dataclass(slots=True, frozen=True)
class AudioTestCmd(Event):
    """The settings' audio test (pipeline/core/audio_test.py): ``tone`` plays a tone on
    this client's output for ``seconds`` (the decode stage), ``loopback`` plays the
    microphone back here instead of sending it (the encode stage diverts it, the network
    stage delivers it locally), ``stop`` ends either at once."""

    TOPIC = "cmd.test"
    kind: str
    seconds: Annotated[float, Bounded(0.0, MAX_TEST_SECONDS)] = 0.0


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
    cls = _BY_TOPIC.get(topic)
    if cls is None:
        raise BusError(f"unknown topic {topic[:40]!r}")
    try:
        body = msgpack.unpackb(frames[1], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack's many error types all mean "not msgpack"
        raise BusError(f"{topic}: body is not msgpack ({type(exc).__name__})") from None
    return schema.from_map(cls, body, BusError, topic)
