"""Network stage: Opus packets from the encode ring -> UDP to the relay, and back into a ring.

Two threads, each blocking in the kernel and never spinning: the sender
waits on the encode ring, the receiver (main thread) waits on the socket and
the bus together. The decisions are VoiceLink's (pipeline/core/voice_link.py).
"""

from __future__ import annotations

import os
import socket
import threading
import time

from pipeline.core.voice_link import Chaos, VoiceLink
from pipeline.ipc import events as ev
from pipeline.ipc.bus import BusAddress, BusClient
from pipeline.ipc.child_process import StopFlag, child_setup
from pipeline.ipc.ring import Ring, RingHandle
from pipeline.stages.stats import StageStats, Tracer
from relay.protocol.datagram import HEADER_SIZE, MAX_DATAGRAM


def run(
    bus: BusAddress,
    inp: RingHandle,
    out: RingHandle,
    chaos_percent: float = 0.0,
    whisper: int = 0,
    seed: int | None = None,
    trace_dir: str | None = None,
    udp_via: tuple[str, int] | None = None,
) -> None:
    """``udp_via`` sends voice there instead of the relay's UDP port (an impairment proxy)."""
    stop = child_setup("network")
    client = BusClient(bus, topics=("cmd.", "session"))
    src, dst = Ring.attach(inp), Ring.attach(out)
    link = VoiceLink(Chaos(chaos_percent, seed))
    link.target = whisper
    stats = StageStats("network", client)
    send_trace = Tracer(os.path.join(trace_dir, "send.npy") if trace_dir else None, 3)
    recv_trace = Tracer(os.path.join(trace_dir, "recv.npy") if trace_dir else None, 3)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    relay: list[tuple[str, int] | None] = [None]  # swapped whole by the receiver thread
    # The sender thread's stats exist before it starts: it only updates them, while this
    # thread copies them for publishing.
    stats.window("encode_to_network")
    stats.count("send_errors", 0)
    sender = threading.Thread(
        target=_send_loop,
        args=(src, sock, link, relay, stats, stop, send_trace),
        name="sender",
        daemon=True,
    )
    sender.start()
    buf = bytearray(MAX_DATAGRAM + 1)
    view = memoryview(buf)
    named: tuple[str, int] | None = None  # the relay address as given, last resolved
    try:
        while not stop.check_parent():
            now = time.monotonic_ns()
            addr = relay[0]
            if addr is not None:
                for datagram in link.timers(now):
                    _sendto(sock, datagram, addr, stats)
            wait = (link.next_timer(now) - now) / 1e9
            ready = client.wait((sock.fileno(),), max(0.0, min(wait, 0.25)))
            if ready:
                _drain(sock, view, link, relay[0], dst, stats, recv_trace)
            for event in client.poll(0):
                if isinstance(event, ev.Session):
                    # The control process re-sends its session every second (for late
                    # subscribers): act on a change only, and survive a failed lookup.
                    target = udp_via or (event.host, event.udp_port)
                    if target != named:
                        try:
                            relay[0] = (socket.gethostbyname(target[0]), target[1])
                            named = target
                        except OSError:
                            stats.count("resolve_errors")
                    if event.token != link.token:
                        link.set_session(event.token, time.monotonic_ns())
                elif isinstance(event, ev.WhisperCmd):
                    link.target = event.target
                elif isinstance(event, ev.ChaosCmd):
                    link.chaos.percent = min(100.0, max(0.0, event.loss_percent))
                elif isinstance(event, ev.QuitCmd):
                    stop.set("quit")
            mono = time.monotonic()
            if stats.due(mono):
                stats.publish(
                    mono,
                    {
                        **link.counters,
                        "udp_rtt_ms": link.rtt_ns / 1e6 if link.rtt_ns is not None else None,
                        "registered": link.registered,
                        "chaos_percent": link.chaos.percent,
                        "whisper": link.target,
                        "send_ring_fill": src.fill(),
                    },
                )
    finally:
        stop.set("closing")
        sender.join(2)
        send_trace.save()
        recv_trace.save()
        sock.close()
        src.close()
        dst.close()
        client.close()


def _sendto(
    sock: socket.socket, data: bytes | memoryview, addr: tuple[str, int], stats: StageStats
) -> None:
    try:
        sock.sendto(data, addr)
    except OSError:  # e.g. ECONNREFUSED from an earlier ICMP, or no route: voice is lossy anyway
        stats.count("send_errors")


def _send_loop(
    src: Ring,
    sock: socket.socket,
    link: VoiceLink,
    relay: list[tuple[str, int] | None],
    stats: StageStats,
    stop: StopFlag,
    tracer: Tracer,
) -> None:
    buf = bytearray(MAX_DATAGRAM)
    view = memoryview(buf)
    while not stop:
        slot = src.read(timeout=0.1)
        if slot is None:
            continue
        t_in = time.monotonic_ns()
        stats.window("encode_to_network").add(t_in - slot.timestamp)
        n = HEADER_SIZE + slot.length
        addr = relay[0]
        if addr is None or not link.should_send():
            src.release()
            continue
        link.pack_header(buf, slot.seq, slot.timestamp)
        view[HEADER_SIZE:n] = slot.data
        seq = slot.seq
        src.release()
        _sendto(sock, view[:n], addr, stats)
        tracer.add(seq, t_in, time.monotonic_ns())


def _drain(
    sock: socket.socket,
    view: memoryview,
    link: VoiceLink,
    relay: tuple[str, int] | None,
    dst: Ring,
    stats: StageStats,
    tracer: Tracer,
) -> None:
    """Read every datagram queued on the socket; voice goes into the decode ring."""
    while True:
        try:
            n, addr = sock.recvfrom_into(view, len(view), socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ICMP port unreachable surfaces here on Linux: the relay is down
            stats.count("recv_errors")
            return
        if relay is None or addr != relay:
            stats.count("foreign_datagrams")
            continue
        now = time.monotonic_ns()
        incoming = link.received(view[:n], now)
        if incoming is None:
            continue
        stats.window("capture_to_receive").add(now - incoming.timestamp)
        if not dst.write(
            incoming.payload,
            seq=incoming.seq,
            timestamp=incoming.timestamp,
            speaker=incoming.speaker,
        ):
            stats.count("ring_dropped")
        tracer.add(incoming.seq, now, incoming.speaker)
