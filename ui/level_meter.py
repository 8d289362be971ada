"""The microphone's level meter, on which voice activation's threshold is set.

A bar from -60 to 0 dBFS: grey while nothing is sent, green while the talk mode
sends (``set_transmitting``), greyed out altogether while muted (disabled). In voice
activation the threshold is a marker on the bar: click or drag to move it, and
speech quieter than it stays off the wire (pipeline/core/talk.py); at the far left
there is none. Widget only: it emits ``threshold_changed`` with the RMS level (0..1)
and the window sends it on.
"""

from __future__ import annotations

import math

from PyQt6.QtCore import QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

FLOOR_DB = -60.0  # the meter's left end; a threshold there is none
SENDING = QColor("#27ae60")
IDLE = QColor("#9aa5ab")
MARKER = QColor("#c0392b")


def level_db(level: float) -> float:
    """An RMS level (0..1) in dBFS, floored at FLOOR_DB."""
    if level <= 0.0:
        return FLOOR_DB
    return max(FLOOR_DB, min(0.0, 20.0 * math.log10(level)))


def db_level(db: float) -> float:
    """The RMS level (0..1) of ``db`` dBFS; 0.0 at or below FLOOR_DB (no threshold)."""
    return 0.0 if db <= FLOOR_DB else 10.0 ** (min(db, 0.0) / 20.0)


class LevelMeter(QWidget):
    threshold_changed = pyqtSignal(float)  # the RMS level the user set (0: none)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._db = FLOOR_DB
        self._threshold_db = FLOOR_DB
        self.transmitting = False
        self._marker = False  # voice activation: the threshold is shown and set here
        self.setMinimumWidth(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._tip()

    def sizeHint(self) -> QSize:
        return QSize(200, 16)

    # --- what it shows -------------------------------------------------------------------

    def set_level(self, level: float) -> None:
        self._db = level_db(level)
        self.update()

    def value(self) -> int:
        """The level shown, in whole dB above the floor (0..60)."""
        return round(self._db - FLOOR_DB)

    def set_transmitting(self, on: bool) -> None:
        if on != self.transmitting:
            self.transmitting = on
            self.update()

    @property
    def threshold(self) -> float:
        """The threshold's RMS level (0..1; 0: none)."""
        return db_level(self._threshold_db)

    @property
    def threshold_db(self) -> float:
        return self._threshold_db

    def set_threshold(self, level: float) -> None:
        """Show a threshold set elsewhere (remembered, or a report) without emitting."""
        self._threshold_db = level_db(level)
        self._tip()
        self.update()

    def show_threshold(self, shown: bool) -> None:
        """Voice activation: the marker is there and can be moved; otherwise neither."""
        self._marker = shown
        self.setCursor(Qt.CursorShape.SizeHorCursor if shown else Qt.CursorShape.ArrowCursor)
        self._tip()
        self.update()

    @property
    def threshold_shown(self) -> bool:
        return self._marker

    def _tip(self) -> None:
        tip = "microphone level, -60..0 dBFS; green while it is sent"
        if self._marker:
            where = (
                "none: whatever sounds like speech is sent"
                if self._threshold_db <= FLOOR_DB
                else f"{self._threshold_db:.0f} dBFS"
            )
            tip += f"\nvoice activation threshold: {where} (click or drag to set)"
        self.setToolTip(tip)

    # --- setting the threshold -----------------------------------------------------------

    def x_of(self, db: float) -> float:
        """Where ``db`` dBFS is on the bar, in widget pixels."""
        return (db - FLOOR_DB) / -FLOOR_DB * max(1, self.width() - 1)

    def db_at(self, x: float) -> float:
        return FLOOR_DB + max(0.0, min(1.0, x / max(1, self.width() - 1))) * -FLOOR_DB

    def mousePressEvent(self, event: QMouseEvent | None) -> None:
        self._drag(event)

    def mouseMoveEvent(self, event: QMouseEvent | None) -> None:
        if event is not None and event.buttons() & Qt.MouseButton.LeftButton:
            self._drag(event)

    def _drag(self, event: QMouseEvent | None) -> None:
        if event is None or not self._marker or not self.isEnabled():
            return
        db = round(self.db_at(event.position().x()))
        if db != self._threshold_db:
            self._threshold_db = float(db)
            self._tip()
            self.update()
            self.threshold_changed.emit(self.threshold)

    # --- painting ------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent | None) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        outer = QRectF(0.5, 2.5, self.width() - 1.0, self.height() - 5.0)
        p.setPen(QPen(palette.mid().color(), 1))
        p.setBrush(palette.base())
        p.drawRoundedRect(outer, 2, 2)
        if self._db > FLOOR_DB:
            bar = QRectF(outer.left() + 1, outer.top() + 1, self.x_of(self._db), outer.height() - 2)
            colour = SENDING if self.transmitting else IDLE
            if not self.isEnabled():
                colour = palette.mid().color()
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(colour)
            p.drawRect(bar)
        if self._marker:
            x = max(1.5, self.x_of(self._threshold_db))
            colour = MARKER if self.isEnabled() else palette.mid().color()
            p.setPen(QPen(colour, 2))
            p.drawLine(int(x), 0, int(x), self.height())
        p.end()
