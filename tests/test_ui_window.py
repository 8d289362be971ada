"""The main window, fed bus events directly or through a real in-process broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PyQt6.QtCore import QEvent, QPoint, QSettings, Qt
from PyQt6.QtGui import QKeyEvent
from PyQt6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker, BusClient
from relay.protocol.messages import UserInfo
from tests.conftest import Keyboard
from ui.busbridge import BusBridge
from ui.connect import ConnectInfo
from ui.global_hotkey import GlobalHotkey
from ui.model import SPEAKING_ROLE, VOLUME_ROLE
from ui.volume_menu import VolumeSlider
from ui.window import (
    BITRATE_KEY,
    GLOBAL_PTT_KEY,
    PTT_KEY,
    TALK_KEY,
    THRESHOLD_KEY,
    MainWindow,
    remembered_key,
    remembered_talk,
)


class Recorder(BusBridge):
    """A bridge that keeps what the window publishes instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[ev.Event] = []

    def publish(self, event: ev.Event) -> None:
        self.sent.append(event)


@pytest.fixture
def window(qtbot: QtBot, tmp_path: Path) -> Iterator[MainWindow]:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    w = MainWindow(Recorder(), clock=lambda: 100.0, settings=settings)
    qtbot.addWidget(w)
    w.show()
    w.apply(ev.ConnectionState(ev.CONNECTED, "h:1", user_id=1, name="alice", channel="Lobby"))
    yield w
    w.shutdown()


def sent(w: MainWindow) -> list[ev.Event]:
    assert isinstance(w.bridge, Recorder)
    return w.bridge.sent


ROSTER = ev.Roster(
    1,
    "Lobby",
    ["Lobby", "Gaming"],
    [UserInfo(1, "alice", "Lobby"), UserInfo(2, "bob", "Lobby"), UserInfo(3, "carol", "Gaming")],
)


def test_tree_follows_presence_events(window: MainWindow) -> None:
    window.apply(ROSTER)
    assert window.model.users_in("Lobby") == ["alice", "bob"]
    assert window.tree.isExpanded(window.model.index(0, 0))
    window.apply(
        ev.Roster(
            1,
            "Lobby",
            ["Lobby", "Gaming"],
            [UserInfo(1, "alice", "Lobby"), UserInfo(3, "carol", "Gaming")],
        )
    )
    assert window.model.users_in("Lobby") == ["alice"]
    window.apply(ev.Activity([3]))
    carol = window.model.user_item(3)
    assert carol is not None and carol.data(SPEAKING_ROLE) is True


def test_own_voice_lights_the_local_user_unless_muted(window: MainWindow) -> None:
    window.apply(ROSTER)
    window.apply(ev.InputLevel(0.3))
    me = window.model.user_item(1)
    assert me is not None and me.data(SPEAKING_ROLE) is True
    window.audio.mute.setChecked(True)
    me = window.model.user_item(1)
    assert me is not None and me.data(SPEAKING_ROLE) is False
    assert ev.MuteCmd(True) in sent(window)


def test_own_voice_is_not_lit_while_the_talk_mode_holds_it_back(window: MainWindow) -> None:
    window.apply(ROSTER)
    window.apply(ev.EncodeStats(talk_mode="vad", talking=False))
    window.apply(ev.InputLevel(0.3))  # loud, but voice activation sends nothing (yet)
    me = window.model.user_item(1)
    assert me is not None and me.data(SPEAKING_ROLE) is False
    window.apply(ev.EncodeStats(talk_mode="vad", talking=True))
    window.apply(ev.InputLevel(0.3))
    me = window.model.user_item(1)
    assert me is not None and me.data(SPEAKING_ROLE) is True


