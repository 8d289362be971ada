"""bench/netem.py: the impairment model on an injected clock, then the proxy on loopback."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import netem as n
from bench.netem import Impairer, Impairment
from relay.protocol import sealed_datagram as sealed

FRAME_NS = 20 * n.NS_PER_MS  # one voice datagram every 20 ms, as a talker sends them
REPO = Path(__file__).resolve().parent.parent


def datagram(i: int) -> bytes:
    """A voice-shaped datagram: a 24-byte header carrying ``i`` and a small payload."""
    return i.to_bytes(24, "big") + b"opus" * 10


def run(imp: Impairment, count: int, stream: str = "") -> tuple[Impairer, list[tuple[int, int]]]:
    """Feed ``count`` datagrams 20 ms apart; return the impairer and ``(release, index)``."""
    im = Impairer(imp, stream)
    out: list[tuple[int, int]] = []
    for i in range(count):
        for release, d in im.feed(datagram(i), i * FRAME_NS):
            out.append((release, int.from_bytes(d[:24], "big")))
    return im, out


def lost_runs(imp: Impairment, count: int) -> list[int]:
    """Lengths of the runs of consecutive lost datagrams."""
    im = Impairer(imp)
    runs: list[int] = []
    current = 0
    for i in range(count):
        if im.feed(datagram(i), i * FRAME_NS):
            if current:
                runs.append(current)
            current = 0
        else:
            current += 1
    if current:
        runs.append(current)
    return runs


# --- settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_ms": -1.0},
        {"jitter_ms": float("nan")},
        {"delay_ms": float("inf")},
        {"loss_percent": 100.5},
        {"reorder_percent": -0.1},
        {"duplicate_percent": 101.0},
    ],
)
def test_impossible_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Impairment(**kwargs)  # type: ignore[arg-type]


def test_gilbert_elliott_derivation() -> None:
    ge = n.gilbert_elliott(10.0, 4.0)
    assert ge.r == pytest.approx(0.25)
    assert ge.p == pytest.approx(0.25 * 0.1 / 0.9)
    assert ge.loss_rate == pytest.approx(0.10)
    assert ge.mean_burst == pytest.approx(4.0)
    assert n.gilbert_elliott(0.0, 3.0).loss_rate == 0.0


@pytest.mark.parametrize(
    ("loss", "burst", "match"),
    [(10.0, 0.5, "shorter than one packet"), (80.0, 2.0, "impossible"), (100.0, 5.0, "not in")],
)
def test_gilbert_elliott_refuses_what_no_chain_can_do(
    loss: float, burst: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        n.gilbert_elliott(loss, burst)


def test_gilbert_elliott_probabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="probability"):
        n.GilbertElliott(p=1.5, r=0.5)
    with pytest.raises(ValueError, match="never moves"):
        n.GilbertElliott(p=0.0, r=0.0)


def test_per_direction() -> None:
    imp = Impairment(delay_ms=5)
    assert n.per_direction(imp, "both") == (imp, imp)
    assert n.per_direction(imp, "up") == (imp, Impairment())
    assert n.per_direction(imp, "down") == (Impairment(), imp)
    with pytest.raises(ValueError, match="direction"):
        n.per_direction(imp, "sideways")  # type: ignore[arg-type]


# --- the model ------------------------------------------------------------------


def test_zero_impairment_is_the_identity() -> None:
    im = Impairer(Impairment(seed=3))
    for i in range(1000):
        now = 1_000_000_007 + i * 1_234_567
        assert im.feed(datagram(i), now) == [(now, datagram(i))]
    assert im.counters == n.Counters(packets_in=1000, packets_out=1000)


def test_empty_datagram_passes_through() -> None:
    assert Impairer(Impairment()).feed(b"", 5) == [(5, b"")]


def test_delay_and_jitter_stay_in_bounds() -> None:
    imp = Impairment(delay_ms=20, jitter_ms=5, seed=1)
    im = Impairer(imp)
    extra = []
    for i in range(5000):
        now = i * FRAME_NS
        [(release, _)] = im.feed(datagram(i), now)
        extra.append(release - now)
    assert min(extra) >= 20 * n.NS_PER_MS and max(extra) <= 25 * n.NS_PER_MS
    # The jitter is really used, across its whole range.
    assert min(extra) < 20.5 * n.NS_PER_MS and max(extra) > 24.5 * n.NS_PER_MS


def test_jitter_wider_than_the_frame_gap_reorders() -> None:
    _, out = run(Impairment(jitter_ms=60, seed=1), 1000)
    order = [i for _, i in sorted(out)]
    assert order != sorted(order)


def test_normal_jitter_has_its_standard_deviation_and_reorders() -> None:
    _, out = run(Impairment(jitter_sd_ms=30, seed=2), 5000)
    extra = [(r - i * FRAME_NS) / n.NS_PER_MS for r, i in out]
    mean = sum(extra) / len(extra)
    sd = (sum((x - mean) ** 2 for x in extra) / len(extra)) ** 0.5
    assert 55 < mean < 65 and 27 < sd < 33 and min(extra) >= 0
    order = [i for _, i in sorted(out)]
    assert order != sorted(order)


def test_a_stall_holds_what_arrives_until_it_ends() -> None:
    _, out = run(Impairment(stall_ms=150, stall_every_ms=3000, seed=1), 300)
    held = {i: (r - i * FRAME_NS) / n.NS_PER_MS for r, i in out if r != i * FRAME_NS}
    # Frames 0-7 (0-140 ms) wait for the end of the first stall at 150 ms, and so on
    # every 3 s (150 frames); everything else passes untouched.
    assert sorted(held) == [*range(8), *range(150, 158)]
    assert held[0] == 150 and held[7] == 10
    assert max(r for r, i in out if i < 8) == 150 * n.NS_PER_MS


def test_in_order_jitter_never_reorders_and_keeps_its_bounds() -> None:
    imp = Impairment(delay_ms=10, jitter_ms=60, in_order=True, seed=1)
    im, out = run(imp, 2000)
    releases = [r for r, _ in out]
    assert [i for _, i in out] == list(range(2000))
    assert releases == sorted(releases)
    for release, i in out:
        assert 10 * n.NS_PER_MS <= release - i * FRAME_NS <= 70 * n.NS_PER_MS
    assert im.counters.reordered == 0


def test_random_loss_hits_its_target() -> None:
    im, out = run(Impairment(loss_percent=5, seed=1), 20_000)
    assert im.counters.dropped == 20_000 - len(out)
    assert abs(im.counters.dropped / 20_000 - 0.05) < 0.01
    # Independent loss: runs of losses average 1 / (1 - 0.05), barely more than one.
    runs = lost_runs(Impairment(loss_percent=5, seed=1), 20_000)
    assert sum(runs) / len(runs) < 1.2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gilbert_elliott_loss_and_burst_length_hit_their_targets(seed: int) -> None:
    imp = Impairment(burst=n.gilbert_elliott(10.0, 3.0), seed=seed)
    runs = lost_runs(imp, 20_000)
    assert abs(sum(runs) / 20_000 - 0.10) < 0.02
    mean_burst = sum(runs) / len(runs)
    assert abs(mean_burst - 3.0) < 0.5
    assert mean_burst > 1.5


def test_full_loss_sends_nothing() -> None:
    im, out = run(Impairment(loss_percent=100), 100)
    assert out == [] and im.counters.dropped == 100 and im.counters.packets_out == 0


def test_reorder_holds_some_back_and_later_ones_overtake() -> None:
    imp = Impairment(delay_ms=10, reorder_percent=5, seed=1)
    im, out = run(imp, 4000)
    order = [i for _, i in sorted(out)]
    assert order != list(range(4000))
    assert abs(im.counters.reordered / 4000 - 0.05) < 0.015
    held = {i for r, i in out if r - i * FRAME_NS > 10 * n.NS_PER_MS}
    assert len(held) == im.counters.reordered
    # With no jitter, every held-back datagram is overtaken by the one after it.
    position = {i: k for k, i in enumerate(order)}
    for i in held - {3999} - {i - 1 for i in held}:
        assert position[i + 1] < position[i]


def test_duplicate_duplicates_about_the_right_share() -> None:
    im, out = run(Impairment(duplicate_percent=10, seed=1), 20_000)
    c = im.counters
    assert abs(c.duplicated / 20_000 - 0.10) < 0.015
    assert len(out) == c.packets_out == 20_000 + c.duplicated
    # A duplicate goes out at the same moment, right after its original.
    assert sorted({i for i in range(20_000)}) == sorted(set(i for _, i in out))
    assert out == sorted(out)


def test_all_effects_at_once_count_consistently() -> None:
    imp = Impairment(
        delay_ms=20,
        jitter_ms=5,
        loss_percent=2,
        burst=n.gilbert_elliott(3, 2),
        reorder_percent=1,
        duplicate_percent=0.5,
        seed=9,
    )
    im, out = run(imp, 10_000)
    c = im.counters
    assert c.packets_in == 10_000
    assert c.packets_out == len(out) == c.packets_in - c.dropped + c.duplicated


def test_same_seed_same_output_and_a_different_seed_or_stream_differs() -> None:
    imp = Impairment(
        delay_ms=20, jitter_ms=30, loss_percent=5, reorder_percent=2, duplicate_percent=2, seed=7
    )
    assert run(imp, 3000)[1] == run(imp, 3000)[1]
    assert run(imp, 3000)[1] != run(dataclasses.replace(imp, seed=8), 3000)[1]
    assert run(imp, 3000, "up0")[1] != run(imp, 3000, "down0")[1]


def test_loss_pattern_does_not_depend_on_other_effects() -> None:
    plain = lost_runs(Impairment(loss_percent=5, seed=4), 5000)
    busy = lost_runs(Impairment(loss_percent=5, jitter_ms=3, duplicate_percent=0, seed=4), 5000)
    assert plain == busy


# --- the schedule ---------------------------------------------------------------


def test_schedule_releases_in_time_order_and_fifo_among_equals() -> None:
    s: n.Schedule[str] = n.Schedule(10)
    assert s.next_release() is None
    for release, item in [(30, "c"), (10, "a"), (20, "b1"), (20, "b2"), (20, "b3")]:
        assert s.push(release, item)
    assert s.next_release() == 10
    assert list(s.pop_due(9)) == []
    assert list(s.pop_due(20)) == ["a", "b1", "b2", "b3"]
    assert s.next_release() == 30 and len(s) == 1


def test_schedule_is_bounded() -> None:
    s: n.Schedule[int] = n.Schedule(3)
    assert [s.push(i, i) for i in range(5)] == [True, True, True, False, False]
    assert s.overflow == 2 and len(s) == 3
    with pytest.raises(ValueError, match="capacity"):
        n.Schedule(0)


# --- the proxy on loopback --------------------------------------------------------

RECV_TIMEOUT = 5.0  # generous: the machine may be loaded; nothing here asserts timing


class EchoServer:
    """A stand-in relay: echoes every datagram to its sender and notes who sent it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.senders: set[tuple[str, int]] = set()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="echo", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return host, port

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self._stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._stop_r:
                        return
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            data, addr = self.sock.recvfrom(65535)
                            self.senders.add(addr)
                            self.sock.sendto(data, addr)

    def close(self) -> None:
        self._stop_w.send(b"\0")
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        for s in (self.sock, self._stop_r, self._stop_w):
            s.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@contextlib.contextmanager
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(RECV_TIMEOUT)
        yield s


