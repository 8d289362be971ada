"""The network stage's decisions, sans-I/O: what to send, when, and what a datagram means.

The adapter (pipeline/stages/network.py) owns the socket and threads; this object
owns the session token, the whisper target, the chaos dropper, the register
ping (sent on every new session until answered, then periodically: its echo
gives the UDP round-trip time and, in :class:`~pipeline.core.udp_health.UdpHealth`,
the loss and the voice path: UDP, or the TCP tunnel while UDP is dead) and the 5 s
NAT keepalive. Times are ns.

NAT: the pings go every 500 ms and the keepalive every 5 s, well under the UDP
mapping timeouts NATs use (RFC 4787 asks for 2 minutes at least; home routers are
seen dropping an idle mapping after 30 s, the shortest after about 15-20 s). A NAT
that gives us a new public port mid-call (rebinding) is followed by the relay on the
next authenticated ping from the new port.

What this client puts in a header's timestamp field never reveals its clock: a
voice datagram carries the frame's media timestamp (its capture instant on a
48 kHz sample clock, plus a random offset chosen once per client, as RTP does),
and a register ping carries its send time plus the same offset. What another
client puts there is only compared with that client's own numbers (the jitter
buffer does, wrap-safe), never with this machine's clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.core.seqnum import MASK, seq_add, seq_diff
from pipeline.core.udp_health import UdpHealth
from pipeline.media.audio_format import SAMPLE_RATE
from relay.protocol.sealed_datagram import KIND_OFFSET, KIND_PING
from relay.protocol.voice_crypto import Opened, Opener, Sealer, counter_start

KEEPALIVE_NS = 5_000_000_000
COUNTERS = (
    "sent", "chaos_dropped", "unsent_no_session", "register_sent", "keepalive_sent",
    "register_echo", "bad_register_echo", "received", "bad_datagram",
)  # fmt: skip
REGISTER_RETRY_NS = 500_000_000  # until the relay answers
# After: a UDP RTT sample twice a second, so that a path that stopped answering shows
# within a second (UDP_SILENT_NS), even in a channel where nobody talks.
REGISTER_PERIOD_NS = 500_000_000
UDP_SILENT_NS = 1_000_000_000
MAX_RTT_NS = 10_000_000_000  # an echo that claims a longer round trip is not ours


@dataclass(slots=True, frozen=True)
class Incoming:
    """An authenticated voice frame from the relay.

    ``media`` is the speaker's media timestamp (48 kHz samples, any u64): it means
    something only next to the same speaker's other timestamps.
    """

    speaker: int
    seq: int
    media: int
    payload: memoryview


class Chaos:
    """Drops a given percentage of outgoing datagrams, at random, reproducibly per seed."""

    def __init__(self, percent: float = 0.0, seed: int | None = None) -> None:
        self.percent = percent
        self._rng = random.Random(seed)

    def drop(self) -> bool:
        return self.percent > 0 and self._rng.random() * 100.0 < self.percent


def media_timestamp(capture_ns: int, offset: int) -> int:
    """A frame's media timestamp: its capture instant in 48 kHz samples, plus ``offset``."""
    return seq_add(capture_ns * SAMPLE_RATE // 1_000_000_000, offset)


class VoiceLink:
    """The sealed voice path (protocol 2) of one client: a :class:`Sealer` for what it
    sends, an :class:`Opener` for what it hears, the register ping and the keepalive.

    Two threads use it: the sender seals voice (:meth:`should_send`, :meth:`seal`),
    the receiver runs the timers and opens datagrams; the keys are swapped whole.
    """

    def __init__(
        self, chaos: Chaos | None = None, clock_offset: int = 0, voice_path: str = "auto"
    ) -> None:
        """``clock_offset``: a random u64 per client, added to every timestamp it sends;
        ``voice_path``: auto (as the UDP pings say), or always udp or tcp."""
        self.clock_offset = clock_offset & MASK
        self.health = UdpHealth(voice_path)
        self.sid = 0  # our public user id: the routing field of what we send
        self.target = 0
        self.chaos = chaos or Chaos()
        self.registered = False
        self.rtt_ns: int | None = None
        self.sealer: Sealer | None = None
        self.opener = Opener()
        # Every key exists from the start: the sender thread only updates values, so the
        # receiver thread can copy the dict for stats while it runs.
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._udp_key = b""
        self._media: tuple[int, bytes] | None = None
        self._echo_top = -1  # the highest counter of a ping answer taken: older ones are replays
        self._next_register = 0
        self._next_keepalive = 0

    @property
    def token(self) -> int:
        """Non-zero once there is a session (its public id: no secret is kept here)."""
        return self.sid if self.sealer is not None else 0

    def has_session(self, sid: int, udp_key: bytes) -> bool:
        """Whether this is the session we already have (same id and UDP key)."""
        return self.sealer is not None and sid == self.sid and udp_key == self._udp_key

    def set_session(self, sid: int, udp_key: bytes, now: int) -> None:
        """A new or resumed session (our user id and its UDP key): register right away."""
        if sid != self.sid or udp_key != self._udp_key or self.sealer is None:
            self.registered = False
            old = self.sealer
            self.sealer = Sealer(sid, udp_key, counter_start(self.clock_offset, now))
            if old is not None:
                media = old.media_key
                if media is not None:
                    self.sealer.set_media_key(*media)
                old.close()
            self.sid, self._udp_key = sid, udp_key
            self._echo_top = -1
            self.health.restart(now)
            # A new session may be on a restarted relay, which hands out user ids (and
            # so speakers' ids) again from 1: the old windows would refuse the new
            # speakers' counters as too old.
            self.opener.windows.clear()
        self._next_register = now

    def set_media_key(self, key_id: int, key: bytes) -> None:
        """The media key of the channel we are in: what we seal with, and open with."""
        if self._media == (key_id, key) and (self.sealer is None or self.sealer.ready):
            return
        self._media = (key_id, key)
        if self.sealer is not None:
            self.sealer.set_media_key(key_id, key)
        self.opener.add_media_key(key_id, key)

    def _count(self, name: str) -> None:
        self.counters[name] += 1

    # --- sending ----------------------------------------------------------------------

    def should_send(self) -> bool:
        """Whether the next voice datagram goes to the socket (a session, and chaos spares it)."""
        sealer = self.sealer
        if sealer is None or not sealer.ready:
            self._count("unsent_no_session")
            return False
        if self.chaos.drop():
            self._count("chaos_dropped")
            return False
        self._count("sent")
        return True

    def seal(self, seq: int, capture_ns: int, opus: bytes | memoryview) -> bytes:
        """The voice datagram of the frame captured at ``capture_ns`` (local clock)."""
        sealer = self.sealer
        assert sealer is not None
        return sealer.voice(seq, media_timestamp(capture_ns, self.clock_offset), opus, self.target)

    def timers(self, now: int) -> list[bytes]:
        """Datagrams due now: a register ping and/or a keepalive."""
        out: list[bytes] = []
        sealer = self.sealer
        if sealer is None:
            return out
        if now >= self._next_register:
            out.append(sealer.ping(seq_add(now, self.clock_offset)))
            self.health.sent(now)
            period = REGISTER_PERIOD_NS if self.registered else REGISTER_RETRY_NS
            self._next_register = now + period
            self._count("register_sent")
        if now >= self._next_keepalive:
            out.append(b"")
            self._next_keepalive = now + KEEPALIVE_NS
            self._count("keepalive_sent")
        return out

    def next_timer(self, now: int) -> int:
        if self.sealer is None:
            return now + REGISTER_PERIOD_NS
        return min(self._next_register, self._next_keepalive, self.health.next_check(now))

    @property
    def path(self) -> str:
        """Where voice goes now: ``udp``, or ``tcp`` (the tunnel through the control process)."""
        return self.health.path

    @property
    def voice_ready(self) -> bool:
        """Whether voice can go out: UDP answered our ping, or it takes the tunnel."""
        return self.sealer is not None and (self.registered or self.health.path == "tcp")

    # --- receiving ------------------------------------------------------------------

    def received(self, data: memoryview, now: int) -> Incoming | None:
        """Voice to play, or None (a ping answer, a keepalive, or something refused and
        counted: in ``counters`` or, by reason, in the opener's ``refused``)."""
        if len(data) == 0:
            return None
        sealer = self.sealer
        if sealer is None:
            self._count("bad_datagram")
            return None
        if len(data) > KIND_OFFSET and data[KIND_OFFSET] == KIND_PING:
            self._ping_answer(sealer, data, now)
            return None
        opened = self.opener.open(data)
        if not isinstance(opened, Opened):
            self._count("bad_datagram")
            return None
        self._count("received")
        return Incoming(opened.speaker, opened.seq, opened.media, memoryview(opened.opus))

    def _ping_answer(self, sealer: Sealer, data: memoryview, now: int) -> None:
        answer = sealer.ping_answer(data)
        if isinstance(answer, str) or answer[0] <= self._echo_top:
            self._count("bad_register_echo")
            return
        ctr, stamp = answer
        rtt = seq_diff(seq_add(now, self.clock_offset), stamp)
        if not 0 <= rtt <= MAX_RTT_NS:
            self._count("bad_register_echo")
            return
        self._echo_top = ctr
        if not self.registered:  # answered: from now on only the periodic RTT probe
            self.registered = True
            self._next_register = now + REGISTER_PERIOD_NS
        self.rtt_ns = rtt
        self.health.answered(now, rtt)
        self._count("register_echo")

    def crypto_counts(self) -> dict[str, int]:
        """The speakers' windows summed (good, late, lost, replayed, too_old) and the
        opener's refusals that are not in them (bad_auth, no_key)."""
        out = self.opener.totals()
        out["bad_auth"] = self.opener.refused["bad_auth"]
        out["no_key"] = self.opener.refused["no_key"]
        # Refused before a window existed (a replay of a speaker's first datagram
        # is still a replay): the opener counts those itself.
        return out
