"""Bans, sans-I/O: who may not hold a session, until when and why.

A ban names an address (one IPv4/IPv6 address or a network in CIDR form,
``10.0.0.0/8``), a user name, or both (then both must match); it ends at a wall
clock time, or never. Names are compared by their TR39 skeleton
(:func:`relay.names.skeleton`), as the session table compares them, so a ban on
``alice`` also keeps out ``\u0430lice``. Every method takes the time; the store
(:mod:`relay.store`) keeps the bans across restarts and the adapters do the
rest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from relay.names import NameRefused, normalize_name, skeleton

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """An address or a CIDR network (host bits allowed), or ValueError saying why not."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network") from None


def _skeleton(name: str) -> str | None:
    try:
        return skeleton(normalize_name(name))
    except NameRefused:
        return None


@dataclass(slots=True, frozen=True)
class Ban:
    """One ban; ``expires`` is wall clock seconds (``time.time()``), None for ever."""

    id: int
    address: str = ""  # an address or CIDR network, "" for any
    name: str = ""  # a user name, "" for any
    reason: str = ""
    created: float = 0.0
    expires: float | None = None

    def __post_init__(self) -> None:
        if not self.address and not self.name:
            raise ValueError("a ban needs an address, a name or both")
        if self.address:
            parse_network(self.address)

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires


class BanList:
    """The bans in force, looked up by address and name on every new session."""

    def __init__(self, bans: Iterable[Ban] = ()) -> None:
        self._bans: dict[int, tuple[Ban, Network | None, str | None]] = {}
        for ban in bans:
            self.add(ban)

    def __len__(self) -> int:
        return len(self._bans)

    def __iter__(self) -> Iterator[Ban]:
        return iter([b for b, _net, _skel in self._bans.values()])

    def add(self, ban: Ban) -> None:
        net = parse_network(ban.address) if ban.address else None
        self._bans[ban.id] = (ban, net, _skeleton(ban.name) if ban.name else None)

    def remove(self, ban_id: int) -> Ban | None:
        entry = self._bans.pop(ban_id, None)
        return None if entry is None else entry[0]

    def expired(self, now: float) -> list[Ban]:
        """The bans that have ended by ``now`` (for the store to forget)."""
        return [b for b, _n, _s in self._bans.values() if not b.active(now)]

    def match(self, address: str, name: str | None, now: float) -> Ban | None:
        """The first ban in force at ``now`` on a client from ``address`` asking for ``name``.

        ``name`` None: only the address is known yet (a new connection); bans that
        also name a user are then left for the auth.
        """
        if not self._bans:
            return None  # the common case: no work per connection or auth
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        skel = None if name is None else _skeleton(name)
        for ban, net, ban_skel in self._bans.values():
            if not ban.active(now):
                continue
            if net is not None and (ip is None or ip.version != net.version or ip not in net):
                continue
            if ban_skel is not None and (skel is None or skel != ban_skel):
                continue
            return ban
        return None
