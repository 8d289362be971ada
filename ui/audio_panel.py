"""Audio controls (device pickers, mute, deafen, the level meter with voice activation's
threshold, bitrate, talk mode, the push-to-talk button and the key chosen for it, noise
suppression, the output and microphone tests) and developer settings.

Widgets only: each control emits a signal with the new value; the window
turns them into bus commands or a restart of the client. Device choices are
the strings ``python -m pipeline --input/--output`` accepts (pipeline/media/sources.py).
"""

from __future__ import annotations

import math
from typing import Any

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from pipeline.core.talk import CONTINUOUS, PTT, VAD
from ui.level_meter import LevelMeter

BITRATES_KBPS = (12, 16, 24, 32, 48, 64, 96, 128)
TALK_CHOICES = (("Voice activation", VAD), ("Continuous", CONTINUOUS), ("Push to talk", PTT))
DEFAULT_PTT_KEY = Qt.Key.Key_F2  # held down in the window: push to talk (ui/window.py)
PICK_FILE = "<file>"  # item data of the "WAV file…" entry
INPUT_TESTS = (
    ("Test tone (440 Hz)", "tone:440"),
    ("Speech-like test signal", "speech"),
    ("Silence", "silence"),
)
OUTPUT_TESTS = (("Discard (null)", "null"),)


def key_name(key: int) -> str:
    """A key as the user reads it ("F2", "Space")."""
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText) or "?"


def device_choices(devices: list[dict[str, Any]], kind: str) -> list[tuple[str, str]]:
    """(label, spec) for the default device, each usable device of that kind, and test options.

    A device marked ``usable_input``/``usable_output`` (pipeline.media.sound_device.
    usable_devices) is listed only if it takes 48 kHz mono; unmarked, if it has channels."""
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    out = [("Default sound device", "device")]
    for index, d in enumerate(devices):
        usable = d.get(f"usable_{kind}")
        if usable is False:
            continue
        if usable or int(d.get(key, 0) or 0) > 0:
            out.append(
                (
                    f"{d.get('name', 'device')} (#{d.get('index', index)})",
                    f"device:{d.get('index', index)}",
                )
            )
    out += list(INPUT_TESTS if kind == "input" else OUTPUT_TESTS)
    return out


class DevicePicker(QComboBox):
    """Sound devices, test sources/sinks and a WAV file; emits ``chosen`` with the spec string."""

    chosen = pyqtSignal(str)

    def __init__(self, choices: list[tuple[str, str]], kind: str) -> None:
        super().__init__()
        self._kind = kind
        for label, spec in choices:
            self.addItem(label, spec)
        self.addItem("WAV file…", PICK_FILE)
        self._last = self.spec()
        self.activated.connect(self._picked)

    def spec(self) -> str:
        return str(self.currentData())

    def select(self, spec: str) -> None:
        """Show ``spec`` as the current choice (adding it if it is a file) without emitting."""
        index = self.findData(spec)
        if index < 0:
            index = self.count() - 1
            self.insertItem(index, spec.rsplit("/", 1)[-1], spec)
        self.setCurrentIndex(index)
        self._last = spec

    def _picked(self, index: int) -> None:
        spec = str(self.itemData(index))
        if spec == PICK_FILE:
            spec = self._ask_file()
            if not spec:
                self.select(self._last)
                return
            self.select(spec)
        if spec != self._last:
            self._last = spec
            self.chosen.emit(spec)

    def _ask_file(self) -> str:
        if self._kind == "input":
            path, _ = QFileDialog.getOpenFileName(
                self, "Play a WAV file as the microphone", "", "WAV (*.wav)"
            )
        else:
            path, _ = QFileDialog.getSaveFileName(
                self, "Record what you hear to a WAV file", "", "WAV (*.wav)"
            )
        return path


