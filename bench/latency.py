"""Per-stage latency of a real echo call through the relay on loopback.

One client (six processes) speaks a speech-like signal to a relay in echo mode
and plays what comes back to a WAV-less null sink, clocked like a sound card.
Every stage records per-frame timestamps (``--trace``); they are joined here
by sequence number, so each hop is measured per frame, not estimated:

    capture->encode hop, encode, encode->network hop, network send (packing + sendto),
    send->relay->receive,
    receive->decode hop, jitter wait, decode, decode->playback (queue), total

The traced total runs from the capture timestamp (taken when a 20 ms block is
complete) to the moment the sink plays the frame; the mouth-to-ear estimate adds
what timestamps cannot see: the 20 ms capture block and the Opus algorithmic
delay (lookahead). That estimate is held against its floor: one 20 ms frame, the
Opus lookahead, the 40 ms jitter watermark and one 20 ms sink block. The same run
compares playback queues of 1 and 2 frames (the decode stage keeps that many
frames ahead of the sink), with the underflows each one cost.

The voice is sealed (protocol 2): sealing is inside ``network_send``, opening
inside ``receive_to_decode``. Their per-frame cost on their own (a 120-byte Opus
frame, 48 kb/s) is measured in-process too, as ``crypto_per_frame_us``: the
sender's seal, the relay's check (tag and replay window, once per datagram
whatever the fan-out), a listener's open.

    python -m bench.latency [--quick] [--seconds S]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parser, summarize, write_result
from pipeline.core.jitter import JitterBuffer
from pipeline.core.pacer import LEAD_MIN_NS
from pipeline.core.speakers import CONCEALED, VOICE
from pipeline.demo import ROOT
from pipeline.media.audio_format import BLOCKS_PER_FRAME, FRAME_NS, SAMPLE_RATE
from pipeline.media.opus import OpusEncoder
from relay.launch import start_relay, stop_relay

HOPS = [
    "capture_to_encode",
    "encode",
    "encode_to_network",
    "network_send",
    "network_round_trip",
    "receive_to_decode",
    "jitter_wait",
    "decode",
    "decode_to_playback",
]


def run_call(
    port: int,
    seconds: float,
    trace: Path,
    playback_frames: int,
    jitter: str = "adaptive",
    voice_path: str = "auto",
    talk: str = "continuous",
) -> dict[str, Any]:
    """One echo call with per-frame tracing, as a user would run the headless client,
    by default talking without a pause (``--talk continuous``): the transport's latency.
    Voice activation, the CLI's default, starts each talk spurt with its 40 ms pre-roll
    sent at once and a fresh playout start, which the pauses then take back: that is the
    talk mode's cost, not the pipeline's, and it is a configuration of its own here.

    ``voice_path``: the client's ``--voice-path`` (tcp: the tunnel through the control
    connection). Returns the client's final stats (its --stats-json).
    """
    cmd = [
        sys.executable, "-m", "pipeline", "--server", f"127.0.0.1:{port}", "--name",
        f"bench{playback_frames}", "--input", "speech", "--output", "null",
        "--duration", str(seconds), "--trace", str(trace), "--quiet",
        "--playback-frames", str(playback_frames), "--stats-json", str(trace / "stats.json"),
        "--jitter", jitter, "--voice-path", voice_path, "--talk", talk,
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=seconds + 60)
    stats: dict[str, Any] = json.loads((trace / "stats.json").read_text())["stats"]
    return stats


def mid_call(trace: Path) -> dict[str, int]:
    """Frames mixed from the first block with voice to the last (``mix.npy``: a row a
    5 ms block), and how many were concealed (a concealed frame flags the block it
    starts in): a clean call must conceal none. The stats' own count also holds the
    fade after the echo stops, when the client ends its call."""
    rows = np.load(trace / "mix.npy")
    voiced = np.flatnonzero(rows[:, 1] & VOICE) if len(rows) else np.array([], int)
    if not len(voiced):
        return {"frames": 0, "concealed": 0}
    body = rows[voiced[0] : voiced[-1] + 1]
    frames = len(body) // BLOCKS_PER_FRAME
    return {"frames": frames, "concealed": int(np.count_nonzero(body[:, 1] & CONCEALED))}


def _index(rows: np.ndarray) -> dict[int, np.ndarray]:
    """Rows keyed by sequence number (column 0); the first row wins on duplicates."""
    out: dict[int, np.ndarray] = {}
    for row in rows:
        out.setdefault(int(row[0]), row)
    return out


def join(trace: Path) -> dict[str, np.ndarray]:
    """Per-frame hop durations (ms) for every frame seen by every stage."""
    cap = _index(np.load(trace / "capture.npy"))  # capture seq, t_capture, t_written
    # capture seq, t_in, t_out, stream seq: from here on frames go by their stream seq.
    enc = _index(np.load(trace / "encode.npy")[:, [3, 0, 1, 2]])  # stream seq, capture seq, ...
    snd = _index(np.load(trace / "send.npy"))  # seq, t_in, t_sent
    rcv = _index(np.load(trace / "recv.npy"))  # seq, t_received, speaker
    psh = _index(np.load(trace / "push.npy"))  # seq, t_pushed
    dec = _index(np.load(trace / "decode.npy"))  # seq, t_render_start, t_render_end, ahead
    ply = _index(np.load(trace / "playback.npy"))  # seq, t_played, flags
    hops: dict[str, list[float]] = {h: [] for h in [*HOPS, "total"]}
    for seq, p in ply.items():
        if not all(seq in d for d in (enc, snd, rcv, psh, dec)) or enc[seq][1] not in cap:
            continue  # a frame lost or cut off at the start or end of the run
        row = enc[seq]
        e = np.array([row[1], row[2], row[3]])  # capture seq, t_in, t_out
        c = cap[int(row[1])]
        s, r, u, d = (x[seq] for x in (snd, rcv, psh, dec))
        # Consecutive differences of one frame's timestamps: the hops add up to the total.
        t = [
            e[1] - c[1], e[2] - e[1], s[1] - e[2], s[2] - s[1], r[1] - s[2],
            u[1] - r[1], d[1] - u[1], d[2] - d[1], p[1] - d[2] + d[3],
        ]  # fmt: skip
        for name, ns in zip(HOPS, t, strict=True):
            hops[name].append(ns / 1e6)
        # d[3]: the frame's audio starts that far into the mixed frame (after audio that
        # time-stretching left queued), so it reaches the ear that much later.
        hops["total"].append((p[1] - c[1] + d[3]) / 1e6)
    return {k: np.asarray(v) for k, v in hops.items()}


def crypto_per_frame_us(rounds: int = 20_000) -> dict[str, float]:
    """Median microseconds per frame of seal, the relay's check and open (in-process)."""
    import time

    from relay.protocol.sealed_datagram import TAG_SIZE
    from relay.protocol.voice_crypto import Opener, Sealer
    from relay.router import RouteTable
    from relay.sealed_router import SealedRouter

    key, media, opus = bytes(32), bytes(16), bytes(120)
    sealer = Sealer(1, key, 0)
    sealer.set_media_key(1, media)
    router = SealedRouter({1: media}, echo=True)
    router.update_peers([(1, 9, key, 1)], [])
    router.table = RouteTable.build([(9, 1, "c", ("127.0.0.1", 1))])
    opener = Opener()
    opener.add_media_key(1, media)
    datagrams = [sealer.voice(i, i, opus) for i in range(rounds)]
    bufs = [bytearray(d) for d in datagrams]
    down = [d[:-TAG_SIZE] for d in datagrams]
    out: dict[str, float] = {}
    for name, work in (
        ("seal", lambda i: sealer.voice(i, i, opus)),
        ("relay_check", lambda i: router.route(bufs[i], len(bufs[i]), ("127.0.0.1", 1))),
        ("open", lambda i: opener.open(down[i])),
    ):
        times = []
        for i in range(rounds):
            t = time.perf_counter_ns()
            work(i)
            times.append(time.perf_counter_ns() - t)
        out[name] = float(np.median(times)) / 1000
    return out


