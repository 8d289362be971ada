"""The README's screenshot can be regenerated offscreen: the window with the overlay open."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtGui import QImage
from pytestqt.qtbot import QtBot

from ui.screenshot import render, render_live


def test_render_writes_a_png(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "shot.png"
    render(path)
    image = QImage(str(path))
    assert not image.isNull()
    assert image.width() >= 1000 and image.height() >= 600


def test_render_live_runs_a_real_call(qtbot: QtBot, tmp_path: Path) -> None:
    path = tmp_path / "live.png"
    render_live(path, seconds=3.0, states=False, everyone=False)
    image = QImage(str(path))
    assert not image.isNull() and image.width() >= 1000
