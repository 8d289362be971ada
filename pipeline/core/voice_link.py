"""The network stage's decisions, sans-I/O: what to send, when, and what a datagram means.

The adapter (pipeline/stages/network.py) owns the socket and threads; this object
owns the session token, the whisper target, the chaos dropper, the register
ping (sent on every new session until answered, then periodically: its echo
gives the UDP round-trip time) and the 5 s NAT keepalive. Times are ns.

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
from pipeline.media.audio_format import SAMPLE_RATE
from relay.protocol.datagram import (
    HEADER,
    HEADER_SIZE,
    KEEPALIVE,
    REGISTER,
    VoiceDatagram,
    classify,
    pack_header_into,
)
from relay.protocol.errors import ProtocolError

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
    """A voice datagram from the relay, payload as a view into the receive buffer.

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
    def __init__(self, chaos: Chaos | None = None, clock_offset: int = 0) -> None:
        """``clock_offset``: a random u64 per client, added to every timestamp it sends."""
        self.clock_offset = clock_offset & MASK
        self.token = 0
        self.target = 0
        self.chaos = chaos or Chaos()
        self.registered = False
        self.rtt_ns: int | None = None
        # Every key exists from the start: the sender thread only updates values, so the
        # receiver thread can copy the dict for stats while it runs.
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._next_register = 0
        self._next_keepalive = 0
        self._nonce = 0

    def set_session(self, token: int, now: int) -> None:
        """A new or resumed session: register (again) right away."""
        if token != self.token:
            self.registered = False
        self.token = token
        self._next_register = now

    def _count(self, name: str) -> None:
        self.counters[name] += 1

    # --- sending ----------------------------------------------------------------------

    def should_send(self) -> bool:
        """Whether the next voice datagram goes to the socket (a session, and chaos spares it)."""
        if not self.token:
            self._count("unsent_no_session")
            return False
        if self.chaos.drop():
            self._count("chaos_dropped")
            return False
        self._count("sent")
        return True

    def pack_header(self, buf: bytearray, seq: int, capture_ns: int) -> None:
        """The header of a voice datagram for the frame captured at ``capture_ns`` (local)."""
        media = media_timestamp(capture_ns, self.clock_offset)
        pack_header_into(buf, self.token, seq, media, self.target)

    def timers(self, now: int) -> list[bytes]:
        """Datagrams due now: a register ping and/or a keepalive."""
        out: list[bytes] = []
        if not self.token:
            return out
        if now >= self._next_register:
            self._nonce += 1
            stamp = seq_add(now, self.clock_offset)
            out.append(bytes(VoiceDatagram(self.token, self._nonce, stamp, 0)))
            period = REGISTER_PERIOD_NS if self.registered else REGISTER_RETRY_NS
            self._next_register = now + period
            self._count("register_sent")
        if now >= self._next_keepalive:
            out.append(b"")
            self._next_keepalive = now + KEEPALIVE_NS
            self._count("keepalive_sent")
        return out

    def next_timer(self, now: int) -> int:
        if not self.token:
            return now + REGISTER_PERIOD_NS
        return min(self._next_register, self._next_keepalive)

    # --- receiving ------------------------------------------------------------------

    def received(self, data: memoryview, now: int) -> Incoming | None:
        """Voice to play, or None (a register echo, or something dropped and counted)."""
        try:
            kind, token, _target = classify(data)
        except ProtocolError:
            self._count("bad_datagram")
            return None
        if kind == KEEPALIVE:
            return None
        _token, seq, ts, _target = HEADER.unpack_from(data)
        if kind == REGISTER:
            rtt = seq_diff(seq_add(now, self.clock_offset), ts)
            if token != self.token or not 0 <= rtt <= MAX_RTT_NS:
                self._count("bad_register_echo")
                return None
            if not self.registered:  # answered: from now on only the periodic RTT probe
                self.registered = True
                self._next_register = now + REGISTER_PERIOD_NS
            self.rtt_ns = rtt
            self._count("register_echo")
            return None
        self._count("received")
        return Incoming(token, seq, ts, data[HEADER_SIZE:])
