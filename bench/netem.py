"""A userspace netem: delay, jitter, loss, burst loss, reordering and duplication for UDP.

There is no kernel ``netem`` on the benchmark machines, so the benchmarks put this
proxy between the clients and the relay instead. Two layers, as STYLE.md asks:

* the sans-I/O model: :class:`Impairment` (the settings), :class:`Impairer` (one
  direction of one flow: a datagram and the time it arrived in, the datagrams to
  emit and when out) and :class:`Schedule` (a capped heap of pending releases);
* the adapter: :class:`UdpProxy`, one thread, one selector, one heap, that binds a
  listening socket for the clients and opens one upstream socket per client, so
  the relay still sees one source address per client.

Every flow (client address) gets its own pair of impairers, as every real client
has its own access link: a burst on one talker's path does not eat the other
talker's packets, and the mean burst length is measured in that flow's packets.

Run it in front of a relay::

    python -m bench.netem --listen 127.0.0.1:0 --upstream 127.0.0.1:8080 \\
        --delay 20 --jitter 5 --loss 5 --burst 3 --seed 1 --duration 60
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import logging
import math
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from types import FrameType, TracebackType
from typing import Any, Generic, Literal, TypeVar, cast

from pipeline.ipc.child_process import StopFlag
from relay.protocol import sealed_datagram as sealed
from relay.protocol.datagram import HEADER_SIZE

log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
MAX_PENDING = 10_000  # datagrams held in the proxy's heap before it drops and counts
MAX_CLIENTS = 1024  # distinct client addresses before new ones are refused
RECV_SIZE = 65_535  # larger than any UDP payload, so nothing is ever truncated
RECV_BATCH = 64  # datagrams read per readiness event before releases get a turn
DEFAULT_REORDER_EXTRA_MS = 40.0  # two 20 ms voice frames overtake a held-back packet

Direction = Literal["both", "up", "down"]
Address = tuple[Any, ...]  # (host, port) for IPv4, (host, port, flow, scope) for IPv6


# --- settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GilbertElliott:
    """A two-state Markov loss chain: bursts of loss instead of independent drops.

    Each datagram first meets the loss probability of the current state, then the
    chain moves: good -> bad with probability ``p``, bad -> good with ``r``. The
    chain starts in the good state. Build one from a loss rate and a mean burst
    length with :func:`gilbert_elliott`.
    """

    p: float
    r: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"Gilbert-Elliott {f.name}={v} is not a probability in [0, 1]")
        if self.p + self.r == 0.0:
            raise ValueError("Gilbert-Elliott p and r are both 0: the chain never moves")

    @property
    def loss_rate(self) -> float:
        """The long-run share of datagrams lost (a fraction, not a percentage)."""
        bad = self.p / (self.p + self.r)  # stationary probability of the bad state
        return (1.0 - bad) * self.loss_good + bad * self.loss_bad

    @property
    def mean_burst(self) -> float:
        """The mean number of datagrams the chain stays in the bad state."""
        return 1.0 / self.r if self.r else float("inf")


def gilbert_elliott(loss_percent: float, mean_burst_packets: float) -> GilbertElliott:
    """The simple Gilbert chain (good never loses, bad always does) with these figures.

    With ``loss_bad = 1`` a burst is one stay in the bad state, so ``r = 1 / B``;
    the long-run loss ``p / (p + r)`` equals ``L`` when ``p = r * L / (1 - L)``.
    Raises ValueError when no such chain exists (``L > B / (B + 1)``, i.e. ``p > 1``).
    """
    if not 0.0 <= loss_percent < 100.0:
        raise ValueError(f"burst loss of {loss_percent} % is not in [0, 100)")
    if mean_burst_packets < 1.0:
        raise ValueError(f"mean burst of {mean_burst_packets} packets is shorter than one packet")
    loss = loss_percent / 100.0
    r = 1.0 / mean_burst_packets
    p = r * loss / (1.0 - loss)
    if p > 1.0:
        most = 100.0 * mean_burst_packets / (mean_burst_packets + 1.0)
        raise ValueError(
            f"{loss_percent} % loss in bursts of {mean_burst_packets} packets is impossible:"
            f" at most {most:.1f} % for that burst length; lengthen the bursts"
        )
    return GilbertElliott(p=p, r=r)


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction of a link does to datagrams. The default does nothing.

    * ``delay_ms``: fixed one-way delay added to every datagram.
    * ``jitter_ms``: a further delay drawn uniformly from ``[0, jitter_ms]``. Jitter
      larger than the gap between datagrams reorders them, as Linux netem does.
      Real paths mostly keep one flow in order and let delay pile up instead:
      set ``in_order`` to hold each datagram until the one before it has gone.
    * ``jitter_sd_ms``: a further delay drawn from a normal distribution with this
      standard deviation around twice it, cut at zero: one-way delay that wanders as on
      a Wi-Fi or mobile path (and reorders, like ``jitter_ms``). Jitter figures quoted as
      "the standard deviation of the one-way delay" mean this one.
    * ``stall_ms`` every ``stall_every_ms``: the link stops for ``stall_ms`` (as Wi-Fi
      does while it rescans or retries) and what arrived meanwhile leaves at its end.
    * ``loss_percent``: independent random loss.
    * ``burst``: Gilbert-Elliott burst loss (see :func:`gilbert_elliott`); when set
      together with ``loss_percent`` a datagram is lost if either model drops it.
    * ``reorder_percent``: share of datagrams held back a further
      ``reorder_extra_ms`` so that later ones overtake them. Held-back datagrams are
      exempt from ``in_order``.
    * ``duplicate_percent``: share of datagrams sent twice, released together.
    * ``seed``: the same seed and settings give the same output, datagram for datagram.
    * ``seq_keyed``: the loss of a voice datagram is decided by its sequence number
      (protocol 1: header bytes 4-12) through a table drawn once from the seed, not by
      its place in the flow: every run with the same seed loses the same frames of a
      stream, however late the stream started. A sealed (protocol 2) datagram hides its
      sequence number, so there the index is the flow's count of sealed voice datagrams
      so far: the same frames of the stream from its first datagram on. Statistics are
      those of the model (the table is a run of it); the table repeats every SEQ_TABLE
      frames (about 22 minutes).
    * ``spare_control``: datagrams of at most a voice header (0-byte keepalives, 24-byte
      register pings) and protocol-2 register pings and their answers pass with the fixed
      delay only, drawing nothing from the random generators: the impairment pattern over
      voice packets is then the same in every run, however the control datagrams happen
      to interleave.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_sd_ms: float = 0.0
    stall_ms: float = 0.0
    stall_every_ms: float = 0.0
    loss_percent: float = 0.0
    burst: GilbertElliott | None = None
    reorder_percent: float = 0.0
    reorder_extra_ms: float = DEFAULT_REORDER_EXTRA_MS
    duplicate_percent: float = 0.0
    in_order: bool = False
    seed: int = 0
    spare_control: bool = False
    seq_keyed: bool = False

    def __post_init__(self) -> None:
        for name in (
            "delay_ms", "jitter_ms", "jitter_sd_ms", "stall_ms", "stall_every_ms",
            "reorder_extra_ms",
        ):  # fmt: skip
            v = getattr(self, name)
            if not 0.0 <= v < math.inf:  # also rejects NaN
                raise ValueError(f"{name}={v} must be a finite number of ms, zero or more")
        for name in ("loss_percent", "reorder_percent", "duplicate_percent"):
            v = getattr(self, name)
            if not 0.0 <= v <= 100.0:
                raise ValueError(f"{name}={v} is not a percentage in [0, 100]")


def per_direction(impairment: Impairment, direction: Direction) -> tuple[Impairment, Impairment]:
    """``(up, down)`` for a proxy that impairs ``direction`` and passes the other through."""
    none = Impairment()
    if direction == "both":
        return impairment, impairment
    if direction == "up":
        return impairment, none
    if direction == "down":
        return none, impairment
    raise ValueError(f"direction {direction!r} is not one of both, up, down")


# --- the model ------------------------------------------------------------------


@dataclass(slots=True)
class Counters:
    """What an impairer did. ``packets_out`` counts duplicates; ``reordered`` counts
    datagrams held back (whether or not a later one happened to overtake them)."""

    packets_in: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    packets_out: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __str__(self) -> str:
        return (
            f"in={self.packets_in} dropped={self.dropped} duplicated={self.duplicated}"
            f" reordered={self.reordered} out={self.packets_out}"
        )


SEQ_TABLE = 1 << 16  # frames in the loss table of a seq-keyed impairment


def _sealed_kind(datagram: bytes) -> int | None:
    """The kind of a protocol-2 datagram (SPEC.md), None for anything else. A protocol-1
    datagram whose token happens to start with the same two bytes is taken for one (1 in
    32,768 tokens): its loss is then keyed by count, not by sequence number."""
    if len(datagram) < sealed.HEADER_SIZE or datagram[0] != sealed.VERSION:
        return None
    kind = datagram[sealed.KIND_OFFSET]
    if kind == sealed.KIND_PING and len(datagram) in (sealed.PING_SIZE, sealed.PING_SIZE - 16):
        return kind
    if kind == sealed.KIND_VOICE and len(datagram) >= sealed.MIN_VOICE_UP - sealed.TAG_SIZE:
        return kind
    return None


class Impairer:
    """One direction of one flow. Sans-I/O: time comes in with each datagram.

    ``stream`` salts the seed so that the two directions (or two flows) built from
    the same :class:`Impairment` do not drop the same datagrams. Each effect draws
    from its own generator, so turning on jitter leaves the loss pattern as it was.
    """

    def __init__(self, impairment: Impairment, stream: str = "") -> None:
        self.impairment = impairment
        self.counters = Counters()
        im = impairment
        self._delay_ns = round(im.delay_ms * NS_PER_MS)
        self._jitter_ns = round(im.jitter_ms * NS_PER_MS)
        self._jitter_sd_ns = im.jitter_sd_ms * NS_PER_MS
        self._stall_ns = round(im.stall_ms * NS_PER_MS)
        self._stall_every_ns = round(im.stall_every_ms * NS_PER_MS)
        self._first_ns: int | None = None  # stalls are timed from the first datagram
        self._reorder_ns = round(im.reorder_extra_ms * NS_PER_MS)
        self._loss = im.loss_percent / 100.0
        self._reorder = im.reorder_percent / 100.0
        self._duplicate = im.duplicate_percent / 100.0
        self._rng = {
            name: random.Random(f"{im.seed}/{stream}/{name}")
            for name in ("loss", "burst", "jitter", "reorder", "duplicate")
        }
        self._bad = False  # Gilbert-Elliott state
        self._last_release = -(2**63)  # for in_order
        self._table = [self._lost() for _ in range(SEQ_TABLE)] if im.seq_keyed else []
        self._sealed_voice = 0  # sealed voice datagrams seen: their index in the table

    def feed(self, datagram: bytes, now_ns: int) -> list[tuple[int, bytes]]:
        """The ``(release_ns, datagram)`` pairs to emit for one arrival: 0, 1 or 2."""
        c = self.counters
        kind = _sealed_kind(datagram)
        if self.impairment.spare_control and (
            len(datagram) <= HEADER_SIZE or kind == sealed.KIND_PING
        ):
            return [(now_ns + self._delay_ns, datagram)]
        c.packets_in += 1
        if self._table and kind == sealed.KIND_VOICE:
            self._sealed_voice += 1
            lost = self._table[self._sealed_voice % SEQ_TABLE]
        elif self._table and len(datagram) > HEADER_SIZE:
            lost = self._table[int.from_bytes(datagram[4:12], "big") % SEQ_TABLE]
        else:
            lost = self._lost()
        if lost:
            c.dropped += 1
            return []
        release = now_ns + self._delay_ns
        if self._jitter_ns:
            release += self._rng["jitter"].randint(0, self._jitter_ns)
        if self._jitter_sd_ns:
            sd = self._jitter_sd_ns
            release += max(0, round(self._rng["jitter"].gauss(2 * sd, sd)))
        if self._stall_ns and self._stall_every_ns:
            if self._first_ns is None:
                self._first_ns = now_ns
            into = (now_ns - self._first_ns) % self._stall_every_ns
            if into < self._stall_ns:  # the link is stalled: out when it comes back
                release += self._stall_ns - into
        if self._reorder and self._rng["reorder"].random() < self._reorder:
            release += self._reorder_ns
            c.reordered += 1
        elif self.impairment.in_order:
            release = max(release, self._last_release)
            self._last_release = release
        out = [(release, datagram)]
        if self._duplicate and self._rng["duplicate"].random() < self._duplicate:
            out.append((release, datagram))
            c.duplicated += 1
        c.packets_out += len(out)
        return out

    def _lost(self) -> bool:
        # Each model draws from its own generator, so one cannot shift the other's pattern.
        lost = bool(self._loss) and self._rng["loss"].random() < self._loss
        ge = self.impairment.burst
        if ge is not None:
            rng = self._rng["burst"]
            if rng.random() < (ge.loss_bad if self._bad else ge.loss_good):
                lost = True
            self._bad = rng.random() >= ge.r if self._bad else rng.random() < ge.p
        return lost


T = TypeVar("T")


class Schedule(Generic[T]):
    """Pending releases, earliest first, first-in first-out among equal times.

    Bounded: beyond ``capacity`` items :meth:`push` refuses and counts ``overflow``.
    """

    def __init__(self, capacity: int = MAX_PENDING) -> None:
        if capacity < 1:
            raise ValueError(f"schedule capacity {capacity} must be at least 1")
        self.capacity = capacity
        self.overflow = 0
        self._heap: list[tuple[int, int, T]] = []
        self._order = itertools.count()  # tie-breaker: items themselves are never compared

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, release_ns: int, item: T) -> bool:
        """Hold ``item`` until ``release_ns``; False (and counted) when full."""
        if len(self._heap) >= self.capacity:
            self.overflow += 1
            return False
        heapq.heappush(self._heap, (release_ns, next(self._order), item))
        return True

    def next_release(self) -> int | None:
        """When the earliest item is due, or None when nothing is pending."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ns: int) -> Iterator[T]:
        """Remove and yield, in release order, every item due at or before ``now_ns``."""
        while self._heap and self._heap[0][0] <= now_ns:
            yield heapq.heappop(self._heap)[2]


