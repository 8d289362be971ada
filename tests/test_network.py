"""pipeline/stages/network.py: the network stage's socket side, in-process on loopback.

child_setup is replaced (it would install signal handlers in pytest); the sockets,
the rings and the bus are real. The datagrams come from a socket standing in for
the relay, built byte by byte as an attacker would.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.netem import UdpProxy
from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.core.audio_test import LOOPBACK_FLAG, LOOPBACK_SPEAKER
from pipeline.core.client_view import ClientView
from pipeline.core.voice_link import COUNTERS, media_timestamp
from pipeline.ipc import events as ev
from pipeline.ipc.bus import Broker
from pipeline.ipc.child_process import StopFlag
from pipeline.ipc.ring import Ring
from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_SAMPLES
from pipeline.media.opus import CodecError, OpusDecoder
from pipeline.media.sources import MediaSpec, read_wav, write_wav
from pipeline.stages import network, runtime
from pipeline.stages.runtime import StageRuntime, Wiring
from pipeline.stages.trace import Tracer
from relay.launch import start_relay, stop_relay
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
def sender(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[network._Network, Ring, Ring, socket.socket]]:
    """A network stage with a relay and a session, and the producer side of its input."""
    monkeypatch.setattr(runtime, "child_setup", lambda name: StopFlag(os.getppid()))
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    with Broker() as broker, Ring.create(16, 1276) as inp, Ring.create(128, 1276) as out:
        wiring = Wiring(broker.address, inp.handle, out.handle)
        with StageRuntime("network", wiring, (ev.HOP_ENCODE_TO_NETWORK,)) as rt:
            net = network._Network(rt, network.NetworkConfig(wiring, clock_offset=12345))
            port = relay.getsockname()[1]
            net._endpoint(ev.VoiceEndpoint(7, 2, "127.0.0.1", port, UDP_KEY, 1, MEDIA))
            yield net, inp, out, relay
    relay.close()


@pytest.fixture
def stage(
    sender: tuple[network._Network, Ring, Ring, socket.socket],
) -> tuple[network._Network, Ring, socket.socket]:
    """The same stage, for tests that only read what it receives."""
    net, _inp, out, relay = sender
    return net, out, relay


def test_a_looped_back_frame_plays_here_and_never_reaches_the_relay(
    sender: tuple[network._Network, Ring, Ring, socket.socket],
) -> None:
    net, inp, out, relay = sender
    relay.settimeout(0.5)
    captured = time.monotonic_ns()
    assert inp.write(b"\x01looped", seq=3, timestamp=captured, flags=LOOPBACK_FLAG)
    thread = threading.Thread(target=net.send_loop, args=(net.rt.inp, Tracer(None, 3)))
    thread.start()
    try:
        with pytest.raises(TimeoutError):
            relay.recv(2048)  # nothing at the relay: not even a sealed copy
        net._looped_back(memoryview(bytearray(1400)), out)
        slot = out.read(timeout=1)
        assert slot is not None
        assert (slot.speaker, slot.seq, bytes(slot.data)) == (LOOPBACK_SPEAKER, 3, b"\x01looped")
        assert slot.media == media_timestamp(captured, 0)
        out.release()
        assert net._stats().loopback == 1 and net.link.counters["sent"] == 0
        assert inp.write(b"\x01sent", seq=1, timestamp=captured)  # unflagged: it goes out
        assert len(relay.recv(2048)) > TAG_SIZE
    finally:
        net.rt.stop.set("test over")
        thread.join(2)


def deliver(net: network._Network, relay: socket.socket, datagrams: list[bytes]) -> None:
    assert net.sock is not None
    me = ("127.0.0.1", net.sock.getsockname()[1])
    for d in datagrams:
        relay.sendto(d, me)
    time.sleep(0.05)
    net._drain(net.sock, memoryview(bytearray(1400)), net.rt.out, Tracer(None, 3))


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


def test_on_the_tunnel_with_no_answers_coming_the_receiver_waits_instead_of_spinning(
    stage: tuple[network._Network, Ring, socket.socket],
) -> None:
    net, out, _relay = stage
    now = time.monotonic_ns()
    net.link.health.answered(now - 5_000_000_000, 2_000_000)  # the last answer, long ago
    assert net.link.health.update(now) and net.link.path == "tcp"
    waits: list[float] = []
    real_wait = net.rt.wait

    def counting_wait(fds: tuple[int, ...], timeout: float) -> set[int]:
        waits.append(timeout)
        if len(waits) >= 5:
            net.rt.stop.set("test over")
        return real_wait(fds, 0.0)

    net.rt.wait = counting_wait  # type: ignore[method-assign]
    net.receive_loop(out, Tracer(None, 3))
    assert sum(w == 0.0 for w in waits) <= 1, waits  # the first pass may send a due ping


# --- a captured call (issue 12): real processes, real sockets ------------------------------


class TcpTap:
    """A TCP proxy on loopback that records every byte both ways, as a capture on the path."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.bytes = bytearray()
        self._listen = socket.create_server(("127.0.0.1", 0))
        self.port = self._listen.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listen, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        while not self._stop:
            for key, _ in sel.select(0.2):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if s is self._listen:
                    client, _ = s.accept()
                    up = socket.create_connection(self.upstream)
                    peers[client], peers[up] = up, client
                    sel.register(client, selectors.EVENT_READ)
                    sel.register(up, selectors.EVENT_READ)
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                other = peers.get(s)
                if not data or other is None:
                    for x in (s, other):
                        if x is not None and x in peers:
                            sel.unregister(x)
                            peers.pop(x)
                            x.close()
                    continue
                self.bytes += data
                with contextlib.suppress(OSError):
                    other.sendall(data)
        for s in peers:
            s.close()
        sel.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._listen.close()


