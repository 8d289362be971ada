"""The tray icon: mute, deafen, show the window and quit, where the desktop has a tray.

Widgets only: the actions mirror the audio panel's checkboxes (either one changes
the other), and Quit asks the window to close, which stops the client.
"""

from __future__ import annotations

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtGui import QAction, QColor, QIcon, QPainter, QPixmap
from PyQt6.QtWidgets import QCheckBox, QMenu, QSystemTrayIcon, QWidget


def _tray_icon(color: QColor) -> QIcon:
    pix = QPixmap(32, 32)
    pix.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(color)
    painter.setPen(QColor(40, 40, 40))
    painter.drawEllipse(3, 3, 26, 26)
    painter.end()
    return QIcon(pix)


class Tray(QObject):
    show_chosen = pyqtSignal()
    quit_chosen = pyqtSignal()

    def __init__(self, parent: QWidget, mute: QCheckBox, deafen: QCheckBox) -> None:
        super().__init__(parent)
        self.icon = QSystemTrayIcon(_tray_icon(QColor(46, 160, 67)), parent)
        self.icon.setToolTip("Voice chat")
        self.menu = QMenu(parent)
        self.mute_action = self._checkable("Mute microphone", mute)
        self.deafen_action = self._checkable("Deafen", deafen)
        deafen.toggled.connect(lambda on: self.mute_action.setEnabled(not on))
        self.menu.addSeparator()
        show = self.menu.addAction("Show window")
        quit_ = self.menu.addAction("Quit")
        if show is not None:
            show.triggered.connect(self.show_chosen.emit)
        if quit_ is not None:
            quit_.triggered.connect(self.quit_chosen.emit)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(lambda _reason: self.show_chosen.emit())
        self._muted_icon = _tray_icon(QColor(200, 50, 40))
        self._live_icon = self.icon.icon()
        mute.toggled.connect(self._show_muted)
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.icon.show()

    @property
    def available(self) -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable()

    def _checkable(self, text: str, box: QCheckBox) -> QAction:
        action = self.menu.addAction(text)
        assert action is not None  # Qt returns the action it made
        action.setCheckable(True)
        action.setChecked(box.isChecked())

        def chosen(on: bool) -> None:
            if box.isEnabled():
                box.setChecked(on)
            else:  # mute while deafened: the panel says no, and so does the menu
                action.setChecked(box.isChecked())

        action.toggled.connect(chosen)
        box.toggled.connect(action.setChecked)
        return action

    def _show_muted(self, muted: bool) -> None:
        self.icon.setIcon(self._muted_icon if muted else self._live_icon)
        self.icon.setToolTip("Voice chat (muted)" if muted else "Voice chat")

    def hide(self) -> None:
        self.icon.hide()
