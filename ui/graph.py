"""A small live graph of packet loss and jitter-buffer depth over the last minute (QPainter).

QPainter rather than pyqtgraph: two polylines and a grid redrawn twice a
second need no plotting library, and the UI stays one dependency lighter.
"""

from __future__ import annotations

from collections import deque

from PyQt6.QtCore import QPointF, QRectF, QSize, Qt
from PyQt6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen, QPolygonF
from PyQt6.QtWidgets import QWidget

WINDOW_S = 60.0
LOSS_COLOR = QColor(255, 99, 88)
DEPTH_COLOR = QColor(90, 170, 255)
GRID_COLOR = QColor(255, 255, 255, 40)
TEXT_COLOR = QColor(220, 220, 220)


class History:
    """(time, loss %, jitter depth) samples of the last ``window`` seconds. Sans-I/O."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self.samples: deque[tuple[float, float, float]] = deque()

    def add(self, now: float, loss: float, depth: float) -> None:
        self.samples.append((now, loss, depth))
        while self.samples and now - self.samples[0][0] > self.window:
            self.samples.popleft()

    def latest(self) -> float:
        return self.samples[-1][0] if self.samples else 0.0

    def loss_scale(self) -> float:
        """The loss axis' top: the smallest of 5, 10, 25, 50, 100 % that fits every sample."""
        top = max((s[1] for s in self.samples), default=0.0)
        return next(s for s in (5.0, 10.0, 25.0, 50.0, 100.0) if top <= s or s == 100.0)

    def depth_scale(self) -> float:
        """The depth axis' top in frames: a multiple of 4 that fits every sample."""
        top = max((s[2] for s in self.samples), default=0.0)
        return max(4.0, 4.0 * -(-top // 4))


class LossJitterGraph(QWidget):
    def __init__(self, history: History, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = history
        self.setMinimumSize(280, 110)

    def sizeHint(self) -> QSize:
        return QSize(360, 130)

    def paintEvent(self, event: QPaintEvent | None) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(max(6.0, font.pointSizeF() - 1.5))
        p.setFont(font)
        h = self.history
        loss_top, depth_top = h.loss_scale(), h.depth_scale()
        plot = QRectF(self.rect()).adjusted(30, 16, -26, -14)
        p.setPen(QPen(GRID_COLOR, 1))
        for i in range(5):
            y = plot.top() + plot.height() * i / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        for i in range(7):
            x = plot.left() + plot.width() * i / 6
            p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
        p.setPen(TEXT_COLOR)
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        left = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        for frac, anchor in ((0.0, plot.top()), (1.0, plot.bottom())):
            p.drawText(QRectF(0, anchor - 7, 27, 14), right, f"{loss_top * (1 - frac):.0f}%")
            p.drawText(
                QRectF(plot.right() + 3, anchor - 7, 26, 14), left, f"{depth_top * (1 - frac):.0f}"
            )
        p.drawText(QRectF(plot.left(), plot.bottom(), 60, 14), left, "-60 s")
        p.drawText(QRectF(plot.right() - 40, plot.bottom(), 40, 14), right, "now")
        p.setPen(LOSS_COLOR)
        p.drawText(QRectF(plot.left(), 0, 160, 15), left, "loss % (10 s)")
        p.setPen(DEPTH_COLOR)
        p.drawText(QRectF(plot.right() - 160, 0, 160, 15), right, "jitter depth (frames)")
        now = h.latest()
        for column, top, color in ((1, loss_top, LOSS_COLOR), (2, depth_top, DEPTH_COLOR)):
            points = QPolygonF()
            for sample in h.samples:
                x = plot.right() - (now - sample[0]) / h.window * plot.width()
                y = plot.bottom() - min(sample[column], top) / top * plot.height()
                points.append(QPointF(x, y))
            p.setPen(QPen(color, 1.8))
            p.drawPolyline(points)
        p.end()
