"""The main window: channel tree, chat, whisper, audio and developer controls, diagnostics.

It holds no client logic: bus events come in through ``apply`` (connected to
the BusBridge) and are folded into a ClientView; user actions go out as bus
commands through the bridge, or to the ClientHost when the client itself must
restart (device changes). With no host, the window is attached to a client
it does not own, and the device pickers are disabled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PyQt6.QtCore import QModelIndex, QPoint, Qt
from PyQt6.QtGui import QCloseEvent, QKeyEvent, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from pipeline.core.client_view import ClientView
from pipeline.core.pins import CERTIFICATE_CHANGED
from pipeline.ipc import events as ev
from ui.audio_panel import AudioControls
from ui.busbridge import BusBridge
from ui.chat import ChatPanel
from ui.desired import Desired
from ui.model import CHANNEL, CHANNEL_ROLE, USER_ID_ROLE, ChannelModel
from ui.overlay import DiagnosticsOverlay
from ui.status import ConnectionStatus

if TYPE_CHECKING:
    from ui.host import ClientHost

WHISPER_KEY = Qt.Key.Key_F4  # held down: whisper to the user selected in the tree
SELF_SPEAKING_LEVEL = 0.02  # own microphone RMS above which the local user is lit in the tree


class MainWindow(QMainWindow):
    def __init__(
        self,
        bridge: BusBridge,
        host: ClientHost | None = None,
        devices: list[dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Voice chat")
        self.resize(1280, 760)
        self.bridge, self.host, self.clock = bridge, host, clock
        self._asking = False  # a changed-certificate question is open
        self.view = ClientView()
        self.desired = Desired()
        self._self_loud = False
        self._whisper_before_hold: int | None = None  # set while the whisper key is held

        self.model = ChannelModel()
        self.tree = QTreeView()
        self.tree.setModel(self.model)
        self.tree.setHeaderHidden(True)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.doubleClicked.connect(self._double_clicked)

        self.whisper_banner = QFrame()
        self.whisper_banner.setStyleSheet("QFrame { background: #efe3fa; border-radius: 4px; }")
        self.whisper_label = QLabel()
        self.whisper_label.setWordWrap(True)
        cancel = QPushButton("Cancel (Esc)")
        cancel.clicked.connect(lambda: self.set_whisper(0))
        row = QHBoxLayout(self.whisper_banner)
        row.setContentsMargins(8, 4, 4, 4)
        row.addWidget(self.whisper_label, 1)
        row.addWidget(cancel)
        self.whisper_banner.hide()

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.tree, 1)
        left_layout.addWidget(self.whisper_banner)

        self.chat = ChatPanel()
        self.chat.send.connect(lambda text: self.bridge.publish(ev.ChatCmd(text)))
        self.audio = AudioControls(devices or [])
        self.overlay = DiagnosticsOverlay(self.chat)

        split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.chat)
        split.addWidget(self.audio)
        split.setSizes([250, 720, 310])
        split.setStretchFactor(1, 1)
        self.setCentralWidget(split)
        self.status = ConnectionStatus()
        self.setStatusBar(self.status)

        QShortcut(
            QKeySequence("F3"),
            self,
            self.toggle_overlay,
            context=Qt.ShortcutContext.ApplicationShortcut,
        )
        QShortcut(QKeySequence("Esc"), self, lambda: self.set_whisper(0))
        self.audio.diagnostics_clicked.connect(self.toggle_overlay)
        self.audio.mute_toggled.connect(self._mute)
        self.audio.deafen_toggled.connect(self._deafen)
        self.audio.bitrate_chosen.connect(self._bitrate)
        self.audio.chaos_changed.connect(self._chaos)
        self.audio.input_chosen.connect(lambda text: self._change_media("input", text))
        self.audio.output_chosen.connect(lambda text: self._change_media("output", text))
        bridge.received.connect(self.apply)

        if host is None:
            self.audio.set_devices_fixed("attached to a client this window does not own")
        else:
            self.audio.input.select(host.source_text)
            self.audio.output.select(host.sink_text)
            self.desired.bitrate = host.cfg.bitrate
            self.desired.chaos = host.cfg.loss_percent
            self.audio.select_bitrate(host.cfg.bitrate)
            self.audio.chaos.setValue(round(host.cfg.loss_percent))
            host.started.connect(self._client_started)
            host.failed.connect(self._client_failed)

    def _ask_certificate(self, reason: str) -> None:
        """The relay showed another certificate than the pinned one: the user decides."""
        if self.host is None or self._asking:
            return
        self._asking = True
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "The server's certificate changed",
            f"{reason}.\n\nAccept the new certificate and connect?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.finished.connect(lambda result: self._certificate_answer(result, box))
        box.open()  # not exec(): the bus keeps being read meanwhile

    def _certificate_answer(self, result: int, box: QMessageBox) -> None:
        self._asking = False
        box.deleteLater()
        if self.host is not None and result == QMessageBox.StandardButton.Yes.value:
            self.host.restart(accept_new_certificate=True)

    # --- bus events in -----------------------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        """Fold one bus event into the window (the bridge's ``received`` slot)."""
        self.view.apply(event)
        if isinstance(event, ev.ConnectionState):
            self.status.show_state(event)
            if event.state == ev.FAILED and CERTIFICATE_CHANGED in event.reason:
                self._ask_certificate(event.reason)
            self.chat.set_enabled_for(event.state == ev.CONNECTED)
            if event.name and event.server:
                self.setWindowTitle(f"Voice chat \u2013 {event.name} @ {event.server}")
        elif isinstance(event, ev.Roster):
            self.model.set_roster(event)
            self.tree.expandAll()
            if self.desired.whisper and all(u.user_id != self.desired.whisper for u in event.users):
                self.chat.add(ev.Notice("whisper target left; talking to the channel again"))
                self.set_whisper(0)
        elif isinstance(event, ev.Activity | ev.InputLevel):
            if isinstance(event, ev.InputLevel):
                self.audio.set_level(event.level)
                self._self_loud = event.level > SELF_SPEAKING_LEVEL
            self._update_speaking()
        elif isinstance(event, ev.ChatLine | ev.Notice):
            self.chat.add(event, me=self.view.roster.me)
        elif isinstance(event, ev.DeviceStatus):
            self.status.show_link(self.view)
        elif isinstance(event, ev.StageReport):
            for cmd in self.desired.corrections(event):
                self.bridge.publish(cmd)
            self.overlay.refresh(self.view, self.clock(), sample=isinstance(event, ev.DecodeStats))
            self.status.show_link(self.view)

    def _update_speaking(self) -> None:
        speaking = set(self.view.speaking)
        if self._self_loud and not self.desired.muted and self.view.roster.me:
            speaking.add(self.view.roster.me)
        self.model.set_speaking(speaking)

    # --- user actions out --------------------------------------------------------------

    def toggle_overlay(self) -> None:
        if self.overlay.isVisible():
            self.overlay.hide()
        else:
            self.overlay.show_for(self.view)
        self.audio.diagnostics.setChecked(self.overlay.isVisible())

    def join(self, channel: str) -> None:
        if channel and channel != self.view.roster.channel:
            self.bridge.publish(ev.JoinCmd(channel))

    def set_whisper(self, user_id: int) -> None:
        """Whisper to one user (0: talk to the channel again)."""
        if user_id == self.desired.whisper:
            return
        self.desired.whisper = user_id
        self.bridge.publish(ev.WhisperCmd(user_id))
        self.model.set_whisper(user_id)
        if user_id:
            self.whisper_label.setText(
                f"Whispering to <b>{self.view.name_of(user_id)}</b>: only they hear you"
            )
        self.whisper_banner.setVisible(bool(user_id))

    def selected_user(self) -> int:
        """The user id selected in the tree (0 for none, a channel, or yourself)."""
        index = self.tree.currentIndex()
        if not index.isValid() or self.model.kind(index) == CHANNEL:
            return 0
        uid = int(index.data(USER_ID_ROLE))
        return 0 if uid == self.view.roster.me else uid

    def keyPressEvent(self, event: QKeyEvent | None) -> None:
        if event is not None and event.key() == WHISPER_KEY:
            target = self.selected_user()
            if not event.isAutoRepeat() and self._whisper_before_hold is None and target:
                self._whisper_before_hold = self.desired.whisper
                self.set_whisper(target)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent | None) -> None:
        if event is not None and event.key() == WHISPER_KEY:
            if not event.isAutoRepeat() and self._whisper_before_hold is not None:
                self.set_whisper(self._whisper_before_hold)
                self._whisper_before_hold = None
            return
        super().keyReleaseEvent(event)

    def _mute(self, muted: bool) -> None:
        self.desired.muted = muted
        self.bridge.publish(ev.MuteCmd(muted))
        self._update_speaking()

    def _deafen(self, deafened: bool) -> None:
        self.desired.deafened = deafened
        self.bridge.publish(ev.DeafenCmd(deafened))

    def _bitrate(self, bps: int) -> None:
        self.desired.bitrate = bps
        self.bridge.publish(ev.BitrateCmd(bps))

    def _chaos(self, percent: float) -> None:
        self.desired.chaos = percent
        self.bridge.publish(ev.ChaosCmd(percent))

    def _change_media(self, kind: str, text: str) -> None:
        if self.host is None:
            return
        self.status.showMessage(f"restarting the client with the new {kind}…", 3000)
        error = self.host.change_media(
            kind,
            text,
            channel=self.view.roster.channel or self.host.cfg.channel,
            loss_percent=self.desired.chaos,
            whisper=self.desired.whisper,
            bitrate=self.desired.bitrate,
        )
        if error:
            self.chat.add(ev.Notice(f"{kind} not changed: {error}"))
            picker = self.audio.input if kind == "input" else self.audio.output
            picker.select(self.host.source_text if kind == "input" else self.host.sink_text)

    def menu_for(self, index: QModelIndex) -> QMenu | None:
        """The tree's context menu for a row: join a channel, or whisper to a user."""
        if not index.isValid():
            return None
        menu = QMenu(self)
        if self.model.kind(index) == CHANNEL:
            channel = str(index.data(CHANNEL_ROLE))
            action = menu.addAction(f"Join {channel}")
            if action is not None:
                action.triggered.connect(lambda: self.join(channel))
                action.setEnabled(channel != self.view.roster.channel)
            return menu
        uid = int(index.data(USER_ID_ROLE))
        if uid == self.view.roster.me:
            return None
        target = 0 if uid == self.desired.whisper else uid
        label = "Stop whispering" if target == 0 else f"Whisper to {self.view.name_of(uid)}"
        action = menu.addAction(label)
        if action is not None:
            action.triggered.connect(lambda: self.set_whisper(target))
        return menu

    def _context_menu(self, pos: QPoint) -> None:
        menu = self.menu_for(self.tree.indexAt(pos))
        viewport = self.tree.viewport()
        if menu is not None and viewport is not None:
            menu.exec(viewport.mapToGlobal(pos))

    def _double_clicked(self, index: QModelIndex) -> None:
        if self.model.kind(index) == CHANNEL:
            self.join(str(index.data(CHANNEL_ROLE)))

    # --- the client process ----------------------------------------------------------------

    def _client_started(self, address: object) -> None:
        self.status.clear_failure()
        self.bridge.attach(address)  # type: ignore[arg-type]
        self.status.show_state(ev.ConnectionState(ev.CONNECTING, self._server()))

    def _client_failed(self, reason: str) -> None:
        self.bridge.detach()
        self.status.show_failure(reason)
        self.chat.add(ev.Notice(f"the client stopped: {reason}"))

    def _server(self) -> str:
        return f"{self.host.cfg.host}:{self.host.cfg.port}" if self.host is not None else ""

    def shutdown(self) -> None:
        """Detach from the bus and stop the client this window owns (idempotent)."""
        self.bridge.detach()
        if self.host is not None:
            self.host.stop()

    def closeEvent(self, event: QCloseEvent | None) -> None:
        self.shutdown()
        super().closeEvent(event)