def test_talk_mode_picker_and_push_to_talk(window: MainWindow, qtbot: QtBot) -> None:
    audio = window.audio
    assert not audio.ptt.isEnabled()  # voice activation by default
    audio.talk.setCurrentIndex(audio.talk.findData("ptt"))
    audio.talk.activated.emit(audio.talk.currentIndex())
    assert audio.ptt.isEnabled()
    qtbot.mousePress(audio.ptt, Qt.MouseButton.LeftButton)
    qtbot.mouseRelease(audio.ptt, Qt.MouseButton.LeftButton)
    assert sent(window) == [ev.TalkModeCmd("ptt"), ev.PushToTalkCmd(True), ev.PushToTalkCmd(False)]
    sent(window).clear()
    audio.talk.setCurrentIndex(audio.talk.findData("continuous"))
    audio.talk.activated.emit(audio.talk.currentIndex())
    assert sent(window) == [ev.TalkModeCmd("continuous")]


def test_holding_f2_pushes_to_talk_from_any_mode(window: MainWindow, qtbot: QtBot) -> None:
    qtbot.keyPress(window.tree, Qt.Key.Key_F2)
    assert window.audio.talk.currentData() == "ptt"
    qtbot.keyRelease(window.tree, Qt.Key.Key_F2)
    assert sent(window) == [ev.TalkModeCmd("ptt"), ev.PushToTalkCmd(True), ev.PushToTalkCmd(False)]
    assert not window.desired.ptt


def test_a_chosen_push_to_talk_key_is_held_anywhere_in_the_window_and_remembered(
    window: MainWindow, qtbot: QtBot
) -> None:
    window.audio.select_talk("ptt")
    window.audio.ptt_key_chosen.emit(Qt.Key.Key_Space.value)  # as the key chooser does
    assert remembered_key(window.settings) == Qt.Key.Key_Space.value
    assert int(window.settings.value(PTT_KEY)) == Qt.Key.Key_Space.value
    qtbot.keyPress(window.tree, Qt.Key.Key_F2)  # the old key does nothing now
    qtbot.keyRelease(window.tree, Qt.Key.Key_F2)
    assert not any(isinstance(e, ev.PushToTalkCmd) for e in sent(window))
    qtbot.keyPress(window.tree, Qt.Key.Key_Space)
    assert window.desired.ptt and sent(window)[-1] == ev.PushToTalkCmd(True)
    repeat = QKeyEvent(
        QEvent.Type.KeyPress, Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier, " ", True
    )
    QApplication.sendEvent(window.tree, repeat)  # held: no new command
    qtbot.keyRelease(window.tree, Qt.Key.Key_Space)
    assert sent(window)[-2:] == [ev.PushToTalkCmd(True), ev.PushToTalkCmd(False)]
    # In the chat box a space is typed, not taken for the key.
    window.chat.input.setFocus()
    qtbot.waitUntil(window.chat.input.hasFocus)
    qtbot.keyClicks(window.chat.input, "a b")
    assert window.chat.input.text() == "a b" and not window.desired.ptt
    # A key that types nothing is push-to-talk even there; losing the focus lets it go.
    window.audio.ptt_key_chosen.emit(Qt.Key.Key_F8.value)
    qtbot.keyPress(window.chat.input, Qt.Key.Key_F8)
    assert window.desired.ptt
    window.eventFilter(window, QEvent(QEvent.Type.WindowDeactivate))
    assert not window.desired.ptt and sent(window)[-1] == ev.PushToTalkCmd(False)


def test_a_global_key_where_there_is_no_x11_says_why_and_unticks(window: MainWindow) -> None:
    window.audio.global_ptt.setChecked(True)  # offscreen: no window system
    assert not window.audio.global_ptt.isChecked() and not window.hotkey.grabbed
    assert any("push-to-talk key not global: no window system" in x for x in window.chat.lines())


