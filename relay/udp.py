"""The UDP adapters around :class:`relay.router.Router`: the hot loop and its alternative.

:class:`UdpThread` is the relay's forwarding path: a blocking
``recvfrom_into`` on one preallocated buffer, the router's decision, one
``sendto`` per destination, in a thread of its own so the asyncio loop never
sits between a datagram and its forwarding. It does no logging, no msgpack and
no allocation per datagram beyond what the socket calls themselves create.

:class:`AsyncioUdp` is the same router behind an asyncio ``DatagramProtocol``,
kept as the measured alternative (``--udp asyncio``): bench/relay_load.py runs
both in the same run. Rules for the hot loop, as sounddevice's for callbacks: no
logging, no locks, no allocation that can be avoided, count instead of raising.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import socket
import struct
import threading
import time
from typing import cast

from relay.router import RECV_SIZE, Addr, Router
from relay.sealed_router import SealedRouter

# Queue in front of the hot loop. Linux doubles the request and charges ~830 bytes
# per 100-byte datagram, so 256 KiB holds ~630 datagrams: ~25 ms at the saturated
# rate of one core, enough for a GIL hand-off or a table rebuild. More only turns
# overload into delay (a 4 MiB buffer measured 100-500 ms under saturation), and
# late voice is worse than lost voice: the jitter buffer conceals a loss.
RCVBUF = 256 * 1024


# The hot loop's blocking receive returns this often with nothing read, to see a
# stop request: a kernel timeout (SO_RCVTIMEO), so no extra poll() per datagram,
# and no wake-up datagram, which SO_REUSEPORT could deliver to another socket.
WAKE_EVERY = struct.pack("ll", 0, 200_000)


def is_ipv6(host: str) -> bool:
    """Whether ``host`` is an IPv6 address (``::``, ``::1``...), which binds an IPv6 socket."""
    return ":" in host


def open_udp(host: str, port: int, rcvbuf: int = RCVBUF, reuse_port: bool = False) -> socket.socket:
    """A bound UDP socket (raises OSError if the port is taken): IPv4, or for an IPv6
    ``host`` an IPv6 one that takes IPv4 datagrams too (``--host ::``: dual stack).

    ``reuse_port`` lets several forwarding processes share the port (SO_REUSEPORT).
    """
    v6 = is_ipv6(host)
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):  # capped by net.core.rmem_max; not fatal
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# Every SAMPLE_EVERY-th datagram's service time (route plus its sendto calls, the
# receive excluded) goes into the histogram: the rest pay one decrement and one test.
SAMPLE_EVERY = 64
# Histogram bucket bounds in nanoseconds (Prometheus "le"): one voice datagram at
# fan-out 9 takes ~40 us on the development machine, a GIL hand-off milliseconds.
SERVICE_BOUNDS_NS = (
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000, 2_000_000, 5_000_000, 10_000_000,
)  # fmt: skip


class ServiceTimes:
    """A histogram of the hot loop's per-datagram service time, one in ``every`` sampled.

    Written only by the loop's thread; read by the metrics thread (plain ints and
    a list of them: a stale read is harmless, and :meth:`snapshot` copies).
    """

    __slots__ = ("bounds_ns", "count", "counts", "every", "sum_ns")

    def __init__(self, every: int = SAMPLE_EVERY, bounds_ns: tuple[int, ...] = SERVICE_BOUNDS_NS):
        self.every = every
        self.bounds_ns = bounds_ns
        self.counts = [0] * (len(bounds_ns) + 1)  # the last: over the largest bound
        self.sum_ns = 0
        self.count = 0

    def observe(self, ns: int) -> None:
        self.counts[bisect.bisect_left(self.bounds_ns, ns)] += 1
        self.sum_ns += ns
        self.count += 1

    def snapshot(self) -> tuple[list[int], int, int]:
        """(counts per bucket, sum in ns, samples): a consistent-enough copy."""
        return list(self.counts), self.sum_ns, self.count


class UdpThread:
    """Runs the forwarding loop on ``sock`` in a daemon thread until :meth:`close`.

    With ``times``, one datagram in ``times.every`` is timed into that histogram
    (a loop of its own, so the relay without metrics runs exactly the plain one).
    """

    def __init__(
        self, sock: socket.socket, router: Router, times: ServiceTimes | None = None
    ) -> None:
        self.sock = sock
        self.router = router
        self.times = times
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, WAKE_EVERY)
        self._stop = False
        if isinstance(router, SealedRouter):
            run = self._run_cluster if router.cluster else self._run_sealed
        else:
            run = self._run if times is None else self._run_sampled
        self._thread = threading.Thread(target=run, name="udp-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        recv = self.sock.recvfrom_into
        send = self.sock.sendto
        route = self.router.route
        counters = self.router.counters
        while True:
            try:
                n, addr = recv(buf)
            except OSError:  # the wake-up timeout, or an ICMP error reported on the socket
                if self._stop:
                    return
                continue
            dests = route(buf, n, addr)
            if dests:
                data = view[:n]
                for dest in dests:
                    try:
                        send(data, dest)
                    except OSError:
                        counters.send_errors += 1
                data.release()

    def _run_sampled(self) -> None:
        # _run, plus the sampling: the forwarding lines are repeated rather than put in
        # a function, whose call would cost every datagram more than the sampling does.
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        recv = self.sock.recvfrom_into
        send = self.sock.sendto
        route = self.router.route
        counters = self.router.counters
        times = self.times
        assert times is not None
        every = times.every
        observe = times.observe
        clock = time.perf_counter_ns
        left = every
        while True:
            try:
                n, addr = recv(buf)
            except OSError:
                if self._stop:
                    return
                continue
            left -= 1
            if left:
                dests = route(buf, n, addr)
                if dests:
                    data = view[:n]
                    for dest in dests:
                        try:
                            send(data, dest)
                        except OSError:
                            counters.send_errors += 1
                    data.release()
                continue
            left = every
            t0 = clock()
            dests = route(buf, n, addr)
            if dests:
                data = view[:n]
                for dest in dests:
                    try:
                        send(data, dest)
                    except OSError:
                        counters.send_errors += 1
                data.release()
            observe(clock() - t0)

    def _run_sealed(self) -> None:
        """The loop for protocol 2: the router says how much of the buffer to send (the
        relay tag stripped). With ``times``, sampled as ``_run_sampled`` samples; without,
        the countdown never reaches a sample (one decrement a datagram)."""
        router = self.router
        assert isinstance(router, SealedRouter)
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        recv = self.sock.recvfrom_into
        send = self.sock.sendto
        route = router.route
        counters = router.counters
        times = self.times
        every = times.every if times is not None else 1 << 62
        clock = time.perf_counter_ns
        left = every
        while True:
            try:
                n, addr = recv(buf)
            except OSError:
                if self._stop:
                    return
                continue
            left -= 1
            t0 = 0
            if not left:
                left = every
                t0 = clock()
            dests = route(buf, n, addr)
            if dests:
                data = view[: router.out_n]
                for dest in dests:
                    try:
                        send(data, dest)
                    except OSError:
                        counters.send_errors += 1
                data.release()
            if t0 and times is not None:
                times.observe(clock() - t0)

    def _run_cluster(self) -> None:
        """The loop of a cluster's relay (relay.cluster_router): as ``_run_sealed``, then
        the mesh datagram, if any, to each other relay that needs it. Not sampled."""
        router = self.router
        assert isinstance(router, SealedRouter)
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        recv = self.sock.recvfrom_into
        send = self.sock.sendto
        route = router.route
        counters = router.counters
        while True:
            try:
                n, addr = recv(buf)
            except OSError:
                if self._stop:
                    return
                continue
            dests = route(buf, n, addr)
            if dests:
                data = view[: router.out_n]
                for dest in dests:
                    try:
                        send(data, dest)
                    except OSError:
                        counters.send_errors += 1
                data.release()
            mesh = router.mesh_dests  # type: ignore[attr-defined]
            if mesh:
                out = router.mesh_data  # type: ignore[attr-defined]
                for dest in mesh:
                    try:
                        send(out, dest)
                    except OSError:
                        counters.send_errors += 1

    def close(self, timeout: float = 2.0) -> None:
        """Stop the loop (it sees the flag within WAKE_EVERY), join it, close the socket."""
        self._stop = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.sock.close()


class AsyncioUdp(asyncio.DatagramProtocol):
    """The same router on the event loop: the slower alternative, kept to measure against."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        buf = bytearray(data)  # asyncio hands us immutable bytes; the router rewrites in place
        router = self.router
        dests = router.route(buf, len(buf), addr)
        if dests and self.transport is not None:
            out = buf[: router.out_n] if isinstance(router, SealedRouter) else buf
            for dest in dests:
                self.transport.sendto(out, dest)

    def error_received(self, exc: Exception) -> None:
        self.router.counters.send_errors += 1


async def start_asyncio_udp(sock: socket.socket, router: Router) -> asyncio.DatagramTransport:
    """Serve ``sock`` with :class:`AsyncioUdp` on the running loop."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: AsyncioUdp(router), sock=sock)
    return transport
