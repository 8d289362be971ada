"""ui/notify.py: the notification sounds are made here, short and without clicks."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from ui.notify import NOTES, RATE, Sounds, tone


def test_the_sounds_are_short_clickless_tones() -> None:
    samples = tone(NOTES["join"])
    assert len(samples) == round(RATE * 0.07) + round(RATE * 0.09)
    assert abs(int(samples[0])) < 200 and abs(int(samples[-1])) < 200  # faded: no click
    assert int(abs(samples).max()) > 15000


def test_the_choice_is_remembered_and_close_removes_the_files(qtbot: QtBot, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    sounds = Sounds(settings)
    files = sorted(p.name for p in sounds._dir.glob("*.wav"))
    assert files == ["join.wav", "leave.wav", "message.wav"]
    sounds.set_enabled(True)
    again = Sounds(settings)
    assert again.enabled
    again.close()
    sounds.close()
    sounds.close()  # idempotent
    assert not sounds._dir.exists()
    sounds.play("join")  # closed: nothing
    assert sounds.played == []
