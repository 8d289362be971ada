"""The connect dialog: server and name, remembered between runs with QSettings, and the
server's password, if it has one (never remembered)."""

from __future__ import annotations

from dataclasses import dataclass, field

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QWidget

from pipeline.client.config import server_text, split_server

DEFAULT_SERVER = "127.0.0.1:8080"
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    host: str
    port: int
    name: str
    password: str = field(default="", repr=False)


def parse_server(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT -> (host, port); ValueError with a line a person can act on."""
    try:
        return split_server(text)
    except ValueError as exc:
        raise ValueError(f"{exc} (e.g. {DEFAULT_SERVER})") from None


def validate(server: str, name: str, password: str = "") -> ConnectInfo:
    host, port = parse_server(server)
    name = name.strip()
    if not name:
        raise ValueError("enter a name others will see")
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is longer than {MAX_NAME} characters")
    return ConnectInfo(host, port, name, password)


class ConnectDialog(QDialog):
    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to a voice chat server")
        self.settings = settings
        self.server = QLineEdit(str(settings.value("server", DEFAULT_SERVER)))
        self.server.setPlaceholderText(DEFAULT_SERVER)
        self.name = QLineEdit(str(settings.value("name", "")))
        self.name.setPlaceholderText("your name")
        self.name.setMaxLength(MAX_NAME)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("only if the server has one")
        self.error = QLabel()
        self.error.setStyleSheet("color: #c0392b")
        self.error.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        if ok is not None:
            ok.setText("Connect")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Server", self.server)
        form.addRow("Name", self.name)
        form.addRow("Password", self.password)
        form.addRow(self.error)
        form.addRow(buttons)
        (self.server if not self.server.text() else self.name).setFocus()
        self.info: ConnectInfo | None = None

    def accept(self) -> None:
        """Close only with a valid server and name; remember them for next time."""
        try:
            self.info = validate(self.server.text(), self.name.text(), self.password.text())
        except ValueError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        self.settings.setValue("server", server_text(self.info.host, self.info.port))
        self.settings.setValue("name", self.info.name)
        self.settings.sync()
        super().accept()
