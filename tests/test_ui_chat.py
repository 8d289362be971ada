"""The chat panel: lines with time, channel and sender; the input line emits what to send."""

from __future__ import annotations

import time

from PyQt6.QtCore import Qt
from pytestqt.qtbot import QtBot

from pipeline.ipc import events as ev
from ui.chat import ChatPanel, clock


def test_lines_show_time_channel_and_sender(qtbot: QtBot) -> None:
    panel = ChatPanel()
    qtbot.addWidget(panel)
    ts = time.mktime((2026, 1, 2, 13, 14, 15, 0, 0, -1))
    panel.add(ev.ChatLine(2, "bob", "Lobby", "hi <all>", ts))
    panel.add(ev.Notice("carol joined Lobby"), now=ts)
    assert panel.lines() == ["[13:14:15] #Lobby bob: hi <all>", "[13:14:15] * carol joined Lobby"]
    shown = panel.log.toPlainText()
    assert "hi <all>" in shown and "carol joined Lobby" in shown


def test_enter_sends_stripped_text_and_clears(qtbot: QtBot) -> None:
    panel = ChatPanel()
    qtbot.addWidget(panel)
    sent: list[str] = []
    panel.send.connect(sent.append)
    qtbot.keyClicks(panel.input, "  hello there ")
    qtbot.keyClick(panel.input, Qt.Key.Key_Return)
    qtbot.keyClick(panel.input, Qt.Key.Key_Return)  # empty: nothing sent
    panel.input.setText("via button")
    qtbot.mouseClick(panel.button, Qt.MouseButton.LeftButton)
    assert sent == ["hello there", "via button"]
    assert panel.input.text() == ""


def test_clock_format() -> None:
    assert len(clock(time.time())) == 8
