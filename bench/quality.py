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

Loss feedback (issue 19, SPEC.md "Loss feedback"): 5 % loss on one listener's
downlink only, where the talker measures nothing itself, with feedback off and on,
against 5 % on the talker's path both ways; results in ``quality_feedback.json``.

Bursty loss (issue 17): Gilbert-Elliott loss of 5 % and 10 % with mean bursts of 2 and
3 packets, both ways, scored for none / plc / fec+plc / red+fec+plc (redundant copies
of earlier frames, pipeline/core/redundancy.py, chosen by the talker from the loss
pattern it measures and its listener reports) in the same run, with each mode's
bandwidth; passes in the first ``BURST_WARMUP`` seconds are not scored in any mode
(the talker learns the pattern from its first reports). ``--only red-bitrate`` scores,
in memory (the real encoder, voice bodies, jitter buffer and decoder, no sockets), the
copies' bitrate against what it costs, under 10 % loss in bursts of 3; ``--only
red-backs`` which earlier frames the copies are of (contiguous or every second one)
under three bursty losses; ``--only burst-memory`` the bursty scenarios as sent;
``--only burst-target`` the target scenario (10 % in bursts of 3) through whole clients
over ``--seeds`` loss patterns.

    python -m bench.quality [--quick] [--only SCENARIOS]  (see --help)
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parser, write_result
from bench.netem import Impairer, Impairment, UdpProxy, gilbert_elliott, per_direction
from pipeline.client.config import ClientConfig
from pipeline.client.local_client import LocalClient, connected
from pipeline.core.jitter import JitterBuffer
from pipeline.core.redundancy import (
    MAX_BACK,
    REDUNDANT_BITRATE,
    REDUNDANT_COMPLEXITY,
    RedundantFrames,
    backs_for,
    fec_hint,
    wanted_depth,
)
from pipeline.core.speakers import Speakers
from pipeline.ipc import events as ev
from pipeline.media import synthetic
from pipeline.media.audio_format import FRAME_NS, FRAME_SAMPLES, SAMPLE_RATE
from pipeline.media.opus import OpusEncoder
from pipeline.media.sources import MediaSpec, read_wav, write_wav
from relay.launch import start_relay, stop_relay
from relay.protocol.sealed_datagram import MIN_VOICE_UP

REFERENCE = Path(__file__).resolve().parent / "data" / "speech-en-16k.wav"
RATE = 16000
PASS_SLACK = 48000 // 2  # samples: how far a pass may sit from the stream's grid
ONSET_SLACK = 48000 // 2  # samples: how far before the first sound heard a scored pass may start
EDGE = 48000 * 2  # samples at each end of a pass aligned on their own


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
]
# (fec, plc, redundancy)
MODES = {
    "fec+plc": (True, True, False),
    "plc": (False, True, False),
    "none": (False, False, False),
    "red+fec+plc": (True, True, True),
}
LOSS_MODES = ("fec+plc", "plc", "none")
BURST_CONDITIONS = [
    Condition("clean", 0),
    Condition("GE 5% (mean burst 2)", 5, burst=2),
    Condition("GE 5% (mean burst 3)", 5, burst=3),
    Condition("GE 10% (mean burst 2)", 10, burst=2),
    Condition("GE 10% (mean burst 3)", 10, burst=3),
]
BURST_MODES = ("none", "plc", "fec+plc", "red+fec+plc")
BURST_WARMUP = 4.0  # seconds of each burst run not scored: the talker learns the pattern
# Bytes around a voice body on the way to the relay: the sealed datagram (protocol 2)
# and IPv4 + UDP headers.
SEALED_OVERHEAD = MIN_VOICE_UP - 1
IP_UDP = 28
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


def score(
    reference16: np.ndarray, recording48: np.ndarray, skip: int = 0
) -> tuple[float, float, int]:
    """PESQ (wideband MOS-LQO) of the recording against the reference: (mean, correlation,
    n), from :func:`pass_scores`."""
    scores, corr = pass_scores(reference16, recording48, skip)
    return float(np.mean(scores)), corr, len(scores)


