"""Network stage: Opus packets from the encode ring -> UDP to the relay, and back into a ring.

Two threads, each blocking in the kernel and never spinning: the sender
waits on the encode ring, the receiver (main thread) waits on the sockets and
the bus together. The decisions are VoiceLink's (pipeline/core/voice_link.py).

While the UDP path is dead (``VoiceLink.path`` is ``tcp``) voice goes through the
control process instead, over the local socket of pipeline/ipc/tunnel_socket.py, and
comes back the same way; the UDP pings go on, to see the path mend. The UDP socket's
family (IPv4 or IPv6) is the relay address's.

The settings' microphone test (pipeline/core/audio_test.py) comes from the encode ring
flagged LOOPBACK_FLAG: the sender never sends such a frame; it passes it over a local
socket pair to the receiver thread, the decode ring's only writer, which delivers it as
speaker LOOPBACK_SPEAKER.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipeline.core.audio_test import LOOPBACK_FLAG, LOOPBACK_SPEAKER
from pipeline.core.udp_health import TCP
from pipeline.core.voice_link import Chaos, VoiceLink, media_timestamp
from pipeline.ipc import events as ev
from pipeline.ipc import tunnel_socket as ts
from pipeline.ipc.ring import Ring
from pipeline.stages.runtime import StageRuntime, Wiring
from pipeline.stages.trace import Tracer
from relay.protocol.sealed_datagram import MAX_DATAGRAM

Addr = tuple[Any, ...]  # (host, port), or (host, port, flow, scope) for IPv6
MAX_WAIT = 0.25  # seconds the receiver sleeps at most between looks at the stop flag
PATH_EVERY_NS = 1_000_000_000  # the path is told to the control process this often, too
_LOOPED = struct.Struct(">QQ")  # a looped-back frame on the socket pair: seq, capture ns


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    wiring: Wiring
    chaos_percent: float = 0.0
    whisper: int = 0
    seed: int | None = None  # of the chaos dropper
    udp_via: Addr | None = None  # send voice here instead of the relay (an impairment proxy)
    clock_offset: int = 0  # added to every timestamp sent (VoiceLink): random per client
    voice_path: str = "auto"  # auto: UDP, the TCP tunnel while UDP is dead; or always udp / tcp


class _Counters:
    """Socket-side counts of one thread: each thread has its own, so no count is lost."""

    def __init__(self) -> None:
        self.send_errors = self.recv_errors = self.resolve_errors = 0
        self.foreign_datagrams = 0


class _Network:
    def __init__(self, rt: StageRuntime, cfg: NetworkConfig) -> None:
        self.rt = rt
        self.udp_via = cfg.udp_via
        self.link = VoiceLink(Chaos(cfg.chaos_percent, cfg.seed), cfg.clock_offset, cfg.voice_path)
        self.link.target = cfg.whisper
        self.counts = _Counters()  # the receiver (main) thread's
        self.sender_counts = _Counters()  # the sender thread's
        # Opened for the relay address's family once it is known (swapped whole).
        self.sock: socket.socket | None = None
        rt.on_close(self._close_socket)
        self.tunnel: ts.TunnelSocket | None = None
        if cfg.wiring.state_dir:
            self.tunnel = ts.TunnelSocket(cfg.wiring.state_dir, ts.NETWORK, ts.CONTROL)
            rt.on_close(self.tunnel.close)
        self.tunnel_received = 0
        self.tunnel_voice_sent = self.tunnel_voice_unsent = 0  # the sender thread's
        self._next_path_note = 0
        self.relay: Addr | None = None  # swapped whole by the receiver thread
        self.last_rx: int | None = None  # when the relay last sent us anything (monotonic ns)
        self._named: Addr | None = None  # the relay address as given, last resolved
        # The microphone test's frames, from the sender thread to the receiver (which
        # alone writes the decode ring); datagrams, so one frame is one message.
        self.loop_tx, self.loop_rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.loop_tx.setblocking(False)
        rt.on_close(self.loop_tx.close)
        rt.on_close(self.loop_rx.close)
        self.looped = 0  # the receiver thread's: delivered to the decode ring
        self.loop_unsent = 0  # the sender thread's: the socket pair was full
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
                host, port = target[0], target[1]
                family, *_, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
                self._open_socket(family)
                self.relay = tuple(addr)
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

    def _open_socket(self, family: socket.AddressFamily) -> None:
        """A UDP socket of ``family`` (the old one closed if it was another family)."""
        old = self.sock
        if old is not None and old.family == family:
            return
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        if old is not None:
            old.close()

    def _close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()

    # --- both threads ------------------------------------------------------------------

    def sendto(self, data: bytes | memoryview, addr: Addr, counts: _Counters) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            sock.sendto(data, addr)
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
            if slot.flags & LOOPBACK_FLAG:  # the microphone test: here, never to the relay
                message = _LOOPED.pack(slot.seq, slot.timestamp) + bytes(slot.data)
                src.release()
                try:
                    self.loop_tx.send(message)
                except OSError:  # the receiver is that far behind: a lost frame, as on UDP
                    self.loop_unsent += 1
                continue
            addr = self.relay
            if addr is None or not link.should_send():
                src.release()
                continue
            seq = slot.seq
            datagram = link.seal(seq, slot.timestamp, slot.data)  # copies out of the slot
            src.release()
            tunnel = self.tunnel
            if link.path == TCP and tunnel is not None:
                if tunnel.send(ts.VOICE, datagram, t_in):
                    self.tunnel_voice_sent += 1
                else:
                    self.tunnel_voice_unsent += 1
            else:
                self.sendto(datagram, addr, self.sender_counts)
            tracer.add(seq, t_in, time.monotonic_ns())

    # --- receiver (main) thread -------------------------------------------------------------

    def receive_loop(self, dst: Ring, tracer: Tracer) -> None:
        view = memoryview(bytearray(MAX_DATAGRAM + 1))
        local = bytearray(ts.MAX_MESSAGE + 1)
        rt, link, tunnel = self.rt, self.link, self.tunnel
        while rt.running:
            now = time.monotonic_ns()
            addr = self.relay
            if addr is not None:
                for datagram in link.timers(now):
                    self.sendto(datagram, addr, self.counts)
                wait = (link.next_timer(now) - now) / 1e9
            else:  # no relay address yet (or its lookup failed): timers cannot run
                wait = MAX_WAIT
            ready = link.voice_ready
            sock = self.sock
            fds = tuple(f.fileno() for f in (sock, tunnel, self.loop_rx) if f is not None)
            got = rt.wait(fds, max(0.0, min(wait, MAX_WAIT)))
            if sock is not None and sock.fileno() in got:
                self._drain(sock, view, dst, tracer)
            if self.loop_rx.fileno() in got:
                self._looped_back(view, dst)
            if tunnel is not None and tunnel.fileno() in got:
                self._from_tunnel(tunnel, local, dst, tracer)
            # Only after the socket is drained: a thread that did not run for a while finds
            # the answers that came meanwhile before it judges the path.
            now = time.monotonic_ns()
            changed = addr is not None and link.health.update(now)
            if tunnel is not None:
                tunnel.tick(now)
                if link.sealer is not None and (changed or now >= self._next_path_note):
                    kind = ts.PATH_TCP if link.path == TCP else ts.PATH_UDP
                    tunnel.send(kind, b"", now)
                    self._next_path_note = now + PATH_EVERY_NS
            mono = time.monotonic()
            # The first register answer (or the tunnel) is news at once: file sources wait
            # for it; so is a change of path, which the user sees.
            if rt.report_due(mono) or changed or (link.voice_ready and not ready):
                rt.report(mono, self._stats())

    def _from_tunnel(
        self, tunnel: ts.TunnelSocket, buf: bytearray, dst: Ring, tracer: Tracer
    ) -> None:
        """Voice the control process took out of the TCP tunnel for us."""
        for kind, body in tunnel.receive(buf):
            if kind == ts.VOICE:
                self.tunnel_received += 1
                self._deliver(memoryview(body), time.monotonic_ns(), dst, tracer)

    def _looped_back(self, view: memoryview, dst: Ring) -> None:
        """The microphone test's frames from the sender thread, into the decode ring."""
        while True:
            try:
                n = self.loop_rx.recv_into(view, len(view), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            if n <= _LOOPED.size:
                continue
            seq, capture_ns = _LOOPED.unpack_from(view)
            now = time.monotonic_ns()
            if dst.write(  # a full ring drops it and counts it in the ring's header
                view[_LOOPED.size : n],
                seq=seq,
                timestamp=now,
                speaker=LOOPBACK_SPEAKER,
                media=media_timestamp(capture_ns, 0),
            ):
                self.looped += 1

    def _drain(self, sock: socket.socket, view: memoryview, dst: Ring, tracer: Tracer) -> None:
        """Read every datagram queued on the socket; voice goes into the decode ring."""
        relay = self.relay
        while True:
            try:
                n, addr = sock.recvfrom_into(view, len(view), socket.MSG_DONTWAIT)
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
            self._deliver(view[:n], now, dst, tracer)

    def _deliver(self, data: memoryview, now: int, dst: Ring, tracer: Tracer) -> None:
        """A datagram from the relay (over UDP or the tunnel): voice goes into the ring."""
        incoming = self.link.received(data, now)
        if incoming is not None:
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
            voice_path=link.path,
            udp_loss_percent=link.health.loss_percent(time.monotonic_ns()),
            path_switches=link.health.switches,
            tunnel_sent=self.tunnel_voice_sent,
            tunnel_unsent=self.tunnel_voice_unsent,
            tunnel_received=self.tunnel_received,
            loopback=self.looped,
            loopback_unsent=self.loop_unsent,
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
