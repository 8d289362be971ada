"""The channel tree's model: channels with their users, from Roster and Activity events.

Updated in place (rows are added and removed, never the whole model reset),
so the view keeps its selection and expansion while presence changes.
"""

from __future__ import annotations

from PyQt6.QtCore import QModelIndex, Qt
from PyQt6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QIcon,
    QPainter,
    QPalette,
    QPen,
    QPixmap,
    QStandardItem,
    QStandardItemModel,
)
from PyQt6.QtWidgets import QStyledItemDelegate, QStyleOptionViewItem

from pipeline.ipc import events as ev
from relay.protocol.messages import ChannelInfo, UserInfo

KIND_ROLE = Qt.ItemDataRole.UserRole + 1  # "channel" or "user"
CHANNEL_ROLE = Qt.ItemDataRole.UserRole + 2  # the channel's name (on channels and users)
USER_ID_ROLE = Qt.ItemDataRole.UserRole + 3  # the user's public id (users only)
SPEAKING_ROLE = Qt.ItemDataRole.UserRole + 4  # bool: audible right now
ME_ROLE = Qt.ItemDataRole.UserRole + 5  # bool: this row is the local user / their channel
NAME_ROLE = Qt.ItemDataRole.UserRole + 6  # the user's name as the relay knows it
MUTED_ROLE = Qt.ItemDataRole.UserRole + 7  # bool: the user muted themselves (or deafened)
DEAFENED_ROLE = Qt.ItemDataRole.UserRole + 8  # bool: the user deafened themselves
WHISPER_ROLE = Qt.ItemDataRole.UserRole + 9  # bool: the local user whispers to this one
DESCRIPTION_ROLE = Qt.ItemDataRole.UserRole + 10  # a channel's description from the relay
VOLUME_ROLE = Qt.ItemDataRole.UserRole + 11  # int: the local volume % (0: muted here)
SERVER_MUTED_ROLE = Qt.ItemDataRole.UserRole + 12  # bool: the server's operator muted them

CHANNEL, USER = "channel", "user"
SPEAKING_BG = QColor(46, 160, 67, 90)
WHISPER_FG = QColor(120, 40, 170)  # dark enough to read on white and on its highlight
WHISPER_SELECTED_BG = QColor(226, 208, 245)


MUTE_RED = QColor(200, 50, 40)
SERVER_MUTE_BG = QColor(160, 20, 20)


def _icon(
    color: QColor, muted: bool = False, deafened: bool = False, server: bool = False
) -> QIcon:
    """The talking dot, then a struck-out microphone (muted) or headset (deafened); muted
    by the server, a white microphone struck out on a filled red badge instead, which
    tells it from a mute of one's own at a glance."""
    pix = QPixmap(28, 12)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(color)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(1, 1, 10, 10)
    if server:
        painter.setBrush(SERVER_MUTE_BG)
        painter.drawRoundedRect(14, 0, 13, 12, 3, 3)
        painter.setPen(QPen(Qt.GlobalColor.white, 1.4))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(19, 2, 3, 5, 1.5, 1.5)
        painter.drawArc(17, 4, 7, 5, 180 * 16, 180 * 16)
        painter.drawLine(20, 9, 20, 10)
        painter.drawLine(16, 10, 25, 1)
    elif muted or deafened:
        pen = QPen(MUTE_RED, 1.6)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        if deafened:  # a headset: the band and two ear cups
            painter.drawArc(15, 1, 10, 10, 0, 180 * 16)
            painter.setBrush(MUTE_RED)
            painter.drawRect(15, 6, 2, 4)
            painter.drawRect(23, 6, 2, 4)
        else:  # a microphone: the capsule and its stand
            painter.drawRoundedRect(18, 1, 4, 7, 2, 2)
            painter.drawArc(16, 3, 8, 7, 180 * 16, 180 * 16)
            painter.drawLine(20, 10, 20, 11)
        painter.drawLine(15, 11, 26, 1)  # struck out
    painter.end()
    return QIcon(pix)