def pass_scores(
    reference16: np.ndarray, recording48: np.ndarray, skip: int = 0
) -> tuple[list[float], float]:
    """PESQ (wideband MOS-LQO) of each pass of the reference in the recording, in order,
    and the correlation of the recording with the reference.

    The talker loops the reference, so the recording holds it several times, one pass
    every ``period`` samples. Every complete pass is scored and the scores averaged: the
    passes are fixed by the stream (not picked by how well they came through), so every
    mode is scored on the same frames. Each pass is aligned on its own, within
    ``PASS_SLACK`` of where the stream's grid puts it: an adaptive jitter buffer changes
    the delay during a call, and a pass cut at a stale lag would lose its ends (PESQ
    itself then follows the delay within the pass, as it is made to). Passes starting
    within ``skip`` samples of the first sound heard are left out (a warm-up).
    """
    from pesq import pesq

    sent48 = up3(reference16)
    period = len(synthetic.frames(sent48)) * FRAME_SAMPLES
    lag, corr = synthetic.align(sent48, recording48, max_lag=max(1, len(recording48) - len(sent48)))
    # The listener records silence (exact zeros) until the talker's first packet, which
    # carries a frame from the middle of the loop: passes start on the loop's grid, after that
    # (up to ONSET_SLACK before it: a pass whose first frames the playout dropped or did not
    # play yet is scored with its silent head, not left out).
    nonzero = np.flatnonzero(recording48)
    onset = int(nonzero[0]) if len(nonzero) else 0
    first = onset + skip - ONSET_SLACK
    starts = [s for s in range(lag % period, len(recording48), period)
              if s >= first and s + len(sent48) <= len(recording48)]  # fmt: skip
    scores = []
    for nominal in starts or [lag]:
        start, end = _pass_span(sent48, recording48, nominal)
        heard = recording48[start:end]
        if len(heard) < len(sent48):
            heard = np.concatenate([heard, np.zeros(len(sent48) - len(heard), dtype=np.float32)])
        deg = down3(heard)
        scores.append(float(pesq(RATE, reference16.astype(np.float64), deg, "wb")))
    return scores, corr