def test_the_global_key_pushes_to_talk_with_another_window_in_front_and_is_remembered(
    qtbot: QtBot, tmp_path: Path, xvfb: str
) -> None:
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    keyboard = Keyboard(xvfb)
    w = MainWindow(Recorder(), settings=settings, hotkey=GlobalHotkey(display=xvfb))
    qtbot.addWidget(w)
    try:
        w.audio.ptt_key_chosen.emit(Qt.Key.Key_F9.value)
        w.audio.global_ptt.setChecked(True)
        assert w.hotkey.grabbed and str(settings.value(GLOBAL_PTT_KEY)).lower() == "true"
        keyboard.key(Qt.Key.Key_F9.value, True)  # on the X server: no window of ours has it
        qtbot.waitUntil(lambda: w.desired.ptt)
        w.eventFilter(w, QEvent(QEvent.Type.WindowDeactivate))
        assert w.desired.ptt  # the key-up comes through the grab, not the focus
        keyboard.key(Qt.Key.Key_F9.value, False)
        qtbot.waitUntil(lambda: not w.desired.ptt)
        assert sent(w)[-2:] == [ev.PushToTalkCmd(True), ev.PushToTalkCmd(False)]
        w.audio.ptt_key_chosen.emit(Qt.Key.Key_F10.value)  # a new key: grabbed instead
        keyboard.key(Qt.Key.Key_F10.value, True)
        qtbot.waitUntil(lambda: w.desired.ptt)
        keyboard.key(Qt.Key.Key_F10.value, False)
        qtbot.waitUntil(lambda: not w.desired.ptt)
    finally:
        w.shutdown()
        keyboard.close()
    assert not w.hotkey.grabbed
    again = MainWindow(Recorder(), settings=settings, hotkey=GlobalHotkey(display=xvfb))
    qtbot.addWidget(again)
    try:
        qtbot.waitUntil(lambda: again.hotkey.grabbed)  # ticked again at the next start
        assert again.audio.global_ptt.isChecked() and again.ptt_key == Qt.Key.Key_F10.value
    finally:
        again.shutdown()


def test_the_talk_mode_and_the_threshold_set_on_the_meter_are_sent_and_remembered(
    window: MainWindow, qtbot: QtBot
) -> None:
    assert remembered_talk(window.settings, "vad") == ("vad", 0.0)  # nothing chosen yet
    meter = window.audio.meter
    assert meter.threshold_shown  # voice activation, the default
    meter.resize(301, 16)
    qtbot.mouseClick(meter, Qt.MouseButton.LeftButton, pos=QPoint(200, 8))  # -20 dBFS
    assert sent(window)[-1] == ev.VadThresholdCmd(meter.threshold)
    assert abs(meter.threshold - 0.1) < 1e-9 and window.desired.vad_threshold == meter.threshold
    window.audio.talk.setCurrentIndex(window.audio.talk.findData("continuous"))
    window.audio.talk.activated.emit(window.audio.talk.currentIndex())
    assert str(window.settings.value(TALK_KEY)) == "continuous"
    mode, threshold = remembered_talk(window.settings, "vad")
    assert mode == "continuous" and abs(threshold - 0.1) < 1e-9
    window.settings.setValue(TALK_KEY, "shout")  # a hand-edited file
    window.settings.setValue(THRESHOLD_KEY, "loud")
    assert remembered_talk(window.settings, "vad") == ("vad", 0.0)
    # What the encode stage says is sent lights the meter.
    window.apply(ev.InputLevel(0.2, transmitting=True))
    assert meter.transmitting and window.audio.meter_state.text() == "sending"
    window.apply(ev.InputLevel(0.2, transmitting=False))
    assert not meter.transmitting


def test_double_click_on_a_channel_joins_it(window: MainWindow, qtbot: QtBot) -> None:
    window.apply(ROSTER)
    gaming = window.model.channel_item("Gaming")
    assert gaming is not None
    window.tree.doubleClicked.emit(gaming.index())
    lobby = window.model.channel_item("Lobby")
    assert lobby is not None
    window.tree.doubleClicked.emit(lobby.index())  # already there: nothing sent
    assert sent(window) == [ev.JoinCmd("Gaming")]


def test_whisper_is_visible_and_cancellable(window: MainWindow, qtbot: QtBot) -> None:
    window.apply(ROSTER)
    window.set_whisper(2)
    assert window.whisper_banner.isVisible()
    assert "bob" in window.whisper_label.text()
    qtbot.keyClick(window.tree, Qt.Key.Key_Escape)
    assert not window.whisper_banner.isVisible()
    assert sent(window) == [ev.WhisperCmd(2), ev.WhisperCmd(0)]
    # A target who leaves ends the whisper.
    window.set_whisper(3)
    window.apply(ev.Roster(1, "Lobby", ["Lobby"], [UserInfo(1, "alice", "Lobby")]))
    assert sent(window)[-1] == ev.WhisperCmd(0)
    assert "whisper target left" in window.chat.lines()[-1]