# The configurations compared in one run: (jitter buffer, frames queued for the sink).
# The configurations compared in one run: (jitter buffer, frames queued for the sink;
# 0: each frame just in time, the default).
# The last: the client's defaults in full, voice activation included (its pre-roll and
# the playout's start at each talk spurt).
CONFIGS = (
    ("fixed", 2, "continuous"),
    ("adaptive", 2, "continuous"),
    ("adaptive", 1, "continuous"),
    ("adaptive", 0, "continuous"),
    ("adaptive", 0, "vad"),
)


def config_name(jitter: str, frames: int, talk: str = "continuous") -> str:
    name = f"{jitter}, just in time" if frames == 0 else f"{jitter}, playback_frames={frames}"
    return name if talk == "continuous" else f"{name}, voice activation"


def floor_ms(jitter: str = "adaptive", frames: int = 2) -> dict[str, float]:
    """What a frame cannot avoid: its own 20 ms of capture, the Opus lookahead, the jitter
    buffer's least hold (the fixed buffer's 2-packet start, or the adaptive buffer's
    scheduling margin: the packet must be in hand when the sink asks, and this 2-core
    machine's wake-ups vary by a few ms), and the wait for the sink: a whole 20 ms block
    with a queue, the pacer's least lead (its scheduling margin) just in time."""
    lookahead = OpusEncoder().lookahead / SAMPLE_RATE * 1000
    hold = 2 * FRAME_NS / 1e6 if jitter == "fixed" else JitterBuffer().margin_ns / 1e6
    parts = {
        "frame": FRAME_NS / 1e6,
        "opus_lookahead": lookahead,
        "jitter_hold": hold,
        "sink_wait": (LEAD_MIN_NS if frames == 0 else FRAME_NS) / 1e6,
    }
    parts["total"] = sum(parts.values())
    return parts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    ap.add_argument("--seconds", type=float, default=65.0, help="per configuration")
    args = ap.parse_args(argv)
    seconds = 8.0 if args.quick else args.seconds
    proc, port = start_relay("--echo")
    configs: dict[str, Any] = {}
    raw: dict[str, np.ndarray] = {}
    try:
        for jitter, frames, talk in CONFIGS:
            with tempfile.TemporaryDirectory(prefix="vc-trace-") as tmp:
                stats = run_call(port, seconds, Path(tmp), frames, jitter, talk=talk)
                hops = join(Path(tmp))
                body = mid_call(Path(tmp))
            name = config_name(jitter, frames, talk)
            tag = f"{jitter}{frames}" + ("" if talk == "continuous" else talk)
            raw.update({f"{tag}/{k}": v for k, v in hops.items()})
            config: dict[str, Any] = {k: summarize(v) for k, v in hops.items()}
            config["playback_underflows"] = stats.get("playback", {}).get("underflows")
            config["concealed"] = sum(
                s.get("concealed", 0) for s in stats.get("decode", {}).get("speakers", [])
            )
            speakers = stats.get("decode", {}).get("speakers", [])
            for key in ("target_ms", "delay_ms", "accelerated_ms", "expanded_ms"):
                config[key] = max((s.get(key, 0.0) for s in speakers), default=0.0)
            config["mid_call"] = body
            config["lead_ms"] = stats.get("decode", {}).get("lead_ms", 0.0)
            config["floor_ms"] = floor_ms(jitter, frames)
            configs[name] = config
    finally:
        stop_relay(proc)
    result: dict[str, Any] = {
        "seconds": seconds,
        "configs": configs,
        "crypto_per_frame_us": crypto_per_frame_us(2_000 if args.quick else 20_000),
    }
    for hops in configs.values():
        total, floor = hops["total"], hops["floor_ms"]
        unseen = floor["frame"] + floor["opus_lookahead"]
        if total.get("n"):
            hops["mouth_to_ear_estimate_ms"] = {
                k: total[k] + unseen for k in ("p50", "p99", "p99.9", "max")
            }
            hops["overhead_above_floor_ms"] = total["p50"] + unseen - floor["total"]
    path = write_result("latency", result, args.out)
    np.savez_compressed(args.out / "latency_frames.npz", **raw)  # type: ignore[arg-type]
    print_table(result)
    print(f"wrote {path}")
    return result


