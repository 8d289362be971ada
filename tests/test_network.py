"""pipeline/stages/network.py: the network stage's socket side, in-process on loopback.

child_setup is replaced (it would install signal handlers in pytest); the sockets,
the rings and the bus are real. The datagrams come from a socket standing in for
the relay, built byte by byte as an attacker would.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterator

import pytest

from pipeline.core.voice_link import COUNTERS
from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker
from pipeline.ipc.child_process import StopFlag
from pipeline.ipc.ring import Ring
from pipeline.stages import network, runtime
from pipeline.stages.runtime import StageRuntime, Wiring
from pipeline.stages.trace import Tracer
from relay.protocol.sealed_datagram import TAG_SIZE
from relay.protocol.voice_crypto import Sealer

U64 = (1 << 64) - 1
UDP_KEY = bytes(32)
MEDIA = bytes(range(16))


def speaker(sid: int = 9) -> Sealer:
    """Another member of the channel, sealing as its client would."""
    s = Sealer(sid, sid.to_bytes(4, "big") * 8, 1000)
    s.set_media_key(1, MEDIA)
    return s


def forwarded(s: Sealer, seq: int, media: int, opus: bytes) -> bytes:
    return s.voice(seq, media, opus)[:-TAG_SIZE]  # as the relay forwards it


@pytest.fixture
def stage(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[network._Network, Ring, socket.socket]]:
    monkeypatch.setattr(runtime, "child_setup", lambda name: StopFlag(os.getppid()))
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    with Broker() as broker, Ring.create(16, 1276) as inp, Ring.create(128, 1276) as out:
        wiring = Wiring(broker.address, inp.handle, out.handle)
        with StageRuntime("network", wiring, (ev.HOP_ENCODE_TO_NETWORK,)) as rt:
            net = network._Network(rt, network.NetworkConfig(wiring, clock_offset=12345))
            port = relay.getsockname()[1]
            endpoint = ev.VoiceEndpoint(7, 2, "127.0.0.1", port, UDP_KEY, 1, MEDIA)
            net._endpoint(endpoint)
            yield net, out, relay
    relay.close()


def deliver(net: network._Network, relay: socket.socket, datagrams: list[bytes]) -> None:
    me = ("127.0.0.1", net.sock.getsockname()[1])
    for d in datagrams:
        relay.sendto(d, me)
    time.sleep(0.05)
    net._drain(memoryview(bytearray(1400)), net.rt.out, Tracer(None, 3))


def test_received_voice_is_stamped_with_its_arrival_and_keeps_its_media_timestamp(
    stage: tuple[network._Network, Ring, socket.socket],
) -> None:
    net, out, relay = stage
    before = time.monotonic_ns()
    deliver(net, relay, [forwarded(speaker(), 5, U64, b"opus")])
    slot = out.read(timeout=1)
    assert slot is not None
    assert (slot.speaker, slot.seq, slot.media, bytes(slot.data)) == (9, 5, U64, b"opus")
    assert before <= slot.timestamp <= time.monotonic_ns()  # our clock, not the sender's


def test_hostile_headers_and_lengths_are_counted_or_passed_on_never_fatal(
    stage: tuple[network._Network, Ring, socket.socket],
) -> None:
    net, out, relay = stage
    rng = random.Random(18)
    edges = [0, 1, U64, U64 - 1, 1 << 63]
    talkers = [speaker(sid) for sid in (1, 2, 2**32 - 1)]
    voice = [
        forwarded(rng.choice(talkers), rng.choice(edges), rng.choice(edges),
                  rng.randbytes(rng.randint(1, 1275)))
        for _ in range(60)
    ]  # fmt: skip
    junk = [rng.randbytes(n) for n in (1, 7, 23)] + [b"\x00" * 1300]
    deliver(net, relay, voice + junk)
    got = 0
    while out.read(timeout=0) is not None:
        got += 1
    c = net.link.counters
    assert got == c["received"] == 60
    assert c["bad_datagram"] == 4
    stats = net._stats()
    assert ev.decode(ev.encode(stats)) == stats


def test_datagrams_from_anyone_but_the_relay_are_ignored(
    stage: tuple[network._Network, Ring, socket.socket],
) -> None:
    net, out, _relay = stage
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deliver(net, stranger, [forwarded(speaker(), 1, 0, b"x")])
    finally:
        stranger.close()
    assert out.read(timeout=0) is None and net.counts.foreign_datagrams == 1


def test_the_stats_carry_every_counter_of_the_link(
    stage: tuple[network._Network, Ring, socket.socket],
) -> None:
    net, _out, _relay = stage
    for i, name in enumerate(COUNTERS):
        net.link.counters[name] = 100 + i
    stats = net._stats()
    assert {name: getattr(stats, name) for name in COUNTERS} == net.link.counters


def test_without_a_relay_address_the_receiver_sleeps_instead_of_spinning(
    stage: tuple[network._Network, Ring, socket.socket],
) -> None:
    net, out, _relay = stage
    net.relay = None  # as after a failed lookup, with a session token already set
    net.link.set_session(7, UDP_KEY, time.monotonic_ns())
    loops = 0
    real_wait = net.rt.wait

    def counting_wait(fds: tuple[int, ...], timeout: float) -> set[int]:
        nonlocal loops
        loops += 1
        if loops >= 3:
            net.rt.stop.set("test over")
        assert timeout >= network.MAX_WAIT / 2
        return real_wait(fds, 0.0)

    net.rt.wait = counting_wait  # type: ignore[method-assign]
    net.receive_loop(out, Tracer(None, 3))
    assert loops == 3
