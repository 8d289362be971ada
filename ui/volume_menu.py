"""A volume slider (0-200 %) that sits in a context menu, for one other user."""

from __future__ import annotations

from PyQt6.QtCore import QObject, Qt, pyqtSignal
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QSlider, QWidget, QWidgetAction

from ui.volumes import MAX_PERCENT


class VolumeSlider(QWidgetAction):
    moved = pyqtSignal(int)  # the volume in percent, on every step

    def __init__(self, percent: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(8, 2, 8, 2)
        row.addWidget(QLabel("Volume"))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, MAX_PERCENT)
        self.slider.setSingleStep(5)
        self.slider.setPageStep(25)
        self.slider.setMinimumWidth(140)
        self.slider.setValue(percent)
        self.label = QLabel(f"{percent} %")
        self.label.setMinimumWidth(44)
        row.addWidget(self.slider, 1)
        row.addWidget(self.label)
        self.slider.valueChanged.connect(self._moved)
        self.setDefaultWidget(box)

    def _moved(self, percent: int) -> None:
        self.label.setText(f"{percent} %")
        self.moved.emit(percent)
