"""The TCP tunnel for voice (SPEC.md, "TCP tunnel") at the relay, sans-I/O.

A client whose UDP path is dead sends its voice datagrams inside ``voice`` control
messages and asks, with ``tunnel``, to hear through its control connection too.

* :class:`TunnelIn` checks a datagram that came through a session's control
  connection exactly as :class:`relay.sealed_router.SealedRouter` checks one from
  UDP (length, version, sid, replay window, relay tag), plus that its sid is the
  connection's own session, then routes it with the same route table: UDP
  destinations to send it to, and the tokens of tunnelled listeners. It runs on the
  control thread, so it has a router of its own: its own replay windows (a tunnelled
  datagram never travels outside TLS, so it cannot be replayed into UDP or back), its
  own voice limit buckets and counters.
* :class:`relay.voice_queue.VoiceQueue` (its own module: the client uses it too) is
  what waits for one tunnelled connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relay.protocol.sealed_datagram import KIND_OFFSET, KIND_VOICE, SID_OFFSET
from relay.router import Bucket, Dests, VoiceLimit
from relay.sealed_router import PeerEntry, SealedCounters, SealedRouter
from relay.voice_queue import MAX_AGE, MAX_FRAMES, MAX_UNSENT, RETRY, VoiceQueue

__all__ = ["MAX_AGE", "MAX_FRAMES", "MAX_UNSENT", "RETRY", "Routed", "TunnelIn", "VoiceQueue"]


@dataclass(slots=True, frozen=True)
class Routed:
    """Where a tunnelled datagram goes: ``data`` (the relay tag stripped) to ``dests`` over
    UDP and to the tunnelled listeners ``tunnels`` (tokens)."""

    data: bytes
    dests: Dests
    tunnels: tuple[int, ...]
    # A cluster's relay: the mesh datagram for the other relays, and where it goes.
    mesh_data: bytes = b""
    mesh_dests: Dests = ()


class TunnelIn:
    """Voice that arrives through control connections: authenticated, limited, routed."""

    def __init__(
        self,
        media: dict[int, bytes],
        echo: bool = False,
        limit: VoiceLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        router: SealedRouter | None = None,
    ) -> None:
        # No limit in the router: it is applied here first. A cluster's relay hands in a
        # relay.cluster_router.ClusterRouter, so tunnelled voice reaches the other relays.
        self.router = SealedRouter(media, echo=echo) if router is None else router
        self.router.on_tunnel = self._collect
        self.limit = limit
        self.clock = clock
        self.drop_not_voice = 0  # a ping or garbage kind: the tunnel carries voice only
        self.drop_not_yours = 0  # a sid that is not the connection's session
        self.drop_voice_limited = 0
        self._buckets: dict[int, Bucket] = {}  # token -> this path's voice limit
        self._tunnels: tuple[int, ...] = ()

    @property
    def counters(self) -> SealedCounters:
        return self.router.sealed

    def update_peers(self, entries: Iterable[PeerEntry], removed: Iterable[int]) -> None:
        entries = list(entries)
        self.router.update_peers(entries, removed)
        live = {token for _uid, token, _key, _kid in entries} | {
            p.token for p in self.router.peers.values()
        }
        for token in [t for t in self._buckets if t not in live]:
            del self._buckets[token]

    def route(self, data: bytes, token: int) -> Routed | None:
        """Where ``data``, sent through the connection of session ``token``, goes; None if
        it is refused (counted by reason here or in :attr:`counters`)."""
        n = len(data)
        if n <= SID_OFFSET + 4 or data[KIND_OFFSET] != KIND_VOICE:
            self.drop_not_voice += 1
            return None
        sid = int.from_bytes(data[SID_OFFSET : SID_OFFSET + 4], "big")
        peer = self.router.peers.get(sid)
        if peer is None or peer.token != token:
            self.drop_not_yours += 1
            return None
        if self.limit is not None and not self._take(token, n):
            self.drop_voice_limited += 1
            return None
        route = self.router.table.routes.get(token)
        if route is None:
            self.router.sealed.drop_unknown_token += 1
            return None
        buf = bytearray(data)
        self._tunnels = ()
        # From the session's own connection: as if from its bound address (or none yet).
        dests = self.router.route(buf, n, route.addr)  # type: ignore[arg-type]
        tunnels, self._tunnels = self._tunnels, ()
        mesh: Dests = getattr(self.router, "mesh_dests", ())
        if not dests and not tunnels and not mesh:  # refused (counted), or nobody to hear it
            return None
        out = bytes(buf[: self.router.out_n]) if dests or tunnels else b""
        if mesh:
            return Routed(out, dests, tunnels, self.router.mesh_data, mesh)  # type: ignore[attr-defined]
        return Routed(out, dests, tunnels)

    def _collect(self, _data: bytes, tokens: tuple[int, ...]) -> None:
        self._tunnels = tokens

    def _take(self, token: int, n: int) -> bool:
        """The voice limit's two buckets (as :class:`relay.router.Router` keeps them)."""
        lim = self.limit
        assert lim is not None
        b = self._buckets.get(token)
        if b is None:
            b = self._buckets[token] = Bucket()
        return b.take(
            self.clock(), n, 1.0 / lim.datagrams_per_s, 1.0 / lim.bytes_per_s, lim.burst_s
        )

    def line(self) -> dict[str, int]:
        """The tunnel's counters, for the relay's counter line (``tunnel_*``)."""
        c = self.router.sealed
        return {
            "in": c.voice_in,
            "forwarded": c.forwarded,
            "tunnelled": c.tunnelled,
            "drop_not_voice": self.drop_not_voice,
            "drop_not_yours": self.drop_not_yours,
            "drop_voice_limited": self.drop_voice_limited,
            "drop_bad_auth": c.drop_bad_auth,
            "drop_replayed": c.drop_replayed + c.drop_too_old,
            "drop_other": c.drop_short + c.drop_long + c.drop_version + c.drop_bad_length
            + c.drop_unknown_token + c.drop_bad_target + c.drop_server_muted,
        }  # fmt: skip
