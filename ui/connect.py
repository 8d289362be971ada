"""The connect dialog: server and name, remembered between runs with QSettings, the
server's password, if it has one (remembered only in a favourite, if asked), and the
favourites list (ui/favourites.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from ui.favourites import Favourites

from pipeline.client.config import servers_text, split_server, split_servers
from pipeline.core.pins import pin_key

DEFAULT_SERVER = "127.0.0.1:8080"
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    host: str  # the first server
    port: int
    name: str
    password: str = field(default="", repr=False)
    fallbacks: tuple[tuple[str, int], ...] = ()  # more servers, tried in turn

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [(self.host, self.port), *self.fallbacks]


def parse_server(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT -> (host, port); ValueError with a line a person can act on."""
    try:
        return split_server(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (e.g. {DEFAULT_SERVER})") from None


def parse_servers(text: str) -> list[tuple[str, int]]:
    """One server or several, comma-separated; ValueError naming the entry at fault."""
    try:
        return split_servers(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (e.g. {DEFAULT_SERVER}, or several: a:8080,b:8080)") from None


def validate(server: str, name: str, password: str = "") -> ConnectInfo:
    (host, port), *rest = parse_servers(server)
    name = name.strip()
    if not name:
        raise ValueError("enter a name others will see")
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is longer than {MAX_NAME} characters")
    return ConnectInfo(host, port, name, password, tuple(rest))


class ConnectDialog(QDialog):
    """Server, name and password, with the favourites list beside them.

    Picking a favourite fills the fields; double-clicking one connects. The
    address is checked as it is typed, and every error shows under the fields.
    """

    def __init__(
        self,
        settings: QSettings,
        parent: QWidget | None = None,
        favourites: Favourites | None = None,
    ) -> None:
        from ui.favourites import Favourites  # it uses validate() from here

        super().__init__(parent)
        self.setWindowTitle("Connect to a voice chat server")
        self.settings = settings
        self.favourites = favourites if favourites is not None else Favourites(settings)
        self.list = QListWidget()
        self.list.setMinimumWidth(180)
        self.list.currentTextChanged.connect(self._picked)
        self.list.itemDoubleClicked.connect(lambda _item: self.accept())
        self.label = QLineEdit()
        self.label.setPlaceholderText("a name for this favourite (optional)")
        self.server = QLineEdit(str(settings.value("server", DEFAULT_SERVER)))
        self.server.setPlaceholderText(DEFAULT_SERVER)
        self.server.textChanged.connect(self._server_edited)
        self.name = QLineEdit(str(settings.value("name", "")))
        self.name.setPlaceholderText("your name")
        self.name.setMaxLength(MAX_NAME)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("only if the server has one")
        self.save_password = QCheckBox("Save the password with the favourite (in plain text)")
        self.certificate = QLabel()
        self.certificate.setWordWrap(True)
        self.certificate.setStyleSheet("color: #666")
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c0392b")
        self.error.hide()
        self.save_button = QPushButton("Save as favourite")
        self.save_button.clicked.connect(self.save_favourite)
        self.delete_button = QPushButton("Delete favourite")
        self.delete_button.clicked.connect(self.delete_favourite)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        if ok is not None:
            ok.setText("Connect")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Favourite", self.label)
        form.addRow("Server", self.server)
        form.addRow("Name", self.name)
        form.addRow("Password", self.password)
        form.addRow("", self.save_password)
        form.addRow("Certificate", self.certificate)
        form.addRow(self.error)
        fav_buttons = QHBoxLayout()
        fav_buttons.addWidget(self.save_button)
        fav_buttons.addWidget(self.delete_button)
        fav_buttons.addStretch(1)
        form.addRow(fav_buttons)
        left = QVBoxLayout()
        left.addWidget(QLabel("Favourites"))
        left.addWidget(self.list, 1)
        top = QHBoxLayout()
        top.addLayout(left)
        top.addLayout(form, 1)
        outer = QVBoxLayout(self)
        outer.addLayout(top, 1)
        outer.addWidget(buttons)
        self._fill_list()
        self._server_edited(self.server.text())
        (self.server if not self.server.text() else self.name).setFocus()
        self.info: ConnectInfo | None = None

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def accept(self) -> None:
        """Close only with a valid server and name; remember them for next time."""
        try:
            self.info = validate(self.server.text(), self.name.text(), self.password.text())
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.settings.setValue("server", servers_text(self.info.servers))
        self.settings.setValue("name", self.info.name)
        self.settings.sync()
        super().accept()

    def save_favourite(self) -> None:
        """Keep the fields as a favourite (the password only if asked to)."""
        from ui.favourites import Favourite

        password = self.password.text() if self.save_password.isChecked() else ""
        try:
            fav = self.favourites.put(
                Favourite(self.label.text(), self.server.text(), self.name.text(), password)
            )
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self._fill_list(select=fav.label)

    def delete_favourite(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.favourites.remove(item.text())
            self._fill_list()

    def _fill_list(self, select: str = "") -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for fav in self.favourites.items:
            self.list.addItem(fav.label)
            if fav.label == select:
                self.list.setCurrentRow(self.list.count() - 1)
        self.list.blockSignals(False)
        self.delete_button.setEnabled(bool(select))

    def _picked(self, label: str) -> None:
        fav = self.favourites.find(label)
        self.delete_button.setEnabled(fav is not None)
        if fav is None:
            return
        self.label.setText(fav.label)
        self.server.setText(fav.server)
        self.name.setText(fav.name)
        self.password.setText(fav.password)
        self.save_password.setChecked(bool(fav.password))

    def _server_edited(self, text: str) -> None:
        """Check the addresses as they are typed; show the certificate pinned for each."""
        try:
            servers = parse_servers(text)
        except ValueError as exc:
            self.show_error(str(exc) if text.strip() else "")
            self.certificate.setText("")
            return
        self.show_error("")
        lines = []
        for host, port in servers:
            pin = self.favourites.pinned(pin_key(host, port))
            seen = f"pinned {pin}" if pin else "not seen yet: pinned on the first connection"
            lines.append(seen if len(servers) == 1 else f"{servers_text([(host, port)])}: {seen}")
        self.certificate.setText("\n".join(lines))