# --- the adapter ----------------------------------------------------------------


@dataclass(slots=True)
class ProxyStats:
    """A snapshot of a proxy. Exact once the proxy is closed; a moment's view before."""

    up: Counters = field(default_factory=Counters)
    down: Counters = field(default_factory=Counters)
    clients: int = 0
    refused: int = 0  # datagrams from new addresses beyond max_clients
    overflow: int = 0  # datagrams dropped because the pending heap was full
    send_errors: int = 0
    recv_errors: int = 0
    blacked_out: int = 0  # datagrams dropped (both ways) while their client was blacked out
    rebinds: int = 0  # upstream sockets replaced (a NAT giving a client a new port)

    def __str__(self) -> str:
        return (
            f"up: {self.up} | down: {self.down} | clients={self.clients} refused={self.refused}"
            f" overflow={self.overflow} send_errors={self.send_errors}"
            f" recv_errors={self.recv_errors} blacked_out={self.blacked_out}"
            f" rebinds={self.rebinds}"
        )


@dataclass(slots=True)
class _Flow:
    client: Address
    sock: socket.socket  # connected to the upstream; its port is what the relay sees
    up: Impairer
    down: Impairer


# A pending datagram: the socket to send it on, the address (None: connected) and bytes.
_Send = tuple[socket.socket, Address | None, bytes]


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, Address]:
    family, _type, _proto, _name, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    return family, addr


