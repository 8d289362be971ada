"""The main window: channel tree, chat, whisper, audio and developer controls, diagnostics.

It holds no client logic: bus events come in through ``apply`` (connected to
the BusBridge) and are folded into a ClientView; user actions go out as bus
commands through the bridge, or to the ClientHost when the client itself must
restart (device changes). With no host, the window is attached to a client
it does not own, and the device pickers are disabled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PyQt6.QtCore import QEvent, QModelIndex, QObject, QPoint, QSettings, QSize, Qt, QTimer
from PyQt6.QtGui import QCloseEvent, QKeyEvent, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFrame,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from pipeline.client.config import servers_text
from pipeline.core.audio_test import (
    LOOPBACK,
    LOOPBACK_SECONDS,
    STOP,
    TONE,
    TONE_SECONDS,
    TestClock,
)
from pipeline.core.client_view import ClientView
from pipeline.core.pins import CERTIFICATE_CHANGED
from pipeline.core.presence_news import granted_name
from pipeline.core.talk import MODES, PTT
from pipeline.ipc import events as ev
from ui.audio_panel import DEFAULT_PTT_KEY, AudioControls
from ui.busbridge import BusBridge
from ui.chat import ChatPanel
from ui.connect import ConnectInfo
from ui.connection import ConnectionModel, plain_media_error
from ui.desired import Desired
from ui.global_hotkey import GlobalHotkey
from ui.model import CHANNEL, CHANNEL_ROLE, USER_ID_ROLE, ChannelModel, TreeDelegate
from ui.notify import JOIN, LEAVE, MESSAGE, Sounds
from ui.overlay import DiagnosticsOverlay
from ui.servers import ServerControls
from ui.speaking import SpeakingHold
from ui.status import ConnectionStatus
from ui.tray import Tray
from ui.volume_menu import VolumeSlider
from ui.volumes import UserVolumes, Volume

if TYPE_CHECKING:
    from ui.host import ClientHost

WHISPER_KEY = Qt.Key.Key_F4  # held down: whisper to the user selected in the tree
# What the audio settings remember (QSettings keys); python -m ui starts with them.
INPUT_KEY, OUTPUT_KEY, BITRATE_KEY = "audio/input", "audio/output", "audio/bitrate"
NOISE_KEY = "audio/noise_suppression"
TEST_TICK_MS = 250  # how often the loopback's seconds left are redrawn
# The talk mode, voice activation's threshold (an RMS level) and the push-to-talk key
# (a Qt.Key, held down: push to talk, switching to that mode); python -m ui starts with them.
TALK_KEY, THRESHOLD_KEY, PTT_KEY = "talk/mode", "talk/threshold", "talk/ptt_key"
GLOBAL_PTT_KEY = "talk/global_ptt"  # the key works in other programs too (ui/global_hotkey.py)
SELF_SPEAKING_LEVEL = 0.02  # own microphone RMS above which the local user is lit in the tree


class MainWindow(QMainWindow):
    def __init__(
        self,
        bridge: BusBridge,
        host: ClientHost | None = None,
        devices: list[dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        settings: QSettings | None = None,
        hotkey: GlobalHotkey | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Voice chat")
        self.resize(1280, 760)
        self.bridge, self.host, self.clock = bridge, host, clock
        self._asking = False  # a changed-certificate question is open
        self.view = ClientView()
        self.connection = ConnectionModel()
        self.settings = settings if settings is not None else QSettings()
        self.desired = Desired()
        self.volumes = UserVolumes(self.settings)
        self.speaking_hold = SpeakingHold()
        self._hold_timer = QTimer(self)
        self._hold_timer.setSingleShot(True)
        self._hold_timer.timeout.connect(self._update_speaking)
        self._self_loud = False
        self._whisper_before_hold: int | None = None  # set while the whisper key is held
        self._name_line = ""  # the granted-name line shown (said once, from either source)

        self.model = ChannelModel()
        self.tree = QTreeView()
        self.tree.setModel(self.model)
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(QSize(28, 12))  # the talking dot and the mute/deafen mark
        self.tree.setItemDelegate(TreeDelegate(self.tree))
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

        self.servers = ServerControls(self, self.settings)
        menu_bar = self.menuBar()
        if menu_bar is not None:
            menu_bar.addMenu(self.servers.menu)
        self.servers.connect_chosen.connect(self.connect_to)
        self.servers.disconnect_chosen.connect(self.disconnect)
        self.servers.retry_chosen.connect(self.retry)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.servers.banner)
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
        self.audio.talk_chosen.connect(self._talk)
        self.audio.ptt_changed.connect(self._push_to_talk)
        self.ptt_key = remembered_key(self.settings)
        self.audio.select_ptt_key(self.ptt_key)
        self.audio.ptt_key_chosen.connect(self._ptt_key)
        self.audio.threshold_changed.connect(self._threshold)
        self.hotkey = hotkey if hotkey is not None else GlobalHotkey(parent=self)
        self.hotkey.changed.connect(self._global_key)
        self.audio.global_ptt_toggled.connect(self.set_global_ptt)
        app = QApplication.instance()
        if app is not None:  # the push-to-talk key, whichever of our widgets has the focus
            app.installEventFilter(self)
        self.audio.bitrate_chosen.connect(self._bitrate)
        noise = str(self.settings.value(NOISE_KEY, True)).lower() not in ("false", "0")
        self.audio.noise.setChecked(noise)
        self.desired.noise_suppression = noise
        self.audio.noise_toggled.connect(self._noise)
        self._tone_clock, self._loop_clock = TestClock(), TestClock()
        self.loopback_seconds = LOOPBACK_SECONDS  # how long "Hear my microphone" lasts
        self._test_timer = QTimer(self)  # counts the loopback down, and ends the display
        self._test_timer.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse one fires early
        self._test_timer.timeout.connect(self._show_test)
        self.audio.tone_clicked.connect(self.test_tone)
        self.audio.loopback_clicked.connect(self.test_loopback)
        self.audio.chaos_changed.connect(self._chaos)
        self.audio.input_chosen.connect(lambda text: self._change_media("input", text))
        self.audio.output_chosen.connect(lambda text: self._change_media("output", text))
        bridge.received.connect(self.apply)
        self.sounds = Sounds(self.settings, self)
        self.audio.sounds.setChecked(self.sounds.enabled)
        self.audio.sounds.toggled.connect(self.sounds.set_enabled)
        self.tray = Tray(self, self.audio.mute, self.audio.deafen)
        self.tray.show_chosen.connect(self._raise)
        self.tray.quit_chosen.connect(self.close)  # closing stops the client; python -m ui quits

        if host is None:
            self.audio.set_devices_fixed("attached to a client this window does not own")
            self.servers.menu.setEnabled(False)
            self.connection.start("")  # the client runs elsewhere: its bus tells the rest
        else:
            self.audio.input.select(host.source_text)
            self.audio.output.select(host.sink_text)
            self.desired.bitrate = host.cfg.bitrate
            self.desired.talk = host.cfg.talk
            self.audio.select_talk(host.cfg.talk)
            self.desired.vad_threshold = host.cfg.vad_threshold
            self.audio.meter.set_threshold(host.cfg.vad_threshold)
            self.desired.chaos = host.cfg.loss_percent
            host.configure(noise_suppression=noise)
            self.audio.select_bitrate(host.cfg.bitrate)
            self.audio.chaos.setValue(round(host.cfg.loss_percent))
            host.started.connect(self._client_started)
            host.failed.connect(self._client_failed)
        self._render_connection()
        if str(self.settings.value(GLOBAL_PTT_KEY, False)).lower() in ("true", "1"):
            QTimer.singleShot(0, lambda: self.audio.global_ptt.setChecked(True))

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
            if event.state == ev.FAILED and CERTIFICATE_CHANGED in event.reason:
                self._ask_certificate(event.reason)
            if self.connection.apply(event):
                self._give_up()
            self._render_connection()
            if event.name and event.server and event.state == ev.CONNECTED:
                self.setWindowTitle(f"Voice chat \u2013 {event.name} @ {event.server}")
                self._check_name(event.name)
        elif isinstance(event, ev.Roster):
            me = next((u for u in event.users if u.user_id == event.me), None)
            self.audio.set_server_muted(me is not None and me.server_muted)
            self.model.set_roster(event)
            self.tree.expandAll()
            self._apply_gains()
            if self.desired.whisper and all(u.user_id != self.desired.whisper for u in event.users):
                self.chat.add(ev.Notice("whisper target left; talking to the channel again"))
                self.set_whisper(0)
        elif isinstance(event, ev.Activity | ev.InputLevel):
            if isinstance(event, ev.InputLevel):
                # Offline nothing reaches anyone, whatever the talk mode lets through.
                sent = event.transmitting and self.connection.online
                self.audio.set_level(event.level, sent)
                self._self_loud = event.level > SELF_SPEAKING_LEVEL
            else:
                self.speaking_hold.update(event.speaking, self.clock())
            self._update_speaking()
        elif isinstance(event, ev.ChatLine | ev.Notice):
            if not (isinstance(event, ev.Notice) and event.text == self._name_line):
                self.chat.add(event, me=self.view.roster.me)
                self._notify(event)
        elif isinstance(event, ev.DeviceStatus):
            self.status.show_link(self.view, self.connection.online)
        elif isinstance(event, ev.StageReport):
            for cmd in self.desired.corrections(event):
                self.bridge.publish(cmd)
            self.overlay.refresh(self.view, self.clock(), sample=isinstance(event, ev.DecodeStats))
            self.status.show_link(self.view, self.connection.online)

    def _render_connection(self) -> None:
        """Show the phase everywhere: status bar, banner and menu, a greyed tree offline."""
        online = self.connection.online
        self.status.show_phase(self.connection)
        self.status.show_link(self.view, online)
        self.servers.show(self.connection)
        self.tree.setEnabled(online)
        self.chat.set_enabled_for(online)
        if not online:
            self.audio.set_transmitting(False)
        self._update_speaking()

    def _notify(self, event: ev.ChatLine | ev.Notice) -> None:
        """A sound for a chat line from someone else, or someone joining or leaving your
        channel (the control process's lines: already only real changes)."""
        if isinstance(event, ev.ChatLine):
            if event.user_id != self.view.roster.me:
                self.sounds.play(MESSAGE)
            return
        mine = self.view.roster.channel
        if mine and event.text.endswith(f" joined {mine}"):
            self.sounds.play(JOIN)
        elif mine and event.text.endswith(f" left {mine}"):
            self.sounds.play(LEAVE)

    def _check_name(self, granted: str) -> None:
        """Say once if the relay gave us another name. The control process says so too,
        but a notice published in its first moments can miss the bus (ZeroMQ drops what
        a publisher sends before it learns the subscriptions); the state is re-sent."""
        asked = self.host.cfg.name if self.host is not None else ""
        if asked and granted != asked:
            line = granted_name(granted, asked)
            if line != self._name_line:
                self._name_line = line
                self.chat.add(ev.Notice(line))

    def _update_speaking(self) -> None:
        if not self.connection.online:
            self.speaking_hold.clear()
            self.model.set_speaking(set())  # nobody is heard, not even the last ones
            return
        now = self.clock()
        speaking = self.speaking_hold.lit(now)
        end = self.speaking_hold.next_change()
        if end is not None:  # a dot to put out once its hold is over
            self._hold_timer.start(max(1, round((end - now) * 1000)))
        enc = self.view.encode
        sending = enc is None or enc.talking  # voice activation or the key may hold it back
        if self._self_loud and sending and not self.desired.muted and self.view.roster.me:
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

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        """The push-to-talk key, down and up, wherever the focus is in this window; and
        the key let go when the window loses the focus (its key-up would go elsewhere)."""
        if event is None or not isinstance(watched, QWidget) or watched.window() is not self:
            return False
        kind = event.type()
        deactivated = kind == QEvent.Type.WindowDeactivate and watched is self
        if deactivated and self.desired.ptt and not self.hotkey.grabbed:
            self._push_to_talk(False)
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        assert isinstance(event, QKeyEvent)
        if event.key() != self.ptt_key or self._typing(event):
            return False
        if not event.isAutoRepeat():
            self._push_to_talk(kind == QEvent.Type.KeyPress)
        return True

    def _typing(self, event: QKeyEvent) -> bool:
        """The key goes to a text field instead: the key chooser, or one it types into."""
        focus = QApplication.focusWidget()
        if isinstance(focus, QKeySequenceEdit):
            return True
        text = event.text()
        return isinstance(focus, QLineEdit) and bool(text) and text.isprintable()

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

    def _talk(self, mode: str) -> None:
        self.desired.talk = mode
        self.bridge.publish(ev.TalkModeCmd(mode))
        if self.host is not None:
            self.host.configure(talk=mode)  # a restart (new server, device) keeps it
        self.settings.setValue(TALK_KEY, mode)
        if mode != PTT and self.desired.ptt:
            self._push_to_talk(False)

    def _push_to_talk(self, pressed: bool) -> None:
        """The push-to-talk key or button went down or up; down switches to that mode."""
        if pressed and self.desired.talk != PTT:
            self.audio.select_talk(PTT)
            self._talk(PTT)
        self.desired.ptt = pressed
        self.bridge.publish(ev.PushToTalkCmd(pressed))

    def _threshold(self, level: float) -> None:
        """Voice activation's threshold, set on the level meter."""
        self.desired.vad_threshold = level
        self.bridge.publish(ev.VadThresholdCmd(level))
        if self.host is not None:
            self.host.configure(vad_threshold=level)
        self.settings.setValue(THRESHOLD_KEY, level)

    def _ptt_key(self, key: int) -> None:
        self.ptt_key = key
        self.settings.setValue(PTT_KEY, key)
        if self.hotkey.grabbed:
            self.set_global_ptt(True)  # the new key in other programs too

    def set_global_ptt(self, on: bool) -> None:
        """The push-to-talk key in other programs too (where the platform allows it);
        what does not work is said, and the box unticked."""
        self.settings.setValue(GLOBAL_PTT_KEY, on)
        if not on:
            self.hotkey.ungrab()
            return
        why = self.hotkey.grab(self.ptt_key)
        if why:
            self.chat.add(ev.Notice(f"push-to-talk key not global: {why}"))
            self.audio.global_ptt.blockSignals(True)
            self.audio.global_ptt.setChecked(False)
            self.audio.global_ptt.blockSignals(False)
            self.audio.global_ptt.setToolTip(why)

    def _global_key(self, down: bool) -> None:
        if down != self.desired.ptt:
            self._push_to_talk(down)

    def _deafen(self, deafened: bool) -> None:
        self.desired.deafened = deafened
        self.bridge.publish(ev.DeafenCmd(deafened))

    def _bitrate(self, bps: int) -> None:
        self.desired.bitrate = bps
        self.bridge.publish(ev.BitrateCmd(bps))
        if self.host is not None:
            self.host.configure(bitrate=bps)  # a restart (new server, device) keeps it
        self.settings.setValue(BITRATE_KEY, bps)

    def _noise(self, on: bool) -> None:
        self.desired.noise_suppression = on
        self.bridge.publish(ev.NoiseSuppressionCmd(on))
        if self.host is not None:
            self.host.configure(noise_suppression=on)  # a restart keeps it
        self.settings.setValue(NOISE_KEY, on)

    def test_tone(self) -> None:
        """Play a short tone on the chosen output (the decode stage mixes it in)."""
        self.bridge.publish(ev.AudioTestCmd(TONE, TONE_SECONDS))
        self._tone_clock.start(self.clock(), TONE_SECONDS)
        self._show_test()

    def test_loopback(self) -> None:
        """Play the microphone back here for a few seconds, nothing sent (or stop that)."""
        if self._loop_clock.active(self.clock()):
            self.bridge.publish(ev.AudioTestCmd(STOP))
            self._loop_clock.stop()
            self._tone_clock.stop()
        else:
            self.bridge.publish(ev.AudioTestCmd(LOOPBACK, self.loopback_seconds))
            self._loop_clock.start(self.clock(), self.loopback_seconds)
        self._show_test()

    def _show_test(self) -> None:
        now = self.clock()
        tone = self._tone_clock.active(now)
        left = max(0.0, self._loop_clock.until - now) if self._loop_clock.active(now) else 0.0
        self.audio.show_test(tone, left)
        if tone or left:
            # A tick every quarter second, and one just after the nearer end: the display
            # ends when the test does, not up to a quarter second later.
            ends = [c.until - now for c in (self._tone_clock, self._loop_clock) if c.active(now)]
            self._test_timer.start(min(TEST_TICK_MS, math.ceil(min(ends) * 1000) + 1))
        else:
            self._test_timer.stop()

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
            self.chat.add(ev.Notice(f"{kind} not changed: {plain_media_error(error)}"))
            picker = self.audio.input if kind == "input" else self.audio.output
            picker.select(self.host.source_text if kind == "input" else self.host.sink_text)
        else:
            self.settings.setValue(INPUT_KEY if kind == "input" else OUTPUT_KEY, text)

    def _volume_server(self) -> str:
        """The server the volumes are remembered for (names are per server)."""
        return self.connection.server or self.view.state.server

    def _apply_gains(self) -> None:
        """Tell the decode stage each present user's volume, from what was chosen for them."""
        roster = self.view.roster
        server = self._volume_server()
        gains = self.volumes.gains(server, roster.users, roster.me)
        for uid in sorted(set(gains) | set(self.desired.gains)):
            if gains.get(uid, 1.0) != self.desired.gains.get(uid, 1.0):
                self.bridge.publish(ev.GainCmd(uid, gains.get(uid, 1.0)))
        self.desired.gains = gains
        shown = {}
        for u in roster.users:
            vol = self.volumes.get(server, u.name)
            if u.user_id != roster.me and vol != Volume():
                shown[u.user_id] = (vol.percent, vol.muted)
        self.model.set_volumes(shown)

    def volume_of(self, user_id: int) -> Volume:
        return self.volumes.get(self._volume_server(), self.view.name_of(user_id))

    def set_volume(
        self, user_id: int, percent: int | None = None, muted: bool | None = None
    ) -> None:
        """Play ``user_id`` at ``percent`` and/or mute them here; remembered by name."""
        old = self.volume_of(user_id)
        new = Volume(
            old.percent if percent is None else percent, old.muted if muted is None else muted
        )
        self.volumes.set(self._volume_server(), self.view.name_of(user_id), new)
        self._apply_gains()

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
        menu.addSeparator()
        vol = self.volume_of(uid)
        slider = VolumeSlider(vol.percent, menu)
        slider.moved.connect(lambda percent: self.set_volume(uid, percent=percent))
        menu.addAction(slider)
        mute = menu.addAction("Mute for me")
        if mute is not None:
            mute.setCheckable(True)
            mute.setChecked(vol.muted)
            mute.setToolTip("only you stop hearing them; nobody else is told")
            mute.toggled.connect(lambda on: self.set_volume(uid, muted=on))
        reset = menu.addAction("Reset volume")
        if reset is not None:
            reset.setEnabled(vol != Volume())
            reset.triggered.connect(lambda: self.set_volume(uid, percent=100, muted=False))
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

    def connect_to(self, info: ConnectInfo, channel: str = "") -> None:
        """Connect to a server (another one, or the same one as someone else): a new client."""
        if self.host is None:
            return
        self.model.set_roster(ev.Roster(0, ""))  # another server's tree, not the old one
        self.view.roster = ev.Roster(0, "")
        self.setWindowTitle("Voice chat")
        self.host.restart(
            host=info.host,
            port=info.port,
            fallbacks=info.fallbacks,
            name=info.name,
            password=info.password,
            channel=channel,
            accept_new_certificate=False,
        )

    def retry(self) -> None:
        """Try the same server again (after giving up, a failure or a Disconnect)."""
        if self.host is not None and self.host.cfg.port:
            self.host.restart()

    def disconnect(self) -> None:
        """Leave the server and stop the client; the window stays, its tree greyed out."""
        if self.host is None:
            return
        self.bridge.detach()
        self.host.stop()
        self.connection.disconnected()
        self._render_connection()

    def _give_up(self) -> None:
        """The first attempts all failed: stop trying; the banner says why and offers Retry."""
        self.bridge.detach()
        if self.host is not None:
            self.host.stop()

    def _client_started(self, address: object) -> None:
        self.connection.start(self._server())
        self.bridge.attach(address)  # type: ignore[arg-type]
        self._render_connection()

    def _client_failed(self, reason: str) -> None:
        self.bridge.detach()
        self.connection.client_failed(reason)
        self._render_connection()
        self.chat.add(ev.Notice(f"the client stopped: {self.connection.reason}"))

    def _server(self) -> str:
        return servers_text(self.host.cfg.servers) if self.host is not None else ""

    def shutdown(self) -> None:
        """Detach from the bus and stop the client this window owns (idempotent)."""
        self.bridge.detach()
        self.sounds.close()
        self.hotkey.close()
        if self.host is not None:
            self.host.stop()

    def _raise(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def closeEvent(self, event: QCloseEvent | None) -> None:
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        self.tray.hide()
        self.shutdown()
        super().closeEvent(event)


def remembered_key(settings: QSettings) -> int:
    """The push-to-talk key chosen last time (a Qt.Key), else F2."""
    value = str(settings.value(PTT_KEY, ""))
    return int(value) if value.isdigit() and int(value) > 0 else int(DEFAULT_PTT_KEY)


def remembered_talk(settings: QSettings, default: str) -> tuple[str, float]:
    """The talk mode and voice activation's threshold chosen last time (or ``default``
    and none); a value that is not one is forgotten."""
    mode = str(settings.value(TALK_KEY, default))
    try:
        threshold = float(str(settings.value(THRESHOLD_KEY, 0.0)))
    except ValueError:
        threshold = 0.0
    if not 0.0 <= threshold <= 1.0:
        threshold = 0.0
    return (mode if mode in MODES else default), threshold
