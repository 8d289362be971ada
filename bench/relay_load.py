"""Relay forwarding load: datagrams/s and forwarding delay for 1, 10 and 100 channels of 10.

For each UDP mode of the relay (``thread``: the blocking hot loop on plaintext
protocol 1; ``asyncio``: the same router on the event loop, the alternative;
``workers2``: two SO_REUSEPORT loops; ``thread+limit``: ``thread`` with the
per-session voice limit computed on every datagram but never reached, for its
cost; ``thread+metrics``: ``thread`` with ``--metrics``, whose loop times one
datagram in 64 for the service-time histogram, for that cost; ``sealed``:
``thread`` on protocol 2, the relay as deployed: every datagram authenticated,
replay-checked and forwarded sealed, side by side with ``thread``;
``sealed+workers2``: ``sealed`` on two SO_REUSEPORT loops, each session's datagrams
steered to one of them by its sender id) and each
configuration, the parent starts ``python -m relay`` as a real process,
authenticates every talker over TCP, registers its UDP socket, then hands the
sockets to one sender process and one receiver process (multiprocessing spawn).
Two phases per configuration:

* ``saturated``: the sender offers more voice than one core can forward
  (``--offered`` datagrams/s in, fan-out 9); the relay's own ``forwarded``
  counter, read by SIGUSR1 at the start and end of the window, gives the
  forwarded datagrams/s, and /proc gives the relay's CPU use in that window.
* ``paced``: every talker at 50 datagrams/s (one Opus frame per 20 ms), the total
  capped at ``--paced-cap``: the forwarding delay a user would see.

And a ramp (the default relay, one core): N talkers in channels of 10, each at 50
datagrams/s, N stepped up until the relay drops (voice it took in falls below 99 %
of what was sent) or delays (p99 forwarding delay over 5 ms). The receiver samples
one channel's sockets for the delay, so it measures the relay, not itself; the
other talkers' sockets just fill. Reported: the highest sustained forwarded
datagrams/s within the limits, the relay's CPU there, and its memory per session
(RSS growth over the idle relay, divided by the sessions).

Receivers compare the header timestamp (the sender's ``time.monotonic_ns()``;
in sealed voice the clear counter, which the sender sets to it) with the arrival
time. The plaintext datagram is 100 bytes (24 of header, 76 of payload); the sealed
one carries the same 76-byte payload in 143 bytes (127 once the relay strips its tag).
Everything runs on loopback; every loop is bounded in
time; the only busy part is the load being measured.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import selectors
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.common import parser, summarize, write_result
from relay.launch import start_relay, stop_relay
from relay.probe import ProbeClient
from relay.protocol.datagram import HEADER, HEADER_SIZE
from relay.protocol.errors import ProtocolError
from relay.protocol.messages import Join, Message, UserJoined
from relay.protocol.sealed_datagram import CTR_OFFSET, KIND_VOICE, MIN_SEALED
from relay.protocol.sealed_datagram import HEADER_SIZE as SEALED_HEADER
from relay.protocol.voice_crypto import direction_keys, seal_voice
from relay.udp import RCVBUF

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TALKERS_PER_CHANNEL = 10
DATAGRAM_SIZE = 100  # as in MEASURED.md: a 24-byte header and a 76-byte payload
FRAME_RATE = 50  # datagrams/s of one talker
_TS = struct.Struct(">Q")
# Relay variants measured: name -> (--udp, --udp-workers, other flags). The single
# loops run pinned to one core; "workers2" (SO_REUSEPORT, one thread + one process)
# gets every core, shared with the load generator. The loops are measured without
# the per-session voice limit (a talker here sends far more than one voice stream);
# "thread+limit" is "thread" with the limit's arithmetic on every datagram and a
# ceiling nobody reaches: the limit's cost, in the same run; "thread+metrics" the
# Prometheus endpoint's (not scraped during the window: a scrape every 15 s is a
# few milliseconds of the loop's thread, the sampling runs on every datagram).
# Every mode but "sealed" and "sealed+workers2" runs protocol 1 (--insecure): plaintext,
# as before issue 12.
NO_LIMIT = ("--no-voice-limit", "--insecure")
UNREACHED_LIMIT = ("--voice-datagrams", "1e7", "--voice-bytes", "1e10", "--insecure")
MODES: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "thread": ("thread", 1, NO_LIMIT),
    "asyncio": ("asyncio", 1, NO_LIMIT),
    "workers2": ("thread", 2, NO_LIMIT),
    "thread+limit": ("thread", 1, UNREACHED_LIMIT),
    "thread+metrics": ("thread", 1, (*NO_LIMIT, "--metrics", f"{HOST}:0")),
    "sealed": ("thread", 1, ("--no-voice-limit",)),
    "sealed+workers2": ("thread", 2, ("--no-voice-limit",)),
}
PAYLOAD = DATAGRAM_SIZE - HEADER_SIZE  # the same 76 bytes of "Opus" in both protocols
# A talker's keys for sealed voice: (user id, up key, media key id, media key).
Keys = tuple[int, bytes, int, bytes]
DEFAULT_RELAY = ("thread", 1, ())  # for the ramp: the relay as deployed, limit included
_COUNTERS = re.compile(r"counters: (.*?) sessions=")


# --- the two load processes (module level, for spawn) --------------------------------------


@dataclass(frozen=True)
class StartLine:
    """The start of a load window, fixed once the sender and receiver processes run.

    A spawned child on a loaded machine can take seconds to import and start: a start
    fixed before they run could be over before they send a datagram."""

    ready: Any  # a semaphore each child releases once
    go: Any  # an event set with ``t0``
    t0: Any  # a shared double: the window's start, time.monotonic() (system-wide)

    @classmethod
    def make(cls, ctx: Any) -> StartLine:
        return cls(ctx.Semaphore(0), ctx.Event(), ctx.Value("d", 0.0))

    def wait(self) -> float:
        """In a child: say it is ready and return the start the parent then fixes."""
        self.ready.release()
        if not self.go.wait(START_TIMEOUT):
            raise RuntimeError("the load window was never started")
        return float(self.t0.value)

    def start(self, children: int, lead: float) -> float:
        """In the parent: wait for every child, then start the window ``lead`` s from now."""
        for _ in range(children):
            if not self.ready.acquire(timeout=START_TIMEOUT):
                raise RuntimeError(f"a load process did not start within {START_TIMEOUT} s")
        t0 = time.monotonic() + lead
        self.t0.value = t0
        self.go.set()
        return t0


START_TIMEOUT = 120.0


def _sender(
    socks: list[socket.socket],
    tokens: list[int],
    relay_addr: tuple[str, int],
    line: StartLine,
    duration: float,
    rate: float,
    cpus: set[int] | None,
    out: Any,
    keys: list[Keys] | None = None,
) -> None:
    """Send voice round-robin from every talker at ``rate`` datagrams/s in [t0, t0+duration).

    With ``keys``, sealed voice (protocol 2), each datagram sealed as it is sent."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    t0 = line.wait()
    if keys is not None:
        _sealed_sender(socks, keys, relay_addr, t0, duration, rate, out)
        return
    bufs = [bytearray(DATAGRAM_SIZE) for _ in socks]
    n = len(socks)
    sent = errors = 0
    time.sleep(max(0.0, t0 - time.monotonic()))
    end = t0 + duration
    pack = HEADER.pack_into
    now_ns = time.monotonic_ns
    while (now := time.monotonic()) < end:
        due = min(int((now - t0) * rate) - sent, 2000)  # bounded burst, then check the clock
        if due <= 0:
            time.sleep(0.0005)
            continue
        for _ in range(due):
            i = sent % n
            buf = bufs[i]
            pack(buf, 0, tokens[i], sent // n, now_ns(), 0)
            try:
                socks[i].sendto(buf, relay_addr)
            except OSError:
                errors += 1
            sent += 1
    out.put({"sent": sent, "send_errors": errors})


PRESEAL_MAX = 200_000  # datagrams sealed ahead of a phase; a longer one seals as it goes
PACED_MAX = 5000.0  # datagrams/s a sealed sender seals as it goes (paced phases)


def _sealed_sender(
    socks: list[socket.socket],
    keys: list[Keys],
    relay_addr: tuple[str, int],
    t0: float,
    duration: float,
    rate: float,
    out: Any,
) -> None:
    """The sender for sealed voice. Sealing costs this sender more than the relay's check
    costs the relay, so a saturating phase (above PACED_MAX datagrams/s, at most
    PRESEAL_MAX of them) is sealed before ``t0``, each counter the datagram's planned
    send time in ns (fresh and growing: none can be sent twice); a paced phase, like
    the plaintext sender, seals each datagram as it sends it with its counter the
    send time, so the paced delays of both protocols run from the same instant."""
    talkers = [(sid, up, key_id, AESGCM(media)) for sid, up, key_id, media in keys]
    payload = bytes(PAYLOAD)
    n = len(socks)
    total = int(rate * duration) + 1
    t0_ns, step = int(t0 * 1e9), 1e9 / rate
    now_ns = time.monotonic_ns

    def seal(k: int, ctr: int) -> bytes:
        sid, up, key_id, aead = talkers[k % n]
        return seal_voice(aead, up, key_id, sid, ctr, 0, k // n, ctr, payload)

    pool = None
    if rate > PACED_MAX and total <= PRESEAL_MAX:
        # The loop below sends datagram k once k + 1 are due.
        pool = [seal(k, t0_ns + int((k + 1) * step)) for k in range(total)]
    sent = errors = 0
    time.sleep(max(0.0, t0 - time.monotonic()))
    end = t0 + duration
    while (now := time.monotonic()) < end and sent < total:
        due = min(int((now - t0) * rate) - sent, 2000, total - sent)
        if due <= 0:
            time.sleep(0.0005)
            continue
        for _ in range(due):
            data = seal(sent, now_ns()) if pool is None else pool[sent]
            try:
                socks[sent % n].sendto(data, relay_addr)
            except OSError:
                errors += 1
            sent += 1
    out.put({"sent": sent, "send_errors": errors})


def _receiver(
    socks: list[socket.socket],
    line: StartLine,
    duration: float,
    cpus: set[int] | None,
    out: Any,
    sealed: bool = False,
) -> None:
    """Count voice arriving in the window and record each one's delay (µs)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    t0 = line.wait()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    buf = bytearray(2048)
    delays = array("q")
    in_window = total = 0
    end = t0 + duration
    stop = end + 0.5  # late arrivals still count for the delay
    now_ns = time.monotonic_ns
    t0_ns, end_ns = int(t0 * 1e9), int(end * 1e9)  # monotonic clocks agree across processes
    while time.monotonic() < stop:
        for key, _ in sel.select(timeout=0.05):
            recv = key.fileobj.recv_into  # type: ignore[union-attr]
            while True:
                try:
                    n = recv(buf)
                except BlockingIOError:
                    break
                if sealed:
                    if n < SEALED_HEADER + MIN_SEALED or buf[1] != KIND_VOICE:
                        continue
                    sent_ns = _TS.unpack_from(buf, CTR_OFFSET)[0]
                elif n <= HEADER_SIZE:
                    continue
                else:
                    sent_ns = _TS.unpack_from(buf, 12)[0]
                t = now_ns()
                if sent_ns < t0_ns:
                    continue  # left over from an earlier phase
                total += 1
                if t < end_ns:
                    in_window += 1
                if len(delays) < 5_000_000:
                    delays.append(t - sent_ns)
    sel.close()
    out.put(
        {
            "received_in_window": in_window,
            "received_total": total,
            "delay_us": summarize([d / 1000 for d in delays]),
        }
    )


# --- the relay and its clients ----------------------------------------------------------------


class RelayUnderTest:
    def __init__(self, channels: int, udp_mode: str, log_path: Path, cpus: set[int] | None) -> None:
        names = [f"c{i}" for i in range(channels)]
        udp, workers, extra = MODES.get(udp_mode, DEFAULT_RELAY)
        self.sealed = "--insecure" not in extra
        args = ["--udp", udp, "--udp-workers", str(workers), *extra]
        args += ["--grace", "600", "--auth-timeout", "60", "--stats-interval", "3600"]
        args += ["--max-clients", "5000"]
        # Every talker connects from 127.0.0.1: lift the per-address limits.
        args += ["--max-per-address", "0", "--max-sessions-per-address", "0", "--connect-rate", "0"]
        args += ["--address-join-rate", "0", "--address-chat-rate", "0"]
        for name in names:
            args += ["--channel", name]
        self.channels = names
        self.log_path = log_path
        # The relay's log is where its counters come from. Closed in close().
        self._log = open(log_path, "w")  # noqa: SIM115
        try:
            self.proc, self.port = start_relay(*args, host=HOST, log=self._log)
        except RuntimeError:
            self._log.close()
            raise RuntimeError(f"relay did not start; log in {log_path}") from None
        if cpus:  # every thread of the relay, the UDP loop included, on the given core(s)
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                os.sched_setaffinity(int(tid), cpus)

    def cpu_seconds(self) -> float:
        """CPU time of the relay and its children (the SO_REUSEPORT workers)."""
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry) == self.proc.pid or int(fields[1]) == self.proc.pid:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def snapshot(self) -> tuple[float, float]:
        """Ask for a counters line; return (wall time, relay CPU seconds) of the request."""
        self.proc.send_signal(signal.SIGUSR1)
        return time.monotonic(), self.cpu_seconds()

    def counter_lines(self) -> list[dict[str, int]]:
        self._log.flush()
        out = []
        for m in _COUNTERS.finditer(self.log_path.read_text()):
            out.append({k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())})
        return out

    def close(self) -> None:
        stop_relay(self.proc)
        self._log.close()


def _joined_self(user_id: int) -> Callable[[Message | ProtocolError], bool]:
    return lambda m: isinstance(m, UserJoined) and m.user_id == user_id


def _connect_talkers(relay: RelayUnderTest) -> list[ProbeClient]:
    clients: list[ProbeClient] = []
    for ch, name in enumerate(relay.channels):
        for i in range(TALKERS_PER_CHANNEL):
            c = ProbeClient(HOST, relay.port, timeout=20.0, sealed=relay.sealed)
            clients.append(c)
            c.auth(f"t{ch}-{i}")
            if ch:
                c.send(Join(channel=name))
                c.recv(_joined_self(c.user_id))
                c.inbox.clear()
            c.register()
    return clients


def _wait_counters(
    relay: RelayUnderTest, count: int, timeout: float = 10.0
) -> list[dict[str, int]]:
    deadline = time.monotonic() + timeout
    while len(lines := relay.counter_lines()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the relay did not log its counters")
        time.sleep(0.05)
    return lines


def _drain(socks: list[socket.socket]) -> None:
    """Empty the talkers' sockets of what an earlier phase left in them."""
    for s in socks:
        s.setblocking(False)
        try:
            for _ in range(100_000):
                s.recv(2048)
        except BlockingIOError:
            pass
        finally:
            s.setblocking(True)


def _keys(c: ProbeClient) -> Keys:
    """A talker's keys: its session's up key, the media key of the channel it is in now."""
    w = c.welcome
    assert w is not None and w.udp_key is not None and c.sealer is not None
    media = c.sealer.media_key
    assert media is not None
    return (w.user_id, direction_keys(w.udp_key)[0], media[0], media[1])


def run_phase(
    relay: RelayUnderTest,
    clients: list[ProbeClient],
    duration: float,
    rate: float,
    load_cpus: set[int] | None,
    sample: int = 0,
) -> dict[str, Any]:
    """One window of load at ``rate`` voice datagrams/s in; what came out.

    ``sample``: the receiver listens on the first ``sample`` talkers' sockets only.
    """
    time.sleep(0.5)  # the relay works off its backlog from an earlier phase
    _drain([c.udp for c in clients])
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    socks = [c.udp for c in clients]
    listened = socks[:sample] if sample else socks
    tokens = [c.token for c in clients]
    keys = [_keys(c) for c in clients] if relay.sealed else None
    line = StartLine.make(ctx)
    procs = [
        ctx.Process(
            target=_sender,
            args=(socks, tokens, (HOST, relay.port), line, duration, rate, load_cpus, q, keys),
        ),
        ctx.Process(target=_receiver, args=(listened, line, duration, load_cpus, q, relay.sealed)),
    ]
    for p in procs:
        p.start()
    try:
        before = len(relay.counter_lines())
        # Once both children run: time for the sealed sender to seal its load first.
        preseal = rate > PACED_MAX and rate * duration <= PRESEAL_MAX
        t0 = line.start(len(procs), 0.2 + (rate * duration * 20e-6 if keys and preseal else 0.0))
        time.sleep(max(0.0, t0 - time.monotonic()))
        w0, cpu0 = relay.snapshot()
        time.sleep(max(0.0, t0 + duration - time.monotonic()))
        w1, cpu1 = relay.snapshot()
        results: dict[str, Any] = {}
        for _ in procs:
            results.update(q.get(timeout=duration + 30))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        q.close()
        q.join_thread()
    lines = _wait_counters(relay, before + 2)
    c0, c1 = lines[before], lines[before + 1]
    window = w1 - w0
    forwarded = c1["forwarded"] - c0["forwarded"]
    return {
        "offered_in_per_s": rate,
        "sent_in_per_s": results["sent"] / duration,
        "relay_voice_in_per_s": (c1["voice_in"] - c0["voice_in"]) / window,
        "forwarded_per_s": forwarded / window,
        "received_per_s": results["received_in_window"] / duration,
        "relay_cpu_cores": (cpu1 - cpu0) / window,
        # What one core fully given to the relay would forward (a lower bound when the
        # relay was not saturated): comparable between runs on a busy shared machine.
        "forwarded_per_relay_cpu_s": forwarded / max(cpu1 - cpu0, 1e-9),
        "relay_drops": {k: c1[k] - c0[k] for k in c1 if k.startswith("drop_")},
        "relay_send_errors": c1["send_errors"] - c0["send_errors"],
        "delay_us": results["delay_us"],
    }


def run_config(
    udp_mode: str,
    channels: int,
    duration: float,
    offered: float,
    paced_cap: float,
    pin: bool,
) -> dict[str, Any]:
    # Pinned: the relay alone on core 0 ("one core"), the load generator on the rest.
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpus = {cpus[0]} if pin and len(cpus) > 1 and MODES[udp_mode][1] == 1 else None
    load_cpus = set(cpus[1:]) if relay_cpus else None
    with tempfile.TemporaryDirectory() as tmp:
        relay = RelayUnderTest(channels, udp_mode, Path(tmp) / "relay.log", relay_cpus)
        clients: list[ProbeClient] = []
        try:
            clients = _connect_talkers(relay)
            talkers = len(clients)
            paced = min(talkers * FRAME_RATE, paced_cap)
            return {
                # Other work on the machine skews every figure: keep the evidence.
                "loadavg_1min_at_start": os.getloadavg()[0],
                "udp_mode": udp_mode,
                "channels": channels,
                "talkers": talkers,
                "fan_out": TALKERS_PER_CHANNEL - 1,
                "relay_cpus": sorted(relay_cpus) if relay_cpus else "any",
                "saturated": run_phase(relay, clients, duration, offered, load_cpus),
                "paced": run_phase(relay, clients, duration, paced, load_cpus),
            }
        except Exception:
            tail = relay.log_path.read_text()[-3000:]
            print(f"relay exit code {relay.proc.poll()}; log tail:\n{tail}", file=sys.stderr)
            raise
        finally:
            for c in clients:
                c.close()
            relay.close()


RAMP_TALKERS = [10, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 1000]
RAMP_P99_LIMIT_US = 5000.0
RAMP_MIN_TAKEN = 0.99  # of the voice sent, the share the relay must take in


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_ramp(duration: float, steps: list[int], pin: bool) -> dict[str, Any]:
    """Step up the talkers (50 datagrams/s each) until the relay drops or delays."""
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpus = {cpus[0]} if pin and len(cpus) > 1 else None
    load_cpus = set(cpus[1:]) if relay_cpus else None
    channels = -(-max(steps) // TALKERS_PER_CHANNEL)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        relay = RelayUnderTest(channels, "default", Path(tmp) / "relay.log", relay_cpus)
        clients: list[ProbeClient] = []
        try:
            time.sleep(0.5)
            idle_kib = rss_kib(relay.proc.pid)
            clients = _connect_talkers(relay)
            per_session_kib = (rss_kib(relay.proc.pid) - idle_kib) / len(clients)
            for n in steps:
                phase = run_phase(relay, clients[:n], duration, n * FRAME_RATE, load_cpus,
                                  sample=TALKERS_PER_CHANNEL)  # fmt: skip
                taken = phase["relay_voice_in_per_s"] / max(phase["sent_in_per_s"], 1e-9)
                p99 = phase["delay_us"].get("p99", float("inf"))
                ok = taken >= RAMP_MIN_TAKEN and p99 <= RAMP_P99_LIMIT_US
                rows.append({"talkers": n, "taken_share": round(taken, 4), "within_limits": ok,
                             **phase})  # fmt: skip
                print(f"ramp {n:5d} talkers: in {phase['sent_in_per_s']:6.0f}/s, forwarded "
                      f"{phase['forwarded_per_s']:7.0f}/s, taken {100 * taken:5.1f} %, p99 "
                      f"{p99:7.0f} us, relay cpu {phase['relay_cpu_cores']:.2f}"
                      f"{'' if ok else '  <- over the limits'}", flush=True)  # fmt: skip
                if not ok:
                    break
        finally:
            for c in clients:
                c.close()
            relay.close()
    good = [r for r in rows if r["within_limits"]]
    best = max(good, key=lambda r: r["forwarded_per_s"]) if good else None
    return {
        "limits": {"p99_delay_us": RAMP_P99_LIMIT_US, "min_taken_share": RAMP_MIN_TAKEN},
        "relay_cpus": sorted(relay_cpus) if relay_cpus else "any",
        "memory_per_session_kib": round(per_session_kib, 2),
        "sessions": len(clients),
        "best": None
        if best is None
        else {
            "talkers": best["talkers"],
            "forwarded_per_s": best["forwarded_per_s"],
            "relay_cpu_cores": best["relay_cpu_cores"],
            "delay_p50_us": best["delay_us"].get("p50"),
            "delay_p99_us": best["delay_us"].get("p99"),
        },
        "steps": rows,
    }


def inproc_designs(rounds: int = 30, batch: int = 300, fan_out: int = 9) -> dict[str, Any]:
    """The relay's whole per-datagram work for three designs, in this process, interleaved:
    ``recvfrom_into``-free (the datagram is in a buffer already), the routing decision and
    one ``sendto`` per listener on loopback. ``plaintext``: protocol 1's Router.
    ``sealed``: protocol 2 as built (one tag check, the same bytes to everyone).
    ``hop_by_hop``: Mumble's design, emulated: the same check, then the frame opened once
    and sealed again for each listener under that listener's key. Returns forwarded
    datagrams per CPU-second of each, best of ``rounds`` batches."""
    from relay.protocol.sealed_datagram import HEADER_SIZE as H2
    from relay.protocol.sealed_datagram import SID_OFFSET, TAG_SIZE, TARGET_OFFSET
    from relay.protocol.voice_crypto import Sealer
    from relay.router import Router, RouteTable
    from relay.sealed_router import SealedRouter

    listeners = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(fan_out)]
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in listeners:
            s.bind((HOST, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        addrs = [s.getsockname() for s in listeners]
        me = ("127.0.0.1", 1)
        entries = [(1, 1, "c", me)] + [(10 + i, 10 + i, "c", a) for i, a in enumerate(addrs)]
        plain = Router()
        plain.table = RouteTable.build(entries)
        sealed = SealedRouter({1: bytes(16)})
        sealed.table = plain.table
        sealed.update_peers([(1, 1, bytes(32), 1)], [])
        sender = Sealer(1, bytes(32), 0)
        sender.set_media_key(1, bytes(16))
        keys = [AESGCM(bytes([i]) * 16) for i in range(fan_out)]
        media = AESGCM(bytes(16))
        p_data = HEADER.pack(1, 0, 0, 0) + bytes(PAYLOAD)
        send = out.sendto

        def run_plain(n: int) -> None:
            for _ in range(n):
                buf = bytearray(p_data)
                for d in plain.route(buf, len(buf), me):
                    send(buf, d)

        def run_sealed(n: int, bufs: list[bytearray]) -> None:
            for buf in bufs[:n]:
                dests = sealed.route(buf, len(buf), me)
                data = memoryview(buf)[: sealed.out_n]
                for d in dests:
                    send(data, d)

        def run_hop(n: int, bufs: list[bytearray]) -> None:
            for buf in bufs[:n]:
                dests = sealed.route(buf, len(buf), me)
                m = sealed.out_n
                head = bytes(buf[:H2])
                nonce = head[SID_OFFSET:TARGET_OFFSET]
                frame = media.decrypt(nonce, bytes(buf[H2:m]), head)
                for key, d in zip(keys, dests, strict=False):
                    send(head + key.encrypt(nonce, frame, head), d)

        best = {"plaintext": 0.0, "sealed": 0.0, "hop_by_hop": 0.0}
        for _ in range(rounds):
            fresh = [bytearray(sender.voice(i, i, bytes(PAYLOAD))) for i in range(2 * batch)]
            for name, work in (
                ("plaintext", lambda: run_plain(batch)),
                ("sealed", lambda f=fresh: run_sealed(batch, f[:batch])),
                ("hop_by_hop", lambda f=fresh: run_hop(batch, f[batch:])),
            ):
                t = time.process_time()
                work()
                spent = time.process_time() - t
                if spent > 0:
                    best[name] = max(best[name], batch * fan_out / spent)
                _drain(listeners)
        return {
            "fan_out": fan_out,
            "forwarded_per_cpu_s": best,
            "sealed_vs_plaintext": best["sealed"] / best["plaintext"],
            "hop_by_hop_vs_plaintext": best["hop_by_hop"] / best["plaintext"],
            "tag_size": TAG_SIZE,
        }
    finally:
        for s in [*listeners, out]:
            s.close()


SEALED_FLOOR = 0.6  # issue 12: the sealed relay keeps at least this share of plaintext


def side_by_side(
    runs: list[dict[str, Any]], plaintext: str = "thread", sealed: str = "sealed"
) -> dict[str, Any] | None:
    """The relay process's forwarded datagrams per CPU-second, plaintext against sealed:
    the median of each mode's saturated runs (every channel count, every repeat), their
    ratio and whether it keeps SEALED_FLOOR; None unless both modes ran. Per channel
    count too. Medians, since the runs spread more between repeats than between modes."""

    def rate(r: dict[str, Any]) -> float:
        return float(r["saturated"]["forwarded_per_relay_cpu_s"])

    def compare(chosen: list[dict[str, Any]]) -> dict[str, Any] | None:
        plain = [rate(r) for r in chosen if r["udp_mode"] == plaintext]
        seal = [rate(r) for r in chosen if r["udp_mode"] == sealed]
        if not plain or not seal or statistics.median(plain) <= 0:
            return None
        p, q = statistics.median(plain), statistics.median(seal)
        return {"runs": [len(plain), len(seal)], plaintext: p, sealed: q, "ratio": q / p}

    whole = compare(runs)
    if whole is None:
        return None
    per = {}
    for ch in sorted({int(r["channels"]) for r in runs}):
        one = compare([r for r in runs if r["channels"] == ch])
        if one is not None:
            per[str(ch)] = one
    fan_outs = sorted({int(r["fan_out"]) for r in runs})
    return {
        "measure": "forwarded per relay CPU-second, saturated phase, median",
        "fan_out": fan_outs,
        **whole,
        "floor": SEALED_FLOOR,
        "keeps_floor": whole["ratio"] >= SEALED_FLOOR,
        "per_channels": per,
    }


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per phase (default 3)")
    ap.add_argument(
        "--offered", type=float, default=40000, help="voice datagrams/s in when saturating"
    )
    ap.add_argument(
        "--paced-cap", type=float, default=5000, help="cap on datagrams/s in of the paced phase"
    )
    ap.add_argument(
        "--no-pin", action="store_true", help="do not pin the relay to one core, the load to others"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs of everything; the best of each is summarized"
    )
    ap.add_argument("--no-ramp", action="store_true", help="skip the talker ramp")
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated relay modes to measure (default all: " + ", ".join(MODES) + ")",
    )
    ap.add_argument(
        "--channels", default="1,10,100", help="comma-separated channel counts (default 1,10,100)"
    )
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes takes some of {', '.join(MODES)}")
    configs = [1] if args.quick else [int(c) for c in args.channels.split(",") if c]
    duration = 0.3 if args.quick else args.duration
    offered = 2000 if args.quick else args.offered
    runs = []
    # Modes interleaved per configuration, so both see the same machine conditions.
    for _ in range(1 if args.quick else args.repeat):
        for channels in configs:
            for udp_mode in modes:
                r = run_config(
                    udp_mode, channels, duration, offered, args.paced_cap, not args.no_pin
                )
                runs.append(r)
                s, p = r["saturated"], r["paced"]
                print(
                    f"{udp_mode:12s} {channels:3d} ch: forwarded {s['forwarded_per_s']:7.0f}/s "
                    f"(received {s['received_per_s']:7.0f}/s, relay cpu "
                    f"{s['relay_cpu_cores']:.2f}, {s['forwarded_per_relay_cpu_s']:7.0f}/cpu-s, "
                    f"load {r['loadavg_1min_at_start']:.1f}) | paced {p['sent_in_per_s']:5.0f}/s "
                    f"in: delay p50 {p['delay_us'].get('p50', float('nan')):5.0f} us "
                    f"p99 {p['delay_us'].get('p99', float('nan')):6.0f} us",
                    flush=True,
                )
    best: dict[str, Any] = {}
    for r in runs:
        key = f"{r['udp_mode']}/{r['channels']}ch"
        if key not in best or (
            r["saturated"]["forwarded_per_s"] > best[key]["saturated"]["forwarded_per_s"]
        ):
            best[key] = r
    summary = {
        key: {
            "forwarded_per_s": r["saturated"]["forwarded_per_s"],
            "relay_cpu_cores": r["saturated"]["relay_cpu_cores"],
            "forwarded_per_relay_cpu_s": r["saturated"]["forwarded_per_relay_cpu_s"],
            "paced_delay_p50_us": r["paced"]["delay_us"].get("p50"),
            "paced_delay_p99_us": r["paced"]["delay_us"].get("p99"),
            "saturated_delay_p50_us": r["saturated"]["delay_us"].get("p50"),
            "saturated_delay_p99_us": r["saturated"]["delay_us"].get("p99"),
        }
        for key, r in best.items()
    }
    compared = side_by_side(runs)
    if compared is not None:
        print(f"relay process, fan-out {compared['fan_out']}, forwarded per relay CPU-second "
              f"(median of {compared['runs']} runs): plaintext {compared['thread']:.0f}, "
              f"sealed {compared['sealed']:.0f}: {compared['ratio']:.2f} of plaintext "
              f"({'keeps' if compared['keeps_floor'] else 'BELOW'} the {SEALED_FLOOR} floor)",
              flush=True)  # fmt: skip
    designs = inproc_designs(rounds=3 if args.quick else 30)
    fpc = designs["forwarded_per_cpu_s"]
    print("in-process, fan-out 9, forwarded per CPU-second: " + ", ".join(
        f"{k} {v:.0f}" for k, v in fpc.items()) + f"; sealed/plaintext "
        f"{designs['sealed_vs_plaintext']:.2f}, hop-by-hop/plaintext "
        f"{designs['hop_by_hop_vs_plaintext']:.2f}", flush=True)  # fmt: skip
    ramp = None
    if not args.no_ramp:
        steps = [10, 20] if args.quick else RAMP_TALKERS
        ramp = run_ramp(duration if args.quick else max(duration, 3.0), steps, not args.no_pin)
        if ramp["best"]:
            b = ramp["best"]
            print(f"ramp: best sustained {b['forwarded_per_s']:.0f} forwarded/s with "
                  f"{b['talkers']} talkers (p99 {b['delay_p99_us']:.0f} us, relay cpu "
                  f"{b['relay_cpu_cores']:.2f}); {ramp['memory_per_session_kib']:.1f} KiB "
                  f"per session")  # fmt: skip
    path = write_result(
        "relay_load",
        {
            "ramp": ramp,
            "quick": args.quick,
            "duration_s": duration,
            "datagram_bytes": DATAGRAM_SIZE,
            "cpus": os.cpu_count(),
            "relay_udp_rcvbuf_requested": RCVBUF,
            "best_of_repeats": summary,
            "sealed_vs_plaintext": compared,
            "inproc_designs": designs,
            "runs": runs,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
