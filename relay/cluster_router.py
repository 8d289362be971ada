"""The per-datagram decision of a cluster's relay, sans-I/O: :class:`ClusterRouter`.

A :class:`relay.sealed_router.SealedRouter` that also speaks to the other relays
of its cluster (docs/cluster.md):

* voice of a local speaker goes, as its local listeners get it, to each other
  relay with a member in the speaker's channel, once per relay, wrapped in a
  mesh datagram (:mod:`relay.protocol.mesh_datagram`) tagged with the cluster
  key; a whisper to a user on another relay goes to that relay alone;
* a mesh datagram is checked (length, version, a known sending relay, the
  cluster tag, that relay's replay window), unwrapped in place and fanned out to
  the local members of the channel its media key id names, or to the local
  whisper target, and **only locally**: nothing from the mesh goes back into the
  mesh, so there are no loops and no duplicates.

After :meth:`route`, the adapter sends ``buf[:out_n]`` to the returned
destinations and then ``mesh_data`` to each of ``mesh_dests``.

Thread ownership: ``mesh`` and ``local`` are immutable values replaced whole by
the control thread; the counters and the replay windows are the routing thread's.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

from relay.protocol.mesh_datagram import (
    HEADER,
    MESH_MAGIC,
    MESH_VERSION,
    TAG_SIZE,
)
from relay.protocol.mesh_datagram import HEADER_SIZE as MESH_HEADER_SIZE
from relay.protocol.mesh_datagram import MAX_SIZE as MESH_MAX
from relay.protocol.mesh_datagram import MIN_SIZE as MESH_MIN
from relay.protocol.sealed_datagram import KIND_VOICE, SID_OFFSET, TARGET_OFFSET, VERSION
from relay.protocol.voice_crypto import FRESH, ReplayWindow
from relay.router import NOWHERE, Addr, Dests, RouteTable, VoiceLimit
from relay.sealed_router import SealedCounters, SealedRouter

_BLAKE2B = hashlib.blake2b
_U32 = struct.Struct(">I")
_RELAY_CTR = struct.Struct(">IQ")
_MESH_RELAY_OFFSET = 2


@dataclass(slots=True)
class ClusterCounters(SealedCounters):
    """Sealed-router counters plus the mesh's: sent, received, and refused by reason."""

    mesh_out: int = 0  # mesh datagrams sent (one per other relay)
    mesh_in: int = 0  # mesh datagrams taken and fanned out locally
    drop_mesh_bad_length: int = 0
    drop_mesh_bad_version: int = 0
    drop_mesh_unknown_relay: int = 0  # a relay number not alive in the registry
    drop_mesh_bad_auth: int = 0  # wrong or no cluster secret
    drop_mesh_replayed: int = 0  # a counter of that relay seen before, or too old
    drop_mesh_bad_inner: int = 0  # not protocol-2 voice inside
    drop_mesh_bad_target: int = 0  # a whisper to nobody here


@dataclass(slots=True, frozen=True)
class MeshTable:
    """Where voice goes in the cluster, as the control thread last saw it."""

    num: int = 0  # this relay's mesh number (0: not registered yet, nothing is sent)
    key: bytes = b""  # the cluster tag key
    by_key: dict[int, Dests] = field(default_factory=dict)  # media key id -> other relays
    whisper: dict[int, Addr] = field(default_factory=dict)  # remote user id -> its relay
    relays: frozenset[int] = frozenset()  # mesh numbers whose datagrams are taken


LocalFanout = dict[int, tuple[Dests, tuple[int, ...]]]  # key id -> (addresses, tunnel tokens)


def local_fanout(table: RouteTable, key_ids: dict[str, int]) -> LocalFanout:
    """For each channel of ``table``, by its media key id: the addresses of its members
    bound over UDP and the tokens of those who hear through the TCP tunnel."""
    out: LocalFanout = {}
    for channel, tokens in table.members.items():
        key_id = key_ids.get(channel)
        if key_id is None:
            continue
        addrs: list[Addr] = []
        tunnels: list[int] = []
        for token in tokens:
            route = table.routes[token]
            if route.tunnelled:
                tunnels.append(token)
            elif route.addr is not None:
                addrs.append(route.addr)
        out[key_id] = (tuple(addrs), tuple(tunnels))
    return out


