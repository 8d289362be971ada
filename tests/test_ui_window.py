"""The main window, fed bus events directly or through a real in-process broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PyQt6.QtCore import Qt
from pytestqt.qtbot import QtBot

from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker, BusClient
from relay.protocol.messages import UserInfo
from ui.busbridge import BusBridge
from ui.model import SPEAKING_ROLE
from ui.window import MainWindow


class Recorder(BusBridge):
    """A bridge that keeps what the window publishes instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[ev.Event] = []

    def publish(self, event: ev.Event) -> None:
        self.sent.append(event)


@pytest.fixture
def window(qtbot: QtBot) -> Iterator[MainWindow]:
    w = MainWindow(Recorder(), clock=lambda: 100.0)
    qtbot.addWidget(w)
    w.show()
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
    (action,) = menu.actions()
    assert action.text() == "Whisper to bob"
    action.trigger()
    assert window.whisper_banner.isVisible()
    menu = window.menu_for(bob.index())
    assert menu is not None
    (action,) = menu.actions()
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
    assert window.status.text() == "Reconnecting to h:1 (attempt 2): refused"
    window._client_failed("the network stage died 4 times")
    assert window.status.text() == "Failed: the network stage died 4 times"


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


def test_attached_window_cannot_change_devices(window: MainWindow) -> None:
    assert not window.audio.input.isEnabled()
    window._change_media("input", "tone")  # no host: ignored