def test_a_capture_of_a_call_holds_no_secret_and_no_speech(tmp_path: Path) -> None:
    """Every TCP byte and datagram of a two-user call: no session secret, and nothing
    in it decodes as Opus to anything like what Alice said (Bob, with the keys, did)."""
    speech = synthetic.speech_like(6.0, seed=5)
    write_wav(tmp_path / "said.wav", speech)
    datagrams: list[tuple[str, bytes]] = []
    proc, port = start_relay()
    tap = TcpTap(("127.0.0.1", port))
    try:
        with UdpProxy(("127.0.0.1", port), tap=lambda way, d: datagrams.append((way, d))) as udp:

            def cfg(name: str, source: MediaSpec, sink: MediaSpec) -> ClientConfig:
                return ClientConfig("127.0.0.1", tap.port, name, source=source, sink=sink,
                                    udp_via=udp.address)  # fmt: skip

            bob_cfg = cfg(
                "bob", MediaSpec("silence"), MediaSpec("wav", str(tmp_path / "heard.wav"))
            )
            alice_cfg = cfg(
                "alice", MediaSpec("wav", str(tmp_path / "said.wav")), MediaSpec("null")
            )
            with LocalClient(bob_cfg) as bob:
                bob.until(connected, 20, "bob connected")
                with LocalClient(alice_cfg) as alice:
                    alice.until(connected, 20, "alice connected")
                    bob.until(lambda v: (v.playback.frames if v.playback else 0) > 400, 40,
                              "bob heard alice")  # fmt: skip
                    # Nothing is lost on this path: Bob's window counts no hole where
                    # Alice pinged (2 a second; the relay forwards no ping).
                    net = bob.view.network
                    assert net is not None and net.good > 100
                    assert net.lost <= net.good // 100, (net.good, net.lost)
                    secrets = []
                    for c in (alice, bob):
                        e = c.view.endpoint
                        assert e is not None and e.udp_key and e.media_key
                        secrets += [e.udp_key, e.media_key, e.token.to_bytes(8, "big")]
    finally:
        tap.close()
        stop_relay(proc)
    captured = bytes(tap.bytes) + b"".join(d for _w, d in datagrams)
    assert len(tap.bytes) > 1000 and len(datagrams) > 400
    for secret in secrets:
        assert secret not in captured
    # What an eavesdropper could try: every datagram's bytes after the clear header, or
    # after where a plain header would end, fed to an Opus decoder as a voice packet.
    guesses = []
    for start in (19, 24, 35):
        pcm = []
        with OpusDecoder() as dec:
            for way, d in datagrams:
                if way == "up" and len(d) > start + 16:
                    try:
                        pcm.append(dec.decode(d[start:-16]))
                    except CodecError:
                        pcm.append(np.zeros(FRAME_SAMPLES, np.float32))
        guesses.append(synthetic.align_windows(speech, np.concatenate(pcm)))
    told = synthetic.align_windows(speech, read_wav(tmp_path / "heard.wav"))
    print(f"bob heard alice with correlation {told:.2f}; the capture gives {guesses}")
    assert told > 0.3
    assert max(abs(g) for g in guesses) < 0.15


# --- the voice path: UDP, the TCP tunnel while UDP is dead, NAT, IPv6 ---------------------


def _received(v: ClientView) -> int:
    return v.network.received if v.network else 0


def _path(v: ClientView) -> str | None:
    return v.network.voice_path if v.network else None


def _call_cfg(
    port: int, name: str, source: str, udp_via: tuple[str, int] | None = None
) -> ClientConfig:
    return ClientConfig(
        "127.0.0.1", port, name, source=MediaSpec(source), sink=MediaSpec("null"), udp_via=udp_via
    )


