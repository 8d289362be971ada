"""ui/level_meter.py: the level meter, its colours and voice activation's threshold."""

from __future__ import annotations

from PyQt6.QtCore import QPoint, Qt
from pytestqt.qtbot import QtBot

from ui.level_meter import FLOOR_DB, LevelMeter, db_level, level_db


def test_level_db_and_back() -> None:
    assert level_db(0.0) == FLOOR_DB == -60.0
    assert level_db(1.0) == 0.0
    assert abs(level_db(0.1) - -20.0) < 1e-9
    assert level_db(5.0) == 0.0
    assert db_level(FLOOR_DB) == 0.0  # the far left: no threshold
    assert abs(db_level(-20.0) - 0.1) < 1e-12


def test_a_click_or_drag_sets_the_threshold_only_while_it_is_shown(qtbot: QtBot) -> None:
    meter = LevelMeter()
    qtbot.addWidget(meter)
    meter.resize(301, 16)  # 5 px per dB
    meter.show()
    got: list[float] = []
    meter.threshold_changed.connect(got.append)
    qtbot.mouseClick(meter, Qt.MouseButton.LeftButton, pos=QPoint(200, 8))
    assert got == [] and meter.threshold == 0.0  # not voice activation: no marker
    meter.show_threshold(True)
    qtbot.mouseClick(meter, Qt.MouseButton.LeftButton, pos=QPoint(200, 8))
    assert meter.threshold_db == -20.0 and got == [meter.threshold]
    assert abs(got[0] - 0.1) < 1e-9
    assert "-20 dBFS" in meter.toolTip()
    qtbot.mouseClick(meter, Qt.MouseButton.LeftButton, pos=QPoint(0, 8))
    assert got[-1] == 0.0 and "none" in meter.toolTip()  # dragged to the left end: none
    meter.setEnabled(False)  # muted: nothing to set it against
    qtbot.mouseClick(meter, Qt.MouseButton.LeftButton, pos=QPoint(100, 8))
    assert len(got) == 2


def test_a_threshold_set_elsewhere_is_shown_without_a_signal(qtbot: QtBot) -> None:
    meter = LevelMeter()
    qtbot.addWidget(meter)
    got: list[float] = []
    meter.threshold_changed.connect(got.append)
    meter.set_threshold(0.01)
    assert meter.threshold_db == -40.0 and got == []
    meter.set_level(0.1)
    meter.set_transmitting(True)
    assert meter.value() == 40 and meter.transmitting
    meter.show_threshold(True)
    meter.grab()  # paints (level, colour and marker) without a window system error