def _pass_span(sent48: np.ndarray, recording48: np.ndarray, nominal: int) -> tuple[int, int]:
    """Where the pass the stream's grid puts at ``nominal`` is heard: from where its first
    ``EDGE`` samples are found to where its last are, each within ``PASS_SLACK`` of the
    grid. An adaptive playout changes the delay during a pass; the pass cut at one lag
    would lose the audio on one side of a change (a 140 ms change cut off 140 ms of the
    pass, which PESQ scored as up to 0.5 lower), so the two ends are found on their own
    and PESQ, which follows a delay that changes within the audio it is given, gets the
    whole pass."""
    edge = min(EDGE, len(sent48) // 2)
    lo = max(0, nominal - PASS_SLACK)
    head = recording48[lo : nominal + edge + PASS_SLACK]
    at, _ = synthetic.align(sent48[:edge], head, max_lag=max(0, len(head) - edge))
    start = lo + at
    tail_at = nominal + len(sent48) - edge
    lo = max(start, tail_at - PASS_SLACK)
    tail = recording48[lo : tail_at + edge + PASS_SLACK]
    if len(tail) < edge:
        return start, start + len(sent48)
    at, _ = synthetic.align(sent48[-edge:], tail, max_lag=max(0, len(tail) - edge))
    return start, max(start + len(sent48) // 2, lo + at + edge)


def run_one(port: int, cond: Condition, mode: str, seconds: float, seed: int, workdir: Path,
            jitter: str = "adaptive", warmup: float = 0.0) -> dict[str, Any]:  # fmt: skip
    fec, plc, redundancy = MODES[mode]
    talk, heard = workdir / "talk48.wav", workdir / f"heard-{seed}-{jitter}.wav"
    trace = workdir / f"trace-{seed}-{jitter}"
    trace.mkdir(exist_ok=True)
    if not talk.exists():
        write_wav(talk, up3(read_wav_16k(REFERENCE)))
    up, down = per_direction(cond.impairment(seed), "both")
    base = ClientConfig(host="127.0.0.1", port=port, name="", fec=fec, plc=plc, jitter=jitter,
                        redundancy=redundancy)  # fmt: skip
    listener = replace(base, name=f"ear{seed}", source=MediaSpec("silence"),
                       sink=MediaSpec("wav", str(heard)), trace_dir=str(trace))  # fmt: skip
    with UdpProxy(("127.0.0.1", port), up=up, down=down) as proxy, LocalClient(listener) as ear:
        ear.until(connected, 60, "listener connected")  # a loaded machine is slow
        talker = replace(
            base,
            name=f"mouth{seed}",
            source=MediaSpec("wav", str(talk)),
            udp_via=proxy.address,
            loss_hint=cond.loss_percent if fec else 0.0,
            clock_offset=0,  # media timestamps on this machine's clock: mouth-to-ear
        )
        with LocalClient(talker) as mouth:
            mouth.until(connected, 60, "talker connected")
            start = time.monotonic()
            ear.pump(seconds)
            talked = time.monotonic() - start
            speakers = ear.view.speakers
            played = ear.view.playback.frames if ear.view.playback else None
            mouth.pump(0.6)  # the talker's last encode report
            enc = mouth.view.encode
    up_counts = proxy.stats().up  # exact now that the proxy is closed
    mos, corr, passes = score(read_wav_16k(REFERENCE), read_wav(heard), skip=int(warmup * 48000))
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
        "recovered_red": st.recovered_red,
        "burst_mean": st.burst_mean,
        **bandwidth(enc),
    }


def bandwidth(enc: ev.EncodeStats | None) -> dict[str, Any]:
    """What the talker sent: voice body bytes per packet, and kbit/s of bodies and on the
    wire to the relay (sealed datagram, IPv4 and UDP headers), at 50 packets a second."""
    if enc is None or not enc.packets:
        return {}
    body = enc.packet_bytes / enc.packets
    return {
        "body_bytes_per_packet": round(body, 1),
        "redundant_bytes_per_packet": round(enc.redundant_bytes / enc.packets, 1),
        "body_kbps": round(body * 8 * 50 / 1000, 1),
        "wire_kbps": round((body + SEALED_OVERHEAD + IP_UDP) * 8 * 50 / 1000, 1),
        "redundancy_at_end": enc.redundancy,
        "copies_sent": enc.redundant_copies,
    }


def burst_target(seeds: list[int], burst_seconds: float) -> dict[str, Any]:
    """The issue's target scenario through whole clients and a real relay, over several
    loss patterns: the clean path, then 10 % loss in bursts of 3 with fec+plc and with
    red+fec+plc, each seed's pattern the same for both modes; PESQ is the mean over seeds."""
    relay, port = start_relay()
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="vc-quality-") as tmp:
            cases = [(BURST_CONDITIONS[0], "fec+plc", seeds[:1])]
            cases += [(BURST_CONDITIONS[-1], m, seeds) for m in ("fec+plc", "red+fec+plc")]
            for cond, mode, these in cases:
                runs = [run_one(port, cond, mode, burst_seconds, seed=seed, workdir=Path(tmp),
                                warmup=BURST_WARMUP) for seed in these]  # fmt: skip
                pesqs = [r["pesq_wb"] for r in runs]
                row = {**runs[0], "pesq_wb": round(float(np.mean(pesqs)), 3),
                       "pesq_runs": pesqs, "seeds": these,
                       "body_kbps": round(float(np.mean([r["body_kbps"] for r in runs])), 1),
                       "wire_kbps": round(float(np.mean([r["wire_kbps"] for r in runs])), 1),
                       "mouth_to_ear_p50_runs": [(r["mouth_to_ear_ms"] or {}).get("p50")
                                                 for r in runs]}  # fmt: skip
                rows.append(row)
                print(f"  {cond.name:22s} {mode:11s} PESQ {row['pesq_wb']:.2f} {pesqs}  "
                      f"wire {row['wire_kbps']} kbps  mouth-to-ear p50 "
                      f"{row['mouth_to_ear_p50_runs']}", flush=True)  # fmt: skip
    finally:
        stop_relay(relay)
    return {"reference": REFERENCE.name, "warmup_seconds": BURST_WARMUP,
            "seconds_per_run": burst_seconds, "rows": rows,
            "summary": burst_summary(rows)}  # fmt: skip