@pytest.mark.parametrize(
    "blackout", [5.0, pytest.param(20.0, marks=pytest.mark.soak, id="issue-20s")]
)
def test_voice_survives_a_nat_rebinding_and_takes_tcp_while_udp_is_dead(
    relay: tuple[object, int], blackout: float
) -> None:
    """The speaker's UDP goes through a proxy that first gives it a new source port (NAT
    rebinding: nothing changes), then drops all of it both ways for ``blackout`` s: the
    listener hears the speaker again over the tunnel within 3 s, the speaker's status
    says so, and voice is back on UDP within 5 s of the end."""
    _, port = relay
    with UdpProxy(("127.0.0.1", port)) as proxy:
        spk_cfg = _call_cfg(port, "speaker", "tone", udp_via=proxy.address)
        with (
            LocalClient(_call_cfg(port, "listener", "tone")) as listener,
            LocalClient(spk_cfg) as speaker,
        ):
            listener.until(lambda v: _received(v) > 20, 40, "the speaker heard over UDP")
            speaker.until(lambda v: _received(v) > 20, 20, "the listener heard over UDP")
            old_port = set(proxy.upstream_addresses().values())
            proxy.rebind()
            heard, spoken = _received(listener.view), _received(speaker.view)
            # stats come every 0.5 s, so a count read after a fixed wait may be that old
            speaker.until(lambda v: _received(v) > spoken + 25, 5, "voice down the new port")
            listener.until(lambda v: _received(v) > heard + 25, 5, "voice up the new port")
            assert set(proxy.upstream_addresses().values()).isdisjoint(old_port)
            assert _path(speaker.view) == "udp" and speaker.view.network is not None
            switches = speaker.view.network.path_switches

            proxy.blackout(True)
            t0 = time.monotonic()
            listener.pump(0.6)  # what was on its way before the blackout is in
            before = _received(listener.view)
            listener.until(lambda v: _received(v) > before + 5, 10, "voice again, over TCP")
            resumed = time.monotonic() - t0
            speaker.until(lambda v: _path(v) == "tcp", 3, "the speaker's status")
            assert "voice over TCP (UDP blocked)" in speaker.view.status_line()
            while time.monotonic() - t0 < blackout:  # the tunnel keeps it going throughout
                heard = _received(listener.view)
                listener.pump(min(1.0, blackout - (time.monotonic() - t0)))
                assert _received(listener.view) > heard or time.monotonic() - t0 >= blackout
            assert _path(speaker.view) == "tcp"

            proxy.blackout(False)
            t1 = time.monotonic()
            speaker.until(lambda v: _path(v) == "udp", 10, "voice back on UDP")
            back = time.monotonic() - t1
            heard = _received(listener.view)
            listener.until(lambda v: _received(v) > heard + 25, 5, "voice up UDP again")
            net = speaker.view.network
            assert net is not None and net.path_switches == switches + 2 and net.tunnel_sent > 0
    print(f"heard again {resumed:.1f} s into the blackout, UDP back {back:.1f} s after it")
    assert resumed < 3.0  # the bound (detection is 1.5 s of unanswered pings)
    assert back < 5.0


def test_a_client_whose_udp_is_blocked_from_the_start_gets_voice_over_tcp(
    relay: tuple[object, int],
) -> None:
    _, port = relay
    with UdpProxy(("127.0.0.1", port)) as proxy:
        proxy.blackout(True)  # nothing of this client's UDP ever gets through
        with (
            LocalClient(_call_cfg(port, "speaker", "tone")) as speaker,
            LocalClient(_call_cfg(port, "blocked", "tone", udp_via=proxy.address)) as blocked,
        ):
            speaker.until(connected, 30, "the speaker connected")
            blocked.until(connected, 30, "the blocked client connected")
            t0 = time.monotonic()
            blocked.until(lambda v: _received(v) > 5, 10, "voice through the tunnel")
            waited = time.monotonic() - t0
            speaker.until(lambda v: _received(v) > 5, 10, "the blocked client heard")
            assert _path(blocked.view) == "tcp" and _path(speaker.view) == "udp"
            assert blocked.view.network is not None and not blocked.view.network.registered
        assert proxy.stats().blacked_out > 0
    print(f"voice {waited:.1f} s after connecting with UDP blocked")
    assert waited < 5.0


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_a_dual_stack_relay_takes_a_call_over_ipv4_and_ipv6_at_once() -> None:
    """A relay bound to ``::`` (dual stack): one client reaches it at 127.0.0.1, the other
    at ``::1`` (control and voice over IPv6); each hears the other over UDP."""
    proc, port = start_relay(host="::")
    try:
        v6 = ClientConfig("::1", port, "six", source=MediaSpec("tone"), sink=MediaSpec("null"))
        with (
            LocalClient(_call_cfg(port, "four", "tone")) as four,
            LocalClient(v6) as six,
        ):
            four.until(lambda v: _received(v) > 20, 40, "four hears six")
            six.until(lambda v: _received(v) > 20, 20, "six hears four")
            for c in (four, six):
                assert c.view.network is not None and c.view.network.registered
                assert _path(c.view) == "udp"
            assert six.view.state.server == f"[::1]:{port}"  # as a user writes it
    finally:
        stop_relay(proc)