class ClusterRouter(SealedRouter):
    """Protocol 2 routing for a relay in a cluster (see the module's docstring)."""

    __slots__ = ("_ctr", "_windows", "local", "mesh", "mesh_counters", "mesh_data", "mesh_dests")

    # ``ctr``: where this relay's mesh counters come from. The UDP loop's router and the
    # TCP tunnel's (another thread) share one: ``next()`` of an itertools.count is atomic
    # under the GIL, so no two mesh datagrams of a relay carry the same counter.

    def __init__(
        self,
        media: dict[int, bytes],
        echo: bool = False,
        on_bind: Callable[[int, Addr, bytes], None] | None = None,
        limit: VoiceLimit | None = None,
        clock: Callable[[], float] | None = None,
        ctr: Iterator[int] | None = None,
    ) -> None:
        super().__init__(media, echo, on_bind, limit, clock)
        self.mesh_counters = ClusterCounters()
        self.sealed = self.counters = self.mesh_counters
        self.cluster = True
        self.mesh = MeshTable()
        self.local: LocalFanout = {}
        self.mesh_data = b""
        self.mesh_dests: Dests = NOWHERE
        self._ctr = itertools.count(1) if ctr is None else ctr
        self._windows: dict[int, ReplayWindow] = {}

    def route(self, buf: bytearray, n: int, addr: Addr) -> Dests:
        """As :meth:`SealedRouter.route`, and mesh datagrams; sets ``mesh_dests``."""
        self.mesh_dests = NOWHERE
        if n and buf[0] == MESH_MAGIC:
            return self._from_mesh(buf, n)
        return SealedRouter.route(self, buf, n, addr)

    # --- out to the mesh ---------------------------------------------------------------

    def _wrap(self, buf: bytearray, m: int, dests: Dests) -> None:
        mesh = self.mesh
        body = HEADER.pack(MESH_MAGIC, MESH_VERSION, mesh.num, next(self._ctr)) + buf[:m]
        self.mesh_data = body + _BLAKE2B(body, key=mesh.key, digest_size=TAG_SIZE).digest()
        self.mesh_dests = dests
        self.mesh_counters.mesh_out += len(dests)

    def _mesh_out(self, buf: bytearray, m: int, key_id: int) -> None:
        mesh = self.mesh
        dests = mesh.by_key.get(key_id)
        if dests and mesh.num:
            self._wrap(buf, m, dests)

    def _mesh_whisper(self, buf: bytearray, m: int, target: int) -> Dests:
        mesh = self.mesh
        relay = mesh.whisper.get(target)
        if relay is None or not mesh.num:
            self.mesh_counters.drop_bad_target += 1
            return NOWHERE
        self._wrap(buf, m, (relay,))
        self.mesh_counters.voice_in += 1
        return NOWHERE

    # --- in from the mesh --------------------------------------------------------------

    def _from_mesh(self, buf: bytearray, n: int) -> Dests:
        c = self.mesh_counters
        if n < MESH_MIN or n > MESH_MAX:
            c.drop_mesh_bad_length += 1
            return NOWHERE
        if buf[1] != MESH_VERSION:
            c.drop_mesh_bad_version += 1
            return NOWHERE
        relay, ctr = _RELAY_CTR.unpack_from(buf, _MESH_RELAY_OFFSET)
        mesh = self.mesh
        if relay not in mesh.relays:
            c.drop_mesh_unknown_relay += 1
            return NOWHERE
        view = memoryview(buf)
        m = n - TAG_SIZE
        if not hmac.compare_digest(_BLAKE2B(view[:m], key=mesh.key, digest_size=TAG_SIZE).digest(),
                                   view[m:n]):  # fmt: skip
            c.drop_mesh_bad_auth += 1
            return NOWHERE
        window = self._windows.get(relay)
        if window is None:
            window = self._windows[relay] = ReplayWindow()
        verdict = window.check(ctr)
        if verdict != FRESH:
            c.drop_mesh_replayed += 1
            return NOWHERE
        window.accept(ctr)
        h = MESH_HEADER_SIZE
        if buf[h] != VERSION or buf[h + 1] != KIND_VOICE:
            c.drop_mesh_bad_inner += 1
            return NOWHERE
        size = m - h
        inner = bytes(view[h:m])
        view.release()
        buf[:size] = inner  # the voice as local listeners get it, at the buffer's start
        self.out_n = size
        key_id = buf[2]
        target = _U32.unpack_from(buf, TARGET_OFFSET)[0]
        table = self.table
        if target:
            dests = table.whisper.get(target, NOWHERE)
            listener = self.peers.get(target)
            tunnel = table.tunnel_of.get(target)
            sid = _U32.unpack_from(buf, SID_OFFSET)[0]
            if (not dests and tunnel is None) or listener is None or target == sid:
                c.drop_mesh_bad_target += 1
                return NOWHERE
            if listener.key_id != key_id and not self._reseal(buf, size, listener.key_id):
                c.drop_mesh_bad_inner += 1
                return NOWHERE
            if tunnel is not None:
                self._tunnel(buf, size, (tunnel,))
        else:
            dests, tunnels = self.local.get(key_id, (NOWHERE, ()))
            if tunnels:
                self._tunnel(buf, size, tunnels)
        c.mesh_in += 1
        c.forwarded += len(dests)
        return dests

    def mesh_line(self) -> dict[str, int]:
        """The mesh's counters alone (for a test or the log)."""
        names = [f.name for f in fields(ClusterCounters) if "mesh" in f.name]
        return {k: getattr(self.mesh_counters, k) for k in names}