def burst_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's target: 10 % loss in bursts of 3 within 0.8 PESQ of the clean path
    with redundancy, at no more than 1.7 times a plain stream's bandwidth (fec+plc under
    the same loss: the stream without copies). Bandwidth is what the network carries: the
    wire bytes to the relay (the sealed datagram, IPv4 and UDP headers around the body);
    the bodies' own ratio is given too."""
    by = {(r["condition"], r["mode"]): r for r in rows}
    clean = by.get(("clean", "fec+plc"))
    red = by.get(("GE 10% (mean burst 3)", "red+fec+plc"))
    plain_ = by.get(("GE 10% (mean burst 3)", "fec+plc"))
    if not (clean and red and plain_):
        return {}
    gap = round(clean["pesq_wb"] - red["pesq_wb"], 3)
    body_ratio = round(red["body_kbps"] / plain_["body_kbps"], 3)
    wire_ratio = round(red["wire_kbps"] / plain_["wire_kbps"], 3)
    summary = {"clean_pesq": clean["pesq_wb"], "red_pesq": red["pesq_wb"], "gap": gap,
               "target_gap": 0.8, "body_ratio": body_ratio, "wire_ratio": wire_ratio,
               "target_ratio": 1.7, "met": gap <= 0.8 and wire_ratio <= 1.7}  # fmt: skip
    if "pesq_first_pass" in red:  # in memory: the first pass, with the playout's climb
        summary["red_first_pass_pesq"] = red["pesq_first_pass"]
    return summary


# --- the copies' bitrate, in memory ------------------------------------------------------

RED_BITRATES = (12000, 16000, 24000)
RED_BACKS: tuple[tuple[int, ...], ...] = (
    (1, 2),
    (2, 3),
    (1, 2, 3),
    (2, 3, 4),
)  # which earlier frames the copies are of


def loss_pattern(n: int, seed: int, loss: float = 10.0, burst: float = 3.0) -> set[int]:
    """The frames of n that bench/netem's seq-keyed Gilbert-Elliott model loses."""
    imp = Impairer(Impairment(burst=gilbert_elliott(loss, burst), seed=seed, seq_keyed=True))
    head = bytes(4)
    return {i for i in range(n) if not imp.feed(head + i.to_bytes(8, "big") + bytes(13), 0)}


def red_bitrate_run(rate: int | None, lost: set[int], loops: int, backs: tuple[int, ...],
                    fec: bool = True, plc: bool = True, adaptive: bool = False,
                    loss_hint: int = 10) -> dict[str, Any]:  # fmt: skip
    """The reference looped ``loops`` times through the real sender and receiver code:
    primaries at 48 kbps (FEC with this loss hint, or none), copies at ``rate`` (None:
    full-rate copies, the primaries themselves) of the frames ``backs`` packets back;
    frames in ``lost`` never arrive. A fixed buffer deep enough for the copies, or the
    adaptive playout with every packet 5 ms on the way."""
    ref16 = read_wav_16k(REFERENCE)
    frames = np.concatenate([synthetic.frames(up3(ref16))] * loops)
    primary_enc = OpusEncoder(48000, fec=fec, loss_percent=loss_hint if fec else 0)
    copy_enc = OpusEncoder(rate or 48000, fec=False, complexity=REDUNDANT_COMPLEXITY)
    deepest = max(backs, default=1)
    reach = max(MAX_BACK, deepest)  # here copies may go further back than a sender's do
    red = RedundantFrames(max_back=reach)
    hold = deepest + 1
    # A fixed buffer holds the copies' frames until they come; the adaptive one holds as
    # many frames more as the copies go back.
    sp = Speakers(watermark=hold, fec=fec, plc=plc, adaptive=adaptive,
                  jitter_factory=(lambda: JitterBuffer(watermark=1, adaptive=True,
                                                       max_red_headroom=reach))
                  if adaptive else None)  # fmt: skip
    out, body_bytes = [], 0
    for i, f in enumerate(frames):
        primary = primary_enc.encode(f)
        copy = (copy_enc.encode(f) if rate else primary) if backs else None
        body = red.body(i, primary, copy, backs)
        body_bytes += len(body)
        if i not in lost:
            sp.receive(1, i, i * FRAME_SAMPLES, body, i * FRAME_NS + 5_000_000)
        pcm, _ = sp.render(i * FRAME_NS + 7_000_000)
        out.append(pcm.copy())
    for k in range(hold + 15):
        out.append(sp.render((len(frames) + k) * FRAME_NS + 7_000_000)[0].copy())
    scores, _corr = pass_scores(ref16, np.concatenate(out))
    # The first pass holds the playout's climb to the copies' depth (frames held once the
    # speaker's packets get lost); the passes after it are the settled call, which is what
    # the call-level runs score too (they leave BURST_WARMUP out).
    settled = scores[1:] or scores
    st = sp.stats()[0] if sp.stats() else ev.SpeakerStats(1)
    return {"copies_kbps": (rate or 48000) / 1000 if backs else 0, "backs": list(backs),
            "pesq_wb": round(float(np.mean(settled)), 3), "passes_scored": len(settled),
            "pesq_first_pass": round(scores[0], 3),
            "body_bytes_per_packet": round(body_bytes / len(frames), 1),
            "recovered_red": st.recovered_red, "recovered": st.recovered,
            "concealed": st.concealed, "target_ms": st.target_ms}  # fmt: skip


