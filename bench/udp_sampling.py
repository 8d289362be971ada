"""What the metrics' service-time sampling costs the UDP hot loop, per datagram.

The relay with ``--metrics`` runs :meth:`relay.udp.UdpThread._run_sampled`
(a countdown on every datagram, two clock reads and a histogram update on one
in 64) instead of the plain loop. Both run here in one process, on loopback, in
interleaved rounds: a batch of voice datagrams is queued on the relay socket,
the loop forwards each to ``fanout`` listeners, and the loop thread's own CPU
clock (``pthread_getcpuclockid``) says what the batch cost it. The CPU clock of
that one thread, not the wall clock, so other work on the machine (the load
generator, other people's tests) moves the figures much less than it moves the
process-level benchmark (bench/relay_load.py, ``--modes thread,thread+metrics``).

Reported per variant and fan-out: the median over the rounds of forwarded
datagrams per CPU-second and of CPU nanoseconds per received datagram, and the
difference of the medians: the sampling's cost. And, without sockets, the
sampling's bookkeeping alone (``bookkeeping``): the same loop around a no-op
call with and without it, which is the figure the socket rounds' noise hides.
"""

from __future__ import annotations

import socket
import statistics
import time
from typing import Any

from bench.common import parser, write_result
from relay.protocol.datagram import VoiceDatagram
from relay.router import Router, RouteTable
from relay.udp import ServiceTimes, UdpThread, open_udp

HOST = "127.0.0.1"
BATCH = 1000  # datagrams queued per round: within the relay socket's 2 MiB receive buffer
PAYLOAD = b"\x00" * 76  # 100-byte datagrams, as bench/relay_load.py sends
TOKEN = 111


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s


def _drain(socks: list[socket.socket]) -> None:
    for s in socks:
        while True:
            try:
                s.recv(2048)
            except BlockingIOError:
                break


def _round(
    sampled: bool, fanout: int, sender: socket.socket, listeners: list[socket.socket]
) -> tuple[float, int, int]:
    """One batch through a fresh loop: (its thread's CPU seconds, received, forwarded)."""
    router = Router()
    entries = [(TOKEN, 1, "c", sender.getsockname())]
    entries += [(1000 + i, 2 + i, "c", s.getsockname()) for i, s in enumerate(listeners[:fanout])]
    router.table = RouteTable.build(entries)
    sock = open_udp(HOST, 0, rcvbuf=2 << 20)
    addr = sock.getsockname()
    # Queued before the loop starts, so no other thread of this process competes with it
    # for the GIL while it works: its CPU clock then holds the loop's own work (and its
    # start-up, the same for both variants).
    for seq in range(BATCH):
        sender.sendto(bytes(VoiceDatagram(TOKEN, seq, seq, 0, PAYLOAD)), addr)
    loop = UdpThread(sock, router, ServiceTimes() if sampled else None)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while router.counters.voice_in < BATCH and time.monotonic() < deadline:
            time.sleep(0.002)
        ident = loop._thread.ident
        assert ident is not None
        cpu = time.clock_gettime(time.pthread_getcpuclockid(ident))
    finally:
        loop.close()
        _drain(listeners)
    return cpu, router.counters.voice_in, router.counters.forwarded


def _loop_plain(items: list[int], work: Any) -> None:
    for n in items:
        work(n)


def _loop_sampled(items: list[int], work: Any, times: ServiceTimes) -> None:
    # The bookkeeping of UdpThread._run_sampled, around the same call.
    every = times.every
    observe = times.observe
    clock = time.perf_counter_ns
    left = every
    for n in items:
        left -= 1
        if left:
            work(n)
            continue
        left = every
        t0 = clock()
        work(n)
        observe(clock() - t0)


def bookkeeping(rounds: int, n: int = 200_000) -> dict[str, float]:
    """The sampling's own cost per datagram, without sockets: the same loop with and
    without the countdown, around a no-op call, on this thread's CPU clock."""
    items = list(range(n))

    def work(_n: int) -> None:
        return None

    plain, sampled = [], []
    for _ in range(rounds):
        t = time.thread_time_ns()
        _loop_plain(items, work)
        plain.append((time.thread_time_ns() - t) / n)
        t = time.thread_time_ns()
        _loop_sampled(items, work, ServiceTimes())
        sampled.append((time.thread_time_ns() - t) / n)
    p, s = statistics.median(plain), statistics.median(sampled)
    return {"plain_ns": p, "sampled_ns": s, "cost_ns": s - p}


def measure(rounds: int, fanouts: tuple[int, ...]) -> dict[str, Any]:
    sender = _udp()
    listeners = [_udp() for _ in range(max(fanouts))]
    out: dict[str, Any] = {}
    try:
        for fanout in fanouts:
            per: dict[str, list[tuple[float, int, int]]] = {"plain": [], "sampled": []}
            for _ in range(rounds):  # interleaved: both variants see the same machine
                for name in per:
                    per[name].append(_round(name == "sampled", fanout, sender, listeners))
            row: dict[str, Any] = {}
            for name, runs in per.items():
                good = [r for r in runs if r[0] > 0 and r[1] == BATCH]
                row[name] = {
                    "rounds": len(good),
                    "forwarded_per_cpu_s": statistics.median(f / c for c, _n, f in good),
                    "cpu_ns_per_datagram": statistics.median(c * 1e9 / n for c, n, _f in good),
                }
            row["sampling_cost_ns"] = (
                row["sampled"]["cpu_ns_per_datagram"] - row["plain"]["cpu_ns_per_datagram"]
            )
            row["forwarded_per_cpu_s_change_pct"] = 100 * (
                row["sampled"]["forwarded_per_cpu_s"] / row["plain"]["forwarded_per_cpu_s"] - 1
            )
            out[f"fanout{fanout}"] = row
    finally:
        sender.close()
        for s in listeners:
            s.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100, help="rounds per variant (default 100)")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    results = measure(rounds, (1, 9))
    results["bookkeeping"] = bookkeeping(max(3, rounds // 5))
    b = results["bookkeeping"]
    print(
        f"bookkeeping alone: {b['plain_ns']:.0f} ns/iteration plain, {b['sampled_ns']:.0f} "
        f"sampled: {b['cost_ns']:+.0f} ns per datagram",
        flush=True,
    )
    for key, row in results.items():
        if key == "bookkeeping":
            continue
        p, s = row["plain"], row["sampled"]
        print(
            f"{key}: plain {p['forwarded_per_cpu_s']:8.0f} fwd/cpu-s "
            f"({p['cpu_ns_per_datagram']:6.0f} ns/dgram) | sampled "
            f"{s['forwarded_per_cpu_s']:8.0f} fwd/cpu-s ({s['cpu_ns_per_datagram']:6.0f} ns/dgram)"
            f" | cost {row['sampling_cost_ns']:+.0f} ns/dgram "
            f"({row['forwarded_per_cpu_s_change_pct']:+.1f} % fwd/cpu-s)",
            flush=True,
        )
    write_result(
        "udp_sampling",
        {"quick": args.quick, "rounds": rounds, "batch": BATCH, "results": results},
        args.out,
    )
    return results


if __name__ == "__main__":
    main()