def print_table(result: dict[str, Any]) -> None:
    crypto = result.get("crypto_per_frame_us")
    if crypto:
        print("sealed voice per frame (us, median): " + ", ".join(
            f"{k} {v:.1f}" for k, v in crypto.items()))  # fmt: skip
    for name, hops in result["configs"].items():
        print(f"\n{name} (ms)      p50     p99   p99.9     max      n")
        for hop in [*HOPS, "total"]:
            s = hops.get(hop, {})
            if s.get("n"):
                print(f"  {hop:20s} {s['p50']:7.2f} {s['p99']:7.2f} {s['p99.9']:7.2f}"
                      f" {s['max']:7.2f} {s['n']:6d}")  # fmt: skip
        if "overhead_above_floor_ms" in hops:
            est = hops["mouth_to_ear_estimate_ms"]
            print(
                f"  mouth-to-ear estimate p50 {est['p50']:.1f} ms, p99 {est['p99']:.1f} ms; "
                f"floor {hops['floor_ms']['total']:.1f} ms; overhead "
                f"{hops['overhead_above_floor_ms']:+.1f} ms (p50); "
                f"underflows {hops['playback_underflows']}, concealed {hops['concealed']} "
                f"({hops['mid_call']['concealed']} of {hops['mid_call']['frames']} mid-call)"
                + (f", lead {hops['lead_ms']:.1f} ms" if hops.get("lead_ms") else "")
            )


if __name__ == "__main__":
    main()
