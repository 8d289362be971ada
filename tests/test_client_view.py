"""pipeline/core/client_view.py: folding bus events into the client's picture."""

from __future__ import annotations

from pipeline.core.client_view import OPUS_LOOKAHEAD_MS, ClientView
from pipeline.ipc import events as ev
from pipeline.media.opus import OpusEncoder
from relay.protocol.messages import UserInfo


def test_view_follows_events() -> None:
    v = ClientView()
    v.apply(ev.ConnectionState(ev.CONNECTED, "h:1", name="me", channel="Lobby", user_id=1))
    v.apply(ev.Roster(1, "Lobby", ["Lobby", "Games"],
                      [UserInfo(1, "me", "Lobby"), UserInfo(2, "bo", "Lobby"),
                       UserInfo(3, "cy", "Games")]))  # fmt: skip
    v.apply(ev.DecodeStats(loss_percent=2.5, speakers=[ev.SpeakerStats(2, depth=3)]))
    v.apply(ev.ControlStats(tcp_rtt_ms=0.4))
    v.apply(ev.Activity([2]))
    v.apply(ev.ChatLine(2, "bo", "Lobby", "hi", 1.0))
    assert [u.name for u in v.users_in("Lobby")] == ["me", "bo"]
    assert v.name_of(3) == "cy" and v.name_of(9) == "#9"
    assert v.name_of(0) == "you (microphone test)"  # the looped-back microphone
    assert v.speaker(2) == ev.SpeakerStats(2, depth=3) and v.speaker(3) is None
    assert v.heard == {2} and v.decode is not None and v.network is None
    assert v.report(ev.ControlStats) == ev.ControlStats(tcp_rtt_ms=0.4)
    assert v.speaking == [2] and len(v.chat) == 1
    line = v.status_line()
    assert " as me in Lobby" in line and "users 2" in line and "loss 2.5%" in line
    assert "jitter 3" in line and "tcp 0.4ms" in line
    summary = v.summary()
    assert summary["channel"] == "Lobby"
    assert summary["stats"]["decode"]["speakers"][0]["depth"] == 3


def test_reconnecting_status() -> None:
    v = ClientView()
    v.apply(ev.ConnectionState(ev.RECONNECTING, "h:1", attempt=4, reason="refused"))
    assert "reconnecting to h:1 (attempt 4: refused)" in v.status_line()
    v.apply(ev.ConnectionState(ev.CONNECTED, "b:8080", name="me", channel="Lobby", relays=2))
    assert v.status_line().startswith("connected to b:8080 as me in Lobby")
    assert v.summary()["server"] == "b:8080"


def test_mouth_to_ear_is_arrival_to_ear_plus_rtt_capture_to_send_and_lookahead() -> None:
    assert OpusEncoder().lookahead / 48 == OPUS_LOOKAHEAD_MS
    v = ClientView()
    assert v.mouth_to_ear is None
    v.apply(ev.PlaybackStats(latency=[ev.Percentiles(ev.HOP_ARRIVAL_TO_EAR, 40.0, 60.0, 9)]))
    m2e = v.mouth_to_ear
    assert m2e is not None and (m2e.p50, m2e.p99, m2e.n) == (40.0, 60.0, 9)  # nothing else yet
    la = OPUS_LOOKAHEAD_MS
    # Before the network stage reports: the capture and encode hops, summed.
    v.apply(ev.CaptureStats())
    v.apply(ev.EncodeStats(latency=[ev.Percentiles(ev.HOP_CAPTURE_TO_ENCODE, 21.0, 25.0, 9),
                                    ev.Percentiles(ev.HOP_ENCODE, 1.0, 3.0, 9)]))  # fmt: skip
    m2e = v.mouth_to_ear
    assert m2e is not None and (m2e.p50, m2e.p99) == (round(62.0 + la, 3), round(82.0 + la, 3))
    # The network stage's hop runs from capture to send: it replaces them, not adds.
    v.apply(
        ev.NetworkStats(
            udp_rtt_ms=10.0, latency=[ev.Percentiles(ev.HOP_ENCODE_TO_NETWORK, 22.5, 27.0, 9)]
        )
    )
    m2e = v.mouth_to_ear
    assert m2e is not None and (m2e.p50, m2e.p99) == (round(72.5 + la, 3), round(92.5 + la, 3))
    assert v.summary()["mouth_to_ear_ms"]["p50"] == round(72.5 + la, 3)