class ChannelModel(QStandardItemModel):
    def __init__(self) -> None:
        super().__init__()
        self.setHorizontalHeaderLabels(["Channels"])
        self._me = 0
        self._my_channel = ""
        self._speaking: set[int] = set()
        self._whisper = 0
        self._icons = {
            (talking, muted, deafened, server): _icon(
                QColor(40, 200, 70) if talking else QColor(150, 150, 150), muted, deafened, server
            )
            for talking in (False, True)
            for muted in (False, True)
            for deafened in (False, True)
            for server in (False, True)
        }
        # user id -> (muted, deafened, muted by the server)
        self._states: dict[int, tuple[bool, bool, bool]] = {}
        self._volumes: dict[int, tuple[int, bool]] = {}  # user id -> (local %, muted here)
        self._infos: dict[str, ChannelInfo] = {}  # channel -> description and user limit

    # --- input ------------------------------------------------------------------------

    def set_roster(self, roster: ev.Roster) -> None:
        """Make the tree show exactly the roster's channels and users."""
        self._me, self._my_channel = roster.me, roster.channel
        self._states = {
            u.user_id: (u.muted or u.deafened, u.deafened, u.server_muted) for u in roster.users
        }
        self._infos = {c.name: c for c in roster.infos}
        channels = list(roster.channels)
        for u in roster.users:
            if u.channel not in channels:
                channels.append(u.channel)
        root = self._root()
        for row in reversed(range(root.rowCount())):
            item = root.child(row)
            if item is not None and item.data(CHANNEL_ROLE) not in channels:
                root.removeRow(row)
        for pos, name in enumerate(channels):
            item = self.channel_item(name)
            if item is None:
                item = QStandardItem()
                item.setEditable(False)
                item.setData(CHANNEL, KIND_ROLE)
                item.setData(name, CHANNEL_ROLE)
                root.insertRow(pos, item)
            elif item.row() != pos:
                root.insertRow(pos, root.takeRow(item.row()))
            members = sorted(
                (u for u in roster.users if u.channel == name), key=lambda u: u.name.lower()
            )
            self._set_users(item, members)
        self._restyle()

    def set_speaking(self, user_ids: list[int] | set[int]) -> None:
        speaking = set(user_ids)
        if speaking != self._speaking:
            self._speaking = speaking
            self._restyle()

    def set_volumes(self, volumes: dict[int, tuple[int, bool]]) -> None:
        """The local volume (percent) and mute of the users who have one set here."""
        if volumes != self._volumes:
            self._volumes = dict(volumes)
            self._restyle()

    def set_whisper(self, user_id: int) -> None:
        if user_id != self._whisper:
            self._whisper = user_id
            self._restyle()

    # --- lookups ------------------------------------------------------------------------

    def channel_item(self, name: str) -> QStandardItem | None:
        root = self._root()
        for row in range(root.rowCount()):
            item = root.child(row)
            if item is not None and item.data(CHANNEL_ROLE) == name:
                return item
        return None

    def user_item(self, user_id: int) -> QStandardItem | None:
        for channel in self.channel_items():
            for row in range(channel.rowCount()):
                item = channel.child(row)
                if item is not None and item.data(USER_ID_ROLE) == user_id:
                    return item
        return None

    def channel_items(self) -> list[QStandardItem]:
        root = self._root()
        return [c for r in range(root.rowCount()) if (c := root.child(r)) is not None]

    def channels(self) -> list[str]:
        return [str(c.data(CHANNEL_ROLE)) for c in self.channel_items()]

    def users_in(self, channel: str) -> list[str]:
        """Display names of the channel's users, in tree order."""
        item = self.channel_item(channel)
        if item is None:
            return []
        return [str(c.data(NAME_ROLE)) for c in _children(item)]

    @staticmethod
    def kind(index: QModelIndex) -> str:
        return str(index.data(KIND_ROLE) or "")

    # --- inside -------------------------------------------------------------------------

    def _root(self) -> QStandardItem:
        root = self.invisibleRootItem()
        assert root is not None  # Qt always has one
        return root

    def _set_users(self, channel: QStandardItem, members: list[UserInfo]) -> None:
        current = [(c.data(USER_ID_ROLE), c.data(NAME_ROLE)) for c in _children(channel)]
        wanted = [(u.user_id, u.name) for u in members]
        if current == wanted:
            return
        channel.removeRows(0, channel.rowCount())
        for u in members:
            item = QStandardItem(u.name)
            item.setEditable(False)
            item.setData(USER, KIND_ROLE)
            item.setData(u.channel, CHANNEL_ROLE)
            item.setData(u.user_id, USER_ID_ROLE)
            item.setData(u.name, NAME_ROLE)
            channel.appendRow(item)

    def _restyle(self) -> None:
        for channel in self.channel_items():
            name = str(channel.data(CHANNEL_ROLE))
            mine = name == self._my_channel
            count = channel.rowCount()
            info = self._infos.get(name)
            limit = info.max_users if info is not None else 0
            description = info.description if info is not None else ""
            text = name
            if limit:
                text += f"  ({count}/{limit})"  # shown even empty: the limit is news
            elif count:
                text += f"  ({count})"
            if description:
                text += f"  \u2013 {_short(description)}"
            channel.setText(text)
            channel.setData(description, DESCRIPTION_ROLE)
            channel.setData(mine, ME_ROLE)
            channel.setFont(_font(bold=mine))
            tip = "your channel" if mine else "double-click to join"
            if limit:
                full = count >= limit and not mine
                tip = f"full: at most {limit} users" if full else f"{tip}; at most {limit} users"
            channel.setToolTip(f"{description}\n{tip}" if description else tip)
            for user in _children(channel):
                uid = int(user.data(USER_ID_ROLE))
                me, speaking = uid == self._me, uid in self._speaking
                user.setData(me, ME_ROLE)
                percent, here = self._volumes.get(uid, (100, False))
                muted, deafened, server = self._states.get(uid, (False, False, False))
                label = str(user.data(NAME_ROLE))
                if me:
                    label += " (you)"
                if server:  # what everyone sees first: nobody hears them
                    label += "  \u00b7 muted by the server"
                elif here and not me:
                    label += "  \u00b7 muted by you"
                elif percent != 100 and not me:
                    label += f"  \u00b7 {percent} %"
                user.setText(label)
                user.setData(0 if here else percent, VOLUME_ROLE)
                user.setData(speaking, SPEAKING_ROLE)
                user.setFont(_font(bold=me, italic=uid == self._whisper))
                user.setData(muted, MUTED_ROLE)
                user.setData(deafened, DEAFENED_ROLE)
                user.setData(server, SERVER_MUTED_ROLE)
                user.setData(uid == self._whisper, WHISPER_ROLE)
                # The server's mark stands for all three: nobody hears them either way.
                own = not server
                user.setIcon(self._icons[speaking, muted and own, deafened and own, server])
                user.setBackground(QBrush(SPEAKING_BG) if speaking else QBrush())
                if uid == self._whisper:
                    user.setForeground(QBrush(WHISPER_FG))
                else:
                    user.setData(None, Qt.ItemDataRole.ForegroundRole)
                tips = ["you"] if me else (["whispering to"] if uid == self._whisper else [])
                tips += ["deafened"] if deafened else (["muted"] if muted else [])
                tips += ["muted by the server"] if server else []
                user.setToolTip(f"#{uid}" + (f" ({', '.join(tips)})" if tips else ""))


def _short(text: str, most: int = 40) -> str:
    """A description's first line, cut to ``most`` characters for the tree."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= most else line[: most - 1] + "\u2026"


class TreeDelegate(QStyledItemDelegate):
    """Paints a selected whisper target in the whisper colour on a light highlight, so the
    purple that says "only they hear you" does not vanish under the selection."""

    def initStyleOption(self, option: QStyleOptionViewItem | None, index: QModelIndex) -> None:
        super().initStyleOption(option, index)
        if option is not None and index.data(WHISPER_ROLE):
            option.palette.setColor(QPalette.ColorRole.Highlight, WHISPER_SELECTED_BG)
            option.palette.setColor(QPalette.ColorRole.HighlightedText, WHISPER_FG)


def _children(item: QStandardItem) -> list[QStandardItem]:
    return [c for r in range(item.rowCount()) if (c := item.child(r)) is not None]


def _font(bold: bool = False, italic: bool = False) -> QFont:
    font = QFont()
    font.setBold(bold)
    font.setItalic(italic)
    return font
