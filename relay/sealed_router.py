"""The per-datagram decision of protocol 2 (sealed voice), sans-I/O: :class:`SealedRouter`.

The relay authenticates every datagram before anything else: its replay window
(:class:`relay.protocol.voice_crypto.ReplayWindow`; one for the session's voice, one
for its pings, since they count apart) and the session's relay tag
(keyed BLAKE2b under the session's up key), then routes it as
:class:`relay.router.Router` does. Voice is forwarded as the sender sealed it,
minus the relay tag: the same bytes to every listener, no per-listener
encryption, so fan-out costs what it cost in plaintext plus one tag check per
datagram received. The relay opens a voice datagram only for a whisper to
someone in another channel (one listener), to seal it again under that
channel's key.

The routing field is the sender's public user id (``sid``): no secret travels.
A datagram from an address its session is not bound to is a register attempt
only if it is an authenticated ping with a fresh counter, so a captured ping sent
again from anywhere moves nothing.

Thread ownership: as for :class:`relay.router.Router`: ``peers`` and ``table`` are
replaced whole by the control thread; each :class:`Peer`'s window is mutated only
by the routing thread and handed on from one ``peers`` dict to the next.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.protocol.sealed_datagram import (
    HEADER_SIZE,
    KIND_PING,
    KIND_VOICE,
    MAX_DATAGRAM,
    MIN_VOICE_UP,
    PING_SIZE,
    SID_OFFSET,
    TAG_SIZE,
    TARGET_OFFSET,
    VERSION,
)
from relay.protocol.voice_crypto import FRESH, REPLAYED, ReplayWindow, direction_keys
from relay.router import NOWHERE, Addr, Counters, Dests, Router, VoiceLimit

_SID_CTR = struct.Struct(">IQ")
_U32 = struct.Struct(">I")
_BLAKE2B = hashlib.blake2b
WINDOW_COUNTERS = ("good", "late", "lost", "replayed", "too_old")


@dataclass(slots=True)
class SealedCounters(Counters):
    """Router counters plus protocol 2's refusals and the sum of the replay windows."""

    drop_version: int = 0  # not protocol 2, or an unknown kind
    drop_bad_length: int = 0  # a ping that is not PING_SIZE, voice too short
    drop_bad_auth: int = 0  # relay tag (or a whispered body) does not authenticate
    drop_replayed: int = 0  # counter seen before
    drop_too_old: int = 0  # counter below the replay window
    resealed: int = 0  # whispers sealed again for a listener in another channel
    tunnelled: int = 0  # voice handed to listeners' TCP tunnels, one per listener


@dataclass(slots=True, frozen=True)
class Peer:
    """What the routing thread knows of one session: its keys and its replay windows."""

    token: int
    up: bytes  # the tag key of its datagrams to the relay
    down: bytes  # the tag key of the relay's answers to it
    key_id: int  # the media key id of its channel
    window: ReplayWindow  # its voice counters
    ping_window: ReplayWindow  # its ping counters: a kind of its own (voice_crypto.Sealer)


PeerEntry = tuple[int, int, bytes, int]  # user id, token, session key, media key id