def burst_memory(seeds: list[int], loops: int = 3) -> dict[str, Any]:
    """The bursty-loss scenarios in memory: the same senders, bodies, adaptive playout and
    decoder as a call, with no processes, sockets or scheduling, so a loaded machine
    cannot move the scores. Redundancy at the depth its policy picks for the model's
    loss and mean burst (what a listener measures and reports once settled)."""
    n = loops * len(synthetic.frames(up3(read_wav_16k(REFERENCE))))
    rows = []
    for cond in BURST_CONDITIONS:
        for mode in BURST_MODES if cond.loss_percent else ["fec+plc"]:
            fec, plc, redundancy = MODES[mode]
            depth = wanted_depth(cond.loss_percent, cond.burst, fec) if redundancy else 0
            backs = backs_for(depth, fec)
            runs = []
            for seed in seeds:
                lost = (
                    loss_pattern(n, seed, cond.loss_percent, cond.burst)
                    if cond.loss_percent
                    else set()
                )
                hint = int(fec_hint(cond.loss_percent, depth))  # as the encode stage tells it
                runs.append(red_bitrate_run(REDUNDANT_BITRATE, lost, loops, backs, fec=fec,
                                            plc=plc, adaptive=True, loss_hint=hint))  # fmt: skip
            pesqs = [r["pesq_wb"] for r in runs]
            firsts = [r["pesq_first_pass"] for r in runs]
            row = {"condition": cond.name, "mode": mode, **runs[0],
                   "pesq_wb": round(float(np.mean(pesqs)), 3), "pesq_runs": pesqs,
                   "pesq_first_pass": round(float(np.mean(firsts)), 3),
                   "pesq_first_pass_runs": firsts,
                   "body_kbps": round(float(np.mean([r["body_bytes_per_packet"] for r in runs]))
                                      * 8 * 50 / 1000, 1)}  # fmt: skip
            row["wire_kbps"] = round(
                row["body_kbps"] + (SEALED_OVERHEAD + IP_UDP) * 8 * 50 / 1000, 1
            )
            rows.append(row)
            print(f"  {cond.name:22s} {mode:11s} PESQ {row['pesq_wb']:.2f} {pesqs} "
                  f"(first pass {row['pesq_first_pass']:.2f})  "
                  f"{row['body_kbps']} kbps (wire {row['wire_kbps']})  red {row['recovered_red']} "
                  f"fec {row['recovered']} plc {row['concealed']}", flush=True)  # fmt: skip
    return {"seeds": seeds, "loops": loops, "rows": rows, "summary": burst_summary(rows)}


def red_bitrate_sweep(seeds: list[int], loops: int = 3) -> dict[str, Any]:
    """PESQ and bytes per packet for each copies' bitrate, under 10 % loss in bursts of
    3 (the same patterns for every rate), against no copies and a lossless stream."""
    n = loops * len(synthetic.frames(up3(read_wav_16k(REFERENCE))))
    cases: list[tuple[str, int | None, tuple[int, ...]]] = [
        ("lossless", None, ()), ("no copies", None, ())]  # fmt: skip
    for backs in RED_BACKS:
        cases += [(f"{r // 1000} kbps {backs}", r, backs) for r in RED_BITRATES]
    cases += [(f"full rate {RED_BACKS[0]}", None, RED_BACKS[0])]
    rows = []
    for name, rate, backs in cases:
        runs = [red_bitrate_run(rate, set() if name == "lossless" else loss_pattern(n, s),
                                loops, backs) for s in seeds]  # fmt: skip
        pesqs = [r["pesq_wb"] for r in runs]
        row = {"case": name, **runs[0], "pesq_wb": round(float(np.mean(pesqs)), 3),
               "pesq_runs": pesqs}  # fmt: skip
        rows.append(row)
        print(f"  {name:16s} PESQ {row['pesq_wb']:.2f}  {row['body_bytes_per_packet']} B/packet",
              flush=True)  # fmt: skip
    plain_bytes = rows[1]["body_bytes_per_packet"]
    for row in rows:
        row["bandwidth_ratio"] = round(row["body_bytes_per_packet"] / plain_bytes, 3)
    return {"loss": "GE 10% (mean burst 3)", "seeds": seeds, "loops": loops, "rows": rows}


