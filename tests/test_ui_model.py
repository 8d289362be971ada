"""The channel tree model follows Roster and Activity events, updating rows in place."""

from __future__ import annotations

from PyQt6.QtGui import QPalette
from PyQt6.QtWidgets import QStyleOptionViewItem, QTreeView
from pytestqt.qtbot import QtBot

from pipeline.ipc import events as ev
from relay.protocol.messages import ChannelInfo, UserInfo
from ui.model import (
    CHANNEL,
    DEAFENED_ROLE,
    DESCRIPTION_ROLE,
    KIND_ROLE,
    ME_ROLE,
    MUTED_ROLE,
    SERVER_MUTED_ROLE,
    SPEAKING_ROLE,
    USER,
    USER_ID_ROLE,
    WHISPER_FG,
    ChannelModel,
    TreeDelegate,
)


def roster(me: int = 1, channel: str = "Lobby", **where: str) -> ev.Roster:
    names = {"alice": 1, "bob": 2, "carol": 3, "dave": 4}
    users = [UserInfo(names[n], n, c) for n, c in where.items()]
    return ev.Roster(me=me, channel=channel, channels=["Lobby", "Gaming", "AFK"], users=users)


def test_channels_and_users(qtbot: QtBot) -> None:
    model = ChannelModel()
    model.set_roster(roster(alice="Lobby", bob="Lobby", carol="Gaming"))
    assert model.channels() == ["Lobby", "Gaming", "AFK"]
    assert model.users_in("Lobby") == ["alice", "bob"]
    assert model.users_in("Gaming") == ["carol"]
    assert model.users_in("AFK") == []
    lobby = model.channel_item("Lobby")
    assert lobby is not None and lobby.data(KIND_ROLE) == CHANNEL
    assert lobby.text() == "Lobby  (2)"
    bob = model.user_item(2)
    assert bob is not None and bob.data(KIND_ROLE) == USER and bob.data(USER_ID_ROLE) == 2


def test_the_current_user_and_channel_are_marked(qtbot: QtBot) -> None:
    model = ChannelModel()
    model.set_roster(roster(alice="Lobby", bob="Lobby"))
    alice, bob = model.user_item(1), model.user_item(2)
    assert alice is not None and bob is not None
    assert alice.data(ME_ROLE) is True and alice.font().bold() and alice.text() == "alice (you)"
    assert bob.data(ME_ROLE) is False and not bob.font().bold()
    lobby, gaming = model.channel_item("Lobby"), model.channel_item("Gaming")
    assert lobby is not None and lobby.font().bold()
    assert gaming is not None and not gaming.font().bold()


def test_presence_changes_move_users_and_keep_channel_rows(qtbot: QtBot) -> None:
    model = ChannelModel()
    model.set_roster(roster(alice="Lobby", bob="Lobby", carol="Gaming"))
    lobby_before = model.channel_item("Lobby")
    model.set_roster(roster(alice="Lobby", bob="Gaming", carol="Gaming", dave="AFK"))
    assert model.channel_item("Lobby") is lobby_before  # updated in place, not rebuilt
    assert model.users_in("Lobby") == ["alice"]
    assert model.users_in("Gaming") == ["bob", "carol"]
    assert model.users_in("AFK") == ["dave"]
    model.set_roster(roster(alice="Lobby"))
    assert model.users_in("Gaming") == [] and model.user_item(2) is None


def test_channels_appear_and_disappear_in_order(qtbot: QtBot) -> None:
    model = ChannelModel()
    model.set_roster(roster(alice="Lobby"))
    # A channel only known from a user in it is shown after the announced ones.
    model.set_roster(
        ev.Roster(
            1,
            "Lobby",
            ["Music", "Lobby"],
            [UserInfo(1, "alice", "Lobby"), UserInfo(2, "bob", "Pub")],
        )
    )
    assert model.channels() == ["Music", "Lobby", "Pub"]
    assert model.users_in("Pub") == ["bob"]


def test_speaking_users_are_highlighted(qtbot: QtBot) -> None:
    model = ChannelModel()
    model.set_roster(roster(alice="Lobby", bob="Lobby", carol="Gaming"))
    model.set_speaking([2, 3])
    for uid, speaking in ((1, False), (2, True), (3, True)):
        item = model.user_item(uid)
        assert item is not None and item.data(SPEAKING_ROLE) is speaking
    model.set_speaking([])
    bob = model.user_item(2)
    assert bob is not None and bob.data(SPEAKING_ROLE) is False
    # Highlighting survives a roster update.
    model.set_speaking({3})
    model.set_roster(roster(alice="Lobby", bob="Lobby", carol="Lobby"))
    carol = model.user_item(3)
    assert carol is not None and carol.data(SPEAKING_ROLE) is True


def test_whisper_target_is_marked(qtbot: QtBot) -> None:
    model = ChannelModel()
    model.set_roster(roster(alice="Lobby", bob="Lobby"))
    model.set_whisper(2)
    bob = model.user_item(2)
    assert bob is not None and bob.font().italic() and "whispering" in bob.toolTip()
    model.set_whisper(0)
    assert not bob.font().italic()


