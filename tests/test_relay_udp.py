"""relay/udp.py: the forwarding thread and the asyncio alternative, on loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from relay.protocol.datagram import VoiceDatagram
from relay.router import Router, RouteTable
from relay.udp import ServiceTimes, UdpThread, open_udp, start_asyncio_udp


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def wired_router(a: socket.socket, b: socket.socket) -> Router:
    r = Router()
    r.table = RouteTable.build(
        [(111, 1, "Lobby", a.getsockname()), (222, 2, "Lobby", b.getsockname())]
    )
    return r


def test_thread_forwards_rewritten_voice_and_stops() -> None:
    with udp() as a, udp() as b:
        router = wired_router(a, b)
        relay = UdpThread(open_udp("127.0.0.1", 0), router)
        addr = relay.sock.getsockname()
        relay.start()
        try:
            a.sendto(b"", addr)  # keepalive: nothing comes back
            a.sendto(b"\x00" * 5, addr)  # too short: dropped
            sent = bytes(VoiceDatagram(111, 1, 2, 0, b"voice"))
            a.sendto(sent, addr)
            data, src = b.recvfrom(2048)
            assert src == addr
            assert data == struct.pack(">I", 1) + sent[4:]
            ping = bytes(VoiceDatagram(222, 0, 0))
            b.sendto(ping, addr)
            assert b.recvfrom(2048)[0] == ping
        finally:
            relay.close()
        assert not relay._thread.is_alive()
        assert relay.sock.fileno() == -1
        c = router.counters
        assert (c.keepalive, c.drop_short, c.voice_in, c.forwarded, c.register) == (1, 1, 1, 1, 1)


def test_thread_counts_send_errors_instead_of_dying() -> None:
    with udp() as a:
        router = Router()
        # A destination no datagram can reach: port 0 makes sendto fail.
        router.table = RouteTable.build(
            [(111, 1, "x", a.getsockname()), (222, 2, "x", ("127.0.0.1", 0))]
        )
        relay = UdpThread(open_udp("127.0.0.1", 0), router)
        relay.start()
        try:
            addr = relay.sock.getsockname()
            a.sendto(bytes(VoiceDatagram(111, 1, 2, 0, b"v")), addr)
            a.sendto(bytes(VoiceDatagram(111, 0, 0)), addr)
            assert a.recvfrom(2048)[0] == bytes(VoiceDatagram(111, 0, 0))
        finally:
            relay.close()
        assert router.counters.send_errors == 1


def test_asyncio_alternative_forwards_the_same() -> None:
    async def main() -> None:
        with udp() as a, udp() as b:
            router = wired_router(a, b)
            transport = await start_asyncio_udp(open_udp("127.0.0.1", 0), router)
            try:
                addr = transport.get_extra_info("sockname")
                sent = bytes(VoiceDatagram(222, 5, 6, 1, b"whisper"))
                b.sendto(sent, addr)
                loop = asyncio.get_running_loop()
                a.setblocking(False)
                data = await asyncio.wait_for(loop.sock_recv(a, 2048), 10)
                assert data == struct.pack(">I", 2) + sent[4:]
            finally:
                transport.close()

    asyncio.run(main())


def test_service_times_bucket_by_upper_bound() -> None:
    t = ServiceTimes(every=1, bounds_ns=(10, 100))
    for ns in (5, 10, 11, 100, 101, 10_000):
        t.observe(ns)
    counts, total, n = t.snapshot()
    assert counts == [2, 2, 2] and total == 10_227 and n == 6


def test_the_sampled_loop_forwards_the_same_and_times_one_in_every() -> None:
    with udp() as a, udp() as b:
        router = wired_router(a, b)
        times = ServiceTimes(every=4)
        relay = UdpThread(open_udp("127.0.0.1", 0), router, times)
        addr = relay.sock.getsockname()
        relay.start()
        try:
            for seq in range(20):
                sent = bytes(VoiceDatagram(111, seq, 2, 0, b"voice"))
                a.sendto(sent, addr)
                data, _ = b.recvfrom(2048)
                assert data == struct.pack(">I", 1) + sent[4:]
        finally:
            relay.close()
        assert router.counters.forwarded == 20
        counts, total, n = times.snapshot()
        assert n == 5 and sum(counts) == 5 and total > 0


def test_an_ipv6_any_socket_takes_ipv4_datagrams_too() -> None:
    try:
        sock = open_udp("::", 0)
    except OSError:
        pytest.skip("this machine has no IPv6")
    with sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as four:
        port = sock.getsockname()[1]
        sock.settimeout(2)
        four.sendto(b"v4", ("127.0.0.1", port))
        data, addr = sock.recvfrom(100)
        assert data == b"v4" and addr[0] == "::ffff:127.0.0.1"
        sock.sendto(b"back", addr)  # answered at the address it came from
        four.settimeout(2)
        assert four.recv(100) == b"back"
    with open_udp("127.0.0.1", 0) as plain:
        assert plain.family == socket.AF_INET