def wait_for(condition: Callable[[], bool], timeout: float = RECV_TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the proxy"
        time.sleep(0.005)


def settled(proxy: n.UdpProxy, sent: int) -> bool:
    """The proxy has read all ``sent`` datagrams and the echo of all it let through."""
    s = proxy.stats()
    return s.up.packets_in == sent and s.down.packets_in == s.up.packets_out


def exchange(proxy: n.UdpProxy, sock: socket.socket, payloads: list[bytes]) -> list[bytes]:
    """Send in small batches, paced by the proxy's counters so that no socket buffer
    overflows; return every reply, once the proxy has forwarded all it will."""
    replies: list[bytes] = []
    for start in range(0, len(payloads), 20):
        batch = payloads[start : start + 20]
        for p in batch:
            sock.sendto(p, proxy.address)
        wait_for(functools.partial(settled, proxy, start + len(batch)))
        while len(replies) < proxy.stats().down.packets_out:
            replies.append(sock.recv(65535))
    return replies


def test_without_impairment_every_datagram_comes_back_unchanged(echo: EchoServer) -> None:
    payloads = [b"", bytes(24), bytes(range(256)) * 5 + bytes(19)]  # keepalive, register, 1299
    payloads += [datagram(i) for i in range(200)]
    with n.UdpProxy(echo.address) as proxy, client() as c:
        replies = exchange(proxy, c, payloads)
    assert replies == payloads
    s = proxy.stats()
    assert s.up.packets_out == s.down.packets_out == len(payloads)
    assert s.overflow == s.send_errors == s.recv_errors == 0


def test_half_loss_up_brings_back_about_half(echo: EchoServer) -> None:
    up, down = n.per_direction(Impairment(loss_percent=50, seed=1), "up")
    with n.UdpProxy(echo.address, up=up, down=down) as proxy, client() as c:
        replies = exchange(proxy, c, [datagram(i) for i in range(400)])
    assert 140 <= len(replies) <= 260
    assert len(replies) == proxy.stats().up.packets_out
    assert proxy.stats().down.dropped == 0


def test_half_loss_both_ways_brings_back_about_a_quarter(echo: EchoServer) -> None:
    imp = Impairment(loss_percent=50, seed=1)
    with n.UdpProxy(echo.address, up=imp, down=imp) as proxy, client() as c:
        replies = exchange(proxy, c, [datagram(i) for i in range(400)])
    assert 55 <= len(replies) <= 145
    s = proxy.stats()
    assert s.up.dropped > 0 and s.down.dropped > 0
    assert len(replies) == s.down.packets_out == s.down.packets_in - s.down.dropped
    assert len(set(replies)) == len(replies)  # the survivors are distinct datagrams


def test_each_client_gets_its_own_upstream_address(echo: EchoServer) -> None:
    with n.UdpProxy(echo.address) as proxy, client() as a, client() as b:
        clients = {a.getsockname(), b.getsockname()}
        a.sendto(b"from a", proxy.address)
        assert a.recv(100) == b"from a"
        b.sendto(b"from b", proxy.address)
        assert b.recv(100) == b"from b"
        a.sendto(b"again a", proxy.address)
        assert a.recv(100) == b"again a"
        upstream = proxy.upstream_addresses()
    assert set(upstream) == clients
    assert len(echo.senders) == 2
    assert echo.senders == set(upstream.values())
    assert proxy.address not in echo.senders
    assert proxy.stats().clients == 2


def test_the_pending_heap_is_capped(echo: EchoServer) -> None:
    held = Impairment(delay_ms=60_000)  # nothing is released while the test runs
    with n.UdpProxy(echo.address, up=held, max_pending=5) as proxy, client() as c:
        for i in range(20):
            c.sendto(datagram(i), proxy.address)
        wait_for(lambda: proxy.stats().up.packets_in == 20)
    assert proxy.stats().overflow == 15
    assert echo.senders == set()


def test_clients_beyond_the_limit_are_refused(echo: EchoServer) -> None:
    with n.UdpProxy(echo.address, max_clients=1) as proxy, client() as a, client() as b:
        a.sendto(b"a", proxy.address)
        assert a.recv(10) == b"a"
        b.sendto(b"b", proxy.address)
        wait_for(lambda: proxy.stats().refused == 1)
    assert proxy.stats().clients == 1


def test_a_dead_upstream_is_counted_not_fatal() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        gone = dead.getsockname()
    with n.UdpProxy(gone) as proxy, client() as c:
        for i in range(5):
            c.sendto(datagram(i), proxy.address)
        wait_for(lambda: proxy.stats().up.packets_in == 5)
        wait_for(lambda: proxy.stats().send_errors + proxy.stats().recv_errors > 0)
        assert proxy.running
    assert proxy.error is None


def test_close_stops_the_thread_and_closes_every_socket(echo: EchoServer) -> None:
    before = set(threading.enumerate())
    proxy = n.UdpProxy(echo.address, up=Impairment(delay_ms=60_000))
    proxy.start()
    with client() as c:
        c.sendto(b"pending", proxy.address)
        wait_for(lambda: proxy.stats().clients == 1)
    proxy.close()
    proxy.close()  # twice is fine
    assert not proxy.running
    assert set(threading.enumerate()) <= before
    assert proxy.error is None
    with pytest.raises(RuntimeError, match="closed"):
        proxy.start()


def test_a_proxy_never_started_closes_cleanly(echo: EchoServer) -> None:
    proxy = n.UdpProxy(echo.address)
    assert proxy.address[0] == "127.0.0.1" and proxy.address[1] > 0
    proxy.close()
    assert not proxy.running


# --- the command line ---------------------------------------------------------------


def test_parse_address() -> None:
    assert n.parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert n.parse_address("[::1]:0") == ("::1", 0)
    for bad in ("8080", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(Exception, match="HOST:PORT"):
            n.parse_address(bad)


def test_flags_build_the_impairment() -> None:
    flags = "--upstream 127.0.0.1:1 --delay 20 --jitter 5 --loss 5 --burst 3 --reorder 1"
    args = n.build_parser().parse_args([*flags.split(), "--duplicate", "0.5", "--seed", "1"])
    imp = n.impairment_from_args(args)
    assert imp.burst == n.gilbert_elliott(5, 3) and imp.loss_percent == 0
    assert (imp.delay_ms, imp.jitter_ms, imp.reorder_percent) == (20, 5, 1)
    assert (imp.duplicate_percent, imp.seed, imp.in_order) == (0.5, 1, False)
    plain = n.impairment_from_args(n.build_parser().parse_args(["--upstream=h:1", "--loss=5"]))
    assert plain.burst is None and plain.loss_percent == 5


def test_cli_forwards_and_reports_counters_on_sigterm(echo: EchoServer) -> None:
    host, port = echo.address
    cmd = [sys.executable, "-m", "bench.netem", "--upstream", f"{host}:{port}"]
    cmd += ["--delay", "1", "--seed", "1", "--direction", "up", "--duration", "60"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("netem listening on 127.0.0.1:")
        assert line.rstrip().endswith(f"-> {host}:{port}")
        listen = n.parse_address(line.split()[3])
        with client() as c:
            c.sendto(b"through the cli", listen)
            assert c.recv(100) == b"through the cli"
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "up: in=1 dropped=0" in out and "out=1" in out


def test_spare_control_keeps_the_voice_pattern_whatever_the_interleaving() -> None:
    imp = Impairment(loss_percent=30, spare_control=True, seed=5)
    voice = [bytes(25 + i % 3) for i in range(2000)]

    def voice_fate(control_every: int) -> list[bool]:
        imp_ = Impairer(imp)
        fate = []
        for i, d in enumerate(voice):
            if control_every and i % control_every == 0:
                assert imp_.feed(b"", i) == [(i, b"")]  # keepalive spared
                assert len(imp_.feed(bytes(24), i)) == 1  # register ping spared
            fate.append(bool(imp_.feed(d, i)))
        return fate

    assert voice_fate(0) == voice_fate(7) == voice_fate(3)
    assert 0.25 < voice_fate(0).count(False) / len(voice) < 0.35


def test_seq_keyed_loss_is_the_same_whatever_the_stream_start() -> None:
    imp = Impairment(burst=n.gilbert_elliott(10, 3), seq_keyed=True, seed=9)

    def lost_seqs(first: int, count: int) -> set[int]:
        imp_ = Impairer(imp)
        return {
            s
            for s in range(first, first + count)
            if not imp_.feed(bytes(4) + s.to_bytes(8, "big") + bytes(12) + b"opus", s)
        }

    early, late = lost_seqs(100, 3000), lost_seqs(1337, 3000)
    overlap = range(1337, 3100)
    assert {s for s in early if s in overlap} == {s for s in late if s in overlap}
    assert 0.07 < len(early) / 3000 < 0.13
    runs = sum(1 for s in early if s - 1 not in early)
    assert len(early) / runs > 1.5  # still bursty


def test_a_blackout_drops_everything_both_ways_then_lets_it_through_again(
    echo: EchoServer,
) -> None:
    with n.UdpProxy(echo.address) as proxy, client() as c, client() as other:
        assert exchange(proxy, c, [b"before"]) == [b"before"]
        me = c.getsockname()
        proxy.blackout(True, (me,))  # this client only
        c.sendto(b"lost", proxy.address)
        wait_for(lambda: proxy.stats().blacked_out == 1)
        other.sendto(b"spared", proxy.address)
        assert other.recv(100) == b"spared"
        proxy.blackout(True)  # everyone
        other.sendto(b"lost too", proxy.address)
        wait_for(lambda: proxy.stats().blacked_out == 2)
        proxy.blackout(False)
        c.sendto(b"after", proxy.address)
        assert c.recv(100) == b"after"
        # A reply already on its way when the blackout starts is dropped as well.
        proxy.blackout(True, (me,))
    assert echo.senders and proxy.stats().blacked_out == 2


def test_a_rebind_gives_every_client_a_new_source_port_and_keeps_its_flow(
    echo: EchoServer,
) -> None:
    with n.UdpProxy(echo.address) as proxy, client() as c:
        assert exchange(proxy, c, [b"one"]) == [b"one"]
        (first,) = proxy.upstream_addresses().values()
        proxy.rebind()
        wait_for(lambda: proxy.stats().rebinds == 1)
        (second,) = proxy.upstream_addresses().values()
        assert second != first
        c.sendto(b"two", proxy.address)
        assert c.recv(100) == b"two"  # the echo came back to the new port, and on to us
    assert {first[:2], second[:2]} <= echo.senders


def sealed_voice(ctr: int) -> bytes:
    """A protocol-2 voice datagram as the relay sees it: the clear header, then at least
    the sealed seq, media, one byte of body, GCM tag and relay tag."""
    head = sealed.HEADER.pack(sealed.VERSION, sealed.KIND_VOICE, 1, 7, ctr, 0)
    return head + bytes(sealed.MIN_VOICE_UP - sealed.HEADER_SIZE + 40)


def sealed_ping(ctr: int) -> bytes:
    head = sealed.HEADER.pack(sealed.VERSION, sealed.KIND_PING, 0, 7, ctr, 0)
    return head + bytes(sealed.PING_SIZE - sealed.HEADER_SIZE)


def test_seq_keyed_bursty_loss_works_on_sealed_voice_and_spares_sealed_pings() -> None:
    # The sequence number is sealed: the old code keyed on header bytes 4-12 (the sid and
    # the counter's top bytes, which change every 16 s), losing all or nothing for 16 s.
    imp = Impairment(burst=n.gilbert_elliott(10, 3), seq_keyed=True, spare_control=True, seed=9)

    def fates(start_ctr: int, ping_every: int) -> list[bool]:
        imp_ = Impairer(imp)
        out, ctr = [], start_ctr
        for i in range(3000):
            if ping_every and i % ping_every == 0:
                ctr += 1
                assert len(imp_.feed(sealed_ping(ctr), i)) == 1  # spared
                assert len(imp_.feed(sealed_ping(ctr)[:-16], i)) == 1  # and the answer
            ctr += 1
            out.append(not imp_.feed(sealed_voice(ctr), i))
        return out

    lost = fates(2**34, 0)
    assert fates(2**40 + 5, 25) == lost  # whatever the counter and the pings in between
    assert 0.07 < sum(lost) / len(lost) < 0.13
    runs = sum(1 for i, x in enumerate(lost) if x and (i == 0 or not lost[i - 1]))
    assert 2.3 < sum(lost) / runs < 3.7  # mean burst about 3