def test_a_silent_udp_path_shows_as_silent_not_as_its_last_figures() -> None:
    v = ClientView()
    v.apply(ev.ConnectionState(ev.CONNECTED, "h:1", name="me", channel="Lobby", user_id=1))
    v.apply(ev.NetworkStats(udp_rtt_ms=0.2, udp_silent_ms=300.0))
    assert v.udp_silent_s is None and v.udp_rtt_ms == 0.2
    assert "udp 0.2ms" in v.status_line()
    v.apply(ev.NetworkStats(udp_rtt_ms=0.2, udp_silent_ms=20_000.0))
    assert v.udp_silent_s == 20.0 and v.udp_rtt_ms is None
    assert "udp silent 20s" in v.status_line()


def test_fec_strength_and_its_reason_show_in_the_status_line() -> None:
    v = ClientView()
    assert v.fec is None and "FEC" not in v.status_line()
    v.apply(ev.EncodeStats(loss_hint=7, hint_source="worst listener", listener_loss=7.4))
    assert v.fec == "FEC for 7 % (worst listener)"
    assert v.status_line().endswith("| FEC for 7 % (worst listener)")


def test_audio_stages_below_the_priority_asked_for_show_in_the_status_line() -> None:
    v = ClientView()
    v.apply(ev.DecodeStats(priority="realtime (SCHED_RR 3)"))
    v.apply(ev.ControlStats(priority="normal"))  # asked for nothing more
    assert v.priority_trouble is None and "priority" not in v.status_line()
    refused = "normal (realtime not permitted: it needs ...)"
    v.apply(ev.DecodeStats(priority=refused, priority_short=True))
    v.apply(ev.EncodeStats(priority=refused, priority_short=True))
    assert v.priority_trouble == f"audio priority {refused}"  # once, not per stage
    assert v.status_line().endswith(f"| audio priority {refused}")


def test_the_status_line_says_which_way_voice_goes_and_the_udp_loss() -> None:
    view = ClientView()
    assert "voice over" not in view.status_line()  # before the network stage reports
    view.apply(ev.NetworkStats(voice_path="udp", udp_rtt_ms=1.0, udp_loss_percent=0.0))
    assert "| voice over UDP |" in view.status_line()
    view.apply(ev.NetworkStats(voice_path="tcp", udp_loss_percent=80.0))
    line = view.status_line()
    assert "| voice over TCP (UDP blocked) |" in line and "loss 80%" in line
    assert view.summary()["stats"]["network"]["voice_path"] == "tcp"


def test_a_lost_device_shows_in_the_status_line_until_it_is_back() -> None:
    v = ClientView()
    v.apply(ev.ConnectionState(ev.CONNECTED, "h:1", name="me", channel="Lobby", user_id=1))
    v.apply(ev.DeviceStatus("output", ev.DEVICE_OPEN, "pulse"))
    assert v.device_trouble is None and "lost" not in v.status_line()
    v.apply(ev.DeviceStatus("input", ev.DEVICE_LOST, "pulse", "no audio for 0.6 s"))
    v.apply(ev.DeviceStatus("output", ev.DEVICE_LOST, "pulse", "the stream stopped"))
    line = v.status_line()
    assert "microphone lost (no audio for 0.6 s); reopening" in line
    assert "speaker lost (the stream stopped); reopening" in line
    assert v.summary()["devices"]["input"]["state"] == ev.DEVICE_LOST
    v.apply(ev.DeviceStatus("input", ev.DEVICE_OPEN, "pulse"))
    v.apply(ev.DeviceStatus("output", ev.DEVICE_OPEN, "default"))
    assert v.device_trouble is None and "lost" not in v.status_line()