RED_BACKS_CASES: tuple[tuple[int, ...], ...] = (
    (2, 3), (2, 4), (2, 3, 4), (2, 4, 6), (2, 4, 8), (2, 5, 9), (2, 4, 10))  # fmt: skip
RED_BACKS_LOSS = ((10.0, 3.0), (10.0, 2.0), (5.0, 3.0))  # (loss %, mean burst)


def red_backs_sweep(seeds: list[int], loops: int = 3) -> dict[str, Any]:
    """Which earlier frames the copies should be of: contiguous (2, 3) against every second
    frame (2, 4), with three copies, under each bursty loss, copies at the copies'
    bitrate, FEC on at the loss rate, the adaptive playout (which holds frames for the
    deepest copy): PESQ, the wire bytes against a plain stream, the playout target."""
    n = loops * len(synthetic.frames(up3(read_wav_16k(REFERENCE))))
    clean = red_bitrate_run(None, set(), loops, (), adaptive=True, loss_hint=0)
    plain_wire = clean["body_bytes_per_packet"] + SEALED_OVERHEAD + IP_UDP
    rows: list[dict[str, Any]] = [{"case": "clean", **clean}]
    print(f"  clean                PESQ {clean['pesq_wb']:.2f}", flush=True)
    for loss, burst in RED_BACKS_LOSS:
        for backs in RED_BACKS_CASES:
            hint = int(fec_hint(loss, len(backs)))  # as the encode stage tells it
            runs = [red_bitrate_run(REDUNDANT_BITRATE, loss_pattern(n, s, loss, burst), loops,
                                    backs, adaptive=True, loss_hint=hint)
                    for s in seeds]  # fmt: skip
            pesqs = [r["pesq_wb"] for r in runs]
            body = float(np.mean([r["body_bytes_per_packet"] for r in runs]))
            wire = body + SEALED_OVERHEAD + IP_UDP
            first = round(float(np.mean([r["pesq_first_pass"] for r in runs])), 3)
            row = {"case": f"GE {loss:g}% (mean burst {burst:g}) {backs}", **runs[0],
                   "pesq_wb": round(float(np.mean(pesqs)), 3), "pesq_runs": pesqs,
                   "pesq_first_pass": first,
                   "wire_ratio": round(wire / plain_wire, 3)}  # fmt: skip
            rows.append(row)
            print(f"  {row['case']:34s} PESQ {row['pesq_wb']:.2f} {pesqs} (first pass "
                  f"{first:.2f})  wire x{row['wire_ratio']}  target {row['target_ms']} ms",
                  flush=True)  # fmt: skip
    return {"seeds": seeds, "loops": loops, "copies_kbps": REDUNDANT_BITRATE / 1000, "rows": rows}


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


# --- loss feedback: 5 % on one listener's downlink only ---------------------------------


@dataclass(frozen=True)
class FeedbackCase:
    name: str
    path: str  # "talker": the talker's path loses both ways; "listener": its downlink only
    feedback: bool  # ClientConfig.loss_feedback, for every client of the run


FEEDBACK_LOSS = 5.0
FEEDBACK_CASES = [
    FeedbackCase("5% both directions (talker)", "talker", feedback=False),
    FeedbackCase("5% both directions (talker)", "talker", feedback=True),
    FeedbackCase("5% listener downlink only", "listener", feedback=False),
    FeedbackCase("5% listener downlink only", "listener", feedback=True),
]
# Nobody is told the loss in advance (no configured hint): the talker learns it from what
# it receives itself or from its listener's reports. Passes starting in the first seconds
# are not scored, so every case is scored once its FEC has settled.
FEEDBACK_WARMUP = 6.0


