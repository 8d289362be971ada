"""relay/tunnel.py: voice through the control connection (the TCP tunnel).

In memory: the route table's tunnelled members, the sealed router handing voice to
tunnels, :class:`TunnelIn`'s checks. Then a real relay
process with probe clients: tunnelled and UDP members hear each other (channel, whisper,
echo), and a tunnelled client that does not read costs the relay no memory and the
others no delay.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.launch import start_relay, stop_relay
from relay.probe import ProbeClient
from relay.protocol.messages import Error, Tunnel, Voice, encode_message
from relay.protocol.sealed_datagram import TAG_SIZE
from relay.protocol.voice_crypto import Opened, Opener, Sealer
from relay.router import RouteTable, VoiceLimit, add_unbound
from relay.sealed_router import SealedRouter
from relay.tunnel import TunnelIn

MEDIA = {1: bytes(16), 2: bytes(range(16))}
A, B, C = ("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)


def key(uid: int) -> bytes:
    return bytes([uid]) * 32


# Sessions 1, 2, 4 in channel c1 (key 1), 3 in c2 (key 2); 2 and 3 hear through the tunnel.
WHERE = {1: ("c1", A), 2: ("c1", B), 3: ("c2", C), 4: ("c1", None)}
TUNNELLED = frozenset({102, 103})


def table(tunnelled: frozenset[int] = TUNNELLED) -> RouteTable:
    return RouteTable.build(
        [(100 + uid, uid, ch, addr) for uid, (ch, addr) in WHERE.items()], tunnelled
    )


def sealer(uid: int) -> Sealer:
    s = Sealer(uid, key(uid), 10_000)
    kid = 1 if WHERE[uid][0] == "c1" else 2
    s.set_media_key(kid, MEDIA[kid])
    return s


def peers() -> list[tuple[int, int, bytes, int]]:
    return [(uid, 100 + uid, key(uid), 1 if ch == "c1" else 2) for uid, (ch, _a) in WHERE.items()]


def test_in_a_cluster_tunnelled_voice_also_goes_to_the_other_relays() -> None:
    from relay.cluster_router import ClusterRouter, MeshTable
    from relay.protocol.mesh_datagram import MeshDatagram, mesh_key

    k = mesh_key(b"the cluster secret of the tests")
    t = TunnelIn(MEDIA, router=ClusterRouter(MEDIA))
    t.update_peers(peers(), [])
    t.router.table = table()
    other = ("10.9.0.1", 8080)
    t.router.mesh = MeshTable(1, k, {1: (other,)}, {}, frozenset({2}))  # type: ignore[attr-defined]
    data = sealer(1).voice(1, 2, b"x")
    routed = t.route(data, 101)
    assert routed is not None and routed.mesh_dests == (other,)
    assert MeshDatagram.open(routed.mesh_data, k).inner == data[:-TAG_SIZE]


# --- the route table ------------------------------------------------------------------


def test_tunnelled_members_are_never_sent_udp_and_are_listed_as_tunnels() -> None:
    t = table()
    assert t.routes[101].dests == () and t.routes[101].tunnels == (102,)
    assert t.routes[102].dests == (A,) and t.routes[102].tunnelled  # it speaks to 1 over UDP
    assert t.routes[104].dests == (A,) and t.routes[104].tunnels == (102,)
    assert t.tunnel_of == {2: 102, 3: 103} and 2 not in t.whisper and t.whisper[1] == (A,)
    # The tunnelled member's own UDP address still answers its pings (echo).
    assert t.routes[102].echo == (B,)
    back = RouteTable.update(t, {"c1"}, [(102, 2, "c1", B), (101, 1, "c1", A)])
    assert back.routes[101].dests == (B,) and back.routes[101].tunnels == ()
    assert 2 not in back.tunnel_of and back.whisper[2] == (B,)


def test_add_unbound_takes_the_tunnels_of_its_channel() -> None:
    t = RouteTable.build([(102, 2, "c1", B), (101, 1, "c1", A)], frozenset({102}))
    new = add_unbound(t, [(105, 5, "c1")])
    rebuilt = RouteTable.update(
        t, {"c1"}, [(102, 2, "c1", B), (101, 1, "c1", A), (105, 5, "c1", None)], {102}
    )
    assert new.routes[105] == rebuilt.routes[105]
    assert new.routes[105].dests == (A,) and new.routes[105].tunnels == (102,)


# --- the sealed router hands voice to tunnels -----------------------------------------


def udp_router(echo: bool = False) -> tuple[SealedRouter, list[tuple[bytes, tuple[int, ...]]]]:
    got: list[tuple[bytes, tuple[int, ...]]] = []
    r = SealedRouter(MEDIA, echo=echo)
    r.on_tunnel = lambda data, tokens: got.append((data, tokens))
    r.update_peers(peers(), [])
    r.table = table()
    return r, got


def route(r: SealedRouter, data: bytes, addr: object) -> tuple[object, ...]:
    buf = bytearray(data) + bytearray(1400 - len(data))
    return r.route(buf, len(data), addr)  # type: ignore[arg-type]


def test_udp_voice_reaches_tunnelled_listeners_as_udp_ones_get_it() -> None:
    r, got = udp_router()
    sent = sealer(1).voice(1, 2, b"hi")
    assert route(r, sent, A) == ()  # nobody else in c1 hears over UDP
    assert got == [(sent[:-TAG_SIZE], (102,))]
    o = Opener()
    o.add_media_key(1, MEDIA[1])
    assert o.open(got[0][0]) == Opened(1, 1, 2, b"hi")
    assert r.sealed.tunnelled == 1


def test_a_whisper_to_a_tunnelled_listener_in_another_channel_is_resealed_for_it() -> None:
    r, got = udp_router()
    assert route(r, sealer(1).voice(1, 2, b"psst", target=3), A) == ()
    ((data, tokens),) = got
    assert tokens == (103,) and data[2] == 2  # under c2's key
    o = Opener()
    o.add_media_key(2, MEDIA[2])
    assert o.open(data) == Opened(1, 1, 2, b"psst")


def test_echo_mode_sends_a_tunnelled_speaker_its_voice_through_its_tunnel() -> None:
    r, got = udp_router(echo=True)
    s = sealer(2)
    over_udp = s.voice(1, 2, b"me")  # sent over UDP still: the echo comes by the tunnel
    assert route(r, over_udp, B) == () and got == [(over_udp[:-TAG_SIZE], (102,))]
    tin = TunnelIn(MEDIA, echo=True)
    tin.update_peers(peers(), [])
    tin.router.table = table()
    sent = s.voice(2, 3, b"me again")
    routed = tin.route(sent, 102)
    assert routed is not None and routed.dests == () and routed.tunnels == (102,)
    assert routed.data == sent[:-TAG_SIZE]


# --- TunnelIn: voice through a control connection --------------------------------------


def tunnel_in(limit: VoiceLimit | None = None, now: list[float] | None = None) -> TunnelIn:
    clock = (lambda: now[0]) if now is not None else time.monotonic
    t = TunnelIn(MEDIA, limit=limit, clock=clock)
    t.update_peers(peers(), [])
    t.router.table = table()
    return t


def test_tunnelled_voice_goes_to_udp_members_and_other_tunnels() -> None:
    t = tunnel_in()
    s = sealer(2)
    sent = s.voice(7, 8, b"via tcp")
    routed = t.route(sent, 102)
    assert routed is not None
    assert routed.dests == (A,) and routed.tunnels == () and routed.data == sent[:-TAG_SIZE]
    whisper = t.route(s.voice(8, 9, b"to 3", target=3), 102)
    assert whisper is not None and whisper.dests == () and whisper.tunnels == (103,)


def test_unbound_sessions_tunnel_too() -> None:
    """UDP blocked from the start: the session never bound an address, its voice still goes."""
    t = tunnel_in()
    routed = t.route(sealer(4).voice(1, 1, b"never udp"), 104)
    assert routed is not None and routed.dests == (A,) and routed.tunnels == (102,)


def test_the_tunnel_checks_what_udp_checks_and_whose_connection_it_is() -> None:
    t = tunnel_in()
    s = sealer(2)
    good = s.voice(1, 1, b"x")
    assert t.route(good, 101) is None and t.drop_not_yours == 1  # 2's datagram on 1's conn
    forged = good[:-1] + bytes([good[-1] ^ 1])
    assert t.route(forged, 102) is None and t.counters.drop_bad_auth == 1
    assert t.route(good, 102) is not None
    assert t.route(good, 102) is None and t.counters.drop_replayed == 1  # sent again
    assert t.route(s.ping(5), 102) is None and t.drop_not_voice == 1  # pings go over UDP
    assert t.route(b"\x02", 102) is None and t.drop_not_voice == 2


def test_the_tunnel_holds_a_session_to_the_voice_limit() -> None:
    now = [100.0]
    t = tunnel_in(VoiceLimit(datagrams_per_s=10, burst_s=1.0), now)
    s = sealer(2)
    passed = sum(t.route(s.voice(i, i, b"v"), 102) is not None for i in range(30))
    assert passed == 10 and t.drop_voice_limited == 20
    now[0] += 1.0
    assert t.route(s.voice(99, 99, b"v"), 102) is not None


@given(st.binary(max_size=1400), st.sampled_from([101, 102, 103, 104, 999]))
def test_fuzz_any_bytes_through_the_tunnel_route_or_are_counted(data: bytes, token: int) -> None:
    t = tunnel_in()
    routed = t.route(data, token)
    assert routed is None or isinstance(routed.data, bytes)


# --- a real relay ------------------------------------------------------------------------


def voice_frames(p: ProbeClient, n: int, timeout: float = 5.0) -> list[bytes]:
    """The next ``n`` voice datagrams ``p`` gets through its control connection."""
    out: list[bytes] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        msg = p.recv(lambda m: isinstance(m, Voice))
        assert isinstance(msg, Voice)
        out.append(msg.data)
    return out


@pytest.fixture
def sealed_relay() -> Iterator[tuple[object, int]]:
    proc, port = start_relay()
    try:
        yield proc, port
    finally:
        stop_relay(proc)


def test_udp_and_tunnelled_members_hear_each_other_through_a_real_relay(
    sealed_relay: tuple[object, int],
) -> None:
    _proc, port = sealed_relay
    with (
        ProbeClient("127.0.0.1", port, sealed=True) as udp,
        ProbeClient("127.0.0.1", port, sealed=True) as tcp,
    ):
        udp.auth("udp")
        udp.register()
        tcp.auth("tcp")  # never a UDP datagram: as if UDP were blocked from the start
        tcp.send(Tunnel(True))
        assert tcp.sealer is not None and udp.sealer is not None
        time.sleep(0.2)  # the route rebuild comes with the next presence flush
        udp.send_voice(1, b"over udp")
        (down,) = voice_frames(tcp, 1)
        opened = tcp.opener.open(down)
        assert isinstance(opened, Opened) and opened.opus == b"over udp"
        tcp.send(Voice(tcp.sealer.voice(1, 2, b"over tcp")))
        got = udp.recv_voice(5)
        assert got is not None and got.payload == b"over tcp" and got.token == tcp.user_id
        # A whisper from the UDP member to the tunnelled one.
        udp.send_voice(2, b"just you", target=tcp.user_id)
        (whisper,) = voice_frames(tcp, 1)
        opened = tcp.opener.open(whisper)
        assert isinstance(opened, Opened) and opened.opus == b"just you"
        # Back to UDP: the relay sends to its address again (it registers now).
        tcp.register()
        tcp.send(Tunnel(False))
        time.sleep(0.2)
        udp.send_voice(3, b"udp again")
        got = tcp.recv_voice(5)
        assert got is not None and got.payload == b"udp again"


def test_an_insecure_relay_has_no_tunnel_and_says_so() -> None:
    proc, port = start_relay("--insecure")
    try:
        with ProbeClient("127.0.0.1", port) as p:
            p.auth("old")
            p.send(Tunnel(True))
            err = p.recv_type(Error)
            assert isinstance(err, Error) and err.code == "no_tunnel"
    finally:
        stop_relay(proc)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_tunnelled_client_that_never_reads_costs_no_memory_and_delays_nobody(
    tmp_path: Path,
) -> None:
    log = (tmp_path / "relay.log").open("w")
    proc, port = start_relay("--log-level", "info", log=log)
    try:
        with (
            ProbeClient("127.0.0.1", port, sealed=True) as talker,
            ProbeClient("127.0.0.1", port, sealed=True) as listener,
            ProbeClient("127.0.0.1", port, sealed=True) as stuck,
        ):
            for p, name in ((talker, "talker"), (listener, "listener"), (stuck, "stuck")):
                p.auth(name)
            talker.register()
            listener.register()
            stuck.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.send(Tunnel(True))  # and from now on it reads nothing at all
            time.sleep(0.3)
            before = rss_kib(proc.pid)
            payload = os.urandom(200)  # a 72 kb/s frame, so the stuck one's buffers fill fast
            delays = []
            start = time.monotonic()
            for seq in range(1, 251):  # 5 s of voice at 50 frames/s
                talker.send_voice(seq, payload)
                got = listener.recv_voice(0.5)
                assert got is not None, f"frame {seq} never reached the UDP listener"
                delays.append((time.monotonic_ns() - got.timestamp) / 1e6)
                time.sleep(max(0.0, start + seq * 0.02 - time.monotonic()))
            after = rss_kib(proc.pid)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
    finally:
        stop_relay(proc)
        log.close()
    counters = [ln for ln in (tmp_path / "relay.log").read_text().splitlines() if "counters:" in ln]
    fields = dict(kv.split("=", 1) for kv in counters[0].split() if "=" in kv)
    print(f"listener delay p50 {statistics.median(delays):.2f} ms, max {max(delays):.2f} ms; "
          f"relay RSS {before} -> {after} KiB; tunnel out {fields['tunnel_voice_out']}, "
          f"dropped {fields['tunnel_voice_dropped']}")  # fmt: skip
    assert int(fields["tunnel_voice_dropped"]) > 100  # the stuck one lost voice, not the relay
    assert after - before < 4096  # 250 frames of 260 bytes would be 64 KiB: bounded anyway
    assert statistics.median(delays) < 20


def test_bad_voice_frames_get_errors_not_a_crash(sealed_relay: tuple[object, int]) -> None:
    _proc, port = sealed_relay
    with ProbeClient("127.0.0.1", port, sealed=True) as p:
        p.send_raw(encode_message(Voice(b"\x02\x02")))  # before auth: an error
        err = p.recv_type(Error)
        assert isinstance(err, Error) and err.code == "not_authenticated"
        p.auth("fuzzy")
        for data in (b"\x00", os.urandom(60), bytes(1342)):
            p.send(Voice(data))  # refused by the checks, counted, no reply needed
        p.send(Tunnel(True))
        assert not p.closed_by_relay(0.3)
