"""The status bar: connection state (with attempt count and reason), the voice path
(UDP, or TCP while UDP is blocked), ping and loss."""

from __future__ import annotations

from PyQt6.QtWidgets import QLabel, QStatusBar, QWidget

from pipeline.core.client_view import ClientView
from pipeline.ipc import events as ev

COLORS = {
    ev.CONNECTING: "#d4a017",
    ev.CONNECTED: "#2ea043",
    ev.RECONNECTING: "#e67e22",
    ev.FAILED: "#c0392b",
    ev.STOPPED: "#888888",
}

DASH = "\u2013"  # shown for a value no stage has reported yet


def connection_text(s: ev.ConnectionState) -> str:
    """One line a person understands: where we are connecting, and why not if we are not."""
    server = f" to {s.server}" if s.server else ""
    if s.state == ev.CONNECTED:
        where = f" in {s.channel}" if s.channel else ""
        return f"Connected{server} as {s.name}{where}"
    if s.state == ev.RECONNECTING:
        why = f": {s.reason}" if s.reason else ""
        return f"Reconnecting{server} (attempt {s.attempt}){why}"
    if s.state == ev.FAILED:
        return f"Failed: {s.reason or 'unknown reason'}"
    if s.state == ev.STOPPED:
        return "Stopped" + (f" ({s.reason})" if s.reason else "")
    return f"Connecting{server}…"


def link_text(view: ClientView) -> str:
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
    trouble = f"{view.device_trouble} · " if view.device_trouble else ""
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
        self.failure = ""
        self.show_state(ev.ConnectionState(ev.CONNECTING))

    def show_state(self, state: ev.ConnectionState) -> None:
        """Follow the control process's state, unless the client has failed for good."""
        if self.failure:
            return
        self._set(state.state, connection_text(state))

    def show_failure(self, reason: str) -> None:
        self.failure = reason
        self._set(ev.FAILED, connection_text(ev.ConnectionState(ev.FAILED, reason=reason)))

    def clear_failure(self) -> None:
        self.failure = ""

    def show_link(self, view: ClientView) -> None:
        self.link.setText(link_text(view))

    def text(self) -> str:
        return self.state_label.text()

    def _set(self, state: str, text: str) -> None:
        self.dot.setStyleSheet(f"color: {COLORS.get(state, '#888')}")
        self.dot.setToolTip(state)
        self.state_label.setText(text)
