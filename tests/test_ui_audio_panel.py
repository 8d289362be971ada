"""Audio and developer controls: device choices, level meter, talk mode and push-to-talk
key, bitrate, chaos slider."""

from __future__ import annotations

from PyQt6.QtCore import Qt
from pytestqt.qtbot import QtBot

from ui.audio_panel import DEFAULT_PTT_KEY, AudioControls, DevicePicker, device_choices

DEVICES = [
    {"name": "Built-in Mic", "index": 0, "max_input_channels": 2, "max_output_channels": 0},
    {"name": "Speakers", "index": 1, "max_input_channels": 0, "max_output_channels": 2},
    {"name": "Headset", "index": 2, "max_input_channels": 1, "max_output_channels": 2},
]


def test_device_choices_by_kind() -> None:
    inputs = [spec for _, spec in device_choices(DEVICES, "input")]
    outputs = [spec for _, spec in device_choices(DEVICES, "output")]
    assert inputs == ["device", "device:0", "device:2", "tone:440", "speech", "silence"]
    assert outputs == ["device", "device:1", "device:2", "null"]
    assert [s for _, s in device_choices([], "output")] == ["device", "null"]


def test_picker_select_adds_files_without_emitting(qtbot: QtBot) -> None:
    picker = DevicePicker(device_choices(DEVICES, "input"), "input")
    qtbot.addWidget(picker)
    emitted: list[str] = []
    picker.chosen.connect(emitted.append)
    picker.select("/tmp/voice.wav")
    assert picker.spec() == "/tmp/voice.wav" and picker.currentText() == "voice.wav"
    picker.select("speech")
    assert picker.spec() == "speech"
    assert emitted == []
    picker.activated.emit(picker.findData("tone:440"))
    picker.setCurrentIndex(picker.findData("tone:440"))
    assert emitted == ["tone:440"]


def test_controls_emit(qtbot: QtBot) -> None:
    controls = AudioControls(DEVICES)
    qtbot.addWidget(controls)
    chaos: list[float] = []
    muted: list[bool] = []
    deaf: list[bool] = []
    rates: list[int] = []
    controls.chaos_changed.connect(chaos.append)
    controls.mute_toggled.connect(muted.append)
    controls.deafen_toggled.connect(deaf.append)
    controls.bitrate_chosen.connect(rates.append)
    controls.chaos.setValue(25)
    controls.mute.setChecked(True)
    controls.deafen.setChecked(True)
    controls.bitrate.activated.emit(controls.bitrate.findData(24000))
    assert chaos == [25.0] and controls.chaos_label.text() == "25 %"
    assert muted == [True] and deaf == [True] and rates == [24000]
    controls.set_level(0.1)
    assert controls.meter.value() == 40
    controls.select_bitrate(40000)
    assert controls.bitrate.currentData() == 40000
    controls.set_devices_fixed("attached")
    assert not controls.input.isEnabled() and not controls.output.isEnabled()


def test_deafen_mutes_and_undeafen_gives_the_mute_back(qtbot: QtBot) -> None:
    controls = AudioControls(DEVICES)
    qtbot.addWidget(controls)
    muted: list[bool] = []
    controls.mute_toggled.connect(muted.append)
    controls.deafen.setChecked(True)
    assert controls.mute.isChecked() and not controls.mute.isEnabled() and muted == [True]
    controls.deafen.setChecked(False)
    assert not controls.mute.isChecked() and controls.mute.isEnabled() and muted == [True, False]
    controls.mute.setChecked(True)
    controls.deafen.setChecked(True)
    controls.deafen.setChecked(False)
    assert controls.mute.isChecked()  # muted before deafening: still muted


def test_the_meter_says_when_you_are_muted(qtbot: QtBot) -> None:
    controls = AudioControls(DEVICES)
    qtbot.addWidget(controls)
    assert controls.meter_state.text() == "" and controls.meter.isEnabled()
    controls.mute.setChecked(True)
    assert controls.meter_state.text() == "muted" and not controls.meter.isEnabled()
    controls.set_level(0.1)
    assert controls.meter.value() == 40  # the level still shows: you can test the mic


