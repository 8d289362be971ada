"""The F3 diagnostics overlay: what the stages report, laid over the main window.

It reads a ClientView (pipeline/core/client_view.py) and keeps only the graph's history
of its own. The text is built by ``diagnostics_html``, a pure function of the
view, so tests check the figures without rendering.
"""

from __future__ import annotations

from html import escape
from typing import Any

from PyQt6.QtCore import QEvent, QObject, Qt
from PyQt6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from pipeline.core.client_view import ClientView
from ui.graph import History, LossJitterGraph

STAGES = ("capture", "encode", "network", "decode", "playback")
MARGIN = 10

DASH = "\u2013"  # shown for a value no stage has reported yet


def _ms(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else DASH


def _pct(value: Any) -> str:
    return f"{value:.1f} %" if isinstance(value, int | float) else DASH


def _int(value: Any) -> str:
    return str(int(value)) if isinstance(value, int | float) else DASH


def max_depth(view: ClientView) -> float:
    return float(max((s.depth for s in view.speakers), default=0))


def diagnostics_html(view: ClientView) -> str:
    """The overlay's text: links, per-speaker jitter buffers, per-stage latency and rings."""
    net = view.network
    m2e = view.mouth_to_ear
    rows = [
        "<table cellspacing='0' cellpadding='1'>",
        _row("Voice path", view.voice_path or DASH),
        _row("TCP ping", _ms(view.control.tcp_rtt_ms if view.control else None)),
        _row(
            "UDP RTT",
            f"silent for {view.udp_silent_s:.1f} s"
            if view.udp_silent_s is not None
            else _ms(view.udp_rtt_ms),
        ),
        _row("UDP ping loss (10 s)", _pct(view.udp_loss_percent)),
        _row("Loss (10 s)", _pct(view.decode.loss_percent if view.decode else None)),
        _row(
            "Mouth to ear",
            f"{_ms(m2e.p50 if m2e else None)} p50 · {_ms(m2e.p99 if m2e else None)} p99",
        ),
        _row("FEC", _fec(view)),
        _row(
            "Sent",
            f"{_int(net.sent if net else None)} packets, "
            f"chaos {_pct(net.chaos_percent if net else None)} "
            f"({_int(net.chaos_dropped if net else None)} dropped)",
        ),
        _row(
            "Sealed voice",
            f"{_int(net.good if net else None)} good, {_int(net.late if net else None)} late, "
            f"{_int(net.lost if net else None)} lost, "
            f"{_int(net.replayed + net.too_old if net else None)} replayed, "
            f"{_int(net.bad_auth if net else None)} forged",
        ),
        "</table>",
        "<p style='margin-top:6px'><b>Jitter buffers</b></p>",
    ]
    if view.speakers:
        rows.append("<table cellspacing='0' cellpadding='1'>")
        rows.append(
            _head(
                "speaker",
                "depth",
                "target",
                "delay",
                "loss",
                "late",
                "conceal",
                "recov FEC / red",
                "stretched -/+",
            )
        )
        for s in view.speakers:
            rows.append(
                _cells(
                    escape(view.name_of(s.user_id)),
                    _int(s.depth),
                    _ms(s.target_ms),
                    _ms(s.delay_ms),
                    _pct(s.loss_percent),
                    f"{_int(s.late)} ({_pct(s.late_percent)})",
                    _int(s.concealed),
                    f"{_int(s.recovered)} / {_int(s.recovered_red)}",
                    f"{s.accelerated_ms:.0f} / {s.expanded_ms:.0f} ms",
                )
            )
        rows.append("</table>")
    else:
        rows.append("<p style='color:#999'>nobody is speaking</p>")
    rows.append("<p style='margin-top:6px'><b>Stages</b> (latency p50 / p99, ring fill, drops)</p>")
    rows.append("<table cellspacing='0' cellpadding='1'>")
    for stage in STAGES:
        report = view.reports.get(stage)
        if report is None:
            rows.append(_cells(stage, "<span style='color:#999'>no report</span>", "", ""))
            continue
        lat = "<br>".join(f"{escape(h.hop)} {h.p50:.1f} / {h.p99:.1f}" for h in report.latency)
        rows.append(
            _cells(stage, lat or DASH, f"fill {report.ring_fill}", f"drops {report.ring_dropped}")
        )
    rows.append("</table>")
    return "".join(rows)


def _fec(view: ClientView) -> str:
    """The encoder's loss hint, why, and what our listeners report of our voice."""
    enc = view.encode
    if enc is None or view.fec is None:
        return DASH
    text = escape(view.fec)
    if enc.listeners:
        who = "listener reports" if enc.listeners == 1 else f"of {enc.listeners} listeners: worst"
        text += (
            f"<br><span style='color:#aaa'>{who} {_pct(enc.listener_loss)} lost, "
            f"{_pct(enc.listener_late)} late</span>"
        )
    return text


def _row(label: str, value: str) -> str:
    return f"<tr><td style='color:#aaa; padding-right:10px'>{label}</td><td>{value}</td></tr>"


def _head(*cells: str) -> str:
    return (
        "<tr>"
        + "".join(f"<td style='color:#aaa; padding-right:10px'>{c}</td>" for c in cells)
        + "</tr>"
    )


def _cells(*cells: str) -> str:
    return (
        "<tr>"
        + "".join(f"<td style='padding-right:10px' valign='top'>{c}</td>" for c in cells)
        + "</tr>"
    )


class DiagnosticsOverlay(QFrame):
    """A translucent panel in the top-right corner of its parent; hidden until toggled."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("diagnostics")
        self.setStyleSheet(
            "#diagnostics { background: rgba(20, 22, 26, 225); border-radius: 8px; }"
            "#diagnostics QLabel { color: #e6e6e6; }"
        )
        self.history = History()
        title = QLabel("<b>Diagnostics</b> <span style='color:#999'>(F3 to hide)</span>")
        self.text = QLabel()
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.graph = LossJitterGraph(self.history)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.addWidget(title)
        layout.addWidget(self.text)
        layout.addWidget(self.graph)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, False)
        parent.installEventFilter(self)
        self.hide()

    def refresh(self, view: ClientView, now: float, sample: bool) -> None:
        """Redraw from the view; with ``sample``, add a graph point (one per decode report)."""
        if sample:
            loss = view.decode.loss_percent if view.decode else 0.0
            self.history.add(now, loss, max_depth(view))
        if self.isVisible():
            self.text.setText(diagnostics_html(view))
            self.graph.update()
            self._place()

    def show_for(self, view: ClientView) -> None:
        self.text.setText(diagnostics_html(view))
        self.show()
        self.raise_()
        self._place()

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() == QEvent.Type.Resize and self.isVisible():
            self._place()
        return False

    def _place(self) -> None:
        parent = self.parentWidget()
        if parent is None:
            return
        self.adjustSize()
        width = min(self.sizeHint().width(), parent.width() - 2 * MARGIN)
        height = min(self.sizeHint().height(), parent.height() - 2 * MARGIN)
        self.setGeometry(parent.width() - width - MARGIN, MARGIN, width, height)