def test_context_menu_whispers_and_joins(window: MainWindow) -> None:
    window.apply(ROSTER)
    bob, me, gaming = (
        window.model.user_item(2),
        window.model.user_item(1),
        window.model.channel_item("Gaming"),
    )
    assert bob is not None and me is not None and gaming is not None
    assert window.menu_for(me.index()) is None  # no whispering to yourself
    menu = window.menu_for(bob.index())
    assert menu is not None
    action = menu.actions()[0]
    assert action.text() == "Whisper to bob"
    action.trigger()
    assert window.whisper_banner.isVisible()
    menu = window.menu_for(bob.index())
    assert menu is not None
    action = menu.actions()[0]
    assert action.text() == "Stop whispering"
    action.trigger()
    menu = window.menu_for(gaming.index())
    assert menu is not None
    menu.actions()[0].trigger()
    assert sent(window) == [ev.WhisperCmd(2), ev.WhisperCmd(0), ev.JoinCmd("Gaming")]


def test_holding_f4_whispers_to_the_selected_user(window: MainWindow, qtbot: QtBot) -> None:
    window.apply(ROSTER)
    qtbot.keyPress(window.tree, Qt.Key.Key_F4)  # nothing selected: nothing happens
    qtbot.keyRelease(window.tree, Qt.Key.Key_F4)
    carol = window.model.user_item(3)
    assert carol is not None
    window.tree.setCurrentIndex(carol.index())
    qtbot.keyPress(window.tree, Qt.Key.Key_F4)
    assert window.whisper_banner.isVisible() and "carol" in window.whisper_label.text()
    qtbot.keyRelease(window.tree, Qt.Key.Key_F4)
    assert not window.whisper_banner.isVisible()
    assert sent(window) == [ev.WhisperCmd(3), ev.WhisperCmd(0)]


def test_f3_toggles_the_overlay(window: MainWindow, qtbot: QtBot) -> None:
    window.apply(ev.DecodeStats(loss_percent=3.0, speakers=[ev.SpeakerStats(2, depth=2)]))
    assert not window.overlay.isVisible()
    qtbot.keyClick(window, Qt.Key.Key_F3)
    assert window.overlay.isVisible()
    assert window.audio.diagnostics.isChecked()
    assert "3.0 %" in window.overlay.text.text()
    qtbot.keyClick(window.chat.input, Qt.Key.Key_F3)  # works while typing too
    assert not window.overlay.isVisible()
    qtbot.mouseClick(window.audio.diagnostics, Qt.MouseButton.LeftButton)
    assert window.overlay.isVisible()
    assert len(window.overlay.history.samples) == 1


def test_chat_round_trip_through_the_window(window: MainWindow, qtbot: QtBot) -> None:
    window.apply(ROSTER)
    qtbot.keyClicks(window.chat.input, "hello")
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)
    assert sent(window) == [ev.ChatCmd("hello")]
    window.apply(ev.ChatLine(1, "alice", "Lobby", "hello", 1_700_000_000.0))
    assert window.chat.lines()[-1].endswith("#Lobby alice: hello")


def test_status_bar_follows_connection_state(window: MainWindow) -> None:
    window.apply(ev.ConnectionState(ev.CONNECTED, "h:1", name="alice", channel="Lobby"))
    assert window.status.text() == "Connected to h:1 as alice in Lobby"
    assert "alice" in window.windowTitle()
    window.apply(ev.ConnectionState(ev.RECONNECTING, "h:1", attempt=2, reason="refused"))
    assert window.status.text() == "Connection lost; reconnecting to h:1 (attempt 2): refused"
    window._client_failed("the network stage died 4 times")
    assert window.status.text() == "Stopped: the network stage died 4 times"


def test_settings_are_reapplied_to_a_stage_that_forgot_them(window: MainWindow) -> None:
    window.audio.deafen.setChecked(True)
    sent(window).clear()
    window.apply(ev.DecodeStats(deafened=False))
    assert sent(window) == [ev.DeafenCmd(True)]


