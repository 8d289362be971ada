"""Which presence changes are news to the user (the chat's join and leave lines). Sans-I/O.

While the link to the relay is down nothing is known, and when it comes back
everyone seems to arrive again: a resumed session's welcome lists them all, and
after a relay restart each other client re-joins under a new user id a moment
after us. Announcing that would fill the chat with lines about nothing. So the
users known when the link dropped are kept by name; after the next welcome a
user seen again in the same channel is silent (in another channel: moved), a
user nobody knew before is news (joined), and a remembered user who has not come
back within ``grace`` seconds is announced as gone (left). Times are monotonic
seconds, passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RETURN_GRACE = 15.0  # seconds after a reconnect for the others to come back silently


def granted_name(granted: str, asked: str) -> str:
    """The line for a relay that gave us another name than the one we asked for."""
    return f"you are {granted} on this server: {asked} was taken"


@dataclass
class PresenceNews:
    grace: float = RETURN_GRACE
    _away: dict[str, str] = field(default_factory=dict)  # name -> channel, not seen again yet
    _lost: bool = False  # the link dropped and no welcome has come since
    _deadline: float | None = None  # when the remembered users still away count as gone

    def link_lost(self, users: Iterable[tuple[str, str]]) -> None:
        """The link dropped; ``users`` (name, channel) are everyone else known at that time.
        Those still awaited from an earlier drop stay awaited; a drop before any welcome
        came since the last one changes nothing (nothing new was learnt)."""
        if not self._lost:
            self._away.update(users)
        self._lost = True
        self._deadline = None

    def welcome(self, users: Iterable[tuple[str, str]], now: float) -> list[str]:
        """The lines for a complete welcome's user list (the others, not us): only news."""
        if not self._lost:
            return []  # the first welcome: the tree shows who is there, nothing to announce
        self._lost = False
        out = []
        for name, channel in users:
            line = self.joined(name, channel)
            if line:
                out.append(line)
        self._deadline = now + self.grace if self._away else None
        return out

    def joined(self, name: str, channel: str) -> str | None:
        """The line for a user_joined, or None when it is someone coming back."""
        before = self._away.pop(name, None)
        if before is None:
            return f"{name} joined {channel}"
        return None if before == channel else f"{name} moved to {channel}"

    def due(self, now: float) -> list[str]:
        """The leave lines of remembered users who did not come back in time."""
        if self._deadline is None or now < self._deadline:
            return []
        out = [f"{name} left {channel}" for name, channel in self._away.items()]
        self._away.clear()
        self._deadline = None
        return out

    @property
    def deadline(self) -> float | None:
        """When :meth:`due` next has lines to give, or None."""
        return self._deadline
