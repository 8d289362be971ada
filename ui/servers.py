"""The Server menu and the not-connected banner: what the user does about the connection.

Widgets only: they render a :class:`~ui.connection.ConnectionModel` and emit the
user's intent (connect to this, disconnect, retry); the window carries it out.
"""

from __future__ import annotations

from collections.abc import Callable

from PyQt6.QtCore import QObject, QSettings, pyqtSignal
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ui import connection as cn
from ui.connect import ConnectDialog, ConnectInfo
from ui.favourites import Favourites


class ServerControls(QObject):
    connect_chosen = pyqtSignal(object)  # a ConnectInfo
    disconnect_chosen = pyqtSignal()
    retry_chosen = pyqtSignal()

    def __init__(
        self, parent: QWidget, settings: QSettings, favourites: Favourites | None = None
    ) -> None:
        super().__init__(parent)
        self.parent_widget = parent
        self.settings = settings
        self.favourites = favourites if favourites is not None else Favourites(settings)
        self.dialog: ConnectDialog | None = None
        self.menu = QMenu("&Server", parent)
        self.connect_action = self._action("&Connect…", lambda: self.open_dialog(), "Ctrl+K")
        self.disconnect_action = self._action("&Disconnect", self.disconnect_chosen.emit)
        self.retry_action = self._action("&Retry", self.retry_chosen.emit, "Ctrl+R")
        self.menu.addSeparator()
        self.favourites_header = self._action("Favourites", lambda: None)
        self.favourites_header.setEnabled(False)
        self._favourite_actions: list[QAction] = []
        self.menu.aboutToShow.connect(self.refresh_favourites)

        self.banner = QFrame()
        self.banner.setStyleSheet("QFrame { background: #fbeaea; border-radius: 4px; }")
        self.banner_title = QLabel()
        self.banner_title.setWordWrap(True)
        self.banner_title.setStyleSheet("font-weight: bold")
        self.banner_label = QLabel()
        self.banner_label.setWordWrap(True)
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self.retry_chosen.emit)
        self.change_button = QPushButton("Connect…")
        self.change_button.clicked.connect(lambda: self.open_dialog())
        column = QVBoxLayout(self.banner)
        column.setContentsMargins(8, 6, 8, 6)
        column.addWidget(self.banner_title)
        column.addWidget(self.banner_label)
        row = QHBoxLayout()
        row.addWidget(self.retry_button)
        row.addWidget(self.change_button)
        row.addStretch(1)
        column.addLayout(row)
        self.banner.hide()
        self.refresh_favourites()

    def _action(self, text: str, slot: Callable[[], object], shortcut: str = "") -> QAction:
        action = self.menu.addAction(text)
        assert action is not None  # Qt returns the action it made
        action.triggered.connect(lambda _checked=False: slot())
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        return action

    def show(self, model: cn.ConnectionModel) -> None:
        """Enable what makes sense in this phase; the banner says why we are not connected."""
        stopped = model.phase in cn.STOPPED_PHASES
        self.disconnect_action.setEnabled(not stopped)
        self.retry_action.setEnabled(model.can_retry)
        self.retry_button.setVisible(model.can_retry)
        self.banner.setVisible(stopped)
        self.banner_title.setText(model.title())
        if model.phase == cn.NOT_CONNECTED:
            self.banner_label.setText(
                "Pick a server to talk." if not model.server else "You left the server."
            )
        else:
            why = model.reason[:1].upper() + model.reason[1:]
            self.banner_label.setText(why if why.endswith((".", "?", "!")) else why + ".")
        self.change_button.setText("Other server…" if model.server else "Connect…")

    def refresh_favourites(self) -> None:
        """The menu lists every favourite; choosing one connects to it."""
        self.favourites.load()
        for action in self._favourite_actions:
            self.menu.removeAction(action)
        self._favourite_actions = []
        for fav in self.favourites.items:
            added = self.menu.addAction(f"{fav.label}  ({fav.name} @ {fav.server})")
            assert added is not None
            action = added
            action.setData(fav.label)
            action.triggered.connect(lambda _=False, label=fav.label: self.connect_favourite(label))
            self._favourite_actions.append(action)
        self.favourites_header.setText("Favourites" if self._favourite_actions else "No favourites")

    def favourite_actions(self) -> list[QAction]:
        return list(self._favourite_actions)

    def connect_favourite(self, label: str) -> None:
        fav = self.favourites.find(label)
        if fav is None:
            return
        try:
            info = fav.info()
        except ValueError as exc:
            self.open_dialog(error=str(exc))
            return
        self.connect_chosen.emit(info)

    def open_dialog(self, error: str = "", server: str = "", name: str = "") -> ConnectDialog:
        """The connect dialog, not modal (the bus keeps being read); Connect emits the choice."""
        if self.dialog is not None:
            self.dialog.close()
        dialog = ConnectDialog(self.settings, self.parent_widget, self.favourites)
        if server:
            dialog.server.setText(server)
        if name:
            dialog.name.setText(name)
        if error:
            dialog.show_error(error)
        dialog.accepted.connect(lambda: self._accepted(dialog))
        dialog.finished.connect(lambda _result: self.refresh_favourites())
        self.dialog = dialog
        dialog.open()
        return dialog

    def _accepted(self, dialog: ConnectDialog) -> None:
        if dialog.info is not None:
            info: ConnectInfo = dialog.info
            self.connect_chosen.emit(info)
