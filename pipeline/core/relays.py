"""The relays a client may use and which one to try next (SPEC.md, "Several relays").

Sans-I/O: addresses as the user writes them (:func:`split_server`, :func:`split_servers`),
one entry of a welcome's ``relays`` (:class:`RelayEntry`, parsed leniently by
:func:`parse_relays`: a bad entry is dropped, never the welcome), and the failover order
(:class:`RelayList`): the relay the client was on is tried again once, then the others
in turn, the whole list at most once per RECONNECT_DELAY.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, is_dataclass

from relay.protocol import schema
from relay.protocol.errors import ProtocolError

MAX_RELAYS = 32  # relays in a --server list, and relays learnt from welcomes
MAX_ADDR = 261  # "[" + a 253-character host + "]:" + 5 digits
RECONNECT_DELAY = 2.0  # seconds before the whole list is tried again (SPEC)
# A certificate's SHA-256 as the client pins it (relay.tls.fingerprint): AB:CD:...
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")


def split_server(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` (``[::1]:8080``) or a bare ``V6:PORT`` -> (host, port);
    ValueError with a line a person can act on."""
    text = text.strip()
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if (
        not host
        or len(host) > 253
        or any(c in host for c in "[], \t")
        or not port.isascii()
        or not port.isdigit()
        or not 0 < int(port) < 65536
    ):
        raise ValueError(f"expected HOST:PORT or [IPV6]:PORT, got {text!r}")
    return host, int(port)


def split_servers(text: str) -> list[tuple[str, int]]:
    """A comma-separated list of servers (``a:8080,[::1]:8080``) -> [(host, port), ...],
    in order; ValueError naming the entry at fault, a repeated one, or too many."""
    entries = text.split(",")
    if len(entries) > MAX_RELAYS:
        raise ValueError(f"at most {MAX_RELAYS} servers, got {len(entries)}")
    out: list[tuple[str, int]] = []
    for i, entry in enumerate(entries, 1):
        where = f"server {i} of {len(entries)}: " if len(entries) > 1 else ""
        if not entry.strip():
            raise ValueError(f"{where}empty (expected HOST:PORT, separated by commas)")
        try:
            server = split_server(entry)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
        if server in out:
            raise ValueError(f"{where}{server_text(*server)} is listed twice")
        out.append(server)
    return out