class SealedRouter(Router):
    """Protocol 2 routing: authenticate, check the window, then route as Router does.

    ``media`` maps a media key id to its key, for the rare whisper across channels: the
    session table's own dict, which grows when a channel is added at run time (one
    atomic insert by the control thread; this thread only reads it).
    After :meth:`route` returns destinations, ``out_n`` is the length to send.
    """

    __slots__ = ("_aead", "_media", "cluster", "on_tunnel", "out_n", "peers", "retired", "sealed")

    def __init__(
        self,
        media: dict[int, bytes],
        echo: bool = False,
        on_bind: Callable[[int, Addr, bytes], None] | None = None,
        limit: VoiceLimit | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if clock is None:
            super().__init__(echo, on_bind, limit)
        else:
            super().__init__(echo, on_bind, limit, clock)
        self.sealed = SealedCounters()
        self.counters = self.sealed
        self._media = media
        # Built from _media on first use, this thread only; with the key it was built
        # from, since an id is given again to a new key once its channel's key rotated.
        self._aead: dict[int, tuple[bytes, AESGCM]] = {}
        self.peers: dict[int, Peer] = {}
        self.out_n = 0
        self.retired = dict.fromkeys(WINDOW_COUNTERS, 0)  # windows of sessions gone
        # Called (from the routing thread) with the voice as listeners get it and the
        # tokens of the listeners that hear through their TCP tunnel; unset: none do.
        self.on_tunnel: Callable[[bytes, tuple[int, ...]], None] | None = None
        # A cluster's router (relay.cluster_router) also hands voice to other relays:
        # one test of this flag per voice datagram is all a relay without one pays.
        self.cluster = False

    # --- control thread ----------------------------------------------------------------

    def update_peers(self, entries: Iterable[PeerEntry], removed: Iterable[int]) -> None:
        """Add or refresh ``entries``, forget the user ids ``removed``; swap in one store."""
        peers = dict(self.peers)
        for uid in removed:
            gone = peers.pop(uid, None)
            if gone is not None:
                for window in (gone.window, gone.ping_window):
                    for k, v in window.counts().items():
                        self.retired[k] += v
        for uid, token, session_key, key_id in entries:
            old = peers.get(uid)
            if old is not None and old.token == token:
                peers[uid] = Peer(token, old.up, old.down, key_id, old.window, old.ping_window)
            else:
                up, down = direction_keys(session_key)
                peers[uid] = Peer(token, up, down, key_id, ReplayWindow(), ReplayWindow())
        self.peers = peers

    def set_media(self, media: dict[int, bytes]) -> None:
        """Use ``media`` (key id -> key) from now on (a worker's copy of the relay's)."""
        self._aead = {}
        self._media = media

    def window_totals(self) -> dict[str, int]:
        """good, late, lost, replayed and too_old over every session's window, gone ones too."""
        out = dict(self.retired)
        for peer in list(self.peers.values()):
            for window in (peer.window, peer.ping_window):
                for k, v in window.counts().items():
                    out[k] += v
        return out

    # --- routing thread ----------------------------------------------------------------

    def route(self, buf: bytearray, n: int, addr: Addr) -> Dests:
        """Where ``buf[:n]`` goes (send ``buf[:out_n]``); may rewrite ``buf`` in place.

        A ping from its bound address is answered with the relay's tag; from a new
        address it goes to ``on_bind`` (with the answer) once authenticated. Voice
        goes out without the relay tag. Every refusal is counted by reason.
        """
        c = self.sealed
        if n == 0:
            c.keepalive += 1
            return NOWHERE
        if n < HEADER_SIZE:
            c.drop_short += 1
            return NOWHERE
        if n > MAX_DATAGRAM:
            c.drop_long += 1
            return NOWHERE
        kind = buf[1]
        if buf[0] != VERSION or (kind != KIND_PING and kind != KIND_VOICE):
            c.drop_version += 1
            return NOWHERE
        if (n != PING_SIZE) if kind == KIND_PING else (n < MIN_VOICE_UP):
            c.drop_bad_length += 1
            return NOWHERE
        sid, ctr = _SID_CTR.unpack_from(buf, SID_OFFSET)
        peer = self.peers.get(sid)
        if peer is None:
            c.drop_unknown_token += 1
            return NOWHERE
        window = peer.window if kind == KIND_VOICE else peer.ping_window
        verdict = window.check(ctr)
        if verdict != FRESH:
            if verdict == REPLAYED:
                c.drop_replayed += 1
            else:
                c.drop_too_old += 1
            return NOWHERE
        m = n - TAG_SIZE
        view = memoryview(buf)
        body = view[:m]
        if not hmac.compare_digest(_BLAKE2B(body, key=peer.up, digest_size=TAG_SIZE).digest(),
                                   view[m:n]):  # fmt: skip
            c.drop_bad_auth += 1
            return NOWHERE
        window.accept(ctr)  # authenticated: this counter is spent, whatever happens next
        table = self.table
        route = table.routes.get(peer.token)
        if route is None:
            c.drop_unknown_token += 1
            return NOWHERE
        if route.addr != addr:
            if kind == KIND_PING:
                c.register += 1
                buf[m:n] = _BLAKE2B(body, key=peer.down, digest_size=TAG_SIZE).digest()
                if self.on_bind is not None:
                    self.on_bind(peer.token, addr, bytes(buf[:n]))
            elif route.addr is None:
                c.drop_unbound += 1
            else:
                c.drop_spoofed += 1
            return NOWHERE
        if self.limit is not None and not route.bucket.take(
            self.clock(), n, self._s_per_datagram, self._s_per_byte, self._burst_s
        ):
            c.drop_voice_limited += 1
            return NOWHERE
        if kind == KIND_PING:
            buf[m:n] = _BLAKE2B(body, key=peer.down, digest_size=TAG_SIZE).digest()
            c.register += 1
            self.out_n = n
            return route.echo
        if route.silenced:
            c.drop_server_muted += 1
            return NOWHERE
        self.out_n = m
        if self.echo:
            c.voice_in += 1
            c.echoed += 1
            if route.tunnelled:
                self._tunnel(buf, m, (peer.token,))
                return NOWHERE
            return route.echo
        target = _U32.unpack_from(buf, TARGET_OFFSET)[0]
        if target:
            dests = table.whisper.get(target, NOWHERE)
            listener = self.peers.get(target)
            if listener is None and self.cluster and target != sid:
                return self._mesh_whisper(buf, m, target)
            tunnel = table.tunnel_of.get(target)
            if (not dests and tunnel is None) or listener is None or target == sid:
                c.drop_bad_target += 1
                return NOWHERE
            if listener.key_id != buf[2] and not self._reseal(buf, m, listener.key_id):
                c.drop_bad_auth += 1
                return NOWHERE
            if tunnel is not None:
                self._tunnel(buf, m, (tunnel,))
        else:
            dests = route.dests
            if route.tunnels:
                self._tunnel(buf, m, route.tunnels)
            if self.cluster and buf[2] == peer.key_id:  # its channel's key: never another's
                self._mesh_out(buf, m, peer.key_id)
        c.voice_in += 1
        c.forwarded += len(dests)
        return dests

    def _mesh_whisper(self, buf: bytearray, m: int, target: int) -> Dests:
        """A whisper to ``target``, who is on no session here (a cluster's router)."""
        self.sealed.drop_bad_target += 1
        return NOWHERE

    def _mesh_out(self, buf: bytearray, m: int, key_id: int) -> None:
        """Voice of channel ``key_id`` for the other relays (a cluster's router)."""

    def _tunnel(self, buf: bytearray, m: int, tokens: tuple[int, ...]) -> None:
        """Hand the voice to the listeners who hear through their control connection."""
        if self.on_tunnel is not None:
            self.sealed.tunnelled += len(tokens)
            self.on_tunnel(bytes(buf[:m]), tokens)

    def _cipher(self, key_id: int) -> AESGCM | None:
        key = self._media.get(key_id)
        if key is None:
            return None
        cached = self._aead.get(key_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        aead = AESGCM(key)
        self._aead[key_id] = (key, aead)
        return aead

    def _reseal(self, buf: bytearray, m: int, key_id: int) -> bool:
        """Seal a whisper's body again under the listener's channel key, in place."""
        src, dst = self._cipher(buf[2]), self._cipher(key_id)
        if src is None or dst is None:
            return False
        nonce = bytes(buf[SID_OFFSET:TARGET_OFFSET])
        try:
            plain = src.decrypt(nonce, bytes(buf[HEADER_SIZE:m]), bytes(buf[:HEADER_SIZE]))
        except InvalidTag:
            return False
        buf[2] = key_id
        buf[HEADER_SIZE:m] = dst.encrypt(nonce, plain, bytes(buf[:HEADER_SIZE]))
        self.sealed.resealed += 1
        return True
