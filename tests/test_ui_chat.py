"""The chat panel: lines with time, channel and sender; the input line emits what to send."""

from __future__ import annotations

import time

from PyQt6.QtCore import Qt
from pytestqt.qtbot import QtBot

from pipeline.ipc import events as ev
from ui.chat import ChatPanel, clock, linkify


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


def test_links_are_clickable_and_the_rest_escaped(qtbot: QtBot) -> None:
    assert linkify("see https://example.org/a?b=1&c=2. <b>") == (
        "see <a href='https://example.org/a?b=1&amp;c=2'>https://example.org/a?b=1&amp;c=2</a>"
        ". &lt;b&gt;"
    )
    assert linkify("www.example.org") == ("<a href='http://www.example.org'>www.example.org</a>")
    panel = ChatPanel()
    qtbot.addWidget(panel)
    assert panel.log.openExternalLinks()
    panel.add(ev.ChatLine(2, "bob", "Lobby", "look: https://example.org", 0.0))
    assert 'href="https://example.org"' in panel.log.toHtml()


def test_a_message_typed_while_offline_stays_in_the_box(qtbot: QtBot) -> None:
    panel = ChatPanel()
    qtbot.addWidget(panel)
    sent: list[str] = []
    panel.send.connect(sent.append)
    panel.set_enabled_for(False)
    qtbot.keyClicks(panel.input, "are you there?")
    qtbot.keyClick(panel.input, Qt.Key.Key_Return)
    assert sent == [] and panel.input.text() == "are you there?"
    assert "your message is kept" in panel.lines()[-1]
    panel.set_enabled_for(True)
    qtbot.keyClick(panel.input, Qt.Key.Key_Return)
    assert sent == ["are you there?"] and panel.input.text() == ""