def test_chaos_slider_sends_the_command_over_the_bus(qtbot: QtBot) -> None:
    with Broker() as broker, BusClient(broker.address, topics=("cmd.chaos",)) as sub:
        bridge = BusBridge()
        bridge.attach(broker.address)
        window = MainWindow(bridge)
        qtbot.addWidget(window)
        got: list[ev.Event] = []

        def arrived() -> bool:  # move the slider until the subscription is through
            window.audio.chaos.setValue(window.audio.chaos.value() % 100 + 1)
            got.extend(sub.poll(0.05))
            return bool(got)

        qtbot.waitUntil(arrived, timeout=5000)
        window.audio.chaos.setValue(37)

        def thirty_seven() -> bool:
            got.extend(sub.poll(0.05))
            return ev.ChaosCmd(37.0) in got

        qtbot.waitUntil(thirty_seven, timeout=5000)
        assert window.audio.chaos_label.text() == "37 %"
        window.shutdown()
        assert not bridge.attached


def test_the_bitrate_chosen_is_remembered(window: MainWindow) -> None:
    window.audio.bitrate.activated.emit(window.audio.bitrate.findData(24000))
    assert sent(window)[-1] == ev.BitrateCmd(24000)
    assert int(window.settings.value(BITRATE_KEY)) == 24000


def test_attached_window_cannot_change_devices(window: MainWindow) -> None:
    assert not window.audio.input.isEnabled()
    window._change_media("input", "tone")  # no host: ignored


def test_offline_the_tree_greys_the_pings_dash_and_nobody_is_lit(window: MainWindow) -> None:
    window.apply(ROSTER)
    window.apply(ev.ControlStats(tcp_rtt_ms=12.0))
    window.apply(ev.Activity([2]))
    window.apply(ev.InputLevel(0.2, transmitting=True))
    assert window.tree.isEnabled() and "TCP 12 ms" in window.status.link.text()
    assert window.audio.meter.transmitting
    window.apply(ev.ConnectionState(ev.RECONNECTING, "h:1", attempt=1, reason="reset"))
    assert not window.tree.isEnabled()
    # The meter does not say "sending" while nothing can reach anyone.
    assert not window.audio.meter.transmitting and window.audio.meter_state.text() == ""
    window.apply(ev.InputLevel(0.2, transmitting=True))
    assert not window.audio.meter.transmitting
    assert window.status.link.text() == "TCP \u2013 · UDP \u2013 · loss \u2013"
    bob = window.model.user_item(2)
    assert bob is not None and bob.data(SPEAKING_ROLE) is False
    assert window.model.users_in("Lobby") == ["alice", "bob"]  # kept, greyed, until news
    window.apply(ev.ConnectionState(ev.CONNECTED, "h:1", name="alice", channel="Lobby"))
    assert window.tree.isEnabled()


def test_an_attached_window_has_no_server_menu(window: MainWindow) -> None:
    assert not window.servers.menu.isEnabled()
    window.connect_to(ConnectInfo("h", 1, "x"))  # no client of its own: ignored
    window.disconnect()
    assert window.connection.online


