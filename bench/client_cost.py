"""What a client costs: CPU % and RSS of each of its processes, talking and idle.

Two whole clients in one channel of a real relay:
* talking: A speaks a tone, B listens (and sends its own silence, as a client
  without voice activation does); both sides are measured;
* idle: A muted and alone in its channel, so nothing is encoded, sent or
  received; only the capture and playback clocks tick. An idle process must sit
  near 0 % (nothing spins).
* vad idle against continuous, at the same time, each alone in its channel, both
  hearing the same quiet room (-60 dBFS noise) through noise suppression and gain
  control: the one in voice activation sends nothing, the continuous one 50
  packets a second; what voice activation saves and what it costs.
* per frame: what the capture path adds to each 20 ms frame in the encode stage,
  the noise suppressor and gain control and the voice activity detector, timed in
  this process on speech and on room noise.

CPU % is (utime + stime) over wall time from /proc/<pid>/stat, over a window of
steady state; RSS is VmRSS from /proc/<pid>/status at the end of the window.

    python -m bench.client_cost [--quick] [--seconds S]
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parser, summarize, write_result
from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.core.talk import TalkGate
from pipeline.ipc import events as ev
from pipeline.media import synthetic
from pipeline.media.audio_format import SAMPLE_RATE
from pipeline.media.input_processing import InputProcessor
from pipeline.media.sources import MediaSpec, write_wav
from pipeline.media.vad import WebRtcVad
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


def room_noise(seconds: float, dbfs: float = -60.0) -> np.ndarray:
    x = np.random.default_rng(4).standard_normal(int(seconds * SAMPLE_RATE))
    x = np.convolve(x, np.ones(8) / 8, mode="same")
    return (x / np.sqrt(np.mean(x * x)) * 10 ** (dbfs / 20)).astype(np.float32)


def per_frame_costs(seconds: float) -> dict[str, Any]:
    """µs per 20 ms frame of the capture path's additions, on speech and on room noise."""
    signals = {
        "speech": synthetic.speech_like(seconds, seed=2) + room_noise(seconds),
        "room": room_noise(seconds),
    }
    out: dict[str, Any] = {}
    for name, x in signals.items():
        frames = synthetic.frames(x)
        proc, vad = InputProcessor(), WebRtcVad()
        gate: TalkGate[int] = TalkGate(WebRtcVad())
        t_proc, t_vad, t_gate = [], [], []
        for i, f in enumerate(frames):
            t0 = time.perf_counter_ns()
            g = proc.process(f)
            t1 = time.perf_counter_ns()
            vad(g)
            t2 = time.perf_counter_ns()
            gate.push(g, i)  # its own detector inside, and the hold and pre-roll
            t3 = time.perf_counter_ns()
            t_proc.append((t1 - t0) / 1e3)
            t_vad.append((t2 - t1) / 1e3)
            t_gate.append((t3 - t2) / 1e3)
        out[name] = {
            "noise_suppression_and_agc_us": summarize(t_proc),
            "vad_us": summarize(t_vad),
            "talk_gate_with_vad_us": summarize(t_gate),
        }
    return out


def total(rows: dict[str, dict[str, float]], who: str) -> float:
    return round(sum(v["cpu_percent"] for k, v in rows.items() if k.startswith(who + ".")), 2)


def vad_against_continuous(port: int, seconds: float, settle: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        room = Path(tmp) / "room.wav"
        write_wav(room, room_noise(10.0))
        base = ClientConfig(
            host="127.0.0.1",
            port=port,
            name="",
            source=MediaSpec("wav", str(room)),
            sink=MediaSpec("null"),
            input_processing=True,
        )
        with (
            LocalClient(replace(base, name="V", talk="vad", channel="Lobby")) as v,
            LocalClient(replace(base, name="C", talk="continuous", channel="Other")) as c,
        ):
            for x in (v, c):
                x.until(connected, 60, "connected")
                x.until(lambda view: view.roster.channel in ("Lobby", "Other"), 10, "joined")
            c.pump(settle)
            sent0 = {
                k: x.view.network.sent if x.view.network else 0 for k, x in (("V", v), ("C", c))
            }
            rows = measure({"V": v, "C": c}, seconds)
            sent = {
                k: (x.view.network.sent if x.view.network else 0) - sent0[k]
                for k, x in (("V", v), ("C", c))
            }
    return {
        "processes": rows,
        "vad_total_cpu_percent": total(rows, "V"),
        "continuous_total_cpu_percent": total(rows, "C"),
        "vad_datagrams_per_s": round(sent["V"] / seconds, 2),
        "continuous_datagrams_per_s": round(sent["C"] / seconds, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per state")
    args = ap.parse_args(argv)
    seconds = 2.0 if args.quick else args.seconds
    settle = 1.0 if args.quick else 3.0
    relay, port = start_relay("--channel", "Lobby", "--channel", "Other")
    base = ClientConfig(host="127.0.0.1", port=port, name="", sink=MediaSpec("null"))
    try:
        with (
            LocalClient(replace(base, name="A", source=MediaSpec("tone"))) as a,
            LocalClient(replace(base, name="B", source=MediaSpec("silence"))) as b,
        ):
            for c in (a, b):
                c.until(connected, 60, "connected")
            b.until(lambda v: bool(v.speakers), 60, "B hears A")
            b.pump(settle)
            talking = measure({"A": a, "B": b}, seconds)
        with LocalClient(replace(base, name="I", source=MediaSpec("silence"))) as idle:
            idle.until(connected, 60, "connected")
            idle.command(ev.MuteCmd(True), lambda v: v.encode is not None and v.encode.muted)
            idle.pump(settle)
            idle_cost = measure({"idle": idle}, seconds)
        talk_modes = vad_against_continuous(port, seconds, settle)
    finally:
        stop_relay(relay)
    frames = per_frame_costs(3.0 if args.quick else 20.0)
    result = {
        "seconds": seconds,
        "load_average": os.getloadavg(),
        "talking": talking,
        "idle": idle_cost,
        "vad_against_continuous": talk_modes,
        "per_frame": frames,
    }
    path = write_result("client_cost", result, args.out)
    print(f"{'process':18s} {'CPU %':>7s} {'RSS MiB':>8s}")
    for state, rows in (("talking", talking), ("idle", idle_cost)):
        for k, v in rows.items():
            print(f"{state + ' ' + k:18s} {v['cpu_percent']:7.2f} {v['rss_mib']:8.1f}")
    print(
        f"quiet room, whole client: vad {talk_modes['vad_total_cpu_percent']:.2f} % CPU "
        f"({talk_modes['vad_datagrams_per_s']} datagrams/s), continuous "
        f"{talk_modes['continuous_total_cpu_percent']:.2f} % "
        f"({talk_modes['continuous_datagrams_per_s']} datagrams/s)"
    )
    for name, row in frames.items():
        print(
            f"per frame on {name}: noise suppression + AGC "
            f"{row['noise_suppression_and_agc_us']['p50']:.0f} us, "
            f"VAD {row['vad_us']['p50']:.0f} us, "
            f"talk gate {row['talk_gate_with_vad_us']['p50']:.0f} us (p50)"
        )
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
