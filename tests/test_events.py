"""pipeline/ipc/events.py: every event round-trips; any frames decode or raise BusError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.ipc import events as ev
from relay.protocol.messages import UserInfo

EVERY_EVENT: list[ev.Event] = [
    ev.ConnectionState(ev.RECONNECTING, "h:1", attempt=3, reason="refused"),
    ev.VoiceEndpoint(token=5, user_id=2, host="127.0.0.1", udp_port=8080),
    ev.Roster(me=2, channel="Lobby", channels=["Lobby"], users=[UserInfo(2, "a", "Lobby")]),
    ev.ChatLine(2, "a", "Lobby", "hi", 1.5),
    ev.Notice("b joined"),
    ev.DecodeStats(
        loss_percent=1.5,
        speakers=[ev.SpeakerStats(3, depth=2, loss_percent=1.5)],
        latency=[ev.Percentiles(ev.HOP_DECODE, 0.1, 0.3, 50)],
    ),
    ev.CaptureStats(frames=3, device_latency_ms=None),
    ev.EncodeStats(packets=1, muted=True),
    ev.EncodeStats(loss_hint=7, hint_source="worst listener", listener_loss=7.5, listeners=2),
    ev.NetworkStats(udp_rtt_ms=1.5, registered=True),
    ev.PlaybackStats(frames=9, underflows=1, ring_fill=2),
    ev.ControlStats(tcp_rtt_ms=0.5),
    ev.Activity(speaking=[3, 4]),
    ev.InputLevel(0.25),
    ev.InputLevel(0.5, transmitting=True),
    ev.DeviceStatus("input", ev.DEVICE_LOST, "pulse", "the stream stopped", attempt=2),
    ev.ListenerReport(loss_percent=7.5, late_percent=1.0, listeners=2),
    ev.JoinCmd("Games"),
    ev.ChatCmd("hello"),
    ev.WhisperCmd(4),
    ev.ChaosCmd(12.5),
    ev.BitrateCmd(32000),
    ev.MuteCmd(True),
    ev.TalkModeCmd("ptt"),
    ev.PushToTalkCmd(True),
    ev.EncodeStats(talk_mode="vad", talking=True, unsent_frames=40, spurts=2),
    ev.DeafenCmd(False),
    ev.GainCmd(4, 0.5),
    ev.NoiseSuppressionCmd(False),
    ev.VadThresholdCmd(0.05),
    ev.EncodeStats(talk_mode="vad", vad_threshold=0.05),
    ev.AudioTestCmd("tone", 1.0),
    ev.AudioTestCmd("stop"),
    ev.DecodeStats(gains=[ev.SpeakerGain(4, 0.0), ev.SpeakerGain(5, 2.0)]),
    ev.ControlStats(tcp_rtt_ms=0.5, muted=True, deafened=True),
    ev.Roster(2, "Lobby", ["Lobby"], [UserInfo(2, "a", "Lobby", muted=True, deafened=True)]),
    ev.QuitCmd("bye"),
]


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: e.topic)
def test_round_trip(event: ev.Event) -> None:
    frames = ev.encode(event)
    assert frames[0] == event.topic.encode()
    assert ev.decode(frames) == event


def test_stats_topic_names_the_stage() -> None:
    for kind in ev.STAGE_REPORTS:
        assert ev.encode(kind())[0] == f"stats.{kind.STAGE}".encode()


def test_int_accepted_for_float_but_not_bool_for_int() -> None:
    assert ev.decode([b"cmd.chaos", msgpack.packb({"loss_percent": 10})]) == ev.ChaosCmd(10.0)
    with pytest.raises(ev.BusError, match="integer"):
        ev.decode([b"cmd.whisper", msgpack.packb({"target": True})])


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"state"], "2 frames"),
        ([b"\xff", b""], "ASCII"),
        ([b"nope", msgpack.packb({})], "unknown topic"),
        ([b"cmd.join", b"\xc1"], "not msgpack"),
        ([b"cmd.join", msgpack.packb([1])], "^cmd.join must be a map, got list$"),
        ([b"cmd.join", msgpack.packb({})], "^cmd.join lacks the field 'channel'$"),
        ([b"cmd.join", msgpack.packb({"channel": 3})], "^cmd.join.channel must be a string"),
        (
            [b"presence", msgpack.packb({"me": 1, "channel": "L", "users": [5]})],
            r"^presence.users\[0\] must be a map, got int$",
        ),
        ([b"stats.decode", msgpack.packb({"speakers": [5]})], "must be a map"),
        ([b"stats.x", msgpack.packb({})], "unknown topic"),
        ([b"cmd.mute", msgpack.packb({"muted": 1})], "must be a bool"),
        ([b"cmd.whisper", msgpack.packb({"target": -1})], "outside 0..4294967295"),
        ([b"cmd.whisper", msgpack.packb({"target": 2**32})], "outside"),
        ([b"cmd.chaos", msgpack.packb({"loss_percent": float("nan")})], "finite"),
        ([b"cmd.bitrate", msgpack.packb({"bps": 0})], "outside"),
        ([b"cmd.gain", msgpack.packb({"user_id": 1, "gain": 2.5})], "outside 0..2"),
        ([b"cmd.gain", msgpack.packb({"user_id": 1, "gain": float("nan")})], "finite"),
        ([b"cmd.test", msgpack.packb({"kind": "tone", "seconds": 11.0})], "outside 0..10"),
        ([b"cmd.noise", msgpack.packb({"on": "yes"})], "must be a bool"),
    ],
)
def test_bad_frames_raise_bus_error(frames: list[bytes], reason: str) -> None:
    with pytest.raises(ev.BusError, match=reason):
        ev.decode(frames)


@given(st.sampled_from([e.topic.encode() for e in EVERY_EVENT]), st.binary(max_size=200))
def test_fuzz_any_body_decodes_or_bus_error(topic: bytes, body: bytes) -> None:
    try:
        event = ev.decode([topic, body])
    except ev.BusError:
        return
    assert event.topic == topic.decode()


@given(st.lists(st.binary(max_size=50), max_size=3))
def test_fuzz_any_frames_decode_or_bus_error(frames: list[bytes]) -> None:
    with contextlib.suppress(ev.BusError):
        ev.decode(frames)


def test_device_status_in_words() -> None:
    lost = ev.DeviceStatus("input", ev.DEVICE_LOST, "pulse", "the stream stopped", attempt=2)
    assert lost.words == "microphone lost (the stream stopped); reopening, attempt 2"
    assert ev.DeviceStatus("output", ev.DEVICE_OPEN, "pulse").words == "speaker open: pulse"