def test_a_users_volume_and_local_mute_from_the_menu_are_sent_and_remembered(
    window: MainWindow, qtbot: QtBot, tmp_path: Path
) -> None:
    window.apply(ROSTER)
    bob = window.model.user_item(2)
    assert bob is not None
    menu = window.menu_for(bob.index())
    assert menu is not None
    (slider,) = [a for a in menu.actions() if isinstance(a, VolumeSlider)]
    assert slider.slider.value() == 100 and slider.slider.maximum() == 200
    slider.slider.setValue(50)
    assert sent(window)[-1] == ev.GainCmd(2, 0.5)
    bob = window.model.user_item(2)
    assert bob is not None and bob.text() == "bob  \u00b7 50 %" and bob.data(VOLUME_ROLE) == 50
    menu = window.menu_for(bob.index())
    assert menu is not None
    (mute,) = [a for a in menu.actions() if a.text() == "Mute for me"]
    mute.trigger()
    assert sent(window)[-1] == ev.GainCmd(2, 0.0)
    bob = window.model.user_item(2)
    assert bob is not None and bob.text() == "bob  \u00b7 muted by you"
    # A restarted decode stage is told again.
    sent(window).clear()
    window.apply(ev.DecodeStats())
    assert sent(window) == [ev.GainCmd(2, 0.0)]
    # Remembered by name and server: bob back under another id, in another window.
    again = MainWindow(
        Recorder(), settings=QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    )
    qtbot.addWidget(again)
    again.apply(ev.ConnectionState(ev.CONNECTED, "h:1", user_id=1, name="alice"))
    again.apply(ev.Roster(1, "Lobby", ["Lobby"], [UserInfo(1, "alice", "Lobby"),
                                                   UserInfo(9, "bob", "Lobby")]))  # fmt: skip
    assert sent(again) == [ev.GainCmd(9, 0.0)]
    bob9 = again.model.user_item(9)
    assert bob9 is not None
    menu = again.menu_for(bob9.index())
    assert menu is not None
    (reset,) = [a for a in menu.actions() if a.text() == "Reset volume"]
    reset.trigger()
    assert sent(again)[-1] == ev.GainCmd(9, 1.0)
    again.shutdown()


def clocked_window(qtbot: QtBot, tmp_path: Path, now: list[float]) -> MainWindow:
    """A window whose clock reads ``now[0]``, with settings of its own."""
    w = MainWindow(
        Recorder(),
        clock=lambda: now[0],
        settings=QSettings(str(tmp_path / "clocked.ini"), QSettings.Format.IniFormat),
    )
    qtbot.addWidget(w)
    return w


def test_talking_dots_hold_through_the_gaps_between_words(qtbot: QtBot, tmp_path: Path) -> None:
    now = [100.0]
    w = clocked_window(qtbot, tmp_path, now)
    w.apply(ev.ConnectionState(ev.CONNECTED, "h:1", user_id=1, name="alice", channel="Lobby"))
    w.apply(ROSTER)

    def lit() -> bool:
        bob = w.model.user_item(2)
        return bob is not None and bob.data(SPEAKING_ROLE) is True

    w.apply(ev.Activity([2]))
    assert lit()
    now[0] = 100.5
    w.apply(ev.Activity([]))  # a gap between words
    assert lit()
    now[0] = 100.7
    w.apply(ev.Activity([2]))
    assert lit()
    w.apply(ev.Activity([]))
    now[0] = 101.2  # the hold is over: the window's timer puts the dot out
    qtbot.waitUntil(lambda: not lit(), timeout=2000)
    w.shutdown()


def test_a_granted_name_is_said_once_whether_the_notice_comes_or_not(
    qtbot: QtBot, tmp_path: Path
) -> None:
    from pipeline.media.sources import MediaSpec
    from ui.host import ClientConfig, ClientHost

    cfg = ClientConfig("h", 1, "alice", source=MediaSpec("silence"), sink=MediaSpec("null"))
    w = MainWindow(
        Recorder(),
        ClientHost(cfg),
        settings=QSettings(str(tmp_path / "n.ini"), QSettings.Format.IniFormat),
    )
    qtbot.addWidget(w)
    w.connection.start("h:1")
    state = ev.ConnectionState(ev.CONNECTED, "h:1", user_id=3, name="alice-2", channel="Lobby")
    w.apply(state)
    w.apply(ev.Notice("you are alice-2 on this server: alice was taken"))  # the control's
    w.apply(state)  # a snapshot
    said = [line for line in w.chat.lines() if "alice-2" in line]
    assert len(said) == 1 and said[0].endswith("you are alice-2 on this server: alice was taken")
    w.shutdown()