class UdpProxy:
    """A UDP proxy that impairs datagrams both ways between its clients and one upstream.

    Clients send to :attr:`address` instead of the relay. Each new client address
    gets its own upstream socket (so the relay sees one address per client) and its
    own up and down :class:`Impairer`. One thread runs a selector whose timeout is
    the next scheduled release: it never spins and never polls.

    ``up`` impairs client -> upstream, ``down`` upstream -> client; see
    :func:`per_direction`. The listening socket is bound at construction, so
    :attr:`address` is known before :meth:`start`. ``clock`` returns nanoseconds
    and must be monotonic; it is read only by the proxy thread.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        up: Impairment | None = None,
        down: Impairment | None = None,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        max_pending: int = MAX_PENDING,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], int] = time.monotonic_ns,
        tap: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.tap = tap  # sees ("up" | "down", datagram) of everything received (a capture)
        self.up = Impairment() if up is None else up
        self.down = Impairment() if down is None else down
        self.max_clients = max_clients
        self._clock = clock
        self._up_family, self._upstream = _resolve(*upstream)
        family, listen_addr = _resolve(*listen)
        self._schedule: Schedule[_Send] = Schedule(max_pending)
        self._flows: dict[Address, _Flow] = {}
        self._flows_lock = threading.Lock()  # guards _flows against stats() from other threads
        self._refused = self._send_errors = self._recv_errors = 0
        # Set by other threads, read by the proxy thread: each a whole value swapped in.
        self._blackout: frozenset[Address] | None = None  # None: nobody; empty: everybody
        self._blacked_out = self._rebinds = 0
        self._rebind_wanted = 0  # rebinds asked for; the proxy thread does them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what ended the proxy thread, if it failed
        self._sel = selectors.DefaultSelector()
        self._listen = socket.socket(family, socket.SOCK_DGRAM)
        self._wake_r, self._wake_w = socket.socketpair()  # close() interrupts the select
        try:
            self._listen.bind(listen_addr)
            self._address: tuple[str, int] = self._listen.getsockname()[:2]
            self._listen.setblocking(False)
            self._wake_r.setblocking(False)
            self._sel.register(self._listen, selectors.EVENT_READ, None)
            self._sel.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        except BaseException:
            self._close_sockets()
            raise

    @property
    def address(self) -> tuple[str, int]:
        """The listening ``(host, port)`` clients send to (still known after close)."""
        return self._address

    @property
    def upstream(self) -> tuple[str, int]:
        host, port = self._upstream[:2]
        return host, port

    def start(self) -> UdpProxy:
        """Start the proxy thread; returns self."""
        if self._stop.is_set():
            raise RuntimeError("proxy already closed")
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._thread = threading.Thread(target=self._run, name="netem-proxy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, drop what is still pending and close every socket. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # a bug, not a condition to live with
                raise RuntimeError("netem proxy thread did not stop within 10 s")
        self._close_sockets()

    def __enter__(self) -> UdpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> ProxyStats:
        """Counters summed over every flow."""
        with self._flows_lock:
            flows = list(self._flows.values())
        s = ProxyStats(
            clients=len(flows),
            refused=self._refused,
            overflow=self._schedule.overflow,
            send_errors=self._send_errors,
            recv_errors=self._recv_errors,
            blacked_out=self._blacked_out,
            rebinds=self._rebinds,
        )
        for f in flows:
            s.up += f.up.counters
            s.down += f.down.counters
        return s

    def blackout(self, on: bool, clients: tuple[Address, ...] = ()) -> None:
        """Drop every datagram both ways (a UDP path that died) of ``clients`` (client
        addresses as the proxy sees them), or of everybody if none is named; ``on=False``
        ends it for all."""
        self._blackout = frozenset(clients) if on else None

    def rebind(self) -> None:
        """Give every client a new upstream socket, so a new source port (what a NAT does
        when it rebinds a mapping mid-call); done by the proxy thread at once."""
        self._rebind_wanted += 1
        with contextlib.suppress(OSError):
            self._wake_w.send(b"r")

    def _blacked(self, client: Address) -> bool:
        out = self._blackout
        if out is None or (out and client not in out):
            return False
        self._blacked_out += 1
        return True

    def upstream_addresses(self) -> dict[Address, Address]:
        """For each client address, the local address its upstream socket sends from."""
        with self._flows_lock:
            return {a: f.sock.getsockname() for a, f in self._flows.items()}

    # --- the proxy thread: everything below runs there only ---------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._release(self._clock())
                due = self._schedule.next_release()
                # The selector rounds a positive timeout up to its resolution, so a
                # datagram due in a few microseconds costs one wakeup, not a spin.
                timeout = None if due is None else max(0.0, (due - self._clock()) / 1e9)
                for key, _events in self._sel.select(timeout):
                    if key.data is self._wake_r:
                        if self._stop.is_set():
                            return
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(64)
                        continue
                    self._drain(cast(socket.socket, key.fileobj), key.data)
                if self._rebind_wanted != self._rebinds:
                    self._rebind_all()
        except BaseException as e:  # the thread's last word: keep it for the owner
            self.error = e
            log.exception("netem proxy thread failed")

    def _release(self, now: int) -> None:
        for sock, addr, data in self._schedule.pop_due(now):
            try:
                if addr is None:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except OSError:  # refused by a closed port, or a full buffer: the datagram is gone
                self._send_errors += 1

    def _drain(self, sock: socket.socket, flow: _Flow | None) -> None:
        for _ in range(RECV_BATCH):
            try:
                if flow is None:
                    data, client = sock.recvfrom(RECV_SIZE)
                else:
                    data, client = sock.recv(RECV_SIZE), flow.client
            except BlockingIOError:
                return
            except OSError:  # e.g. ICMP port unreachable from the upstream, reported here
                self._recv_errors += 1
                return
            now = self._clock()
            if self.tap is not None:
                self.tap("up" if flow is None else "down", data)
            if self._blackout is not None and self._blacked(client):
                continue
            if flow is None:
                f = self._flow(client)
                if f is None:
                    continue
                for release, d in f.up.feed(data, now):
                    self._schedule.push(release, (f.sock, None, d))
            else:
                for release, d in flow.down.feed(data, now):
                    self._schedule.push(release, (self._listen, client, d))

    def _flow(self, client: Address) -> _Flow | None:
        f = self._flows.get(client)
        if f is not None:
            return f
        if len(self._flows) >= self.max_clients:
            self._refused += 1
            return None
        sock = socket.socket(self._up_family, socket.SOCK_DGRAM)
        try:
            sock.connect(self._upstream)  # picks the source address; filters strangers
            sock.setblocking(False)
        except OSError:
            sock.close()
            self._send_errors += 1
            return None
        n = len(self._flows)
        f = _Flow(client, sock, Impairer(self.up, f"up{n}"), Impairer(self.down, f"down{n}"))
        self._sel.register(sock, selectors.EVENT_READ, f)
        with self._flows_lock:
            self._flows[client] = f
        return f

    def _rebind_all(self) -> None:
        """A new upstream socket (a new source port) for every flow; the old one closed."""
        self._rebinds = self._rebind_wanted
        with self._flows_lock:
            flows = list(self._flows.values())
        for f in flows:
            sock = socket.socket(self._up_family, socket.SOCK_DGRAM)
            try:
                sock.connect(self._upstream)
                sock.setblocking(False)
            except OSError:
                sock.close()
                self._send_errors += 1
                continue
            self._sel.unregister(f.sock)
            f.sock.close()
            f.sock = sock
            self._sel.register(sock, selectors.EVENT_READ, f)

    def _close_sockets(self) -> None:
        self._sel.close()
        with self._flows_lock:
            flows = list(self._flows.values())
        for s in [self._listen, self._wake_r, self._wake_w, *(f.sock for f in flows)]:
            s.close()


# --- command line ---------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6HOST]:PORT`` as a ``(host, port)`` pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench.netem",
        description="A UDP proxy that delays, jitters, drops, reorders and duplicates datagrams.",
    )
    ap.add_argument("--listen", type=parse_address, default=("127.0.0.1", 0), metavar="HOST:PORT")
    ap.add_argument("--upstream", type=parse_address, required=True, metavar="HOST:PORT")
    ap.add_argument("--delay", type=float, default=0.0, metavar="MS", help="one-way delay")
    ap.add_argument("--jitter", type=float, default=0.0, metavar="MS", help="uniform extra delay")
    ap.add_argument(
        "--jitter-sd", type=float, default=0.0, metavar="MS", help="normal extra delay, this s.d."
    )
    ap.add_argument("--stall", type=float, default=0.0, metavar="MS", help="link stalls this long")
    ap.add_argument("--stall-every", type=float, default=0.0, metavar="MS", help="stall period")
    ap.add_argument(
        "--in-order", action="store_true", help="jitter never reorders (delay piles up instead)"
    )
    ap.add_argument("--loss", type=float, default=0.0, metavar="PCT", help="loss percentage")
    ap.add_argument(
        "--burst",
        type=float,
        default=None,
        metavar="PACKETS",
        help="make --loss Gilbert-Elliott bursts of this mean length instead of independent",
    )
    ap.add_argument("--reorder", type=float, default=0.0, metavar="PCT")
    ap.add_argument(
        "--reorder-extra",
        type=float,
        default=DEFAULT_REORDER_EXTRA_MS,
        metavar="MS",
        help="how long a reordered datagram is held back",
    )
    ap.add_argument("--duplicate", type=float, default=0.0, metavar="PCT")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--direction", choices=("both", "up", "down"), default="both")
    ap.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S s")
    return ap


def impairment_from_args(args: argparse.Namespace) -> Impairment:
    """The :class:`Impairment` the command-line flags describe; ValueError if impossible."""
    burst = None if args.burst is None else gilbert_elliott(args.loss, args.burst)
    return Impairment(
        delay_ms=args.delay,
        jitter_ms=args.jitter,
        jitter_sd_ms=args.jitter_sd,
        stall_ms=args.stall,
        stall_every_ms=args.stall_every,
        loss_percent=0.0 if burst else args.loss,
        burst=burst,
        reorder_percent=args.reorder,
        reorder_extra_ms=args.reorder_extra,
        duplicate_percent=args.duplicate,
        in_order=args.in_order,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        impairment = impairment_from_args(args)
    except ValueError as e:
        ap.error(str(e))
    up, down = per_direction(impairment, args.direction)
    stop = StopFlag(os.getppid())  # set from a signal handler: it takes no lock

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    with UdpProxy(args.upstream, up=up, down=down, listen=args.listen) as proxy:
        host, port = proxy.address
        print(f"netem listening on {host}:{port} -> {args.upstream[0]}:{args.upstream[1]}")
        sys.stdout.flush()
        stop.wait(args.duration)
    print(f"netem {proxy.stats()}")
    if proxy.error is not None:
        print(f"netem proxy thread failed: {proxy.error!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
