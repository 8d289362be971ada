"""The status bar: the connection's phase (ui/connection.py) in words, the voice path
(UDP, or TCP while UDP is blocked), ping and loss."""

from __future__ import annotations

from PyQt6.QtWidgets import QLabel, QStatusBar, QWidget

from pipeline.core.client_view import ClientView
from ui import connection as cn

COLORS = {
    cn.CONNECTING: "#d4a017",
    cn.CONNECTED: "#2ea043",
    cn.RECONNECTING: "#e67e22",
    cn.UNREACHABLE: "#c0392b",
    cn.FAILED: "#c0392b",
    cn.NOT_CONNECTED: "#888888",
}

DASH = "\u2013"  # shown for a value no stage has reported yet, or while not connected


def link_text(view: ClientView, online: bool = True) -> str:
    """A lost sound device, ping and loss; dashes while not connected (the last figures
    would be stale)."""
    trouble = f"{view.device_trouble} · " if view.device_trouble else ""
    if not online:
        return f"{trouble}TCP {DASH} · UDP {DASH} · loss {DASH}"

    def ms(v: object) -> str:
        return f"{v:.0f} ms" if isinstance(v, int | float) else DASH

    loss_s = f"{view.decode.loss_percent:.1f} %" if view.decode else DASH
    tcp = view.control.tcp_rtt_ms if view.control else None
    silent = view.udp_silent_s
    udp = f"silent {silent:.0f} s" if silent is not None else ms(view.udp_rtt_ms)
    udp_loss = view.udp_loss_percent
    if udp_loss:  # pings lost on the UDP path itself
        udp += f" ({udp_loss:.0f} % lost)"
    path = f"{view.voice_path} · " if view.voice_path else ""
    return f"{trouble}{path}TCP {ms(tcp)} · UDP {udp} · loss {loss_s}"


class ConnectionStatus(QStatusBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.dot = QLabel("●")
        self.state_label = QLabel()
        self.link = QLabel()
        self.addWidget(self.dot)
        self.addWidget(self.state_label, 1)
        self.addPermanentWidget(self.link)
        self.show_phase(cn.ConnectionModel())

    def show_phase(self, model: cn.ConnectionModel) -> None:
        self.dot.setStyleSheet(f"color: {COLORS.get(model.phase, '#888')}")
        self.dot.setToolTip(model.phase.replace("_", " "))
        self.state_label.setText(model.headline())

    def show_link(self, view: ClientView, online: bool) -> None:
        self.link.setText(link_text(view, online))

    def text(self) -> str:
        return self.state_label.text()