def test_the_meter_says_when_the_server_muted_you(qtbot: QtBot) -> None:
    controls = AudioControls(DEVICES)
    qtbot.addWidget(controls)
    controls.set_server_muted(True)
    assert controls.meter_state.text() == "muted by the server" and not controls.meter.isEnabled()
    controls.mute.setChecked(True)
    assert controls.meter_state.text() == "muted by the server"  # the one nobody can undo here
    controls.set_server_muted(False)
    assert controls.meter_state.text() == "muted"
    controls.mute.setChecked(False)
    assert controls.meter_state.text() == "" and controls.meter.isEnabled()


def test_noise_suppression_and_the_tests_emit_and_show_what_runs(qtbot: QtBot) -> None:
    controls = AudioControls(DEVICES)
    qtbot.addWidget(controls)
    noise: list[bool] = []
    clicks: list[str] = []
    controls.noise_toggled.connect(noise.append)
    controls.tone_clicked.connect(lambda: clicks.append("tone"))
    controls.loopback_clicked.connect(lambda: clicks.append("loopback"))
    assert controls.noise.isChecked()
    controls.noise.setChecked(False)
    qtbot.mouseClick(controls.tone, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(controls.loopback, Qt.MouseButton.LeftButton)
    assert noise == [False] and clicks == ["tone", "loopback"]
    controls.show_test(tone=False, loopback=4.2)
    assert controls.test_state.text().startswith("Playing your microphone back (5 s)")
    assert controls.loopback.text() == "Stop hearing it" and not controls.tone.isEnabled()
    controls.show_test(tone=True, loopback=0.0)
    assert "tone" in controls.test_state.text() and not controls.tone.isEnabled()
    controls.show_test(tone=False, loopback=0.0)
    assert controls.test_state.text() == "" and controls.tone.isEnabled()
    assert controls.loopback.text() == "Hear my microphone"


def test_a_device_that_refuses_48_khz_mono_is_not_offered() -> None:
    marked = [
        {**DEVICES[0], "usable_input": False, "usable_output": False},
        {**DEVICES[2], "usable_input": True, "usable_output": True},
    ]
    assert [s for _, s in device_choices(marked, "input")][:2] == ["device", "device:2"]


def test_the_meter_shows_what_is_sent_and_the_threshold_only_in_voice_activation(
    qtbot: QtBot,
) -> None:
    controls = AudioControls(DEVICES)
    qtbot.addWidget(controls)
    assert controls.talk.currentData() == "vad" and controls.meter.threshold_shown
    controls.set_level(0.1, transmitting=True)
    assert controls.meter.transmitting and controls.meter_state.text() == "sending"
    controls.set_level(0.1, transmitting=False)
    assert not controls.meter.transmitting and controls.meter_state.text() == ""
    controls.talk.setCurrentIndex(controls.talk.findData("continuous"))
    controls.talk.activated.emit(controls.talk.currentIndex())
    assert not controls.meter.threshold_shown
    controls.select_talk("vad")
    assert controls.meter.threshold_shown
    controls.set_level(0.1, transmitting=True)
    controls.mute.setChecked(True)
    assert controls.meter_state.text() == "muted"  # muted says so, not "sending"


def test_the_push_to_talk_key_is_chosen_by_pressing_it(qtbot: QtBot) -> None:
    controls = AudioControls(DEVICES)
    qtbot.addWidget(controls)
    assert controls.key == DEFAULT_PTT_KEY and "F2" in controls.ptt.text()
    keys: list[int] = []
    controls.ptt_key_chosen.connect(keys.append)
    controls.show()
    controls.ptt_key.setFocus()
    qtbot.keyClick(controls.ptt_key, Qt.Key.Key_F7)
    qtbot.waitUntil(lambda: keys == [Qt.Key.Key_F7.value])  # the edit ends after a pause
    assert controls.key == Qt.Key.Key_F7.value and "F7" in controls.ptt.text()