def run_feedback(port: int, case: FeedbackCase, seconds: float, seed: int,
                 workdir: Path) -> dict[str, Any]:  # fmt: skip
    talk, heard = workdir / "talk48.wav", workdir / f"heard-fb-{seed}.wav"
    if not talk.exists():
        write_wav(talk, up3(read_wav_16k(REFERENCE)))
    loss = Impairment(loss_percent=FEEDBACK_LOSS, seed=seed, spare_control=True, seq_keyed=True)
    up, down = per_direction(loss, "both" if case.path == "talker" else "down")
    base = ClientConfig(host="127.0.0.1", port=port, name="", loss_feedback=case.feedback)
    hints: list[int] = []
    with UdpProxy(("127.0.0.1", port), up=up, down=down) as proxy:
        via = proxy.address
        listener = replace(base, name=f"ear{seed}", sink=MediaSpec("wav", str(heard)),
                           udp_via=via if case.path == "listener" else None)  # fmt: skip
        talker = replace(base, name=f"mouth{seed}", source=MediaSpec("wav", str(talk)),
                         udp_via=via if case.path == "talker" else None)  # fmt: skip
        with LocalClient(listener) as ear:
            ear.until(connected, 30, "listener connected")
            with LocalClient(talker) as mouth:
                mouth.until(connected, 30, "talker connected")
                warm = time.monotonic() + FEEDBACK_WARMUP
                end = warm + seconds
                while (now := time.monotonic()) < end:
                    ear.pump(0.25)
                    mouth.pump(0.25)
                    if mouth.view.encode is not None and now >= warm:
                        hints.append(mouth.view.encode.loss_hint)
                speakers = ear.view.speakers
                enc = mouth.view.encode
    mos, corr, passes = score(read_wav_16k(REFERENCE), read_wav(heard),
                              skip=int(FEEDBACK_WARMUP * 48000))  # fmt: skip
    st = speakers[0] if speakers else ev.SpeakerStats(0)
    settled = hints or [0]
    return {
        "condition": case.name,
        "feedback": case.feedback,
        "jitter_buffer": base.jitter,
        "pesq_wb": round(mos, 3),
        "correlation": round(corr, 3),
        "passes_scored": passes,
        "listener_loss_percent": round(st.loss_percent, 2),
        "recovered": st.recovered,
        "concealed": st.concealed,
        "late": st.late,
        "discarded": st.discarded,
        "talker_hint_percent": {"min": min(settled), "max": max(settled)},
        "talker_hint_source": enc.hint_source if enc else "",
    }


