"""The status bar renders the connection model's phase, and ping and loss."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from pipeline.core.client_view import ClientView
from pipeline.ipc import events as ev
from ui.connection import ConnectionModel
from ui.status import ConnectionStatus, link_text


def test_link_text_dashes_while_not_connected() -> None:
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
    assert link_text(view, online=False) == "TCP \u2013 · UDP \u2013 · loss \u2013"
    view.apply(ev.DeviceStatus("output", ev.DEVICE_LOST, "pulse", "the stream stopped"))
    assert link_text(view).startswith("speaker lost (the stream stopped); reopening · voice")
    view.apply(ev.DeviceStatus("output", ev.DEVICE_OPEN, "pulse"))
    assert link_text(view).startswith("voice over TCP")


def test_the_bar_shows_the_phase(qtbot: QtBot) -> None:
    bar = ConnectionStatus()
    qtbot.addWidget(bar)
    assert bar.text() == "Not connected"
    model = ConnectionModel()
    model.start("h:1")
    model.apply(ev.ConnectionState(ev.CONNECTED, "h:1", name="ann", channel="Lobby"))
    bar.show_phase(model)
    assert bar.text() == "Connected to h:1 as ann in Lobby"
    assert "#2ea043" in bar.dot.styleSheet()
