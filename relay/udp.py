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
import contextlib
import socket
import struct
import threading
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


def open_udp(host: str, port: int, rcvbuf: int = RCVBUF, reuse_port: bool = False) -> socket.socket:
    """A bound IPv4 UDP socket (raises OSError if the port is taken).

    ``reuse_port`` lets several forwarding processes share the port (SO_REUSEPORT).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):  # capped by net.core.rmem_max; not fatal
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpThread:
    """Runs the forwarding loop on ``sock`` in a daemon thread until :meth:`close`."""

    def __init__(self, sock: socket.socket, router: Router) -> None:
        self.sock = sock
        self.router = router
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, WAKE_EVERY)
        self._stop = False
        run = self._run_sealed if isinstance(router, SealedRouter) else self._run
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

    def _run_sealed(self) -> None:
        """The same loop for protocol 2: the router says how much of the buffer to send."""
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
