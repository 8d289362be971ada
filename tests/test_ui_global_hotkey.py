"""ui/global_hotkey.py: the push-to-talk key grabbed for the whole desktop.

A real X server (a private Xvfb) and real key events on it (XTest, as a user's
keyboard would give them), read through the Qt event loop; skipped where Xvfb is
not installed (scripts/setup.sh installs it).
"""

from __future__ import annotations

import pytest
from PyQt6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests.conftest import Keyboard
from ui.global_hotkey import NO_DISPLAY, WAYLAND, GlobalHotkey, keysym_of, unavailable

pytestmark = pytest.mark.timeout(60)


def test_where_a_global_key_is_possible() -> None:
    assert unavailable("xcb") == ""
    assert unavailable("wayland") == WAYLAND and "focus" in WAYLAND
    assert unavailable("offscreen") == NO_DISPLAY
    assert "not built" in unavailable("windows") and "not built" in unavailable("cocoa")


def test_qt_keys_as_x_keysyms() -> None:
    assert keysym_of(Qt.Key.Key_F1.value) == 0xFFBE
    assert keysym_of(Qt.Key.Key_F12.value) == 0xFFC9
    assert keysym_of(Qt.Key.Key_Space.value) == 0x20
    assert keysym_of(Qt.Key.Key_V.value) == ord("v")
    assert keysym_of(Qt.Key.Key_Pause.value) == 0xFF13
    assert keysym_of(Qt.Key.Key_Shift.value) == 0  # none we know: the dialog says so


def test_a_grabbed_key_is_seen_down_and_up_whoever_has_the_focus(qtbot: QtBot, xvfb: str) -> None:
    hotkey = GlobalHotkey(display=xvfb)
    keyboard = Keyboard(xvfb)
    got: list[bool] = []
    hotkey.changed.connect(got.append)
    try:
        assert hotkey.grab(Qt.Key.Key_F9.value) == "" and hotkey.grabbed
        keyboard.key(Qt.Key.Key_F9.value, True)
        qtbot.waitUntil(lambda: got == [True])
        keyboard.key(Qt.Key.Key_F10.value, True)  # another key is not ours
        keyboard.key(Qt.Key.Key_F10.value, False)
        keyboard.key(Qt.Key.Key_F9.value, False)
        qtbot.waitUntil(lambda: got == [True, False])
        # Another key chosen: the old one is given back, the new one taken.
        assert hotkey.grab(Qt.Key.Key_Space.value) == ""
        keyboard.key(Qt.Key.Key_F9.value, True)
        keyboard.key(Qt.Key.Key_F9.value, False)
        keyboard.key(Qt.Key.Key_Space.value, True)
        qtbot.waitUntil(lambda: got == [True, False, True])
        hotkey.ungrab()  # let go while held: counted as up
        assert got == [True, False, True, False] and not hotkey.grabbed
        keyboard.key(Qt.Key.Key_Space.value, False)
    finally:
        keyboard.close()
        hotkey.close()


def test_a_key_another_program_holds_is_refused_in_words(qtbot: QtBot, xvfb: str) -> None:
    first, second = GlobalHotkey(display=xvfb), GlobalHotkey(display=xvfb)
    try:
        assert first.grab(Qt.Key.Key_F8.value) == ""
        assert "another program" in second.grab(Qt.Key.Key_F8.value)
        assert not second.grabbed
        assert second.grab(Qt.Key.Key_Shift.value).startswith("that key cannot")
        assert GlobalHotkey(display=":9999").grab(Qt.Key.Key_F8.value).startswith("cannot reach")
    finally:
        second.close()
        first.close()
