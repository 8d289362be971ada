"""Voice over UDP against voice through the TCP tunnel, in the same run, on loopback.

1. **Mouth to ear**: the echo call of bench/latency.py (speech in, a null sink clocked
   like a sound card, every hop traced per frame), once with ``--voice-path udp`` and
   once with ``--voice-path tcp`` (voice inside the TLS control connection: network
   stage -> local socket -> control process -> TLS -> relay -> and back). The
   difference in ``network_round_trip`` and in the total is what the tunnel adds when
   nothing is lost; a lost TCP segment would add a retransmission's worth on top,
   for every frame behind it (head-of-line blocking), which loopback cannot show.
2. **The local hop** the tunnel adds twice per frame, network stage <-> control
   process: one 180-byte voice message one way between two processes, over the Unix
   datagram socket the client uses (pipeline/ipc/tunnel_socket.py) and over the
   client's ZeroMQ bus (through its broker, msgpack-encoded), at the voice rate.

    python -m bench.tunnel [--quick] [--seconds S] [--out DIR]
"""

from __future__ import annotations

import multiprocessing
import os
import select
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import parser, summarize, write_result
from bench.latency import HOPS, join, run_call
from pipeline.ipc import events as ev
from pipeline.ipc import tunnel_socket as ts
from pipeline.ipc.bus import Broker, BusAddress, BusClient
from relay.launch import start_relay, stop_relay

CTX = multiprocessing.get_context("spawn")
PATHS = ("udp", "tcp")
MESSAGE = 180  # bytes: a sealed 48 kb/s frame
WARMUP = 20


def mouth_to_ear(seconds: float) -> dict[str, Any]:
    """The echo call over each voice path, one after the other against one relay."""
    proc, port = start_relay("--echo")
    out: dict[str, Any] = {}
    try:
        for path in PATHS:
            with tempfile.TemporaryDirectory(prefix="vc-trace-") as tmp:
                stats = run_call(port, seconds, Path(tmp), 2, voice_path=path)
                hops = join(Path(tmp))
            config: dict[str, Any] = {k: summarize(v) for k, v in hops.items()}
            net = stats.get("network", {})
            config["voice_path_seen"] = net.get("voice_path")
            config["tunnel_sent"] = net.get("tunnel_sent")
            config["concealed"] = sum(
                s.get("concealed", 0) for s in stats.get("decode", {}).get("speakers", [])
            )
            out[path] = config
    finally:
        stop_relay(proc)
    return out


# --- the local hop ----------------------------------------------------------------------


def _socket_receiver(folder: str, count: int, conn: Connection) -> None:
    sock = ts.TunnelSocket(folder, ts.CONTROL, ts.NETWORK)
    sock.tick(time.monotonic_ns())
    conn.send("ready")
    buf = bytearray(ts.MAX_MESSAGE + 1)
    delays: list[int] = []

    while len(delays) < count:
        select.select([sock.fileno()], [], [], 5.0)
        now = time.monotonic_ns()
        for _kind, body in sock.receive(buf):
            delays.append(now - int.from_bytes(body[:8], "big"))
    sock.close()
    conn.send(delays)


def _bus_receiver(address: BusAddress, count: int, conn: Connection) -> None:
    bus = BusClient(address, topics=(ev.Notice.TOPIC,))
    delays: list[int] = []
    conn.send("ready")
    end = time.monotonic() + 60
    while len(delays) < count and time.monotonic() < end:
        for event in bus.poll(1.0):
            if isinstance(event, ev.Notice) and event.text.startswith("t"):
                delays.append(time.monotonic_ns() - int(event.text[1:20]))
    bus.close()
    conn.send(delays)


def local_hop(count: int, spacing: float) -> dict[str, Any]:
    """One-way delay (us) of ``count`` voice-sized messages ``spacing`` s apart."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vc-hop-") as folder:
        sock = ts.TunnelSocket(folder, ts.NETWORK, ts.CONTROL)
        mine, theirs = CTX.Pipe()
        p = CTX.Process(target=_socket_receiver, args=(folder, count, theirs))
        p.start()
        assert mine.recv() == "ready"
        pad = os.urandom(MESSAGE - 8)
        for _ in range(count):
            sock.send(ts.VOICE, time.monotonic_ns().to_bytes(8, "big") + pad, time.monotonic_ns())
            time.sleep(spacing)
        delays = mine.recv()
        p.join(10)
        sock.close()
    out["unix_socket"] = summarize([d / 1000 for d in delays[WARMUP:]])
    with Broker() as broker:
        bus = BusClient(broker.address)
        mine, theirs = CTX.Pipe()
        p = CTX.Process(target=_bus_receiver, args=(broker.address, count, theirs))
        p.start()
        assert mine.recv() == "ready"
        time.sleep(0.5)  # the subscription reaches the broker (ZeroMQ's slow joiner)
        pad_text = "x" * (MESSAGE * 2 - 20)  # a voice frame as hex text: what the bus would carry
        for _ in range(count):
            bus.publish(ev.Notice(f"t{time.monotonic_ns():019d}{pad_text}"))
            time.sleep(spacing)
        delays = mine.recv()
        p.join(10)
        bus.close()
    out["bus"] = summarize([d / 1000 for d in delays[WARMUP:]])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    ap.add_argument("--seconds", type=float, default=30.0, help="per voice path")
    args = ap.parse_args(argv)
    seconds = (
        15.0 if args.quick else args.seconds
    )  # a client takes seconds to start on a busy machine
    load = os.getloadavg()[0]
    configs = mouth_to_ear(seconds)
    hop = local_hop(200 if args.quick else 1500, 0.02)
    udp, tcp = configs["udp"], configs["tcp"]
    added = {
        k: tcp[k]["p50"] - udp[k]["p50"]
        for k in ("network_round_trip", "total")
        if udp.get(k, {}).get("n") and tcp.get(k, {}).get("n")
    }
    result = {
        "seconds": seconds,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "configs": configs,
        "tunnel_adds_p50_ms": added,
        "local_hop_us": hop,
    }
    path = write_result("tunnel", result, args.out)
    print_table(result)
    print(f"wrote {path}")
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"load {result['load_before']:.1f} -> {result['load_after']:.1f}")
    for name, hops in result["configs"].items():
        print(f"\nvoice over {name} (ms)  p50     p99     max      n")
        for hop in [*HOPS, "total"]:
            s = hops.get(hop, {})
            if s.get("n"):
                print(f"  {hop:20s} {s['p50']:7.2f} {s['p99']:7.2f} {s['max']:7.2f} {s['n']:6d}")
    print(f"\nthe tunnel adds (p50): {result['tunnel_adds_p50_ms']}")
    for name, s in result["local_hop_us"].items():
        print(f"local hop {name}: p50 {s['p50']:.0f} us, p99 {s['p99']:.0f} us")


if __name__ == "__main__":
    main()
