"""Speech quality under packet loss, scored with PESQ (ITU-T P.862, wideband).

A talker and a listener, both whole clients, in one channel of a real relay.
The talker's voice goes through the userspace impairment proxy (bench/netem.py)
with random or bursty (Gilbert-Elliott) loss, both ways, so the talker also
measures the loss on what it receives and tunes its FEC to it (the loss hint
starts at the configured rate, as it would after a few seconds of measuring).
The listener records; the recording is aligned with what was sent, resampled
to 16 kHz, and scored against the reference.

Three ways to handle a lost packet, each under every loss pattern:
* ``fec+plc``: rebuild it from the next packet's in-band FEC, else Opus PLC;
* ``plc``: no FEC sent; Opus PLC only;
* ``none``: no FEC, no PLC: the lost 20 ms play as silence.

Then the playout under jitter (normal one-way delay with a standard deviation of 10,
30 or 60 ms, which reorders), periodic 150 ms stalls, and 30 ms jitter with 5 % loss:
the fixed jitter buffer (a 2-packet start, never adapting) against the adaptive one
(``--jitter fixed|adaptive``), both with FEC and PLC, in the same run. Each row also
gives the mouth-to-ear delay, measured per frame on the one machine clock: the
talker's capture instant travels in its media timestamp (its clock offset is 0 here),
and the listener traces when each frame reaches the sink; the 20 ms capture block and
the Opus lookahead are added, as in bench/latency.py.

The reference is bench/data/speech-en-16k.wav (see bench/data/README.md).

    python -m bench.quality [--quick]
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parser, write_result
from bench.netem import Impairment, UdpProxy, gilbert_elliott, per_direction
from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.ipc import events as ev
from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_NS, FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.opus import OpusEncoder
from pipeline.media.sources import MediaSpec, read_wav, write_wav
from relay.launch import start_relay, stop_relay

REFERENCE = Path(__file__).resolve().parent / "data" / "speech-en-16k.wav"
RATE = 16000
PASS_SLACK = 48000 // 2  # samples: how far a pass may sit from the stream's grid


@dataclass(frozen=True)
class Condition:
    name: str
    loss_percent: float
    burst: float = 0.0  # mean burst length in packets; 0 = independent loss
    jitter_sd_ms: float = 0.0
    stall_ms: float = 0.0  # the path stalls this long every STALL_EVERY_MS

    def impairment(self, seed: int) -> Impairment:
        if self.jitter_sd_ms or self.stall_ms:
            return Impairment(
                loss_percent=self.loss_percent,
                jitter_sd_ms=self.jitter_sd_ms,
                stall_ms=self.stall_ms,
                stall_every_ms=STALL_EVERY_MS if self.stall_ms else 0.0,
                seed=seed,
                spare_control=True,
                seq_keyed=True,
            )
        if self.burst:
            burst = gilbert_elliott(self.loss_percent, self.burst)
            return Impairment(burst=burst, seed=seed, spare_control=True, seq_keyed=True)
        # Loss keyed by sequence number, control datagrams spared: every mode loses the same
        # frames of the talker's stream, so the comparison between modes is fair.
        return Impairment(
            loss_percent=self.loss_percent, seed=seed, spare_control=True, seq_keyed=True
        )


CONDITIONS = [
    Condition("0%", 0),
    Condition("5% random", 5),
    Condition("10% random", 10),
    Condition("20% random", 20),
    Condition("5% bursty (mean 3)", 5, burst=3),
]
MODES = {"fec+plc": (True, True), "plc": (False, True), "none": (False, False)}
STALL_EVERY_MS = 3000.0
JITTER_CONDITIONS = [
    Condition("clean", 0),
    Condition("10 ms jitter", 0, jitter_sd_ms=10),
    Condition("30 ms jitter", 0, jitter_sd_ms=30),
    Condition("60 ms jitter", 0, jitter_sd_ms=60),
    Condition("150 ms stall every 3 s", 0, stall_ms=150),
    Condition("30 ms jitter + 5% loss", 5, jitter_sd_ms=30),
]
PLAYOUTS = ("fixed", "adaptive")


def _lowpass(cutoff: float, taps: int = 255) -> np.ndarray:
    """A windowed-sinc low-pass FIR; ``cutoff`` as a fraction of the sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(taps)
    return h / h.sum()


