"""The status bar's text for every connection state, and a failure that sticks."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from pipeline.core.client_view import ClientView
from pipeline.ipc import events as ev
from ui.status import ConnectionStatus, connection_text, link_text


def test_connection_text() -> None:
    assert connection_text(ev.ConnectionState(ev.CONNECTING, "h:1")) == "Connecting to h:1…"
    assert (
        connection_text(ev.ConnectionState(ev.CONNECTED, "h:1", name="ann", channel="Lobby"))
        == "Connected to h:1 as ann in Lobby"
    )
    assert (
        connection_text(ev.ConnectionState(ev.RECONNECTING, "h:1", attempt=3, reason="refused"))
        == "Reconnecting to h:1 (attempt 3): refused"
    )
    assert connection_text(ev.ConnectionState(ev.FAILED, reason="boom")) == "Failed: boom"
    assert connection_text(ev.ConnectionState(ev.STOPPED, reason="quit")) == "Stopped (quit)"


def test_link_text() -> None:
    view = ClientView()
    assert link_text(view) == "TCP \u2013 · UDP \u2013 · loss \u2013"
    view.apply(ev.ControlStats(tcp_rtt_ms=12.4))
    view.apply(ev.NetworkStats(udp_rtt_ms=3.6))
    view.apply(ev.DecodeStats(loss_percent=2.25))
    assert link_text(view) == "voice over UDP · TCP 12 ms · UDP 4 ms · loss 2.2 %"
    view.apply(ev.NetworkStats(udp_rtt_ms=3.6, voice_path="tcp", udp_loss_percent=60.0))
    assert link_text(view) == (
        "voice over TCP (UDP blocked) · TCP 12 ms · UDP 4 ms (60 % lost) · loss 2.2 %"
    )
    view.apply(ev.DeviceStatus("output", ev.DEVICE_LOST, "pulse", "the stream stopped"))
    assert link_text(view).startswith("speaker lost (the stream stopped); reopening · voice")
    view.apply(ev.DeviceStatus("output", ev.DEVICE_OPEN, "pulse"))
    assert link_text(view).startswith("voice over TCP")


def test_failure_sticks_until_cleared(qtbot: QtBot) -> None:
    bar = ConnectionStatus()
    qtbot.addWidget(bar)
    assert bar.text().startswith("Connecting")
    bar.show_failure("the decode stage died 4 times")
    bar.show_state(ev.ConnectionState(ev.STOPPED))
    assert bar.text() == "Failed: the decode stage died 4 times"
    bar.clear_failure()
    bar.show_state(ev.ConnectionState(ev.CONNECTING, "h:1"))
    assert bar.text() == "Connecting to h:1…"