def feedback_runs(port: int, seeds: list[int], seconds: float, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        for case in FEEDBACK_CASES:
            row = run_feedback(port, case, seconds, seed, tmp)
            rows.append({"seed": seed, **row})
            print(f"  {case.name:28s} feedback {'on ' if case.feedback else 'off'} "
                  f"PESQ {row['pesq_wb']:.2f}  hint {row['talker_hint_percent']} "
                  f"({row['talker_hint_source']})", flush=True)  # fmt: skip
    return rows


def feedback_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and median PESQ per case, and the issue's target: downlink-only within 0.4 of
    the symmetric case (both with the same feedback setting)."""
    means: dict[str, float] = {}
    medians: dict[str, float] = {}
    for case in FEEDBACK_CASES:
        key = f"{case.name}, feedback {'on' if case.feedback else 'off'}"
        got = [r["pesq_wb"] for r in rows
               if r["condition"] == case.name and r["feedback"] == case.feedback]  # fmt: skip
        means[key] = round(float(np.mean(got)), 3) if got else float("nan")
        medians[key] = round(float(np.median(got)), 3) if got else float("nan")
    gap = {on: round(means[f"5% both directions (talker), feedback {on}"]
                     - means[f"5% listener downlink only, feedback {on}"], 3)
           for on in ("off", "on")}  # fmt: skip
    return {"mean_pesq": means, "median_pesq": medians, "gap_to_symmetric": gap,
            "target_gap": 0.4, "met": gap["on"] <= 0.4}  # fmt: skip


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
        "--only",
        choices=(
            "loss",
            "jitter",
            "feedback",
            "burst",
            "burst-target",
            "burst-memory",
            "red-bitrate",
            "red-backs",
        ),
        help="run only the loss, jitter, loss feedback, bursty loss or copies' bitrate scenarios",
    )
    ap.add_argument("--seeds", type=int, default=3, help="loss patterns per feedback case")
    args = ap.parse_args(argv)
    ref_seconds = len(read_wav_16k(REFERENCE)) / RATE
    seconds = args.seconds or 2 * ref_seconds + 1.0  # a whole pass fits whatever the start
    conditions = CONDITIONS[1:2] if args.quick else CONDITIONS
    modes = ["fec+plc"] if args.quick else list(LOSS_MODES)
    burst_conditions = BURST_CONDITIONS[-1:] if args.quick else BURST_CONDITIONS
    burst_modes = ["red+fec+plc"] if args.quick else list(BURST_MODES)
    if args.only == "burst-memory":
        mem = burst_memory([300 + i for i in range(1 if args.quick else args.seeds)])
        print(f"wrote {write_result('quality_burst_memory', mem, args.out)}: {mem['summary']}")
        return mem
    if args.only == "burst-target":
        target = burst_target([400 + i for i in range(1 if args.quick else args.seeds)],
                              burst_seconds=seconds + BURST_WARMUP)  # fmt: skip
        print(
            f"wrote {write_result('quality_burst_target', target, args.out)}: {target['summary']}"
        )
        return target
    if args.only == "red-bitrate":
        sweep = red_bitrate_sweep([300 + i for i in range(1 if args.quick else args.seeds)])
        print(f"wrote {write_result('quality_red_bitrate', sweep, args.out)}")
        return sweep
    if args.only == "red-backs":
        backs = red_backs_sweep([300 + i for i in range(1 if args.quick else args.seeds)])
        print(f"wrote {write_result('quality_red_backs', backs, args.out)}")
        return backs
    if args.only != "burst" and (args.quick or args.only is not None):
        burst_conditions = []  # a quick run leaves them out, unless asked for
    jitter_conditions = JITTER_CONDITIONS[2:3] if args.quick else JITTER_CONDITIONS
    # The feedback scenarios run in a full run, or alone; a quick run leaves them out.
    seeds = [200 + i for i in range(1 if args.quick else args.seeds)]
    if args.only in ("jitter", "feedback", "burst"):
        conditions = []
    if args.only in ("loss", "feedback", "burst"):
        jitter_conditions = []
    if args.only not in (None, "feedback") or (args.quick and args.only is None):
        seeds = []
    relay, port = start_relay()
    rows: list[dict[str, Any]] = []
    jitter_rows: list[dict[str, Any]] = []
    fb_rows: list[dict[str, Any]] = []
    burst_rows: list[dict[str, Any]] = []
    burst_seconds = seconds + BURST_WARMUP
    try:
        with tempfile.TemporaryDirectory(prefix="vc-quality-") as tmp:
            fb_rows = feedback_runs(port, seeds, seconds, Path(tmp))
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
            for i, cond in enumerate(burst_conditions):
                for mode in burst_modes if cond.loss_percent else ["fec+plc"]:
                    row = run_one(port, cond, mode, burst_seconds, seed=400 + i,
                                  workdir=Path(tmp), warmup=BURST_WARMUP)  # fmt: skip
                    burst_rows.append(row)
                    print(f"  {cond.name:22s} {mode:11s} PESQ {row['pesq_wb']:.2f}  "
                          f"{row.get('body_kbps')} kbps (wire {row.get('wire_kbps')})  "
                          f"red {row['recovered_red']} fec {row['recovered']} "
                          f"plc {row['concealed']}  lost {row['impaired_loss_percent']}%",
                          flush=True)  # fmt: skip
    finally:
        stop_relay(relay)
    if fb_rows:
        fb = {"reference": REFERENCE.name, "loss_percent": FEEDBACK_LOSS,
              "warmup_seconds": FEEDBACK_WARMUP, "seconds_per_run": seconds,
              "summary": feedback_summary(fb_rows), "runs": fb_rows}  # fmt: skip
        print(f"wrote {write_result('quality_feedback', fb, args.out)}: {fb['summary']}")
        if args.only == "feedback":
            return fb
    result = {
        "reference": REFERENCE.name,
        "seconds_per_run": seconds,
        "runs": rows,
        "jitter_runs": jitter_rows,
        "burst_runs": burst_rows,
        "burst_summary": burst_summary(burst_rows),
        "burst_warmup_seconds": BURST_WARMUP,
    }
    path = write_result("quality", result, args.out)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