class AudioControls(QWidget):
    input_chosen = pyqtSignal(str)
    output_chosen = pyqtSignal(str)
    mute_toggled = pyqtSignal(bool)
    deafen_toggled = pyqtSignal(bool)
    talk_chosen = pyqtSignal(str)  # a talk mode of pipeline/core/talk.py
    ptt_changed = pyqtSignal(bool)  # the push-to-talk button went down or up
    ptt_key_chosen = pyqtSignal(int)  # a Qt.Key: the key to hold for push-to-talk
    global_ptt_toggled = pyqtSignal(bool)  # the key works in other programs too (or not)
    threshold_changed = pyqtSignal(float)  # voice activation's RMS level, set on the meter
    bitrate_chosen = pyqtSignal(int)  # bits per second
    noise_toggled = pyqtSignal(bool)  # noise suppression on or off
    tone_clicked = pyqtSignal()  # play the test tone
    loopback_clicked = pyqtSignal()  # hear the microphone (or stop hearing it)
    chaos_changed = pyqtSignal(float)  # loss percent
    diagnostics_clicked = pyqtSignal()

    def __init__(self, devices: list[dict[str, Any]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.input = DevicePicker(device_choices(devices, "input"), "input")
        self.output = DevicePicker(device_choices(devices, "output"), "output")
        self.mute = QCheckBox("Mute microphone")
        self.deafen = QCheckBox("Deafen")
        self.sounds = QCheckBox("Sounds for joins, leaves and messages")
        self.talk = QComboBox()
        for label, mode in TALK_CHOICES:
            self.talk.addItem(label, mode)
        self.talk.setToolTip("when your microphone is sent")
        self.ptt = QPushButton()
        self.ptt.setEnabled(False)
        self.ptt_key = QKeySequenceEdit()
        self.ptt_key.setMaximumSequenceLength(1)
        self.ptt_key.setToolTip(
            "click, then press the key to hold for push-to-talk (while this window has focus)"
        )
        self.global_ptt = QCheckBox("Also in other programs")
        self.global_ptt.setToolTip(
            "the push-to-talk key works while another window has the focus (X11; not on "
            "Wayland); other programs stop getting that key meanwhile"
        )
        self.key = int(DEFAULT_PTT_KEY)
        self.select_ptt_key(self.key)
        self.meter = LevelMeter()
        self.meter_state = QLabel()  # says when the level goes nowhere (muted), or is sent
        self._self_muted = False
        self._server_muted = False
        self.noise = QCheckBox("Noise suppression")
        self.noise.setChecked(True)
        self.noise.setToolTip("take steady background noise (fans, hum, hiss) out of your voice")
        self.tone = QPushButton("Play test tone")
        self.tone.setToolTip("a short tone on the output chosen above")
        self.loopback = QPushButton("Hear my microphone")
        self.loopback.setToolTip(
            "play your microphone back to you for a few seconds; the others hear nothing meanwhile"
        )
        self.test_state = QLabel()
        self.test_state.setWordWrap(True)
        self.test_state.hide()  # a line only while a test runs
        self._mute_before_deafen = False
        self.bitrate = QComboBox()
        for kbps in BITRATES_KBPS:
            self.bitrate.addItem(f"{kbps} kbit/s", kbps * 1000)
        self.select_bitrate(48000)
        self.chaos = QSlider(Qt.Orientation.Horizontal)
        self.chaos.setRange(0, 100)
        self.chaos.setToolTip("drop this share of outgoing voice packets before the socket")
        self.chaos_label = QLabel("0 %")
        self.chaos_label.setMinimumWidth(40)
        self.diagnostics = QPushButton("Diagnostics (F3)")
        self.diagnostics.setCheckable(True)

        audio = QGroupBox("Audio")
        form = QFormLayout(audio)
        form.addRow("Input", self.input)
        level_row = QHBoxLayout()
        level_row.addWidget(self.meter, 1)
        level_row.addWidget(self.meter_state)
        form.addRow("Level", level_row)
        form.addRow("Output", self.output)
        form.addRow("Bitrate", self.bitrate)
        form.addRow("Talk", self.talk)
        ptt_row = QHBoxLayout()
        ptt_row.addWidget(self.ptt, 1)
        ptt_row.addWidget(QLabel("Key"))
        ptt_row.addWidget(self.ptt_key)
        form.addRow(ptt_row)
        form.addRow(self.global_ptt)
        toggles = QHBoxLayout()
        toggles.addWidget(self.mute)
        toggles.addWidget(self.deafen)
        form.addRow(toggles)
        form.addRow(self.noise)
        tests = QHBoxLayout()
        tests.addWidget(self.tone)
        tests.addWidget(self.loopback)
        form.addRow("Test", tests)
        form.addRow(self.test_state)
        form.addRow(self.sounds)
        dev = QGroupBox("Developer")
        dev_form = QFormLayout(dev)
        chaos_row = QHBoxLayout()
        chaos_row.addWidget(self.chaos, 1)
        chaos_row.addWidget(self.chaos_label)
        dev_form.addRow("Packet loss", chaos_row)
        dev_form.addRow(self.diagnostics)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(audio)
        layout.addWidget(dev)
        layout.addStretch(1)

        self.input.chosen.connect(self.input_chosen)
        self.output.chosen.connect(self.output_chosen)
        self.mute.toggled.connect(self._muted)
        self.deafen.toggled.connect(self._deafened)
        self.talk.activated.connect(lambda i: self._talk_chosen(str(self.talk.itemData(i))))
        self.ptt.pressed.connect(lambda: self.ptt_changed.emit(True))
        self.ptt.released.connect(lambda: self.ptt_changed.emit(False))
        self.ptt_key.editingFinished.connect(self._key_edited)
        self.global_ptt.toggled.connect(self.global_ptt_toggled)
        self.meter.threshold_changed.connect(self.threshold_changed)
        self.bitrate.activated.connect(
            lambda i: self.bitrate_chosen.emit(int(self.bitrate.itemData(i)))
        )
        self.noise.toggled.connect(self.noise_toggled)
        self.tone.clicked.connect(self.tone_clicked)
        self.loopback.clicked.connect(self.loopback_clicked)
        self.chaos.valueChanged.connect(self._chaos_moved)
        self.diagnostics.clicked.connect(self.diagnostics_clicked)
        self._show_mode(str(self.talk.currentData()))

    def _muted(self, muted: bool) -> None:
        self._self_muted = muted
        self._show_meter_state()
        self.mute_toggled.emit(muted)

    def set_server_muted(self, muted: bool) -> None:
        """The server's operator muted (or unmuted) us: the meter says so."""
        if muted != self._server_muted:
            self._server_muted = muted
            self._show_meter_state()

    def _show_meter_state(self) -> None:
        if self._server_muted:
            text = "muted by the server"
            tip = "the server's operator muted you: nobody hears this"
        elif self._self_muted:
            text, tip = "muted", "muted: nobody hears this"
        else:
            text = "sending" if self.meter.transmitting else ""
            tip = "your microphone goes to the others now" if text else ""
        colour = "#27ae60" if text == "sending" else "#c0392b"
        self.meter_state.setStyleSheet(f"color: {colour}; font-weight: bold")
        self.meter_state.setText(text)
        self.meter_state.setToolTip(tip)
        # greyed: the level shown goes to nobody
        self.meter.setEnabled(not (self._self_muted or self._server_muted))

    def set_transmitting(self, on: bool) -> None:
        """The talk mode sends the microphone now (or not): the meter turns green."""
        if on != self.meter.transmitting:
            self.meter.set_transmitting(on)
            self._show_meter_state()

    def select_ptt_key(self, key: int) -> None:
        """Show ``key`` as the push-to-talk key (remembered, or just chosen)."""
        self.key = key
        self.ptt_key.setKeySequence(QKeySequence(key))
        self.ptt.setText(f"Push to talk (hold, or {key_name(key)})")

    def _key_edited(self) -> None:
        seq = self.ptt_key.keySequence()
        if seq.isEmpty():  # cleared: the key stays what it was
            self.select_ptt_key(self.key)
            return
        key = seq[0].key().value  # the key alone: it is held, whatever the modifiers
        self.select_ptt_key(key)
        self.ptt_key.clearFocus()
        self.ptt_key_chosen.emit(key)

    def show_test(self, tone: bool, loopback: float) -> None:
        """What the audio test does now: the tone playing, and the seconds of microphone
        loopback left (0: none)."""
        self.tone.setEnabled(not tone and not loopback)
        self.loopback.setText("Stop hearing it" if loopback else "Hear my microphone")
        if loopback:
            self.test_state.setText(
                f"Playing your microphone back ({math.ceil(loopback)} s); "
                "the others hear nothing meanwhile"
            )
        elif tone:
            self.test_state.setText("Playing a tone on your output…")
        else:
            self.test_state.setText("")
        self.test_state.setVisible(bool(self.test_state.text()))

    def _deafened(self, deafened: bool) -> None:
        """Deafen mutes too (as in Mumble); undeafen gives back the mute chosen before."""
        if deafened:
            self._mute_before_deafen = self.mute.isChecked()
            self.mute.setChecked(True)
        self.mute.setEnabled(not deafened)
        self.deafen_toggled.emit(deafened)
        if not deafened:
            self.mute.setChecked(self._mute_before_deafen)

    def select_talk(self, mode: str) -> None:
        index = self.talk.findData(mode)
        if index >= 0:
            self.talk.setCurrentIndex(index)
        self._show_mode(mode)

    def _talk_chosen(self, mode: str) -> None:
        self._show_mode(mode)
        self.talk_chosen.emit(mode)

    def _show_mode(self, mode: str) -> None:
        self.ptt.setEnabled(mode == PTT)
        self.meter.show_threshold(mode == VAD)  # the threshold is voice activation's

    def set_level(self, level: float, transmitting: bool = False) -> None:
        self.meter.set_level(level)
        self.set_transmitting(transmitting)

    def select_bitrate(self, bps: int) -> None:
        index = self.bitrate.findData(bps)
        if index < 0:
            self.bitrate.addItem(f"{bps // 1000} kbit/s", bps)
            index = self.bitrate.count() - 1
        self.bitrate.setCurrentIndex(index)

    def set_devices_fixed(self, reason: str) -> None:
        """Disable the device pickers (e.g. attached to a client this UI does not own)."""
        for picker in (self.input, self.output):
            picker.setEnabled(False)
            picker.setToolTip(reason)

    def _chaos_moved(self, value: int) -> None:
        self.chaos_label.setText(f"{value} %")
        self.chaos_changed.emit(float(value))
