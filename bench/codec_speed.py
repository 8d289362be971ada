"""Opus encode, decode, PLC and FEC time per 20 ms frame: our raw path against opuslib's.

"raw" is pipeline.media.opus (libopus called through the functions opuslib declares, into
preallocated numpy buffers); "opuslib" is the same work through ``opuslib.Encoder`` /
``opuslib.Decoder`` (bytes in, bytes out, copies through Python floats).

    python -m bench.codec_speed [--quick] [--out DIR]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import opuslib
import opuslib.api.ctl
import opuslib.api.encoder

from bench.common import parser, summarize, write_result
from pipeline.media.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.opus import OpusDecoder, OpusEncoder


def speech_like(n_frames: int) -> list[np.ndarray]:
    """Harmonics of a wobbling 120 Hz pitch with a 2 Hz syllable envelope."""
    n = n_frames * FRAME_SAMPLES
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(120 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / SAMPLE_RATE
    y = sum(np.sin(k * phase) / k for k in range(1, 30))
    y = y * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)
    y = (0.4 * y / np.abs(y).max()).astype(np.float32)
    return [y[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(n_frames)]


def timed(fn: Callable[[int], object], n: int) -> dict[str, float]:
    """Per-call µs of fn(i) for i in range(n), after a short warm-up."""
    for i in range(min(20, n)):
        fn(i)
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        out[i] = (clock() - t0) / 1000.0
    return summarize(out)


def _lib_encoder(loss_percent: int) -> Any:
    """opuslib's own encoder with our settings (its inband_fec setter is broken: ctl)."""
    lib = opuslib.Encoder(SAMPLE_RATE, 1, opuslib.APPLICATION_VOIP)
    lib.bitrate = 48000
    lib.complexity = 9
    ctl = opuslib.api.encoder.encoder_ctl
    ctl(lib.encoder_state, opuslib.api.ctl.set_inband_fec, 1)
    ctl(lib.encoder_state, opuslib.api.ctl.set_packet_loss_perc, loss_percent)
    return lib


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__.splitlines()[0] if __doc__ else "codec_speed")
    args = ap.parse_args(argv)
    n = 50 if args.quick else 3000
    frames = speech_like(n)
    raw_frames = [f.tobytes() for f in frames]

    # The loss hint matters: with loss > 0 libopus adds FEC (SILK LBRR) and encodes in
    # SILK/hybrid, several times the work of loss 0 at complexity 9. Both are measured.
    enc0, enc10 = OpusEncoder(loss_percent=0), OpusEncoder(loss_percent=10)
    packets = [enc10.encode(f) for f in frames]
    lib_enc0, lib_enc10 = _lib_encoder(0), _lib_encoder(10)
    dec = OpusDecoder()
    lib_dec = opuslib.Decoder(SAMPLE_RATE, 1)

    results = {
        "encode_loss0": {
            "raw": timed(lambda i: enc0.encode(frames[i]), n),
            "opuslib": timed(lambda i: lib_enc0.encode_float(raw_frames[i], FRAME_SAMPLES), n),
        },
        "encode_loss10": {
            "raw": timed(lambda i: enc10.encode(frames[i]), n),
            "opuslib": timed(lambda i: lib_enc10.encode_float(raw_frames[i], FRAME_SAMPLES), n),
        },
        "decode": {
            "raw": timed(lambda i: dec.decode(packets[i]), n),
            "opuslib": timed(lambda i: lib_dec.decode_float(packets[i], FRAME_SAMPLES), n),
        },
        # PLC after each real frame, so it conceals a live signal rather than silence.
        "plc": {
            "raw": timed(lambda i: (dec.decode(packets[i]), dec.conceal()), n),
            "opuslib": timed(
                lambda i: (
                    lib_dec.decode_float(packets[i], FRAME_SAMPLES),
                    lib_dec.decode_float(b"", FRAME_SAMPLES),
                ),
                n,
            ),
        },
        "fec": {
            "raw": timed(lambda i: dec.recover(packets[i]), n),
            "opuslib": timed(
                lambda i: lib_dec.decode_float(packets[i], FRAME_SAMPLES, decode_fec=True), n
            ),
        },
    }
    # The PLC rows timed a decode plus a conceal: subtract the decode median to report
    # the conceal alone.
    for path in ("raw", "opuslib"):
        base = results["decode"][path]["p50"]
        results["plc"][path]["p50_minus_decode"] = results["plc"][path]["p50"] - base
    path_out = write_result(
        "codec_speed",
        {
            "quick": args.quick,
            "frames": n,
            "bitrate": 48000,
            "complexity": 9,
            "decoded_with_loss_percent": 10,
            "results": results,
        },
        Path(args.out),
    )
    print(f"{'µs per frame':14s} {'raw p50':>8s} {'raw p99':>8s} {'opuslib p50':>12s} {'p99':>8s}")
    for op, r in results.items():
        raw, lib = r["raw"], r["opuslib"]
        if op == "plc":
            note = (
                f"  (conceal alone ~{raw['p50_minus_decode']:.0f} / ~{lib['p50_minus_decode']:.0f})"
            )
        else:
            note = ""
        print(
            f"{op:14s} {raw['p50']:8.1f} {raw['p99']:8.1f} {lib['p50']:12.1f} {lib['p99']:8.1f}"
            + note
        )
    print(f"wrote {path_out}")
    return results


if __name__ == "__main__":
    main()
