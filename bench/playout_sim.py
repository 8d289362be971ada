"""The playout on its own: real speech, real Opus, the real jitter buffer, a simulated clock.

    python -m bench.playout_sim [--quick] [--seconds S] [--out DIR]

`bench/quality.py` scores whole calls through real processes, so its figures carry
this machine's scheduling too (a loaded 2-core box adds underflows and delay of its
own). This benchmark takes that away to show what the playout itself does with a
path: the talker's frames are encoded as the encode stage does, the delays and
losses of `bench/netem.py`'s impairment model (the same `Impairer`, so the same
paths) give each packet an arrival time, and `pipeline.core.speakers.Speakers` is
fed at those times and asked for a frame just before a simulated sink, ticking every
20 ms on its own clock, wants it (the decode stage's pacer, at its least lead). What
the sink plays is scored with PESQ against the reference, as quality.py scores a
call, and the delay from each frame's capture to the instant the sink starts playing
it is the playout's share of mouth-to-ear (no device, no scheduling). Fixed against
adaptive playout, every path in the same run on the same packets.
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import parser, summarize, write_result
from bench.netem import Impairer, Impairment
from bench.quality import JITTER_CONDITIONS, REFERENCE, Condition, read_wav_16k, score, up3
from pipeline.core.pacer import Pacer
from pipeline.core.speakers import Speakers
from pipeline.media import synthetic
from pipeline.media.audio_format import BLOCK_SAMPLES, FRAME_NS, FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.opus import OpusEncoder
from relay.protocol.voice_body import MAX_PRIMARY, plain

HEADER = struct.Struct(">IQQI")  # a protocol-1 header, for the seq-keyed loss of Impairer
SPEAKER = 7
START_NS = 10**12  # an arbitrary origin for the simulated clocks


@dataclass
class Played:
    audio: np.ndarray  # what the sink played, 48 kHz
    delay_ms: np.ndarray  # per frame with voice: capture to the start of its playing
    stats: dict[str, Any]


def encode(signal48: np.ndarray, loss_hint: float) -> list[bytes]:
    enc = OpusEncoder(48000, fec=True, loss_percent=int(loss_hint), max_bytes=MAX_PRIMARY)
    return [plain(enc.encode(f)) for f in synthetic.frames(signal48)]


def arrivals(bodies: list[bytes], impairment: Impairment) -> list[tuple[int, int]]:
    """``(arrival ns, packet index)``, in arrival order, of the packets the path let through."""
    path = Impairer(impairment, "down")
    out: list[tuple[int, int]] = []
    for k, body in enumerate(bodies):
        sent = START_NS + k * FRAME_NS
        for release, _ in path.feed(HEADER.pack(0, k, 0, 0) + body, sent):
            out.append((release, k))
    out.sort()
    return out


def play(
    bodies: list[bytes], arrived: list[tuple[int, int]], adaptive: bool, block: int = BLOCK_SAMPLES
) -> Played:
    """Feed the packets in at their arrival times and let the sink take a block of
    ``block`` samples (the decode stage's: 5 ms) at a time, each made just in time as the
    decode stage makes it (:class:`Pacer`; with no scheduling here its lead is its least,
    after the first block)."""
    sp = Speakers(adaptive=adaptive, fec=True, plc=True, block=block)
    step = sp.block_ns
    pacer = Pacer(step)
    # The sink starts with the first arrival, as the playback stage's device does (its
    # phase against the sender's frames is arbitrary: half a frame here).
    first = arrived[0][0] if arrived else START_NS
    tick = first + FRAME_NS // 2
    end = START_NS + (len(bodies) + 50) * FRAME_NS
    heard: list[np.ndarray] = []
    delays: list[float] = []
    pending = list(arrived)
    heapq.heapify(pending)
    while tick < end:
        made = tick - pacer.lead_ns
        while pending and pending[0][0] <= made:
            at, k = heapq.heappop(pending)
            sp.receive(SPEAKER, k, k * FRAME_SAMPLES, bodies[k], at)
        pcm, info = sp.render(made)
        pacer.rendered(made, made)
        heard.append(pcm.copy())
        if info.flags & 1:  # capture instant: frame k starts at START_NS + k * FRAME_NS
            captured = START_NS + info.media * 1_000_000_000 // SAMPLE_RATE
            delays.append((tick - captured) / 1e6)
        tick += step
    stats = sp.stats()
    s = stats[0] if stats else None
    return Played(
        np.concatenate(heard) if heard else np.zeros(0, np.float32),
        np.asarray(delays),
        {
            "late": s.late if s else 0,
            "concealed": s.concealed if s else 0,
            "recovered": s.recovered if s else 0,
            "lost": s.lost if s else 0,
            "discarded": s.discarded if s else 0,
            "waited": s.waited if s else 0,
            "target_ms": s.target_ms if s else 0.0,
            "accelerated_ms": round(s.accelerated_ms, 1) if s else 0.0,
            "expanded_ms": round(s.expanded_ms, 1) if s else 0.0,
        },
    )


# Compared in one run: the fixed watermark, adaptive playout as the decode stage runs it
# (5 ms blocks), and adaptive playout a frame a tick (what it was before the blocks).
PLAYOUTS = (("fixed", False, BLOCK_SAMPLES), ("adaptive", True, BLOCK_SAMPLES),
            ("adaptive, 20 ms ticks", True, FRAME_SAMPLES))  # fmt: skip


def run(
    cond: Condition, seed: int, bodies: list[bytes], adaptive: bool, block: int = BLOCK_SAMPLES
) -> dict[str, Any]:
    ref16 = read_wav_16k(REFERENCE)
    played = play(bodies, arrivals(bodies, cond.impairment(seed)), adaptive, block)
    mos, corr, scored = score(ref16, played.audio)
    name = next(n for n, a, b in PLAYOUTS if (a, b) == (adaptive, block))
    return {
        "condition": cond.name,
        "playout": name,
        "seed": seed,
        "pesq_wb": round(mos, 3),
        "correlation": round(corr, 3),
        "passes_scored": scored,
        "playout_delay_ms": summarize(played.delay_ms),
        **played.stats,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    ap.add_argument("--passes", type=int, default=4, help="passes of the reference per run")
    ap.add_argument("--seeds", type=int, default=2, help="paths (seeds) per condition")
    args = ap.parse_args(argv)
    passes = 2 if args.quick else args.passes
    seeds = [300 + i for i in range(1 if args.quick else args.seeds)]
    conditions = JITTER_CONDITIONS[:3] if args.quick else JITTER_CONDITIONS
    ref48 = up3(read_wav_16k(REFERENCE))
    period = len(synthetic.frames(ref48)) * FRAME_SAMPLES
    looped = np.concatenate([np.pad(ref48, (0, period - len(ref48)))] * passes)
    rows = []
    for cond in conditions:
        bodies = encode(looped, cond.loss_percent)
        for seed in seeds:
            for _, adaptive, block in PLAYOUTS:
                row = run(cond, seed, bodies, adaptive, block)
                rows.append(row)
                d = row["playout_delay_ms"]
                print(f"  {cond.name:24s} {row['playout']:21s} seed {seed}: PESQ "
                      f"{row['pesq_wb']:.2f}  delay p50 {d.get('p50', float('nan')):6.1f} "
                      f"p99 {d.get('p99', np.nan):6.1f} ms  late {row['late']} "
                      f"concealed {row['concealed']} waited {row['waited']} "
                      f"acc/exp {row['accelerated_ms']}/{row['expanded_ms']} ms",
                      flush=True)  # fmt: skip
    result = {"reference": REFERENCE.name, "passes": passes, "runs": rows}
    print(f"wrote {write_result('playout_sim', result, args.out)}")
    return result


if __name__ == "__main__":
    main()
