"""The client's state as seen from the bus: folds events into one picture. Sans-I/O.

The headless CLI prints it as a status line and a summary; the desktop UI
renders it. Neither keeps state of its own beyond this.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pipeline.ipc import events as ev
from relay.protocol.messages import UserInfo

MAX_CHAT = 500


@dataclass
class ClientView:
    state: ev.ConnectionState = field(default_factory=lambda: ev.ConnectionState(ev.CONNECTING))
    roster: ev.Roster = field(default_factory=lambda: ev.Roster(me=0, channel=""))
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    speaking: list[int] = field(default_factory=list)
    input_level: float = 0.0
    chat: deque[ev.ChatLine | ev.Notice] = field(default_factory=lambda: deque(maxlen=MAX_CHAT))
    session: ev.Session | None = None

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.ConnectionState):
            self.state = event
        elif isinstance(event, ev.Roster):
            self.roster = event
        elif isinstance(event, ev.Stats):
            self.stats[event.stage] = event.values
        elif isinstance(event, ev.Activity):
            self.speaking = event.speaking
        elif isinstance(event, ev.InputLevel):
            self.input_level = event.level
        elif isinstance(event, ev.ChatLine | ev.Notice):
            self.chat.append(event)
        elif isinstance(event, ev.Session):
            self.session = event

    # --- derived values -------------------------------------------------------------

    def stat(self, stage: str, *path: str) -> Any:
        value: Any = self.stats.get(stage, {})
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def users_in(self, channel: str) -> list[UserInfo]:
        return [u for u in self.roster.users if u.channel == channel]

    def name_of(self, user_id: int) -> str:
        for u in self.roster.users:
            if u.user_id == user_id:
                return u.name
        return f"#{user_id}"

    def status_line(self) -> str:
        s = self.state
        if s.state == ev.CONNECTED:
            conn = f"connected as {s.name} in {s.channel}"
        elif s.state == ev.RECONNECTING:
            conn = f"reconnecting (attempt {s.attempt}: {s.reason})"
        else:
            conn = s.state + (f" ({s.reason})" if s.reason else "")
        users = len(self.users_in(self.roster.channel)) if self.roster.channel else 0
        loss = self.stat("decode", "loss_percent")
        speakers = self.stat("decode", "speakers") or {}
        depth = ",".join(str(int(v.get("depth", 0))) for v in speakers.values()) or "-"
        tcp = self.stat("control", "tcp_rtt_ms")
        udp = self.stat("network", "udp_rtt_ms")
        m2e = self.stat("playback", "latency_ms", "mouth_to_ear", "p50")
        return (
            f"{conn} | users {users} | loss {_num(loss, '%')} | jitter {depth} | "
            f"ping tcp {_num(tcp, 'ms')} udp {_num(udp, 'ms')} | mouth-to-ear {_num(m2e, 'ms')}"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "state": self.state.state,
            "reason": self.state.reason,
            "name": self.state.name,
            "channel": self.roster.channel,
            "user_id": self.roster.me,
            "users": [
                {"user_id": u.user_id, "name": u.name, "channel": u.channel}
                for u in self.roster.users
            ],
            "stats": self.stats,
        }


def _num(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.1f}{unit}"