def up3(x: np.ndarray) -> np.ndarray:
    """16 kHz -> 48 kHz: zero-stuff and low-pass at 8 kHz."""
    y = np.zeros(len(x) * 3)
    y[::3] = x
    return (np.convolve(y, _lowpass(1 / 6), mode="same") * 3).astype(np.float32)


def down3(x: np.ndarray) -> np.ndarray:
    """48 kHz -> 16 kHz: low-pass at 7.6 kHz and keep every third sample."""
    return np.convolve(x.astype(np.float64), _lowpass(7600 / 48000), mode="same")[::3]


def score(reference16: np.ndarray, recording48: np.ndarray) -> tuple[float, float, int]:
    """PESQ (wideband MOS-LQO) of the recording against the reference: (mean, correlation, n).

    The talker loops the reference, so the recording holds it several times, one pass
    every ``period`` samples. Every complete pass is scored and the scores averaged: the
    passes are fixed by the stream (not picked by how well they came through), so every
    mode is scored on the same frames. Each pass is aligned on its own, within
    ``PASS_SLACK`` of where the stream's grid puts it: an adaptive jitter buffer changes
    the delay during a call, and a pass cut at a stale lag would lose its ends (PESQ
    itself then follows the delay within the pass, as it is made to).
    """
    from pesq import pesq

    sent48 = up3(reference16)
    period = len(synthetic.frames(sent48)) * FRAME_SAMPLES
    lag, corr = synthetic.align(sent48, recording48, max_lag=max(1, len(recording48) - len(sent48)))
    # The listener records silence (exact zeros) until the talker's first packet, which
    # carries a frame from the middle of the loop: passes start on the loop's grid, after that.
    nonzero = np.flatnonzero(recording48)
    onset = int(nonzero[0]) if len(nonzero) else 0
    starts = [s for s in range(lag % period, len(recording48), period)
              if s >= onset and s + len(sent48) <= len(recording48)]  # fmt: skip
    scores = []
    for nominal in starts or [lag]:
        lo = max(0, nominal - PASS_SLACK)
        window = recording48[lo : nominal + len(sent48) + PASS_SLACK]
        local, _ = synthetic.align(sent48, window, max_lag=max(0, len(window) - len(sent48)))
        start = lo + local
        heard = recording48[start : start + len(sent48)]
        if len(heard) < len(sent48):
            heard = np.concatenate([heard, np.zeros(len(sent48) - len(heard), dtype=np.float32)])
        deg = down3(heard)[: len(reference16)]
        scores.append(float(pesq(RATE, reference16.astype(np.float64), deg, "wb")))
    return float(np.mean(scores)), corr, len(scores)


def run_one(port: int, cond: Condition, mode: str, seconds: float, seed: int,
            workdir: Path, jitter: str = "adaptive") -> dict[str, Any]:  # fmt: skip
    fec, plc = MODES[mode]
    talk, heard = workdir / "talk48.wav", workdir / f"heard-{seed}-{jitter}.wav"
    trace = workdir / f"trace-{seed}-{jitter}"
    trace.mkdir(exist_ok=True)
    if not talk.exists():
        write_wav(talk, up3(read_wav_16k(REFERENCE)))
    up, down = per_direction(cond.impairment(seed), "both")
    base = ClientConfig(host="127.0.0.1", port=port, name="", fec=fec, plc=plc, jitter=jitter)
    listener = replace(base, name=f"ear{seed}", source=MediaSpec("silence"),
                       sink=MediaSpec("wav", str(heard)), trace_dir=str(trace))  # fmt: skip
    with UdpProxy(("127.0.0.1", port), up=up, down=down) as proxy, LocalClient(listener) as ear:
        ear.until(connected, 20, "listener connected")
        talker = replace(
            base,
            name=f"mouth{seed}",
            source=MediaSpec("wav", str(talk)),
            udp_via=proxy.address,
            loss_hint=cond.loss_percent if fec else 0.0,
            clock_offset=0,  # media timestamps on this machine's clock: mouth-to-ear
        )
        with LocalClient(talker) as mouth:
            mouth.until(connected, 20, "talker connected")
            start = time.monotonic()
            ear.pump(seconds)
            talked = time.monotonic() - start
            speakers = ear.view.speakers
            played = ear.view.playback.frames if ear.view.playback else None
    up_counts = proxy.stats().up  # exact now that the proxy is closed
    mos, corr, passes = score(read_wav_16k(REFERENCE), read_wav(heard))
    st = speakers[0] if speakers else ev.SpeakerStats(0)
    m2e = mouth_to_ear(trace)
    return {
        "condition": cond.name,
        "mode": mode,
        "jitter_buffer": jitter,
        "mouth_to_ear_ms": _percentiles(m2e),
        "late": st.late,
        "target_ms": st.target_ms,
        "accelerated_ms": st.accelerated_ms,
        "expanded_ms": st.expanded_ms,
        "pesq_wb": round(mos, 3),
        "correlation": round(corr, 3),
        "passes_scored": passes,
        "measured_loss_percent": st.loss_percent,
        "concealed": st.concealed,
        "recovered": st.recovered,
        "seconds": round(talked, 1),
        "frames_played": played,
        "impaired_loss_percent": round(100 * up_counts.dropped / max(1, up_counts.packets_in), 2),
    }


