"""The chat panel: a log of chat lines and notices (time, channel, sender) and an input line."""

from __future__ import annotations

import re
import time
from html import escape

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QTextBrowser, QVBoxLayout, QWidget

from pipeline.core.client_view import MAX_CHAT
from pipeline.ipc import events as ev

URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")


def linkify(text: str) -> str:
    """``text`` as HTML, its web addresses clickable (everything else escaped)."""
    out, pos = [], 0
    for m in URL.finditer(text):
        out.append(escape(text[pos : m.start()]))
        url = m.group(0)
        href = url if "://" in url else f"http://{url}"
        out.append(f"<a href='{escape(href, quote=True)}'>{escape(url)}</a>")
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


class ChatPanel(QWidget):
    send = pyqtSignal(str)  # text the user entered, stripped, never empty

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.log = QTextBrowser()
        self.log.setOpenExternalLinks(True)  # a link opens in the user's browser
        document = self.log.document()
        if document is not None:
            document.setMaximumBlockCount(MAX_CHAT)
        self.input = QLineEdit()
        self.input.setPlaceholderText("Message to your channel")
        self.input.setMaxLength(2000)
        self.button = QPushButton("Send")
        self.input.returnPressed.connect(self._submit)
        self.button.clicked.connect(self._submit)
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addWidget(self.button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.log, 1)
        layout.addLayout(row)
        self._plain: list[str] = []
        self.connected = True

    def add(self, line: ev.ChatLine | ev.Notice, me: int = 0, now: float | None = None) -> None:
        """Append one chat line or notice; notices carry no time, so ``now`` stamps them."""
        if isinstance(line, ev.ChatLine):
            stamp, who = clock(line.ts), line.name
            plain = f"[{stamp}] #{line.channel} {who}: {line.text}"
            color = "#2d7d46" if line.user_id == me else "#2060b0"
            html = (
                f"<span style='color:#888'>[{stamp}]</span> "
                f"<span style='color:#888'>#{escape(line.channel)}</span> "
                f"<b style='color:{color}'>{escape(who)}</b>: {linkify(line.text)}"
            )
        else:
            stamp = clock(time.time() if now is None else now)
            plain = f"[{stamp}] * {line.text}"
            html = (
                f"<span style='color:#888'>[{stamp}]</span> "
                f"<i style='color:#777'>* {escape(line.text)}</i>"
            )
        self._plain.append(plain)
        del self._plain[:-MAX_CHAT]
        self.log.append(html)
        bar = self.log.verticalScrollBar()
        if bar is not None:
            bar.setValue(bar.maximum())

    def lines(self) -> list[str]:
        """The log as plain text, one entry per line (for tests and copying)."""
        return list(self._plain)

    def set_enabled_for(self, connected: bool) -> None:
        self.connected = connected
        self.input.setPlaceholderText(
            "Message to your channel"
            if connected
            else "Not connected: what you type is kept and sent when you press Enter again"
        )

    def _submit(self) -> None:
        """Send the line; while not connected it stays in the box (nothing typed is lost)."""
        text = self.input.text().strip()
        if not text:
            return
        if not self.connected:
            self.add(ev.Notice("not connected: your message is kept; send it once connected"))
            return
        self.send.emit(text)
        self.input.clear()
