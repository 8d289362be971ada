"""The client's state as seen from the bus: folds events into one picture. Sans-I/O.

The headless CLI prints it as a status line and a summary; the desktop UI
renders it. Neither keeps state of its own beyond this.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.core.audio_test import LOOPBACK_SPEAKER
from pipeline.core.voice_link import UDP_SILENT_NS
from pipeline.ipc import events as ev
from relay.protocol.messages import UserInfo

MAX_CHAT = 500
OPUS_LOOKAHEAD_MS = 312 / 48  # libopus's encoder delay at 48 kHz (tests check it against ours)
R = TypeVar("R", bound=ev.StageReport)


@dataclass
class ClientView:
    state: ev.ConnectionState = field(default_factory=lambda: ev.ConnectionState(ev.CONNECTING))
    roster: ev.Roster = field(default_factory=lambda: ev.Roster(me=0, channel=""))
    reports: dict[str, ev.StageReport] = field(default_factory=dict)  # by stage name
    speaking: list[int] = field(default_factory=list)
    input_level: float = 0.0
    transmitting: bool = False  # the talk mode sent the microphone at the last InputLevel
    chat: deque[ev.ChatLine | ev.Notice] = field(default_factory=lambda: deque(maxlen=MAX_CHAT))
    endpoint: ev.VoiceEndpoint | None = None
    devices: dict[str, ev.DeviceStatus] = field(default_factory=dict)  # by kind

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.ConnectionState):
            self.state = event
        elif isinstance(event, ev.Roster):
            self.roster = event
        elif isinstance(event, ev.StageReport):
            self.reports[event.stage] = event
        elif isinstance(event, ev.Activity):
            self.speaking = event.speaking
        elif isinstance(event, ev.InputLevel):
            self.input_level = event.level
            self.transmitting = event.transmitting
        elif isinstance(event, ev.ChatLine | ev.Notice):
            self.chat.append(event)
        elif isinstance(event, ev.VoiceEndpoint):
            self.endpoint = event
        elif isinstance(event, ev.DeviceStatus):
            self.devices[event.kind] = event

    # --- derived values -------------------------------------------------------------

    def report(self, kind: type[R]) -> R | None:
        """The latest stats of the stage that reports ``kind``, None before its first."""
        report = self.reports.get(kind.STAGE)
        return report if isinstance(report, kind) else None

    @property
    def capture(self) -> ev.CaptureStats | None:
        return self.report(ev.CaptureStats)

    @property
    def encode(self) -> ev.EncodeStats | None:
        return self.report(ev.EncodeStats)

    @property
    def network(self) -> ev.NetworkStats | None:
        return self.report(ev.NetworkStats)

    @property
    def decode(self) -> ev.DecodeStats | None:
        return self.report(ev.DecodeStats)

    @property
    def playback(self) -> ev.PlaybackStats | None:
        return self.report(ev.PlaybackStats)

    @property
    def control(self) -> ev.ControlStats | None:
        return self.report(ev.ControlStats)

    @property
    def speakers(self) -> list[ev.SpeakerStats]:
        return self.decode.speakers if self.decode else []

    @property
    def device_trouble(self) -> str | None:
        """What is wrong with the sound devices, in words (None while every one plays)."""
        lost = [d.words for d in self.devices.values() if d.state == ev.DEVICE_LOST]
        return "; ".join(lost) or None

    @property
    def priority_trouble(self) -> str | None:
        """Which audio stages run at less than the priority asked for, and why (else None)."""
        short = {r.priority for r in self.reports.values() if r.priority_short}
        return f"audio priority {'; '.join(sorted(short))}" if short else None

    @property
    def udp_silent_s(self) -> float | None:
        """Seconds without a datagram from the relay, when that is over a second (else None).

        The relay answers our UDP pings twice a second, so more than a second of silence
        means the path is down: the UDP figures shown are then stale.
        """
        silent = self.network.udp_silent_ms if self.network else None
        if silent is None or silent <= UDP_SILENT_NS / 1e6:
            return None
        return silent / 1000

    @property
    def udp_rtt_ms(self) -> float | None:
        """The UDP round trip, None while the path is silent (a stale figure is no figure)."""
        if self.network is None or self.udp_silent_s is not None:
            return None
        return self.network.udp_rtt_ms

    @property
    def voice_path(self) -> str | None:
        """Which way voice goes, as the user reads it: ``voice over UDP`` or ``voice over TCP
        (UDP blocked)``; None before the network stage's first report."""
        if self.network is None:
            return None
        if self.network.voice_path == "tcp":
            return "voice over TCP (UDP blocked)"
        return "voice over UDP"

    @property
    def udp_loss_percent(self) -> float | None:
        """The share of UDP pings unanswered over the last 10 s."""
        return self.network.udp_loss_percent if self.network else None

    def speaker(self, user_id: int) -> ev.SpeakerStats | None:
        """What the decode stage last reported of that speaker, None if not heard."""
        return next((sp for sp in self.speakers if sp.user_id == user_id), None)

    @property
    def heard(self) -> set[int]:
        """The user ids the decode stage currently holds a jitter buffer for."""
        return {sp.user_id for sp in self.speakers}

    @property
    def mouth_to_ear(self) -> ev.Percentiles | None:
        """An estimate of a remote speaker's mouth to this ear, in ms; None before audio.

        Only the receiving part is measured (arrival to ear, on this clock, to the
        moment the sound card plays the frame's first sample). The rest is estimated:
        the network as this client's UDP round trip to the relay (the speaker's uplink
        plus this downlink, taking the speaker's path to be like ours), the speaker's
        capture to send as this client's own (the same pipeline: from the moment the
        frame's first sample was captured to its send, which the network stage
        measures whole), and the Opus lookahead. No clock of another machine is read.
        """
        local = self.playback.hop(ev.HOP_ARRIVAL_TO_EAR) if self.playback else None
        if local is None:
            return None
        rtt = self.udp_rtt_ms or 0.0
        # The network stage's hop runs from the capture timestamp, so it holds the
        # capture and encode hops; without it (before its first report) they are summed.
        whole = self.network.hop(ev.HOP_ENCODE_TO_NETWORK) if self.network else None
        if whole is not None:
            sending = whole.p50
        else:
            reports = [r for r in (self.capture, self.encode) if r is not None]
            sending = sum(h.p50 for r in reports for h in r.latency if h.hop in ev.SENDING_HOPS)
        lookahead = OPUS_LOOKAHEAD_MS if sending or rtt else 0.0
        extra = rtt + sending + lookahead
        return ev.Percentiles(
            "mouth_to_ear", round(local.p50 + extra, 3), round(local.p99 + extra, 3), local.n
        )

    @property
    def fec(self) -> str | None:
        """What the encoder protects against and why, e.g. ``FEC for 7 % (worst listener)``;
        None before its first report."""
        enc = self.encode
        if enc is None:
            return None
        return f"FEC for {enc.loss_hint} %" + (f" ({enc.hint_source})" if enc.hint_source else "")

    def users_in(self, channel: str) -> list[UserInfo]:
        return [u for u in self.roster.users if u.channel == channel]

    def name_of(self, user_id: int) -> str:
        for u in self.roster.users:
            if u.user_id == user_id:
                return u.name
        if user_id == LOOPBACK_SPEAKER:  # never a session: the settings' microphone test
            return "you (microphone test)"
        return f"#{user_id}"

    def status_line(self) -> str:
        s = self.state
        to = f" to {s.server}" if s.server else ""  # the relay in use: one of several, perhaps
        if s.state == ev.CONNECTED:
            conn = f"connected{to} as {s.name} in {s.channel}"
        elif s.state == ev.RECONNECTING:
            conn = f"reconnecting{to} (attempt {s.attempt}: {s.reason})"
        else:
            conn = s.state + (f" ({s.reason})" if s.reason else "")
        users = len(self.users_in(self.roster.channel)) if self.roster.channel else 0
        loss = self.decode.loss_percent if self.decode else None
        depth = ",".join(str(sp.depth) for sp in self.speakers) or "-"
        tcp = self.control.tcp_rtt_ms if self.control else None
        udp = self.udp_rtt_ms
        m2e = self.mouth_to_ear.p50 if self.mouth_to_ear else None
        silent = self.udp_silent_s
        udp_text = f"silent {silent:.0f}s" if silent is not None else _num(udp, "ms")
        fec = f" | {self.fec}" if self.fec else ""
        trouble = "".join(f" | {t}" for t in (self.device_trouble, self.priority_trouble) if t)
        path = f" | {self.voice_path}" if self.voice_path else ""
        udp_loss = self.udp_loss_percent
        udp_loss_text = f" loss {udp_loss:.0f}%" if udp_loss else ""
        enc = self.encode
        if enc is not None and enc.talk_mode:
            fec += f" | talk {enc.talk_mode}{' (talking)' if enc.talking else ''}"
        return (
            f"{conn}{path} | users {users} | loss {_num(loss, '%')} | jitter {depth} | "
            f"ping tcp {_num(tcp, 'ms')} udp {udp_text}{udp_loss_text} | "
            f"mouth-to-ear {_num(m2e, 'ms')}{fec}{trouble}"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "state": self.state.state,
            "reason": self.state.reason,
            "server": self.state.server,
            "name": self.state.name,
            "channel": self.roster.channel,
            "user_id": self.roster.me,
            "users": [
                {"user_id": u.user_id, "name": u.name, "channel": u.channel}
                for u in self.roster.users
            ],
            "stats": {name: dataclasses.asdict(r) for name, r in self.reports.items()},
            "mouth_to_ear_ms": dataclasses.asdict(m2e) if (m2e := self.mouth_to_ear) else None,
            "devices": {kind: dataclasses.asdict(d) for kind, d in self.devices.items()},
        }


def _num(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.1f}{unit}"