def server_text(host: str, port: int) -> str:
    """The way a user writes the server: ``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def servers_text(servers: list[tuple[str, int]]) -> str:
    """A list of servers the way :func:`split_servers` reads it back."""
    return ",".join(server_text(h, p) for h, p in servers)


@dataclass(frozen=True, slots=True)
class RelayEntry:
    """One entry of ``welcome.relays``: a relay of the same cluster and the SHA-256
    fingerprint of its TLS certificate, in the form the client pins (``AB:CD:...``)."""

    host: str
    port: int
    fingerprint: str

    @classmethod
    def parse(cls, value: object) -> RelayEntry:
        """An entry from its msgpack map ``{addr, fingerprint}`` (or a record with those
        fields, as the relay's own messages may hold it); ProtocolError if bad."""
        if isinstance(value, RelayEntry):
            return value
        if is_dataclass(value) and not isinstance(value, type):
            value = schema.to_map(value)
        if not isinstance(value, dict):
            raise ProtocolError(f"must be a map, got {type(value).__name__}")
        addr, fp = value.get("addr"), value.get("fingerprint")
        if not isinstance(addr, str) or not 0 < len(addr) <= MAX_ADDR:
            raise ProtocolError(f"addr must be HOST:PORT of at most {MAX_ADDR} characters")
        if not isinstance(fp, str) or not _FINGERPRINT.fullmatch(fp):
            raise ProtocolError("fingerprint must be a SHA-256 as AB:CD:... (32 hex pairs)")
        try:
            host, port = split_server(addr)
        except ValueError as exc:
            raise ProtocolError(f"addr: {exc}") from None
        return cls(host, port, fp.upper())

    def to_map(self) -> dict[str, str]:
        return {"addr": server_text(self.host, self.port), "fingerprint": self.fingerprint}


def parse_relays(value: object) -> tuple[list[RelayEntry], list[str]]:
    """A welcome's ``relays``: the good entries (the first of each address, at most
    MAX_RELAYS) and why each other was dropped. Nothing here ever refuses the welcome."""
    if not isinstance(value, list):
        return [], [f"relays must be a list, got {type(value).__name__}"]
    good: list[RelayEntry] = []
    dropped: list[str] = []
    for i, item in enumerate(value):
        if len(good) >= MAX_RELAYS:
            dropped.append(f"{len(value) - i} entries beyond the first {MAX_RELAYS}")
            break
        try:
            entry = RelayEntry.parse(item)
        except ProtocolError as exc:
            dropped.append(f"relays[{i}]: {exc}")
            continue
        if any((e.host, e.port) == (entry.host, entry.port) for e in good):
            dropped.append(f"relays[{i}]: {server_text(entry.host, entry.port)} listed twice")
            continue
        good.append(entry)
    return good, dropped


@dataclass(frozen=True, slots=True)
class Relay:
    host: str
    port: int
    fingerprint: str = ""  # vouched for by a relay we were connected to; "": none (TOFU)

    @property
    def server(self) -> str:
        return server_text(self.host, self.port)

    @property
    def key(self) -> tuple[str, int]:
        """What tells two relays apart: the address (a fingerprint may be vouched later)."""
        return (self.host, self.port)


@dataclass
class RelayList:
    """The configured relays (the user's, in order) and those learnt from welcomes, and
    which to try next. A list of one behaves exactly as the single relay did."""

    configured: list[Relay]
    learnt: list[Relay] = field(default_factory=list)
    current: Relay = field(init=False)
    rounds: int = 0  # times every relay was tried in vain since the last welcome
    _tried: int = 0  # relays tried in vain in this round

    def __post_init__(self) -> None:
        assert self.configured, "a client needs at least one relay"
        self.current = self.configured[0]

    @property
    def relays(self) -> list[Relay]:
        """Every relay, configured first."""
        return self.configured + self.learnt

    def welcomed(self) -> None:
        """The current relay welcomed us: the next loss starts a new round from it."""
        self._tried = self.rounds = 0

    def lost(self) -> float:
        """The connection to the welcoming relay is lost: it is tried again first, after
        RECONNECT_DELAY (a relay that restarts, or a path that blinked)."""
        self._tried = 0
        return RECONNECT_DELAY

    def failed(self) -> float:
        """An attempt on the current relay failed: move to the next one. Returns the delay
        before trying it: none within a round, RECONNECT_DELAY once all were tried."""
        relays = self.relays
        self._tried += 1
        self.current = relays[(self._index(relays) + 1) % len(relays)]
        if self._tried < len(relays):
            return 0.0
        self._tried = 0
        self.rounds += 1
        return RECONNECT_DELAY

    def learn(self, entries: list[RelayEntry]) -> list[Relay]:
        """Add what a welcome listed (newest first, at most MAX_RELAYS learnt; configured
        relays keep their place); returns the relays whose fingerprint is to be pinned."""
        vouched = [Relay(e.host, e.port, e.fingerprint) for e in entries]
        known = {r.key for r in self.configured}
        fresh = [r for r in vouched if r.key not in known]
        keys = {r.key for r in fresh}
        self.learnt = (fresh + [r for r in self.learnt if r.key not in keys])[:MAX_RELAYS]
        relays = self.relays
        if self.current not in relays:  # the current one was learnt, now re-vouched
            i = self._index(relays)
            self.current = relays[i] if i >= 0 else self.current
        return vouched

    def _index(self, relays: list[Relay]) -> int:
        key = self.current.key
        for i, r in enumerate(relays):
            if r.key == key:
                return i
        return -1  # dropped from the list (no longer learnt): the next is the first
