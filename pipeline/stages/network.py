"""Network stage: Opus packets from the encode ring -> UDP to the relay, and back into a ring.

Two threads, each blocking in the kernel and never spinning: the sender
waits on the encode ring, the receiver (main thread) waits on the socket and
the bus together. The decisions are VoiceLink's (pipeline/core/voice_link.py).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from pipeline.core.voice_link import Chaos, VoiceLink
from pipeline.ipc import events as ev
from pipeline.ipc.ring import Ring
from pipeline.stages.runtime import StageRuntime, Wiring
from pipeline.stages.trace import Tracer
from relay.protocol.sealed_datagram import MAX_DATAGRAM

Addr = tuple[str, int]
MAX_WAIT = 0.25  # seconds the receiver sleeps at most between looks at the stop flag


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    wiring: Wiring
    chaos_percent: float = 0.0
    whisper: int = 0
    seed: int | None = None  # of the chaos dropper
    udp_via: Addr | None = None  # send voice here instead of the relay (an impairment proxy)
    clock_offset: int = 0  # added to every timestamp sent (VoiceLink): random per client


class _Counters:
    """Socket-side counts of one thread: each thread has its own, so no count is lost."""

    def __init__(self) -> None:
        self.send_errors = self.recv_errors = self.resolve_errors = 0
        self.foreign_datagrams = 0


class _Network:
    def __init__(self, rt: StageRuntime, cfg: NetworkConfig) -> None:
        self.rt = rt
        self.udp_via = cfg.udp_via
        self.link = VoiceLink(Chaos(cfg.chaos_percent, cfg.seed), cfg.clock_offset)
        self.link.target = cfg.whisper
        self.counts = _Counters()  # the receiver (main) thread's
        self.sender_counts = _Counters()  # the sender thread's
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rt.on_close(self.sock.close)
        self.sock.bind(("0.0.0.0", 0))
        self.relay: Addr | None = None  # swapped whole by the receiver thread
        self.last_rx: int | None = None  # when the relay last sent us anything (monotonic ns)
        self._named: Addr | None = None  # the relay address as given, last resolved
        rt.on(ev.VoiceEndpoint, self._endpoint)
        rt.on(ev.WhisperCmd, self._whisper)
        rt.on(ev.ChaosCmd, self._chaos)

    # --- commands ----------------------------------------------------------------------

    def _endpoint(self, event: ev.VoiceEndpoint) -> None:
        # The control process re-sends its endpoint every second (for late subscribers):
        # act on a change only, and survive a failed lookup.
        target = self.udp_via or (event.host, event.udp_port)
        if target != self._named:
            try:
                self.relay = (socket.gethostbyname(target[0]), target[1])
                self._named = target
            except OSError:
                self.counts.resolve_errors += 1
        link = self.link
        if not link.has_session(event.user_id, event.udp_key):  # new, or a restarted relay's
            link.set_session(event.user_id, event.udp_key, time.monotonic_ns())
        if event.media_key:
            link.set_media_key(event.media_key_id, event.media_key)  # a no-op if unchanged

    def _whisper(self, cmd: ev.WhisperCmd) -> None:
        self.link.target = cmd.target

    def _chaos(self, cmd: ev.ChaosCmd) -> None:
        self.link.chaos.percent = min(100.0, max(0.0, cmd.loss_percent))

    # --- both threads ------------------------------------------------------------------

    def sendto(self, data: bytes | memoryview, addr: Addr, counts: _Counters) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:  # e.g. ECONNREFUSED from an earlier ICMP, or no route: voice is lossy
            counts.send_errors += 1

    # --- sender thread ------------------------------------------------------------------

    def send_loop(self, src: Ring, tracer: Tracer) -> None:
        link, stop = self.link, self.rt.stop
        while not stop:
            slot = src.read(timeout=0.1)
            if slot is None:
                continue
            t_in = time.monotonic_ns()
            self.rt.latency.add(ev.HOP_ENCODE_TO_NETWORK, t_in - slot.timestamp)
            addr = self.relay
            if addr is None or not link.should_send():
                src.release()
                continue
            seq = slot.seq
            datagram = link.seal(seq, slot.timestamp, slot.data)  # copies out of the slot
            src.release()
            self.sendto(datagram, addr, self.sender_counts)
            tracer.add(seq, t_in, time.monotonic_ns())

    # --- receiver (main) thread -------------------------------------------------------------

    def receive_loop(self, dst: Ring, tracer: Tracer) -> None:
        view = memoryview(bytearray(MAX_DATAGRAM + 1))
        rt, link = self.rt, self.link
        while rt.running:
            now = time.monotonic_ns()
            addr = self.relay
            if addr is not None:
                for datagram in link.timers(now):
                    self.sendto(datagram, addr, self.counts)
                wait = (link.next_timer(now) - now) / 1e9
            else:  # no relay address yet (or its lookup failed): timers cannot run
                wait = MAX_WAIT
            registered = link.registered
            if rt.wait((self.sock.fileno(),), max(0.0, min(wait, MAX_WAIT))):
                self._drain(view, dst, tracer)
            mono = time.monotonic()
            # The first register answer is news at once: file sources wait for it.
            if rt.report_due(mono) or (link.registered and not registered):
                rt.report(mono, self._stats())

    def _drain(self, view: memoryview, dst: Ring, tracer: Tracer) -> None:
        """Read every datagram queued on the socket; voice goes into the decode ring."""
        relay = self.relay
        while True:
            try:
                n, addr = self.sock.recvfrom_into(view, len(view), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable surfaces here on Linux: the relay is down
                self.counts.recv_errors += 1
                return
            if relay is None or addr != relay:
                self.counts.foreign_datagrams += 1
                continue
            now = time.monotonic_ns()
            self.last_rx = now
            incoming = self.link.received(view[:n], now)
            if incoming is None:
                continue
            # A full ring drops the packet and counts it in the ring's header.
            dst.write(
                incoming.payload,
                seq=incoming.seq,
                timestamp=now,  # its arrival, on our clock
                speaker=incoming.speaker,
                media=incoming.media,
            )
            tracer.add(incoming.seq, now, incoming.speaker)

    def _stats(self) -> ev.NetworkStats:
        link, c, k = self.link, self.link.counters, self.counts
        crypto = link.crypto_counts()
        return ev.NetworkStats(  # every VoiceLink counter (tests/test_network.py checks)
            sent=c["sent"],
            chaos_dropped=c["chaos_dropped"],
            unsent_no_session=c["unsent_no_session"],
            register_sent=c["register_sent"],
            keepalive_sent=c["keepalive_sent"],
            register_echo=c["register_echo"],
            bad_register_echo=c["bad_register_echo"],
            received=c["received"],
            bad_datagram=c["bad_datagram"],
            good=crypto["good"],
            late=crypto["late"],
            lost=crypto["lost"],
            replayed=crypto["replayed"],
            too_old=crypto["too_old"],
            bad_auth=crypto["bad_auth"],
            no_key=crypto["no_key"],
            send_errors=k.send_errors + self.sender_counts.send_errors,
            recv_errors=k.recv_errors,
            resolve_errors=k.resolve_errors,
            foreign_datagrams=k.foreign_datagrams,
            udp_rtt_ms=link.rtt_ns / 1e6 if link.rtt_ns is not None else None,
            udp_silent_ms=(
                (time.monotonic_ns() - self.last_rx) / 1e6 if self.last_rx is not None else None
            ),
            registered=link.registered,
            chaos_percent=link.chaos.percent,
            whisper=link.target,
        )


def run(cfg: NetworkConfig) -> None:
    hops = (ev.HOP_ENCODE_TO_NETWORK,)
    with StageRuntime("network", cfg.wiring, hops) as rt:
        net = _Network(rt, cfg)
        send_trace = rt.tracer("send.npy", 3)
        recv_trace = rt.tracer("recv.npy", 3)
        sender = threading.Thread(
            target=net.send_loop, args=(rt.inp, send_trace), name="sender", daemon=True
        )
        sender.start()
        try:
            net.receive_loop(rt.out, recv_trace)
        finally:
            rt.stop.set("closing")
            sender.join(2)