def test_the_tray_mutes_deafens_and_quits_like_the_panel(window: MainWindow) -> None:
    tray = window.tray
    tray.mute_action.trigger()
    assert window.audio.mute.isChecked() and sent(window)[-1] == ev.MuteCmd(True)
    window.audio.mute.setChecked(False)
    assert not tray.mute_action.isChecked()
    tray.deafen_action.trigger()  # deafen mutes too, and mute cannot be undone meanwhile
    assert window.audio.deafen.isChecked() and window.audio.mute.isChecked()
    assert tray.mute_action.isChecked() and not tray.mute_action.isEnabled()
    tray.mute_action.trigger()
    assert window.audio.mute.isChecked() and tray.mute_action.isChecked()
    tray.deafen_action.trigger()
    assert not window.audio.mute.isChecked() and tray.mute_action.isEnabled()
    assert tray.available is False  # offscreen: no tray, the icon is never shown
    tray.quit_chosen.emit()
    assert not window.isVisible()


def test_sounds_for_joins_leaves_and_others_messages_when_turned_on(window: MainWindow) -> None:
    window.apply(ROSTER)
    window.apply(ev.ChatLine(2, "bob", "Lobby", "hi", 0.0))
    assert window.sounds.played == []  # off until the user turns them on
    window.audio.sounds.setChecked(True)
    assert str(window.settings.value("notify/sounds")) == "true"
    window.apply(ev.ChatLine(2, "bob", "Lobby", "hi", 0.0))
    window.apply(ev.ChatLine(1, "alice", "Lobby", "mine", 0.0))  # our own: no sound
    window.apply(ev.Notice("dan joined Lobby"))
    window.apply(ev.Notice("dan joined Gaming"))  # another channel: no sound
    window.apply(ev.Notice("dan left Lobby"))
    assert window.sounds.played == ["message", "join", "leave"]


def test_a_changed_certificate_asks_the_user_who_may_accept_it(
    qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PyQt6.QtWidgets import QMessageBox

    from pipeline.core.pins import Trust, Verdict
    from pipeline.media.sources import MediaSpec
    from ui.host import ClientConfig, ClientHost

    cfg = ClientConfig("h", 1, "alice", source=MediaSpec("silence"), sink=MediaSpec("null"))
    host = ClientHost(cfg)
    restarts: list[dict[str, object]] = []
    monkeypatch.setattr(host, "restart", lambda **changes: restarts.append(changes))
    w = MainWindow(
        Recorder(), host, settings=QSettings(str(tmp_path / "c.ini"), QSettings.Format.IniFormat)
    )
    qtbot.addWidget(w)
    w.connection.start("h:1")
    pinned, shown = "AA:" * 31 + "AA", "BB:" * 31 + "BB"
    reason = Verdict(Trust.CHANGED, pinned).message("h:1", shown)
    S = QMessageBox.StandardButton
    for answer, expected in ((S.No, []), (S.Yes, [{"accept_new_certificate": True}])):
        w.apply(ev.ConnectionState(ev.FAILED, "h:1", reason=reason))
        w.apply(ev.ConnectionState(ev.FAILED, "h:1", reason=reason))  # asked once, not twice
        boxes = [b for b in w.findChildren(QMessageBox) if b.isVisible()]
        assert len(boxes) == 1
        assert pinned in boxes[0].text() and shown in boxes[0].text()  # both fingerprints
        button = boxes[0].button(answer)
        assert button is not None
        button.click()
        qtbot.waitUntil(lambda: not w._asking, timeout=2000)
        assert restarts == expected  # only a yes pins the new certificate
    w.shutdown()


def test_the_microphone_test_display_ends_when_the_test_does(qtbot: QtBot, tmp_path: Path) -> None:
    now = [100.0]
    w = clocked_window(qtbot, tmp_path, now)
    w.loopback_seconds = 5.0
    qtbot.mouseClick(w.audio.loopback, Qt.MouseButton.LeftButton)
    assert w.audio.loopback.text() == "Stop hearing it"
    assert w._test_timer.interval() == 250  # the seconds left, redrawn
    now[0] = 104.9  # a tick 100 ms before the end: the next one comes just after it
    w._show_test()
    assert w.audio.loopback.text() == "Stop hearing it"
    assert w._test_timer.interval() == 101
    now[0] = 105.0
    qtbot.waitUntil(lambda: w.audio.loopback.text() == "Hear my microphone", timeout=2000)
    assert not w._test_timer.isActive()
    w.shutdown()