def _percentiles(ms: np.ndarray) -> dict[str, float] | None:
    if not len(ms):
        return None
    return {k: round(float(np.percentile(ms, q)), 1) for k, q in (("p50", 50), ("p95", 95))}


def mouth_to_ear(trace: Path) -> np.ndarray:
    """Per played frame, ms from the talker's mouth to the listener's sink (one clock).

    The listener's playback trace holds (seq, t_played, flags, media): ``media`` is the
    talker's capture instant in 48 kHz samples (taken when the 20 ms block was complete,
    moved back by any audio queued ahead of it), so the block itself and the encoder's
    lookahead are added.
    """
    path = trace / "playback.npy"
    if not path.exists():
        return np.zeros(0)
    rows = np.load(path)
    rows = rows[rows[:, 3] > 0]
    captured_ns = rows[:, 3].astype(np.float64) * (1e9 / SAMPLE_RATE)
    unseen_ms = FRAME_NS / 1e6 + OpusEncoder().lookahead / SAMPLE_RATE * 1000
    return np.asarray((rows[:, 1] - captured_ns) / 1e6 + unseen_ms)


def read_wav_16k(path: Path) -> np.ndarray:
    """The reference at its own 16 kHz rate (read_wav would resample it to 48 kHz)."""
    import wave

    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == RATE and w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = parser(__doc__ or "")
    ap.add_argument(
        "--seconds", type=float, default=0.0, help="recording per run (default: 2 passes)"
    )
    ap.add_argument(
        "--only", choices=("loss", "jitter"), help="run only the loss or the jitter scenarios"
    )
    args = ap.parse_args(argv)
    ref_seconds = len(read_wav_16k(REFERENCE)) / RATE
    seconds = args.seconds or 2 * ref_seconds + 1.0  # a whole pass fits whatever the start
    conditions = CONDITIONS[1:2] if args.quick else CONDITIONS
    modes = ["fec+plc"] if args.quick else list(MODES)
    jitter_conditions = JITTER_CONDITIONS[2:3] if args.quick else JITTER_CONDITIONS
    if args.only == "jitter":
        conditions = []
    if args.only == "loss":
        jitter_conditions = []
    relay, port = start_relay()
    rows: list[dict[str, Any]] = []
    jitter_rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="vc-quality-") as tmp:
            for i, cond in enumerate(conditions):
                for mode in modes:
                    row = run_one(port, cond, mode, seconds, seed=100 + i, workdir=Path(tmp))
                    rows.append(row)
                    print(f"  {cond.name:20s} {mode:8s} PESQ {row['pesq_wb']:.2f}  "
                          f"measured loss {row['measured_loss_percent']}%", flush=True)  # fmt: skip
            for i, cond in enumerate(jitter_conditions):
                for jitter in PLAYOUTS:
                    row = run_one(port, cond, "fec+plc", seconds, seed=200 + i,
                                  workdir=Path(tmp), jitter=jitter)  # fmt: skip
                    jitter_rows.append(row)
                    m2e = row["mouth_to_ear_ms"] or {}
                    print(f"  {cond.name:24s} {jitter:8s} PESQ {row['pesq_wb']:.2f}  "
                          f"mouth-to-ear p50 {m2e.get('p50')} ms  late {row['late']}",
                          flush=True)  # fmt: skip
    finally:
        stop_relay(relay)
    result = {
        "reference": REFERENCE.name,
        "seconds_per_run": seconds,
        "runs": rows,
        "jitter_runs": jitter_rows,
    }
    path = write_result("quality", result, args.out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