def test_mute_and_deafen_show_on_the_row(qtbot: QtBot) -> None:
    model = ChannelModel()
    users = [
        UserInfo(1, "ann", "Lobby"),
        UserInfo(2, "bob", "Lobby", muted=True),
        UserInfo(3, "cy", "Lobby", deafened=True),
    ]
    model.set_roster(ev.Roster(1, "Lobby", ["Lobby"], users))
    ann, bob, cy = (model.user_item(i) for i in (1, 2, 3))
    assert ann is not None and bob is not None and cy is not None
    assert not ann.data(MUTED_ROLE) and bob.data(MUTED_ROLE) and not bob.data(DEAFENED_ROLE)
    assert cy.data(MUTED_ROLE) and cy.data(DEAFENED_ROLE)  # deafened is muted too
    assert "muted" in bob.toolTip() and "deafened" in cy.toolTip()
    # The icons differ (a mark after the dot), and a change of state alone updates them.
    assert bob.icon().cacheKey() != ann.icon().cacheKey() != cy.icon().cacheKey()
    model.set_roster(ev.Roster(1, "Lobby", ["Lobby"], [UserInfo(1, "ann", "Lobby", True)]))
    ann = model.user_item(1)
    assert ann is not None and ann.data(MUTED_ROLE)


def test_a_mute_by_the_server_has_its_own_icon_and_words(qtbot: QtBot) -> None:
    model = ChannelModel()
    users = [
        UserInfo(1, "ann", "Lobby", server_muted=True),
        UserInfo(2, "bob", "Lobby", muted=True),
        UserInfo(3, "cy", "Lobby", muted=True, server_muted=True),
        UserInfo(4, "dee", "Lobby"),
    ]
    model.set_roster(ev.Roster(1, "Lobby", ["Lobby"], users))
    ann, bob, cy, dee = (model.user_item(i) for i in (1, 2, 3, 4))
    assert ann is not None and bob is not None and cy is not None and dee is not None
    assert ann.data(SERVER_MUTED_ROLE) and not ann.data(MUTED_ROLE)
    assert not bob.data(SERVER_MUTED_ROLE)
    assert ann.text() == "ann (you)  \u00b7 muted by the server"  # the muted user sees it
    assert cy.text() == "cy  \u00b7 muted by the server" and bob.text() == "bob"
    assert "muted by the server" in cy.toolTip()
    keys = {u.icon().cacheKey() for u in (ann, bob, dee)}
    assert len(keys) == 3  # not the self-mute mark, not the plain dot
    assert cy.icon().cacheKey() == ann.icon().cacheKey()  # the server's mark wins
    model.set_roster(ev.Roster(1, "Lobby", ["Lobby"], [UserInfo(1, "ann", "Lobby")]))
    ann = model.user_item(1)
    assert ann is not None and not ann.data(SERVER_MUTED_ROLE) and ann.text() == "ann (you)"


def test_channel_descriptions_and_limits_show_in_the_tree(qtbot: QtBot) -> None:
    model = ChannelModel()
    infos = [ChannelInfo("Ops", "operators only\nsecond line", 2), ChannelInfo("Quiz", "x" * 60)]
    users = [UserInfo(1, "ann", "Lobby"), UserInfo(2, "bob", "Ops"), UserInfo(3, "cy", "Ops")]
    model.set_roster(ev.Roster(1, "Lobby", ["Lobby", "Ops", "Quiz"], users, infos))
    ops, quiz, lobby = (model.channel_item(c) for c in ("Ops", "Quiz", "Lobby"))
    assert ops is not None and quiz is not None and lobby is not None
    assert ops.text() == "Ops  (2/2)  \u2013 operators only"
    assert ops.data(DESCRIPTION_ROLE) == "operators only\nsecond line"
    assert "full: at most 2 users" in ops.toolTip()
    assert quiz.text() == "Quiz  \u2013 " + "x" * 39 + "\u2026"
    assert lobby.text() == "Lobby  (1)"


def test_a_selected_whisper_target_keeps_its_colour(qtbot: QtBot) -> None:
    model = ChannelModel()
    model.set_roster(roster(alice="Lobby", bob="Lobby"))
    model.set_whisper(2)
    view = QTreeView()
    qtbot.addWidget(view)
    view.setModel(model)
    delegate = TreeDelegate(view)
    view.setItemDelegate(delegate)
    bob = model.user_item(2)
    assert bob is not None
    option = QStyleOptionViewItem()
    delegate.initStyleOption(option, bob.index())
    assert option.palette.color(QPalette.ColorRole.HighlightedText) == WHISPER_FG
    alice = model.user_item(1)
    assert alice is not None
    option = QStyleOptionViewItem()
    delegate.initStyleOption(option, alice.index())
    assert option.palette.color(QPalette.ColorRole.HighlightedText) != WHISPER_FG
