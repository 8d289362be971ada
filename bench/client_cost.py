"""What a client costs: CPU % and RSS of each of its processes, talking and idle.

Two whole clients in one channel of a real relay:
* talking: A speaks a tone, B listens (and sends its own silence, as a client
  without voice activation does); both sides are measured;
* idle: A muted and alone in its channel, so nothing is encoded, sent or
  received; only the capture and playback clocks tick. An idle process must sit
  near 0 % (nothing spins).

CPU % is (utime + stime) over wall time from /proc/<pid>/stat, over a window of
steady state; RSS is VmRSS from /proc/<pid>/status at the end of the window.

    python -m bench.client_cost [--quick] [--seconds S]
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from bench.common import parser, write_result
from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.ipc import events as ev
from pipeline.media.sources import MediaSpec
from relay.launch import start_relay, stop_relay

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(clients: dict[str, LocalClient], seconds: float) -> dict[str, dict[str, float]]:
    """CPU % and RSS per process of each client over ``seconds`` of pumping their buses."""
    pids = {
        f"{who}.{stage}": pid for who, c in clients.items() for stage, pid in c.sup.pids.items()
    }
    start = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        for c in clients.values():
            c.pump(0.05)
    wall = time.monotonic() - t0
    return {
        k: {"cpu_percent": round(100 * (cpu_seconds(p) - start[k]) / wall, 2),
            "rss_mib": round(rss_mib(p), 1)}
        for k, p in pids.items()
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per state")
    args = ap.parse_args(argv)
    seconds = 2.0 if args.quick else args.seconds
    settle = 1.0 if args.quick else 3.0
    relay, port = start_relay()
    base = ClientConfig(host="127.0.0.1", port=port, name="", sink=MediaSpec("null"))
    try:
        with (
            LocalClient(replace(base, name="A", source=MediaSpec("tone"))) as a,
            LocalClient(replace(base, name="B", source=MediaSpec("silence"))) as b,
        ):
            for c in (a, b):
                c.until(connected, 20, "connected")
            b.until(lambda v: bool(v.speakers), 20, "B hears A")
            b.pump(settle)
            talking = measure({"A": a, "B": b}, seconds)
        with LocalClient(replace(base, name="I", source=MediaSpec("silence"))) as idle:
            idle.until(connected, 20, "connected")
            idle.command(ev.MuteCmd(True), lambda v: v.encode is not None and v.encode.muted)
            idle.pump(settle)
            idle_cost = measure({"idle": idle}, seconds)
    finally:
        stop_relay(relay)
    result = {"seconds": seconds, "talking": talking, "idle": idle_cost}
    path = write_result("client_cost", result, args.out)
    print(f"{'process':18s} {'CPU %':>7s} {'RSS MiB':>8s}")
    for state, rows in (("talking", talking), ("idle", idle_cost)):
        for k, v in rows.items():
            print(f"{state + ' ' + k:18s} {v['cpu_percent']:7.2f} {v['rss_mib']:8.1f}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
